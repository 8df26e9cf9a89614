"""Seeds as one batched model: k seeds of one architecture trained at once,
each with the results it gets when trained alone (issue #14, item 4).

**How.** Each seed's model is built exactly as a separate unit builds it
(``torch.manual_seed(seed)``, then the model), so each starts from its own
initialisation. A *stacked model* then runs all k seeds on one *folded*
batch ``[k·B, C, H, W]``: rows ``i·B … (i+1)·B`` are seed i's images, gathered
with seed i's own permutation (a generator seeded with ``seed``, drawn as
:func:`~archbench.train.loop.train` draws it) and augmented with seed i's own
generator (seeded ``seed + 1_000_003``, the same draws in the same order).
Layers without parameters that round alike on every path (ReLU, max pooling,
flatten, residual adds) work per image, so they run once on the folded
batch. Layers with parameters hold their k seeds' tensors stacked ``[k, ...]``:

* ``nn.Linear`` is one ``baddbmm`` (``[k, B, in] x [k, in, out]`` plus the
  bias as the added matrix), with ``addmm``'s backward per seed (with more
  than one intra-op thread, the forward is one ``addmm`` per seed);
* convolutions and batch norms run once per seed on that seed's rows, with
  the seed's slices of the stacked tensors (views, in a separate run's memory
  layout), so they run the very kernels a separate run runs;
* any other module with parameters or buffers runs once per seed through
  ``torch.func.functional_call`` with the seed's slices;
* GELU, SiLU, sigmoid and other elementwise layers whose vector loop and
  scalar tail round differently run once per seed too.

The loss is the sum over seeds of each seed's mean cross-entropy, reduced per
seed as a separate run reduces it, so the gradient reaching seed i's slices is
seed i's gradient. Adam is elementwise: one call of the fused kernel
:class:`~archbench.train.optim.LeanAdam` uses, with one list entry per seed
and tensor, updates every seed as its own optimizer would. Evaluation copies
each seed's slices back into that seed's own model and runs
:func:`~archbench.train.loop.evaluate` on it, exactly as ``train`` does.

**Exact.** Every seed's initial weights, batches, losses, accuracies, final
weights and buffers, test loss and predictions are bit-identical to a
separate ``train`` of that seed, measured at 1 and 2 intra-op threads
(tests/test_batched.py: the seed MLP and CNN, batch norm, resnet_small's bf16
AdamW + one-cycle + label smoothing + crop/flip + test-time-flip recipe,
LayerNorm/GELU/custom layers, streamed batches). Not verified: other thread
counts, GPUs, and elementwise functions called inside a custom ``forward``
(they run on the folded batch; ``first_batch_bit_identical`` in the results
says whether the first batch's outputs were bit-identical). See
docs/performance.md, "Seeds as one batched model".

**Why not ``torch.vmap``.** vmap over ``functional_call`` gives the same
*function* but (measured) other roundings: its rule for ``linear`` adds the
bias after the product, its convolution and batch norm fold the seeds into
one grouped convolution and one k·C-channel norm; and its Python overhead
(about 1 ms per step on a 2-core CPU) exceeded the per-op overhead that
batching saves for 3 seeds.

**Refused** (:func:`batchable` says why; :func:`train_seeds` raises
:class:`~archbench.errors.UsageError`): layers that draw random numbers while
training (dropout and its variants, RReLU; a separate run draws them from
torch's global generator, which one batched model cannot reproduce per seed);
SyncBatchNorm; lazy, tied or parametrised (``torch.nn.utils.parametrize``) parameters;
modules with hooks; plain tensor attributes that differ between seeds; a
forward pass that mixes images of a batch (checked on the first batch: the
stacked model's outputs must be each seed's own); and CUDA with
``cuda_graphs`` on (the batched step is not captured as a CUDA graph, and an
eager GPU step costs more than batching saves; with ``cuda_graphs`` false it
runs eagerly, untested on a GPU so far). Checkpoints and resume are not
offered: an interrupted batch trains again from its start.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from archbench.config import TrainConfig
from archbench.errors import TrainingError, UsageError
from archbench.train.formulation import fast_cpu_view
from archbench.train.loop import (
    EpochStats,
    EvalResult,
    ProgressFactory,
    TrainResult,
    _non_finite_evaluation,
    evaluate,
    gather,
    make_optimizer,
    prepare_splits,
    resolve_device,
    set_lr,
    tta_views,
)

__all__ = ["batchable", "train_seeds"]

_SEPARATELY = "train the seeds separately"

# Layers that draw random numbers in training mode. A separate run draws them from torch's global generator
# (seeded by torch.manual_seed(seed) before the model was built, then advanced by the build): a batched run has one
# generator for all seeds, so its draws could only be other draws.
_RANDOM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.RReLU,
)
_CONVS: tuple[type[nn.Module], ...] = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
# Elementwise layers whose vectorised loop and scalar tail (the last numel % vector width elements) round
# differently (measured for GELU, SiLU, sigmoid): on a folded batch the tail would fall on other elements than in a
# separate run, so they run once per seed. ReLU, max pooling, flatten and adds round alike on every path.
_TAIL_SENSITIVE: tuple[type[nn.Module], ...] = (
    nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.ELU, nn.SELU, nn.CELU, nn.Softplus, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.LogSigmoid, nn.Softsign, nn.Tanhshrink, nn.GLU,
)
_BATCH_NORMS: tuple[type[nn.Module], ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

ModelSource = str | Callable[[], nn.Module]


def _layer_name(name: str, module: nn.Module) -> str:
    return f"layer {name!r} ({type(module).__name__})" if name else f"the model itself ({type(module).__name__})"


def batchable(model: nn.Module, cfg: TrainConfig) -> str | None:
    """Why ``model`` cannot be trained under ``cfg`` as one batched model of
    several seeds with each seed's separate-run results (None: it can).
    Static checks; a forward pass that mixes the images of a batch is refused
    by :func:`train_seeds` on its first batch."""
    owners: dict[int, str] = {}
    for name, m in model.named_modules():
        if isinstance(m, _RANDOM_LAYERS):
            p = getattr(m, "p", None)
            if isinstance(m, nn.RReLU) or (p is not None and p > 0):
                what = f"p={p}" if p is not None else f"lower={m.lower}, upper={m.upper}"
                return (f"{_layer_name(name, m)} draws random numbers while training ({what}): a separate run "
                        "draws them from torch's global generator, one stream per seed, which one batched model "
                        f"cannot reproduce; {_SEPARATELY} (or set its p to 0)")
        if isinstance(m, nn.SyncBatchNorm):
            return f"{_layer_name(name, m)} synchronises statistics across processes; {_SEPARATELY}"
        if getattr(m, "parametrizations", None) is not None:
            return (f"{_layer_name(name, m)} has parametrised weights (torch.nn.utils.parametrize), which the "
                    f"batched model does not stack; {_SEPARATELY}")
        for pname, p in m.named_parameters(recurse=False):
            if isinstance(p, nn.parameter.UninitializedParameter):
                return (f"parameter {name + '.' if name else ''}{pname} is lazy (not initialised before the first "
                        f"batch); run one batch through the model before batching, or {_SEPARATELY}")
            where = f"{name + '.' if name else ''}{pname}"
            if id(p) in owners:
                return (f"parameter {where} is the same tensor as {owners[id(p)]} (tied weights), which the "
                        f"batched model would stack twice; {_SEPARATELY}")
            owners[id(p)] = where
        for bname, b in m.named_buffers(recurse=False):
            if isinstance(b, nn.parameter.UninitializedBuffer):
                return f"buffer {name + '.' if name else ''}{bname} is lazy; {_SEPARATELY}"
        if m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks:
            return (f"{_layer_name(name, m)} has hooks (weight_norm, spectral_norm or your own), which the batched "
                    f"model would not run per seed; {_SEPARATELY}")
    if not any(p.requires_grad for p in model.parameters()):
        return (f"the model {type(model).__name__} has no trainable parameters, so there is nothing to train "
                "(every parameter has requires_grad=False, or it has none)")
    device = str(cfg.device)
    if (device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())) and cfg.cuda_graphs:
        return ("the batched step runs eagerly (it is not captured as a CUDA graph), and on a GPU an eager step "
                "costs more than a graphed one saves by batching (the seed study, MLP and CNN, one seed, on an H200: "
                f"18.9 s eager vs 1.98 s graphed); set cuda_graphs to false to batch anyway, or {_SEPARATELY}")
    if str(cfg.precision) not in ("fp32", "bf16"):  # pragma: no cover - config validation keeps these two
        return f"precision {cfg.precision!r} is not supported by the batched path; {_SEPARATELY}"
    return None


def _build(source: ModelSource, seed: int, input_shape: tuple[int, ...] | None,
           num_classes: int | None) -> nn.Module:
    """Seed ``seed``'s model, initialised as a separate unit's: the global
    generator seeded with ``seed`` just before the model is built."""
    torch.manual_seed(seed)
    if isinstance(source, str):  # as archbench.unit.build_model builds a unit's model (which imports this module)
        from archbench.models import create_model

        return create_model(source, input_shape=input_shape, num_classes=num_classes)
    model = source()
    if not isinstance(model, nn.Module):
        raise UsageError(f"the model factory {source!r} returned {type(model).__name__}, not a torch.nn.Module.")
    return model


def _plain_tensor_attributes(model: nn.Module) -> dict[str, torch.Tensor]:
    """Tensors held as plain attributes (neither parameters nor buffers):
    the stacked model keeps seed 0's."""
    out = {}
    for mname, m in model.named_modules():
        for aname, v in vars(m).items():
            if isinstance(v, torch.Tensor) and not aname.startswith("_"):
                out[f"{mname}.{aname}" if mname else aname] = v
    return out


def _check_same_architecture(models: Sequence[nn.Module], seeds: Sequence[int]) -> None:
    def signature(m: nn.Module) -> list[tuple[Any, ...]]:
        return ([(n, type(mod).__name__) for n, mod in m.named_modules()]
                + [(n, tuple(p.shape), p.stride(), p.dtype, p.requires_grad) for n, p in m.named_parameters()]
                + [(n, tuple(b.shape), b.stride(), b.dtype) for n, b in m.named_buffers()])

    want = signature(models[0])
    for m, s in zip(models[1:], seeds[1:]):
        if signature(m) != want:
            raise UsageError(f"seed {s}'s model has other layers, parameters or buffers (names, shapes, dtypes) than "
                             f"seed {seeds[0]}'s: seeds batched together must share one architecture; "
                             f"{_SEPARATELY}.")
    attrs0 = _plain_tensor_attributes(models[0])
    for m, s in zip(models[1:], seeds[1:]):
        attrs = _plain_tensor_attributes(m)
        for name, t in attrs0.items():
            other = attrs.get(name)
            if other is None or other.shape != t.shape or not torch.equal(other, t):
                raise UsageError(f"the tensor attribute {name!r} (neither a parameter nor a buffer) differs between "
                                 f"seed {seeds[0]} and seed {s}: one batched model would give every seed seed "
                                 f"{seeds[0]}'s; register it as a buffer, or {_SEPARATELY}.")


# ---------------------------------------------------------------------------------------------------------------
# Stacked tensors and the optimizer


def _is_dense(t: torch.Tensor) -> bool:
    """Whether ``t``'s elements fill ``t.numel()`` consecutive memory slots
    (some permutation of its dimensions is contiguous)."""
    expected = 1
    for size, stride in sorted(((sz, st) for sz, st in zip(t.shape, t.stride()) if sz != 1), key=lambda d: d[1]):
        if stride != expected:
            return False
        expected *= size
    return True


def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """``tensors`` stacked along a new first dimension, each slice with the
    very strides of its source: a channels-last convolution weight stays
    channels-last, even where one channel makes the layout ambiguous (oneDNN
    picks its kernels from the strides; the optimizer visits elements in memory order)."""
    first = tensors[0]
    dense = _is_dense(first) and all(t.stride() == first.stride() for t in tensors)
    shape = (len(tensors), *first.shape)
    if dense:
        out = torch.empty_strided(shape, (first.numel(), *first.stride()), dtype=first.dtype, device=first.device)
    else:
        out = torch.empty(shape, dtype=first.dtype, device=first.device)
    with torch.no_grad():
        for i, t in enumerate(tensors):
            out[i].copy_(t)
    return out


def _dense_order(t: torch.Tensor) -> list[int]:
    """The permutation of ``t``'s dimensions that makes it contiguous, the
    seed dimension (0) first."""
    strides = t.stride()
    perm = [0, *sorted(range(1, t.dim()), key=lambda d: (-strides[d], d))]
    if not t.permute(perm).is_contiguous():  # pragma: no cover - _stack makes every stacked tensor dense
        raise AssertionError(f"stacked tensor of strides {t.stride()} is not dense")
    return perm


class _SeedViewsAdam:
    """Adam (or AdamW) over stacked ``[k, ...]`` tensors, bit-identical per
    seed to :class:`~archbench.train.optim.LeanAdam` on that seed's tensors.

    Adam is elementwise, but the fused CPU kernel runs a vectorised loop and
    a scalar tail (the last ``numel % vector width`` elements of a tensor),
    whose roundings differ. Passing each seed's slice as its own list entry,
    in the separate run's memory order, makes the kernel split every slice
    exactly as a separate run splits its tensor."""

    def __init__(self, params: Sequence[torch.Tensor], k: int, lr: float, betas: tuple[float, float], eps: float,
                 weight_decay: float, decoupled: bool):
        self.params, self.k = list(params), k
        self.lr, (self.beta1, self.beta2), self.eps, self.weight_decay = lr, betas, eps, weight_decay
        self.kernel = torch._fused_adamw_ if decoupled else torch._fused_adam_
        self.perms = [_dense_order(p) for p in params]
        self.exp_avg = [torch.zeros_like(p) for p in params]  # zeros_like keeps a dense tensor's strides
        self.exp_avg_sq = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]
        self._param_views = [self._slices(p.detach(), j) for j, p in enumerate(params)]
        self._exp_avg_views = [self._slices(t, j) for j, t in enumerate(self.exp_avg)]
        self._exp_avg_sq_views = [self._slices(t, j) for j, t in enumerate(self.exp_avg_sq)]

    def _slices(self, t: torch.Tensor, j: int) -> list[torch.Tensor]:
        return list(t.permute(self.perms[j]).unbind(0))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        live = [j for j, p in enumerate(self.params) if p.grad is not None]
        if not live:
            return
        torch._foreach_add_([self.steps[j] for j in live], 1)
        params: list[torch.Tensor] = []
        grads: list[torch.Tensor] = []
        exp_avg: list[torch.Tensor] = []
        exp_avg_sq: list[torch.Tensor] = []
        steps: list[torch.Tensor] = []
        for j in live:
            p = self.params[j]
            g = p.grad
            assert g is not None
            if g.stride() != p.stride():  # AccumulateGrad gives a dense parameter's layout; be safe anyway
                g = torch.empty_like(p).copy_(g)
            params += self._param_views[j]
            grads += self._slices(g, j)
            exp_avg += self._exp_avg_views[j]
            exp_avg_sq += self._exp_avg_sq_views[j]
            steps += [self.steps[j]] * self.k  # the kernel only reads the step count
        self.kernel(params, grads, exp_avg, exp_avg_sq, [], steps, lr=self.lr, beta1=self.beta1,
                    beta2=self.beta2, weight_decay=self.weight_decay, eps=self.eps, amsgrad=False, maximize=False)


# ---------------------------------------------------------------------------------------------------------------
# The stacked model: layers that run k seeds on a folded batch [k·B, ...]


class _StackedLinearFn(torch.autograd.Function):
    """``baddbmm(bias, x, weightᵀ)`` on stacked tensors (``x`` ``[k, B, in]``,
    ``weight`` ``[k, out, in]``, ``bias`` ``[k, out]`` or None), whose
    backward is a separate run's ``addmm`` backward, per seed: ``grad_x = g·W``,
    ``grad_W = gᵀ·x`` (in ``[out, in]`` order, so the gradient has the
    weight's layout and needs no transposing copy), ``grad_b = Σ_B g``.

    ``baddbmm`` adds the bias where ``addmm`` does (MKL starts its accumulator
    from it); ``bmm`` products round as ``mm`` does with one thread. With
    several threads the forward is one ``addmm`` per seed: MKL then splits a
    long sum (``in`` of 784 or 800, say) among threads, which ``baddbmm``
    does not (the backward's products measured equal either way)."""

    @staticmethod
    def forward(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if torch.get_num_threads() == 1 or x.device.type != "cpu":
            if bias is None:
                return torch.bmm(x, weight.transpose(1, 2))
            return torch.baddbmm(bias.unsqueeze(1), x, weight.transpose(1, 2))
        # With several threads MKL may split one product's sum among threads (for long sums), which a batched
        # product does not: one addmm (mm) per seed, written in place, is the separate run's very computation.
        out = x.new_empty(x.shape[0], x.shape[1], weight.shape[1])
        for i in range(x.shape[0]):
            if bias is None:
                torch.mm(x[i], weight[i].t(), out=out[i])
            else:
                torch.addmm(bias[i], x[i], weight[i].t(), out=out[i])
        return out

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, weight, bias = inputs
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, *grads: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        (g,) = grads
        x, weight = ctx.saved_tensors
        gx = torch.bmm(g, weight) if ctx.needs_input_grad[0] else None
        gw = torch.bmm(g.transpose(1, 2), x) if ctx.needs_input_grad[1] else None
        gb = g.sum(1) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return gx, gw, gb


def _rows(x: torch.Tensor, k: int) -> Sequence[torch.Tensor]:
    """Each seed's rows of a folded tensor (views; autograd joins their gradients with one cat)."""
    if x.shape[0] % k:
        raise RuntimeError(f"a layer got {x.shape[0]} rows, not a multiple of the {k} seeds batched together")
    return x.split(x.shape[0] // k)


class _StackedLayer(nn.Module):
    """Base of the stacked layers: ``template`` (seed 0's layer, for its
    configuration) and the stacked tensors, registered under the template's
    own names (``weight``, ``bias``, ``running_mean``, ...; a dotted name of a
    submodule's tensor with ``__`` for each dot)."""

    template: Any  # set with object.__setattr__: not a submodule (its own tensors are not trained)

    def __init__(self, template: nn.Module, k: int, params: dict[str, torch.Tensor],
                 buffers: dict[str, torch.Tensor]):
        super().__init__()
        object.__setattr__(self, "template", template)
        self._k = k  # underscored: the stacked tensors take the template's names (weight, k, names, ...)
        self._param_names = list(params)
        self._buffer_names = list(buffers)
        for name, t in params.items():
            self.register_parameter(name.replace(".", "__"), nn.Parameter(t, requires_grad=t.requires_grad))
        for name, t in buffers.items():
            self.register_buffer(name.replace(".", "__"), t)

    def stacked(self, name: str) -> torch.Tensor | None:
        return getattr(self, name.replace(".", "__"), None)

    def seed_slices(self, name: str) -> Sequence[torch.Tensor | None]:
        t = self.stacked(name)
        return [None] * self._k if t is None else t.unbind(0)


class _Linear(_StackedLayer):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.stacked("weight"), self.stacked("bias")
        assert weight is not None
        x3 = x.reshape(self._k, -1, x.shape[-1])
        dev = x.device.type
        if torch.is_autocast_enabled(dev):
            # What autocast does for addmm, by hand (it does not reach into an autograd.Function): every input
            # cast to the autocast dtype (casts autograd undoes in the backward), the product in that dtype.
            dt = torch.get_autocast_dtype(dev)
            with torch.autocast(dev, enabled=False):
                out = _StackedLinearFn.apply(x3.to(dt), weight.to(dt), None if bias is None else bias.to(dt))
        else:
            out = _StackedLinearFn.apply(x3, weight, bias)
        return out.reshape(*x.shape[:-1], out.shape[-1])


class _Conv(_StackedLayer):
    """A convolution run once per seed (the separate run's kernel on the
    seed's rows and weights)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = type(self.template)._conv_forward
        outs = [conv(self.template, xi, w, b)
                for xi, w, b in zip(_rows(x, self._k), self.seed_slices("weight"), self.seed_slices("bias"))]
        return torch.cat(outs)


class _BatchNorm(_StackedLayer):
    """``_BatchNorm.forward`` with ``F.batch_norm`` once per seed; the running
    statistics are views of the stacked buffers, updated in place as each
    separate run updates its own."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.template
        m._check_input_dim(x)
        factor = 0.0 if m.momentum is None else m.momentum
        count = self.stacked("num_batches_tracked")
        if self.training and m.track_running_stats and count is not None:
            count.add_(1)  # every seed has taken the same number of steps
            factor = 1.0 / float(count[0]) if m.momentum is None else m.momentum  # None: a cumulative average
        mean, var = self.stacked("running_mean"), self.stacked("running_var")
        bn_training = self.training or (mean is None and var is None)
        running = not self.training or m.track_running_stats
        outs = [F.batch_norm(xi, rm if running else None, rv if running else None, w, b, bn_training, factor, m.eps)
                for xi, rm, rv, w, b in zip(_rows(x, self._k), self.seed_slices("running_mean"),
                                            self.seed_slices("running_var"), self.seed_slices("weight"),
                                            self.seed_slices("bias"))]
        return torch.cat(outs)


class _PerSeed(_StackedLayer):
    """Any other module with parameters or buffers, run once per seed with
    ``functional_call`` on its template and the seed's slices; tensor
    arguments are split into the seeds' rows, tensor results joined."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        k = self._k
        split_args = [_rows(a, k) if isinstance(a, torch.Tensor) else [a] * k for a in args]
        split_kwargs = {key: _rows(v, k) if isinstance(v, torch.Tensor) else [v] * k for key, v in kwargs.items()}
        slices = {n: self.seed_slices(n) for n in self._param_names + self._buffer_names}
        if self.template.training != self.training:
            self.template.train(self.training)
        outs = []
        for i in range(k):
            state: dict[str, torch.Tensor] = {}
            for n, per in slices.items():
                t = per[i]
                if t is not None:
                    state[n] = t
            outs.append(functional_call(self.template, state, tuple(a[i] for a in split_args),
                                        {key: v[i] for key, v in split_kwargs.items()}))
        return _join(outs)


class _SeedRows(nn.Module):
    """A parameter-free layer run once per seed, on the seed's rows."""

    def __init__(self, layer: nn.Module, k: int):
        super().__init__()
        self.layer, self.k = layer, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.layer(xi) for xi in _rows(x, self.k)])


def _join(outs: list[Any]) -> Any:
    first = outs[0]
    if first is None and all(o is None for o in outs):
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(outs)
    if isinstance(first, tuple | list):
        return type(first)(_join([o[j] for o in outs]) for j in range(len(first)))
    raise RuntimeError(f"a layer run once per seed returned {type(first).__name__}, not tensors")


def _stacked_model(views: Sequence[nn.Module], k: int) -> tuple[nn.Module, list[tuple[str, torch.Tensor]], set[str]]:
    """The stacked model of the seeds' ``views`` (their modules as trained:
    the fast CPU view, or the model), every stacked tensor with its name in
    the views, and the kinds of layers run once per seed through ``functional_call``."""
    per_seed = [dict(v.named_parameters()) | dict(v.named_buffers()) for v in views]
    names: list[tuple[str, torch.Tensor]] = []
    generic: set[str] = set()

    def rewrite(module: nn.Module, prefix: str) -> nn.Module | None:
        if type(module) in _TAIL_SENSITIVE:
            return _SeedRows(module, k)
        if not (type(module) in _BATCH_NORMS  # even without tensors: its batch statistics are per seed
                or any(True for _ in module.parameters(recurse=False))
                or any(True for _ in module.buffers(recurse=False))):
            for child_name, child in list(module.named_children()):
                rep = rewrite(child, f"{prefix}{child_name}.")
                if rep is not None:
                    setattr(module, child_name, rep)
            return None
        params = {n: _stack([ps[prefix + n] for ps in per_seed]).requires_grad_(p.requires_grad)
                  for n, p in module.named_parameters()}
        buffers = {n: _stack([ps[prefix + n] for ps in per_seed]) for n, _ in module.named_buffers()}
        kind: type[_StackedLayer]
        if type(module) is nn.Linear:
            kind = _Linear
        elif type(module) in _CONVS:
            kind = _Conv
        elif type(module) in _BATCH_NORMS:
            kind = _BatchNorm
        else:
            kind = _PerSeed
            generic.add(type(module).__name__)
        layer = kind(module, k, params, buffers)
        layer.train(module.training)
        for n in [*params, *buffers]:
            t = layer.stacked(n)
            assert t is not None
            names.append((prefix + n, t))
        return layer

    base = copy.deepcopy(views[0])
    root = rewrite(base, "")
    return (root if root is not None else base), names, generic


# ---------------------------------------------------------------------------------------------------------------
# One step, the data, the loss


def _augment_seeds(xb: torch.Tensor, k: int, pad: int, flip: bool, gens: Sequence[torch.Generator]) -> torch.Tensor:
    """:func:`~archbench.train.loop.augment` of each seed's rows of the folded
    batch with the seed's generator, as one gather: each generator draws what
    ``augment`` draws for its ``b`` images (``dy``, ``dx``, then the flip
    mask); crops and flips are exact index arithmetic, so the images are
    those of k separate ``augment`` calls."""
    n, c, h, w = xb.shape
    b = n // k
    dev = xb.device
    wp = w + 2 * pad
    rows = torch.arange(h, device=dev).expand(n, h)
    cols = torch.arange(w, device=dev).expand(n, w)
    dys: list[torch.Tensor] = []
    dxs: list[torch.Tensor] = []
    masks: list[torch.Tensor] = []
    for g in gens:
        if pad:
            dys.append(torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=g))
            dxs.append(torch.randint(0, 2 * pad + 1, (b, 1), device=dev, generator=g))
        if flip:
            masks.append(torch.rand(b, device=dev, generator=g) < 0.5)
    if pad:
        rows = rows + torch.cat(dys)
    if flip:
        cols = torch.where(torch.cat(masks)[:, None], (w - 1) - cols, cols)
    if pad:
        cols = cols + torch.cat(dxs)
    src = (rows[:, :, None] * wp + cols[:, None, :]).reshape(n, 1, h * w).expand(n, c, h * w)
    xp = F.pad(xb, (pad, pad, pad, pad)) if pad else xb
    out = xp.reshape(n, c, -1).gather(2, src).view(n, c, h, w)
    return out.contiguous(memory_format=torch.channels_last) if xb.is_contiguous(
        memory_format=torch.channels_last) and c > 1 else out


def _seed_losses(logits: torch.Tensor, yb: torch.Tensor, k: int, label_smoothing: float) -> torch.Tensor:
    """Each seed's mean cross-entropy, ``(k,)``, each reduced as a separate
    run reduces its batch. ``F.cross_entropy`` is ``nll_loss(log_softmax(x))``:
    the log-softmax works row by row, so it runs once on the folded logits;
    the mean is taken per seed. With label smoothing, ``F.cross_entropy`` per seed."""
    if label_smoothing:
        return torch.stack([F.cross_entropy(x, y, label_smoothing=label_smoothing)
                            for x, y in zip(_rows(logits, k), _rows(yb, k))])
    logp = F.log_softmax(logits, 1)
    return torch.stack([F.nll_loss(lp, y) for lp, y in zip(_rows(logp, k), _rows(yb, k))])


class _FoldedStep:
    """One training step of k seeds on a folded batch: zero grads, forward,
    per-seed losses summed, backward, one optimizer step."""

    def __init__(self, model: nn.Module, opt: Any, k: int, label_smoothing: float,
                 autocast_dtype: torch.dtype | None):
        self.model, self.opt, self.k = model, opt, k
        self.label_smoothing, self.autocast_dtype = label_smoothing, autocast_dtype

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, loss_out: torch.Tensor, pred_out: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        if self.autocast_dtype is None:
            logits = self.model(xb)
        else:
            with torch.autocast(xb.device.type, dtype=self.autocast_dtype, cache_enabled=False):
                logits = self.model(xb)
            logits = logits.float()
        losses = _seed_losses(logits, yb, self.k, self.label_smoothing)
        losses.sum().backward()
        self.opt.step()
        with torch.no_grad():
            loss_out.copy_(losses.detach())
            pred_out.copy_(logits.detach().view(self.k, -1, logits.shape[-1]).argmax(2))


def _check_per_image(stacked: nn.Module, views: Sequence[nn.Module], xb: torch.Tensor, k: int,
                     amp: torch.dtype | None, model_name: str) -> bool:
    """Refuse a model whose forward mixes the images of a batch: in eval mode
    (no statistics updated, nothing drawn), the stacked model's outputs on the
    first folded batch must be each seed's own model's on its rows, within
    float tolerance (an elementwise function called inside a custom forward
    may round its vector loop's tail otherwise). Returns whether they are
    bit-identical."""
    modes = [m.training for m in stacked.modules()], [[m.training for m in v.modules()] for v in views]
    stacked.eval()
    for v in views:
        v.eval()
    try:
        with torch.no_grad(), torch.autocast(xb.device.type, dtype=amp or torch.bfloat16, enabled=amp is not None):
            try:
                together = stacked(xb).float()
            except RuntimeError as exc:
                raise UsageError(f"the model {model_name} fails on a batch of {k} seeds' images ({k}·B rows): "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (does its "
                                 f"forward assume the batch size?); {_SEPARATELY}.") from exc
            identical = True
            # bf16 keeps 8 bits of mantissa: a product rounded otherwise differs by a percent
            rtol, atol = (1e-3, 1e-4) if amp is None else (5e-2, 5e-2)
            for i, (v, xi, out) in enumerate(zip(views, _rows(xb, k), _rows(together, k))):
                alone = v(xi).float()
                identical = identical and torch.equal(out, alone)
                if not torch.allclose(out, alone, rtol=rtol, atol=atol):
                    raise UsageError(f"the model {model_name} gives seed {i} other outputs when {k} seeds' images "
                                     "share a batch than on its own images: its forward mixes the images of a batch "
                                     f"(or depends on the batch size), so batching would change results; "
                                     f"{_SEPARATELY}.")
            return identical
    finally:
        for m, t in zip(stacked.modules(), modes[0]):
            m.training = t
        for v, ts in zip(views, modes[1]):
            for m, t in zip(v.modules(), ts):
                m.training = t


# ---------------------------------------------------------------------------------------------------------------
# Training


def train_seeds(ref_or_factory: ModelSource, seeds: Sequence[int], train_x: torch.Tensor, train_y: torch.Tensor,
                test_x: torch.Tensor | None, test_y: torch.Tensor | None, cfg: TrainConfig, *,
                input_shape: tuple[int, ...] | None, num_classes: int | None,
                val_x: torch.Tensor | None = None, val_y: torch.Tensor | None = None,
                progress: ProgressFactory | None = None, stream: bool = False) -> list[TrainResult]:
    """Train one architecture for every seed in ``seeds`` as one batched
    model; one :class:`~archbench.train.loop.TrainResult` per seed, in order,
    as :func:`~archbench.train.loop.train` returns it for that seed alone.

    ``ref_or_factory``: a model reference (built with
    :func:`archbench.models.create_model` after seeding, as ``archbench.unit.build_model`` builds a unit's
    model, for ``input_shape``/``num_classes``), or
    a callable taking no arguments, called right after
    ``torch.manual_seed(seed)``. Data arguments are as for ``train``.

    Each result's ``extra`` holds ``model`` (the seed's trained
    ``nn.Module``, to save) and ``batched`` (the seeds in the batch, the
    batch's wall-clock training seconds, the layer kinds run once per seed
    through ``functional_call``); its ``train_seconds`` and per-epoch
    ``seconds`` are the seed's share (the batch's time divided by k), its
    evaluation times its own. On CUDA the step runs eagerly (no CUDA graphs):
    only with ``cuda_graphs`` false in ``cfg``. Raises
    :class:`~archbench.errors.UsageError` for a model that cannot be batched
    with each seed's own results (see :func:`batchable`), and
    :class:`~archbench.errors.TrainingError` when a seed's loss stops being
    finite (naming the seed; the other seeds' training stops with it).
    """
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise UsageError("train_seeds needs at least one seed.")
    k = len(seeds)
    device = resolve_device(cfg.device)
    models = [_build(ref_or_factory, s, input_shape, num_classes).to(device).train() for s in seeds]
    name = repr(ref_or_factory) if isinstance(ref_or_factory, str) else type(models[0]).__name__
    reason = batchable(models[0], cfg)
    if reason is not None:
        raise UsageError(f"the seeds of the model {name} cannot be trained as one batched model: {reason}.")
    _check_same_architecture(models, seeds)
    channels_last = False
    views: list[nn.Module] = []
    for m in models:
        if cfg.formulation == "fast" and device.type == "cpu":
            v, channels_last = fast_cpu_view(m)
        else:
            v = m
        views.append(v)
    amp = torch.bfloat16 if cfg.precision == "bf16" else None
    stacked, stacked_names, generic = _stacked_model(views, k)
    per_seed = [dict(v.named_parameters()) | dict(v.named_buffers()) for v in views]

    # Data, as train() prepares it.
    X, Y, Xt, Yt, Xv, Yv = prepare_splits(train_x, train_y, test_x, test_y, val_x, val_y, device,
                                          channels_last, stream)
    n = X.shape[0]
    if n == 0:
        raise UsageError("the training set is empty (check --train-limit).")
    bs = min(cfg.batch_size, n)
    steps_per_epoch = math.ceil(n / bs)
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    aug_gens = [torch.Generator(device=device).manual_seed(s + 1_000_003) for s in seeds]
    augmenting = bool(cfg.augment_crop or cfg.augment_flip)

    def batch(idx: torch.Tensor) -> torch.Tensor:
        """The folded batch: seed i's images at ``idx[i]`` in rows ``i·b … (i+1)·b``, augmented per seed."""
        xb = gather(X, idx.reshape(-1), device, channels_last, stream)
        if augmenting:
            xb = _augment_seeds(xb, k, cfg.augment_crop, cfg.augment_flip, aug_gens)
        return xb

    trainable = [p for p in stacked.parameters() if p.requires_grad]
    if device.type == "cpu":
        opt: Any = _SeedViewsAdam(trainable, k, cfg.lr, (cfg.beta1, cfg.beta2), cfg.eps, cfg.weight_decay,
                                  decoupled=cfg.optimizer == "adamw")
    else:  # torch's fused Adam on the stacked tensors: elementwise, so k independent optimizers
        opt = make_optimizer(trainable, cfg, device)
    step = _FoldedStep(stacked, opt, k, cfg.label_smoothing, amp)

    def unstack(i: int) -> None:
        """Seed i's current weights and buffers into its own model."""
        with torch.no_grad():
            for nm, t in stacked_names:
                per_seed[i][nm].copy_(t[i])

    step_loss = torch.zeros(k, steps_per_epoch, device=device)
    step_size = torch.full((steps_per_epoch,), float(bs), device=device)
    if n % bs:
        step_size[-1] = n % bs
    preds = torch.zeros(k, n, dtype=torch.long, device=device)
    total_steps = steps_per_epoch * cfg.epochs
    histories: list[list[EpochStats]] = [[] for _ in seeds]
    total_train = 0.0
    evs: list[EvalResult | None] = [None] * k
    checked = first_identical = False
    for epoch in range(1, cfg.epochs + 1):
        perms = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        bar = progress(total=n * k, desc=f"epoch {epoch}/{cfg.epochs} ({k} seeds)", unit="img") if progress else None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for i in range(steps_per_epoch):
            lo, hi = i * bs, min((i + 1) * bs, n)
            idx = perms[:, lo:hi]
            if cfg.schedule != "constant":
                lr = cfg.lr_at((epoch - 1) * steps_per_epoch + i, total_steps)
                if isinstance(opt, _SeedViewsAdam):
                    opt.lr = lr
                else:
                    set_lr(opt, lr)
            xb = batch(idx)
            if not checked:  # before any weight changes: the seeds' own models still hold the stacked weights
                t_check = time.perf_counter()
                try:
                    first_identical = _check_per_image(stacked, views, xb, k, amp, name)
                except UsageError:
                    if bar is not None:
                        bar.close()
                    raise
                checked = True
                t0 += time.perf_counter() - t_check  # not training time
            step(xb, Y.index_select(0, idx.reshape(-1)), step_loss[:, i], preds[:, lo:hi])
            if bar is not None:
                bar.update(k * (hi - lo))
                if device.type == "cpu" and i % 100 == 99:
                    bar.set_postfix_str(f"loss {float(step_loss[:, i - 99:i + 1].mean()):.4f}")
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds = time.perf_counter() - t0
        total_train += seconds
        # Per seed, as train() reduces them (a reduction along dim 1 of (k, steps) would round otherwise).
        train_loss = [float((step_loss[j] * step_size).sum()) / n for j in range(k)]
        train_acc = [int((preds[j] == Y.index_select(0, perms[j])).sum()) / n for j in range(k)]
        for s, loss in zip(seeds, train_loss):
            if not math.isfinite(loss):
                if bar is not None:
                    bar.close()
                raise TrainingError(f"training loss of seed {s} became {loss} in epoch {epoch} (lr {cfg.lr}); "
                                    f"lower the learning rate or check the model (the batch of {k} seeds stops "
                                    "with it: train the seeds separately to keep the others).")
        for j in range(k):
            unstack(j)
            t1 = time.perf_counter()
            test_loss = test_acc = val_loss = val_acc = None
            # The learning curve is evaluated on one view, as train() does.
            if Xv is not None:
                assert Yv is not None  # val_x and val_y are passed together
                vev = evaluate(views[j], Xv, Yv, cfg.eval_batch_size, channels_last, amp)
                val_loss, val_acc = vev.loss, vev.accuracy
                if Yv.numel() and not math.isfinite(val_loss):
                    if bar is not None:
                        bar.close()
                    raise _non_finite_evaluation(val_loss, epoch, "validation")
            elif Xt is not None:
                assert Yt is not None  # test_x and test_y are passed together
                ev = evaluate(views[j], Xt, Yt, cfg.eval_batch_size, channels_last, amp)
                evs[j] = ev
                test_loss, test_acc = ev.loss, ev.accuracy
                if Yt.numel() and not math.isfinite(test_loss):
                    if bar is not None:
                        bar.close()
                    raise _non_finite_evaluation(test_loss, epoch)
            eval_seconds = time.perf_counter() - t1
            histories[j].append(EpochStats(epoch, train_loss[j], train_acc[j], test_loss, test_acc, seconds / k,
                                           eval_seconds, val_loss, val_acc))
        if bar is not None:
            bar.set_postfix_str(f"loss {sum(train_loss) / k:.4f} acc {sum(train_acc) / k:.4f} "
                                f"{n * k / seconds:,.0f} img/s ({k} seeds)")
            bar.close()
    views_n = len(tta_views(cfg.tta_flip, cfg.tta_shift))
    results = []
    for j in range(k):
        unstack(j)
        final_seconds = 0.0
        final_ev = evs[j]
        if Xt is not None:
            assert Yt is not None
            if final_ev is None or views_n > 1:  # no per-epoch test (a validation split), or the test's views
                t1 = time.perf_counter()
                final_ev = evaluate(views[j], Xt, Yt, cfg.eval_batch_size, channels_last, amp, cfg.tta_flip,
                                    cfg.tta_shift)
                final_seconds = time.perf_counter() - t1
                if Yt.numel() and not math.isfinite(final_ev.loss):
                    raise _non_finite_evaluation(final_ev.loss, cfg.epochs)
            final = final_ev
        else:
            final = EvalResult(float("nan"), float("nan"), torch.empty(0, dtype=torch.long))
        results.append(TrainResult(
            histories[j], final, total_train / k, steps_per_epoch * cfg.epochs, n * cfg.epochs, str(device),
            str(cfg.formulation) if device.type == "cpu" else "plain", False, test_views=views_n,
            final_eval_seconds=final_seconds,
            extra={"model": models[j], "batched": {"seeds": k, "batch_train_seconds": total_train,
                                                    "per_seed_functional_call": sorted(generic),
                                                    "first_batch_bit_identical": first_identical}}))
    return results
