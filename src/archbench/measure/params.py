"""Parameter counts and raw weight bytes."""

from __future__ import annotations

from torch import nn


def count_parameters(model: nn.Module) -> dict:
    """Counts of trainable and non-trainable parameters (shared parameters
    counted once), buffers, and their raw bytes."""
    seen: set[int] = set()
    trainable = non_trainable = param_bytes = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            non_trainable += p.numel()
        param_bytes += p.numel() * p.element_size()
    buffers = buffer_bytes = 0
    for b in model.buffers():
        buffers += b.numel()
        buffer_bytes += b.numel() * b.element_size()
    return {
        "trainable": trainable,
        "non_trainable": non_trainable,
        "total": trainable + non_trainable,
        "buffers": buffers,
        "param_bytes": param_bytes,
        "buffer_bytes": buffer_bytes,
        "raw_weight_bytes": param_bytes + buffer_bytes,
    }
