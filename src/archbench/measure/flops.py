"""Matmul/conv FLOPs counted at the dispatcher.

``torch.utils.flop_counter.FlopCounterMode`` sees every aten op that runs,
forward and backward, and counts the multiply-accumulates of matrix products
and convolutions (1 MAC = 2 FLOPs). Backward is counted from the ops that
actually run: the first layer computes no input gradient, so a training step
is not 3x the forward. Element-wise arithmetic (bias adds inside ``addmm`` are
not counted either, activations, pooling, softmax, the optimizer) is *not* in
these numbers: they are named "matmul/conv FLOPs".

All measurements run on a deep copy: the model looked at is never changed.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def _by_op(counter: FlopCounterMode) -> dict[str, int]:
    counts = counter.get_flop_counts().get("Global", {})
    return {str(op).replace("aten.", ""): int(v) for op, v in counts.items()}


def forward_flops(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 1) -> dict:
    """Matmul/conv FLOPs of one inference forward pass (eval mode, no grad)."""
    m = copy.deepcopy(model).eval()
    x = torch.zeros(batch_size, *input_shape, device=next(m.parameters(), torch.zeros(0)).device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        m(x)
    total = int(counter.get_total_flops())
    return {"batch_size": batch_size, "flops": total, "macs": total // 2, "by_op": _by_op(counter)}


def train_step_flops(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 64,
                     num_classes: int = 10) -> dict:
    """Matmul/conv FLOPs of one training step (forward + cross-entropy +
    backward) at ``batch_size``; the forward and backward parts separately."""
    m = copy.deepcopy(model).train()
    dev = next(m.parameters(), torch.zeros(0)).device
    x = torch.zeros(batch_size, *input_shape, device=dev)
    y = torch.zeros(batch_size, dtype=torch.long, device=dev)
    with FlopCounterMode(display=False) as fwd_counter:
        loss = F.cross_entropy(m(x), y)
    with FlopCounterMode(display=False) as bwd_counter:
        loss.backward()
    fwd, bwd = int(fwd_counter.get_total_flops()), int(bwd_counter.get_total_flops())
    return {
        "batch_size": batch_size,
        "forward_flops": fwd,
        "backward_flops": bwd,
        "flops": fwd + bwd,
        "macs": (fwd + bwd) // 2,
        "by_op_forward": _by_op(fwd_counter),
        "by_op_backward": _by_op(bwd_counter),
    }
