"""Peak memory of a training step and of inference, measured, with its breakdown.

**The peak is the allocator's.** The step runs once with nothing watching its
ops; the allocator reports every allocation and free -- on CPU through the
profiler's memory events (``torch.profiler``, ``profile_memory=True``), on
CUDA as the caching allocator's peak. The peak is the bytes alive before the
step (parameters, buffers, optimizer state, the step's output slots) plus the
largest excursion above them: it includes memory that kernels allocate and
free inside one op (oneDNN scratch, im2col buffers, cuBLAS workspaces).

**The breakdown is the tracker's.** The same step runs again under a
dispatch-level tracker that watches the storage of every tensor every aten op
returns (forward, backward and optimizer alike) and keeps a weak reference to
it: a storage counts from the op that created it until the last reference to
it (a variable, an autograd saved tensor, a ``.grad``) is gone. At the
tracker's peak its live storages are sorted into parameters (trainable and
frozen), buffers, gradients, optimizer state, input (the batch, labels and the
step's loss/prediction slots), activations (created by the forward pass) and
temporaries (created by backward or the optimizer and neither a gradient nor
optimizer state). ``scratch`` is the allocator's peak minus the tracker's: the
memory no op returned. The tracker's own overhead (and any change it causes in
which kernels run) stays out of the reported peak.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

if TYPE_CHECKING:
    from torch._ops import OpOverload

    from archbench.config import TrainConfig
    from archbench.measure.step import Inference, MeasuredStep
CATEGORIES = ("parameters", "buffers", "gradients", "optimizer_state", "input", "activations", "temporaries",
              "scratch")


@dataclass
class _Entry:
    ref: StorageWeakRef
    nbytes: int
    phase: str
    tag: str | None = None



@contextlib.contextmanager
def quiet_profiler() -> Iterator[None]:
    """Kineto (the profiler's backend) prints a "USDT: ... profiler_start/stop"
    line to stderr around every profile, which would fill a user's terminal
    while costs are measured. Its log level is read from KINETO_LOG_LEVEL when
    a profile starts: raised above its highest level (USDT = 5) inside the
    block, the caller's value restored after."""
    before = os.environ.get("KINETO_LOG_LEVEL")
    os.environ["KINETO_LOG_LEVEL"] = "6"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("KINETO_LOG_LEVEL", None)
        else:
            os.environ["KINETO_LOG_LEVEL"] = before

def _storage(t: torch.Tensor) -> torch.UntypedStorage | None:
    try:
        return t.untyped_storage()
    except (RuntimeError, NotImplementedError):  # sparse/opaque tensors
        return None


class LiveTensorTracker(TorchDispatchMode):
    """Tracks the bytes of live tensor storages across the ops it sees.

    ``register(tensor, tag)`` adds a tensor that existed before tracking began.
    ``phase`` (settable) labels storages created from then on. ``peak_bytes``
    is the maximum of ``live_bytes`` at any op boundary; ``peak_snapshot`` the
    live storages (key -> entry) at that moment.
    """

    def __init__(self) -> None:
        super().__init__()
        self.entries: dict[int, _Entry] = {}
        self.phase = "forward"
        self.live_bytes = 0
        self.peak_bytes = 0
        self.peak_snapshot: dict[int, _Entry] = {}
        self.ops = 0

    def _key_and_storage(self, t: torch.Tensor) -> tuple[int | None, Any]:
        # (key, storage), or (None, None); the storage is Any because track() checks only the key.
        s = _storage(t)
        if s is None or s.device.type == "meta":
            return None, None
        return StorageWeakRef(s).cdata, s

    def track(self, t: torch.Tensor, tag: str | None = None) -> None:
        key, s = self._key_and_storage(t)
        if key is None:
            return
        entry = self.entries.get(key)
        if entry is None:
            entry = _Entry(StorageWeakRef(s), s.nbytes(), self.phase, tag)
            self.entries[key] = entry
            self.live_bytes += entry.nbytes
        elif tag is not None and entry.tag is None:
            entry.tag = tag

    register = track

    def sweep(self) -> None:
        dead = [k for k, e in self.entries.items() if e.ref.expired()]
        for k in dead:
            self.live_bytes -= self.entries.pop(k).nbytes

    def _update_peak(self) -> None:
        if self.live_bytes > self.peak_bytes:
            self.peak_bytes = self.live_bytes
            self.peak_snapshot = dict(self.entries)

    def __torch_dispatch__(self, func: OpOverload, types: Sequence[type], args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        self.sweep()
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        self._update_peak()
        return out

    def key_of(self, t: torch.Tensor) -> int | None:
        return self._key_and_storage(t)[0]


def _storage_bytes(tensors: Iterable[torch.Tensor]) -> int:
    seen, total = set(), 0
    for t in tensors:
        s = _storage(t)
        if s is None:
            continue
        k = StorageWeakRef(s).cdata
        if k not in seen:
            seen.add(k)
            total += s.nbytes()
    return total


@dataclass
class StepMemory:
    """One step's memory. ``peak_bytes`` is the allocator's peak over a step
    run without the tracker (CPU: the profiler's allocation events; CUDA: the
    caching allocator's peak); ``breakdown`` the tracker's categories at its
    own peak (a second run of the same step), plus ``scratch``: what the
    allocator saw beyond the tensors ops returned (kernel workspaces, memory
    an op allocates and frees inside itself), so the categories sum to the
    peak."""

    peak_bytes: int
    breakdown: dict[str, int]
    before_step_bytes: int
    after_forward_bytes: int
    activations_saved_bytes: int
    tracked_peak_bytes: int = 0
    measured_by: str = ""
    cuda_allocator_peak_bytes: int | None = None
    cuda_allocator_before_bytes: int | None = None
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d.update(d.pop("extra"))
        return d


def _classify(snapshot: dict[int, _Entry], grad_keys: set[int | None], state_keys: set[int | None]) -> dict[str, int]:
    out = dict.fromkeys(CATEGORIES, 0)
    for key, e in snapshot.items():
        if e.tag in CATEGORIES:
            cat = e.tag
        elif key in grad_keys:
            cat = "gradients"
        elif key in state_keys:
            cat = "optimizer_state"
        elif e.phase == "data":
            cat = "input"
        elif e.phase == "forward":
            cat = "activations"
        else:
            cat = "temporaries"
        out[cat] += e.nbytes
    return out


MEASURED_BY = {"cpu": "the CPU allocator's allocation events (torch.profiler, profile_memory=True)",
               "cuda": "the CUDA caching allocator's peak (torch.cuda.max_memory_allocated)"}


def allocator_peak(run: Callable[[], object], base_bytes: int, device: torch.device) -> int:
    """``base_bytes`` (what exists before) plus the largest excursion of the
    allocator's live bytes while ``run()`` runs, with nothing else watching
    (no dispatch mode: the peak is not perturbed by a tracker)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        run()
        torch.cuda.synchronize(device)
        return base_bytes + int(torch.cuda.max_memory_allocated(device)) - before
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    with quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    events = [e for e in prof.profiler.kineto_results.events()
              if e.name() == "[memory]" and e.device_type() == DeviceType.CPU]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return base_bytes + peak


def _device_of(step: MeasuredStep | Inference) -> torch.device:
    return step.pool_x.device if hasattr(step, "pool_x") else step.x.device


def step_peak(step: MeasuredStep, warmup: int = 1) -> int:
    """The allocator's peak over one run of ``step`` (a MeasuredStep), after
    ``warmup`` runs, gradients cleared as every step starts."""
    for _ in range(warmup):
        step()
    step.zero_grad()
    return allocator_peak(step, _storage_bytes(t for t, _ in step.tensors_before()), _device_of(step))


def step_memory(make_step: Callable[[], MeasuredStep], first_step: bool = False) -> StepMemory:
    """Peak memory of one step made by ``make_step()`` (a MeasuredStep), with
    its breakdown. Steady state (default): after one warm-up step, as every
    step but the first; ``first_step``: the very first step (an optimizer
    that creates its state lazily does it inside this one)."""
    step = make_step()
    dev = _device_of(step)
    if not first_step:
        step()
    step.zero_grad()
    before = _storage_bytes(t for t, _ in step.tensors_before())
    peak = allocator_peak(step, before, dev)
    if first_step:
        step = make_step()  # the first step again, for the tracker
    step.zero_grad()
    tracker = LiveTensorTracker()
    for t, tag in step.tensors_before():
        tracker.register(t, tag)
    tracker.peak_bytes = tracker.live_bytes
    tracker.peak_snapshot = dict(tracker.entries)
    marks: dict[str, int] = {}
    grad_keys: set[int | None] = set()

    def on_phase(name: str) -> None:
        if name == "bookkeeping":  # the gradients, before the step releases them (its last act)
            grad_keys.update(tracker.key_of(p.grad) for p in step.model.parameters() if p.grad is not None)
        if name == "backward":
            tracker.sweep()
            marks["after_forward"] = tracker.live_bytes
            # What the forward pass leaves alive for backward (plus logits and loss).
            marks["saved"] = sum(e.nbytes for e in tracker.entries.values() if e.phase == "forward" and e.tag is None)
        tracker.phase = name

    step.on_phase = on_phase
    try:
        with tracker:
            step()
    finally:
        step.on_phase = None
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    opt = step.setup.opt
    from archbench.train.optim import optimizer_state_tensors

    grad_keys.update(tracker.key_of(p.grad) for p in step.model.parameters() if p.grad is not None)
    state_keys = {tracker.key_of(t) for t in optimizer_state_tensors(opt)}
    breakdown = _classify(tracker.peak_snapshot, grad_keys, state_keys)
    breakdown["scratch"] = max(0, peak - tracker.peak_bytes)
    return StepMemory(
        peak_bytes=peak, breakdown=breakdown, before_step_bytes=before,
        after_forward_bytes=marks.get("after_forward", 0), activations_saved_bytes=marks.get("saved", 0),
        tracked_peak_bytes=tracker.peak_bytes, measured_by=MEASURED_BY["cuda" if dev.type == "cuda" else "cpu"],
        cuda_allocator_peak_bytes=peak if dev.type == "cuda" else None,
    )


def measure_step_memory(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int | None = None,
                        device: torch.device | str | None = None, first_step: bool = False,
                        cfg: TrainConfig | None = None, reference: bool = False,
                        num_classes: int = 10) -> StepMemory:
    """Peak memory of one training step on a deep copy of ``model``: the step
    ``cfg`` trains (default: the default recipe at ``batch_size``, 64 if
    neither says), or with ``reference`` the plain PyTorch step
    (archbench.measure.step). Inputs are random (memory does not depend on them)."""
    from archbench.config import TrainConfig
    from archbench.measure.step import reference_step, trained_step

    cfg = cfg or TrainConfig(batch_size=batch_size or 64)
    build = reference_step if reference else trained_step
    return step_memory(lambda: build(model, cfg, input_shape, device, batch_size, num_classes), first_step)


def measure_inference_memory(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int = 1,
                             device: torch.device | str | None = None, cfg: TrainConfig | None = None,
                             warmup: int = 1) -> dict:
    """Peak bytes of one evaluation pass (eval mode, no_grad, the recipe's
    test-time views and precision) at ``batch_size``, as the allocator sees
    it, weights and input included, on a deep copy, after ``warmup`` passes
    (lazily built kernels and caches)."""
    from archbench.measure.step import inference_pass

    inf = inference_pass(model, cfg, input_shape, device, batch_size)
    for _ in range(warmup):
        inf()
    before = _storage_bytes(t for t, _ in inf.tensors_before())
    peak = allocator_peak(inf, before, inf.x.device)
    return {"batch_size": batch_size, "views": len(inf.views), "peak_bytes": peak, "weights_and_input_bytes": before,
            "activations_peak_bytes": peak - before}


def process_peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (Linux/macOS), in bytes."""
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss) if sys.platform == "darwin" else int(rss) * 1024
    except (ImportError, OSError):
        return None


def profiler_step_peak(model: nn.Module, input_shape: tuple[int, ...] = (1, 28, 28), batch_size: int | None = None,
                       cfg: TrainConfig | None = None, reference: bool = False,
                       device: torch.device | str | None = None) -> int:
    """An independent measurement of the steady-state step peak on CPU:
    PyTorch profiler's memory timeline (every allocation and free the CPU
    allocator reports, each tensor categorised by the profiler) over the same
    step ``measure_step_memory`` measures. The data pool the batch is gathered
    from (the dataset's stand-in) is left out, as there. Uses the profiler's
    private timeline API; for cross-checks and tests."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from archbench.config import TrainConfig
    from archbench.measure.step import reference_step, trained_step

    cfg = cfg or TrainConfig(batch_size=batch_size or 64)
    step = (reference_step if reference else trained_step)(model, cfg, input_shape, device, batch_size)
    step()
    step.zero_grad()
    with quiet_profiler(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                   with_stack=True) as prof:
        step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    pool = _storage_bytes([step.pool_x, step.pool_y])
    return int(max(sum(row) for row in sizes)) - pool


def analytic_adam_estimate(param_bytes: int, input_bytes: int = 0, activation_bytes: int = 0) -> dict:
    """The seed notebook's estimate (params + grads + Adam m and v = 4x the
    parameter bytes), plus whatever activation/input bytes are supplied."""
    base = 4 * param_bytes
    return {"params_grads_adam_bytes": base, "total_bytes": base + input_bytes + activation_bytes}
