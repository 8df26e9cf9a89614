"""Timers that say what they cover.

Every timer warms up first, keeps its raw samples, and reports the median and
percentiles. On CUDA the device is synchronised before each clock read, so a
sample covers the kernels' execution, not just their launch.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from archbench.config import TrainConfig


@dataclass
class Timing:
    samples: list[float]  # seconds per call

    def percentile(self, q: float) -> float:
        xs = sorted(self.samples)
        if not xs:
            return float("nan")
        k = (len(xs) - 1) * q / 100
        lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
        return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def to_dict(self, per_call_items: int = 1) -> dict:
        """Summary with the median, and each tail percentile only where the
        samples support it: p90 from 100 samples on, p99 from 1,000 (a p99
        of fewer samples is a guess at the maximum; ``max_seconds`` is kept)."""
        n = len(self.samples)
        return {
            "calls": n,
            "p50_seconds": self.percentile(50),
            "p90_seconds": self.percentile(90) if n >= MIN_SAMPLES[90] else None,
            "p99_seconds": self.percentile(99) if n >= MIN_SAMPLES[99] else None,
            "mean_seconds": statistics.fmean(self.samples),
            "min_seconds": min(self.samples), "max_seconds": max(self.samples),
            "items_per_call": per_call_items,
            "items_per_second": per_call_items / self.median,
        }


# A percentile q is reported only from 10 / (1 - q/100) samples on: ten samples beyond it.
MIN_SAMPLES = {90: 100, 99: 1000}


def time_calls(fn: Callable[[], object], warmup: int = 10, min_calls: int = 200, min_seconds: float = 1.0,
               max_calls: int = 100_000, device: torch.device | None = None) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then at least ``min_calls`` times
    and for at least ``min_seconds``; each sample is one call's wall time
    (synchronising ``device`` first and after when it is CUDA)."""
    cuda = device is not None and device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < min_calls or (time.perf_counter() - start) < min_seconds:
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
        if len(samples) >= max_calls:
            break
    return Timing(samples)


def inference_latency(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int = 1,
                      device: torch.device | str | None = None, min_calls: int = 200, min_seconds: float = 1.0,
                      cfg: TrainConfig | None = None, warmup: int = 10) -> dict:
    """Latency of the evaluation's prediction at ``batch_size`` (default 1):
    eval mode, ``no_grad``, the recipe's test-time views (their logits
    averaged), precision and formulation (archbench.measure.step), the input
    already on the device, output not copied back."""
    from archbench.measure.step import inference_pass

    inf = inference_pass(model, cfg, input_shape, device, batch_size)
    t = time_calls(inf, warmup=warmup, min_calls=min_calls, min_seconds=min_seconds, device=inf.x.device)
    return {**t.to_dict(per_call_items=batch_size), "views": len(inf.views)}


def train_step_time(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int | None = None,
                    device: torch.device | str | None = None, min_calls: int = 50, min_seconds: float = 1.0,
                    cfg: TrainConfig | None = None, reference: bool = False, num_classes: int = 10) -> dict:
    """Time of one training step as the unit trains it (gather, augmentation,
    forward, loss, backward, optimizer update, the loop's bookkeeping; the
    step ``cfg`` trains, default recipe if None) or with ``reference`` the plain
    PyTorch step, on a copy, with a fixed random batch already on the device
    (no data loading)."""
    from archbench.config import TrainConfig
    from archbench.measure.step import reference_step, trained_step

    cfg = cfg or TrainConfig(batch_size=batch_size or 64)
    step = (reference_step if reference else trained_step)(model, cfg, input_shape, device, batch_size, num_classes)
    dev = step.pool_x.device
    return time_calls(step, warmup=5, min_calls=min_calls, min_seconds=min_seconds,
                      device=dev).to_dict(step.batch_size)
