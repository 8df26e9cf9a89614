"""Peak memory of one training step, measured, with its breakdown.

On every device, a dispatch-level tracker watches the storage of every tensor
that every aten op returns (forward, backward and optimizer alike) and keeps a
weak reference to it: a storage counts from the op that created it until the
last reference to it (a Python variable, an autograd saved tensor, a
``.grad``) is gone. The peak is the largest sum of live bytes seen at any op
boundary, including the tensors that existed before the step (parameters,
optimizer state, the input batch). Scratch memory *inside* a kernel (e.g. a
oneDNN workspace) is not visible at op boundaries and is not counted.

On CUDA the caching allocator's own peak (``torch.cuda.max_memory_allocated``)
is recorded beside it.

Categories at the peak: parameters, gradients, optimizer state, input batch,
activations (created by the forward pass), temporaries (created by backward or
the optimizer and neither a gradient nor optimizer state).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

CATEGORIES = ("parameters", "gradients", "optimizer_state", "input", "activations", "temporaries")


@dataclass
class _Entry:
    ref: StorageWeakRef
    nbytes: int
    phase: str
    tag: str | None = None


def _storage(t: torch.Tensor):
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

    def _key_and_storage(self, t: torch.Tensor):
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

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
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


def _storage_bytes(tensors) -> int:
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
    peak_bytes: int
    breakdown: dict[str, int]
    before_step_bytes: int
    after_forward_bytes: int
    activations_saved_bytes: int
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
        if e.tag in ("parameters", "input", "optimizer_state"):
            cat = e.tag
        elif key in grad_keys:
            cat = "gradients"
        elif key in state_keys:
            cat = "optimizer_state"
        elif e.phase == "forward":
            cat = "activations"
        else:
            cat = "temporaries"
        out[cat] += e.nbytes
    return out


def measure_step_memory(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 64,
                        make_optimizer=None, warmup_steps: int = 1, device=None,
                        first_step: bool = False) -> StepMemory:
    """Measure one training step's peak memory on a deep copy of ``model``.

    Steady state (default): one warm-up step runs first, so Adam's state
    exists, as in every step after the first. ``first_step=True`` measures
    the very first step with ``torch.optim.Adam``, which allocates its state
    lazily inside that step, as most PyTorch training code does.
    ``make_optimizer(params)`` overrides the optimizer (default: archbench's
    Adam, lr 1e-3). Inputs are random values (memory does not depend on them).
    """
    from archbench.train.optim import LeanAdam, optimizer_state_tensors

    m = copy.deepcopy(model).train()
    dev = torch.device(device) if device is not None else next(m.parameters()).device
    m.to(dev)
    params = [p for p in m.parameters() if p.requires_grad]
    if first_step:
        warmup_steps = 0
        if make_optimizer is None:
            def make_optimizer(ps):
                return torch.optim.Adam(ps, lr=1e-3, fused=True)
    opt = make_optimizer(params) if make_optimizer else LeanAdam(params, lr=1e-3)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch_size, *input_shape, generator=gen).to(dev)
    y = torch.randint(0, 10, (batch_size,), generator=gen).to(dev)

    def step(tracker: LiveTensorTracker | None = None):
        opt.zero_grad(set_to_none=True)
        if tracker is not None:
            tracker.phase = "forward"
        loss = F.cross_entropy(m(x), y)
        after_fwd = saved = 0
        if tracker is not None:
            tracker.sweep()
            after_fwd = tracker.live_bytes
            # What the forward pass leaves alive for backward (plus logits and loss).
            saved = sum(e.nbytes for e in tracker.entries.values() if e.phase == "forward" and e.tag is None)
            tracker.phase = "backward"
        loss.backward()
        if tracker is not None:
            tracker.phase = "optimizer"
        opt.step()
        return after_fwd, saved

    for _ in range(warmup_steps):
        step()
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
        cuda_before = torch.cuda.memory_allocated(dev)
    opt.zero_grad(set_to_none=True)
    tracker = LiveTensorTracker()
    for p in params:
        tracker.register(p, "parameters")
    for b in m.buffers():
        tracker.register(b, "parameters")
    for t in optimizer_state_tensors(opt):
        tracker.register(t, "optimizer_state")
    tracker.register(x, "input")
    tracker.register(y, "input")
    before = tracker.live_bytes
    tracker.peak_bytes = before
    tracker.peak_snapshot = dict(tracker.entries)
    with tracker:
        after_fwd, saved = step(tracker)
    if cuda:
        torch.cuda.synchronize(dev)
    grad_keys = {tracker.key_of(p.grad) for p in params if p.grad is not None}
    state_keys = {tracker.key_of(t) for t in optimizer_state_tensors(opt)}
    breakdown = _classify(tracker.peak_snapshot, grad_keys, state_keys)
    result = StepMemory(
        peak_bytes=tracker.peak_bytes,
        breakdown=breakdown,
        before_step_bytes=before,
        after_forward_bytes=after_fwd,
        activations_saved_bytes=saved,
    )
    if cuda:
        result.cuda_allocator_peak_bytes = int(torch.cuda.max_memory_allocated(dev))
        result.cuda_allocator_before_bytes = int(cuda_before)
    return result


def measure_inference_memory(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 1,
                             device=None) -> dict:
    """Peak live tensor bytes of one eval-mode forward pass under no_grad
    (parameters and input included), on a deep copy."""
    m = copy.deepcopy(model).eval()
    dev = torch.device(device) if device is not None else next(m.parameters()).device
    m.to(dev)
    x = torch.rand(batch_size, *input_shape, device=dev)
    tracker = LiveTensorTracker()
    for p in m.parameters():
        tracker.register(p, "parameters")
    for b in m.buffers():
        tracker.register(b, "parameters")
    tracker.register(x, "input")
    before = tracker.live_bytes
    tracker.peak_bytes = before
    tracker.peak_snapshot = dict(tracker.entries)
    with torch.no_grad(), tracker:
        m(x)
    return {"batch_size": batch_size, "peak_bytes": tracker.peak_bytes, "weights_and_input_bytes": before,
            "activations_peak_bytes": tracker.peak_bytes - before}


def process_peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (Linux/macOS), in bytes."""
    try:
        import resource
        import sys

        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return int(rss) if sys.platform == "darwin" else int(rss) * 1024
    except (ImportError, OSError):
        return None


def profiler_step_peak(model: nn.Module, input_shape=(1, 28, 28), batch_size: int = 64) -> int:
    """An independent measurement of the steady-state step peak on CPU:
    PyTorch profiler's memory timeline (every allocation and free the CPU
    allocator reports) over the same step ``measure_step_memory`` measures.
    Uses the profiler's private timeline API; for cross-checks and tests."""
    from torch.profiler import ProfilerActivity, profile
    from torch.profiler._memory_profiler import MemoryProfileTimeline

    from archbench.train.optim import LeanAdam

    m = copy.deepcopy(model).train().cpu()
    opt = LeanAdam([p for p in m.parameters() if p.requires_grad], lr=1e-3)
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.rand(batch_size, *input_shape, generator=gen)
    y = torch.randint(0, 10, (batch_size,), generator=gen)
    opt.zero_grad()
    F.cross_entropy(m(x), y).backward()
    opt.step()
    opt.zero_grad()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                 with_stack=True) as prof:
        F.cross_entropy(m(x), y).backward()
        opt.step()
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline("cpu")
    return int(max(sum(row) for row in sizes))


def analytic_adam_estimate(param_bytes: int, input_bytes: int = 0, activation_bytes: int = 0) -> dict:
    """The seed notebook's estimate (params + grads + Adam m and v = 4x the
    parameter bytes), plus whatever activation/input bytes are supplied."""
    base = 4 * param_bytes
    return {"params_grads_adam_bytes": base, "total_bytes": base + input_bytes + activation_bytes}
