"""Evaluation: the logits of a batch over the recipe's test-time views
(:func:`predict`), and loss, accuracy and predictions over a split
(:func:`evaluate`). archbench.measure's inference costs run the same ``predict``."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def to_input(images_u8: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 ``(N, C, H, W)`` (or ``(N, H, W)``: one channel) -> float32
    ``(N, C, H, W)`` in [0, 1], as the seed does (x / 255, no standardisation)."""
    x = images_u8.to(device)
    return (x.unsqueeze(1) if x.dim() == 3 else x).float().div_(255.0)


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    predictions: torch.Tensor  # int64 (N,), on CPU


def shift(x: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """``x`` translated by ``dy`` rows and ``dx`` columns, zero-filled."""
    p = max(abs(dy), abs(dx))
    if p == 0:
        return x
    h, w = x.shape[-2:]
    return F.pad(x, (p, p, p, p))[..., p - dy:p - dy + h, p - dx:p - dx + w]


def tta_views(tta_flip: bool, tta_shift: int) -> list[tuple[int, int, bool]]:
    """(dy, dx, mirrored) of every view whose logits are averaged."""
    offsets = [(0, 0)] + ([(tta_shift, 0), (-tta_shift, 0), (0, tta_shift), (0, -tta_shift)] if tta_shift else [])
    return [(dy, dx, m) for dy, dx in offsets for m in ((False, True) if tta_flip else (False,))]


def predict(model: nn.Module, xb: torch.Tensor, views: list[tuple[int, int, bool]], channels_last: bool = False,
            autocast_dtype: torch.dtype | None = None) -> torch.Tensor:
    """The logits evaluation uses for a batch: the model's outputs on every
    test-time view (:func:`tta_views`) averaged (call in eval mode under
    ``no_grad``). :func:`evaluate` and archbench.measure's inference costs run this."""
    with torch.autocast(xb.device.type, dtype=autocast_dtype or torch.bfloat16, enabled=autocast_dtype is not None):
        logits = None
        for dy, dx, mirrored in views:
            v = shift(xb, dy, dx)
            v = v.flip(3) if mirrored else v
            if channels_last:
                v = v.contiguous(memory_format=torch.channels_last)
            out = model(v)
            logits = out if len(views) == 1 else (out.float() if logits is None else logits + out.float())
        assert logits is not None  # views is never empty: it always holds the unshifted view
        if len(views) > 1:
            logits = logits / len(views)
    return logits


@torch.no_grad()
def evaluate(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000,
             channels_last: bool = False, autocast_dtype: torch.dtype | None = None,
             tta_flip: bool = False, tta_shift: int = 0) -> EvalResult:
    """Mean cross-entropy, accuracy and per-sample predictions over a split.
    ``images`` is float ``(N, C, H, W)`` on the model's device, or uint8
    (streamed: each batch converted with :func:`to_input` as it is read). With
    test-time augmentation the logits of each image's views (mirror image;
    shifts by ``tta_shift`` pixels up, down, left, right) are averaged."""
    was_training = model.training
    model.eval()
    views = tta_views(tta_flip, tta_shift)
    try:
        loss_sum = torch.zeros((), device=labels.device, dtype=torch.float64)
        preds = []
        dev = labels.device
        for s in range(0, images.shape[0], batch_size):
            xb = images[s:s + batch_size]
            if xb.dtype == torch.uint8:
                xb = to_input(xb, dev)
            logits = predict(model, xb, views, channels_last, autocast_dtype)
            loss_sum += F.cross_entropy(logits.float(), labels[s:s + batch_size], reduction="sum").double()
            preds.append(logits.argmax(1))
        pred = torch.cat(preds).cpu() if preds else torch.empty(0, dtype=torch.long)
        n = labels.numel()
        acc = float((pred == labels.cpu()).sum()) / n if n else float("nan")
        return EvalResult(float(loss_sum) / n if n else float("nan"), acc, pred)
    finally:
        model.train(was_training)


