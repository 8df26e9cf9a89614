"""Timers that say what they cover.

Every timer warms up first, keeps its raw samples, and reports the median and
percentiles. On CUDA the device is synchronised before each clock read, so a
sample covers the kernels' execution, not just their launch.
"""

from __future__ import annotations

import math
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
    stopped: str = "budget"  # why sampling stopped: "precision" (the median known well enough), "budget", "max_calls"

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
            "median_ci_relative": median_ci_relative(self.samples),
            "stopped": self.stopped,
        }


# A percentile q is reported only from 10 / (1 - q/100) samples on: ten samples beyond it.
MIN_SAMPLES = {90: 100, 99: 1000}


def _median_ranks(n: int) -> int | None:
    """The 1-based rank j whose order statistics (x_(j), x_(n+1-j)) bound the
    median with at least 95 % confidence, whatever the distribution (the
    binomial(n, 1/2) tails); None when n is too small for any."""
    if n < 6:
        return None
    if n > 1000:  # the normal approximation of the binomial, exact to a rank or so at this size
        return max(1, math.floor(n / 2 - 1.959964 * math.sqrt(n) / 2))
    total, tail, j = 2 ** n, 0, 0
    while True:  # the largest j with P(B <= j - 1) <= 0.025
        tail += math.comb(n, j)
        if 40 * tail > total:  # exact in integers: tail / 2**n > 0.025
            return j if j >= 1 else None
        j += 1


def median_ci_relative(samples: list[float]) -> float | None:
    """Half the width of the distribution-free 95 % interval of the median,
    relative to the median (None: too few samples)."""
    j = _median_ranks(len(samples))
    if j is None:
        return None
    xs = sorted(samples)
    med = statistics.median(xs)
    return (xs[len(xs) - j] - xs[j - 1]) / 2 / med if med > 0 else None


PRECISION = 0.01  # stop once the median's 95 % interval is within +-1 % (three significant figures, near enough)


def time_calls(fn: Callable[[], object], warmup: int = 10, min_calls: int = 200, min_seconds: float = 1.0,
               max_calls: int = 100_000, device: torch.device | None = None,
               precision: float | None = PRECISION) -> Timing:
    """Call ``fn`` ``warmup`` times untimed, then at least ``min_calls``
    times, and on until the median is known to ``precision`` (the half-width
    of its distribution-free 95 % interval, relative) or ``min_seconds`` have
    passed, whichever comes first (``precision=None``: always
    ``min_seconds``). Each sample is one call's wall time (synchronising
    ``device`` first and after when it is CUDA). A quiet machine stops early;
    a noisy one spends the whole budget, and its interval says how well the
    median is known."""
    cuda = device is not None and device.type == "cuda"
    sync = (lambda: torch.cuda.synchronize(device)) if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    samples: list[float] = []
    start = time.perf_counter()
    check = max(min_calls, 6)  # the interval is looked at when the samples grow by a quarter (sorting is not free)
    while True:
        t = time.perf_counter()
        fn()
        sync()
        samples.append(time.perf_counter() - t)
        n = len(samples)
        if n >= max_calls:
            return Timing(samples, "max_calls")
        if n < min_calls:
            continue
        if time.perf_counter() - start >= min_seconds:
            return Timing(samples, "budget")
        if precision is not None and n >= check:
            check = max(n + 1, int(n * 1.25))
            rel = median_ci_relative(samples)
            if rel is not None and rel <= precision:
                return Timing(samples, "precision")


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
