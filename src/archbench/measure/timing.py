"""Timers that say what they cover.

Every timer warms up first, keeps its raw samples, and reports the median and
percentiles. On CUDA the device is synchronised before each clock read, so a
sample covers the kernels' execution, not just their launch.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


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
        return {
            "calls": len(self.samples),
            "p50_seconds": self.percentile(50), "p90_seconds": self.percentile(90),
            "p99_seconds": self.percentile(99), "mean_seconds": statistics.fmean(self.samples),
            "min_seconds": min(self.samples),
            "items_per_call": per_call_items,
            "items_per_second": per_call_items / self.median,
        }


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


def _prepared(model: nn.Module, input_shape, batch_size: int, device, formulation: str, training: bool):
    """(copy of the model, the module to run, a random input batch, device):
    on CPU the ``fast`` formulation (same maths) with a channels-last input."""
    from archbench.train.formulation import fast_cpu_view

    p = next(model.parameters(), None)
    dev = torch.device(device) if device is not None else (p.device if p is not None else torch.device("cpu"))
    m = copy.deepcopy(model).to(dev).train(training)
    run, channels_last = (fast_cpu_view(m) if formulation == "fast" and dev.type == "cpu" else (m, False))
    x = torch.rand(batch_size, *input_shape, device=dev)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return m, run, x, dev


def inference_latency(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 1, device=None,
                      min_calls: int = 200, min_seconds: float = 1.0, formulation: str = "fast") -> dict:
    """Latency of one eval-mode forward pass under ``torch.no_grad`` at
    ``batch_size`` (default 1): the input already on the device, output not
    copied back. On CPU the ``fast`` formulation (same maths) is timed, as
    archbench evaluates."""
    _, run, x, dev = _prepared(model, input_shape, batch_size, device, formulation, training=False)
    with torch.no_grad():
        t = time_calls(lambda: run(x), min_calls=min_calls, min_seconds=min_seconds, device=dev)
    return t.to_dict(per_call_items=batch_size)


def train_step_time(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 64, device=None,
                    formulation: str = "fast", min_calls: int = 50, min_seconds: float = 1.0) -> dict:
    """Time of one training step as archbench trains (forward, cross-entropy,
    backward, Adam update) on a copy, with a fixed random batch already on the
    device (no data loading)."""
    from archbench.train.optim import LeanAdam

    m, run, x, dev = _prepared(model, input_shape, batch_size, device, formulation, training=True)
    y = torch.randint(0, 10, (batch_size,), device=dev)
    opt = LeanAdam([p for p in m.parameters() if p.requires_grad], lr=1e-3)

    def step():
        opt.zero_grad()
        F.cross_entropy(run(x), y).backward()
        opt.step()

    return time_calls(step, warmup=5, min_calls=min_calls, min_seconds=min_seconds, device=dev).to_dict(batch_size)
