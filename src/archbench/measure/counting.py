"""Counting every floating-point operation a model's ops execute.

A ``TorchDispatchMode`` sees every aten op that runs — forward, backward and
optimizer alike, after autograd has decomposed ``nn.Linear`` into ``addmm``
etc. — and counts each with a formula:

* **matmul/conv** (exact): ``mm``, ``addmm``, ``bmm``, ``baddbmm``,
  ``convolution`` and ``convolution_backward`` (only the gradients its output
  mask asks for). 1 multiply-accumulate = 2 FLOPs.
* **other arithmetic**, by category, with the per-element conventions in
  :data:`OTHER_OPS` (documented in docs/measurement.md): bias adds, activations,
  pooling comparisons, normalisation, softmax and loss, element-wise and
  reductions, and the optimizer's per-parameter update.
* **data movement** (views, copies, allocation, gathers, random numbers):
  counted as 0 FLOPs by definition, and listed with call counts.
* anything else is **uncounted**: listed by name with its call count, never
  silently zero.

Per-module attribution uses ``torch.utils.module_tracker.ModuleTracker``
(forward and backward): each op is charged to the innermost module running.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

MATMUL = "matmul_conv"
OTHER_CATEGORIES = ("bias", "activation", "pooling", "normalization", "loss", "elementwise",
                    "reduction", "optimizer")

# Adam's update per parameter element: m <- m + (1-b1)(g-m) [2: sub, fma],
# v <- b2 v + (1-b2) g^2 [4], denom = sqrt(v)/sqrt(bc2) + eps [3],
# p <- p - (lr/bc1) m/denom [3]. Weight decay adds 2 (mul, add).
ADAM_FLOPS_PER_ELEMENT = 12


def _numel(t) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _out_numel(out) -> int:
    return sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))


def _mm(a, b) -> int:
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(a, b) -> int:
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _conv_macs(x_shape, w_shape, out_shape, transposed: bool) -> int:
    # w: (Cout, Cin/groups, *k) normally; (Cin, Cout/groups, *k) when transposed.
    k = math.prod(w_shape[2:])
    if transposed:
        return x_shape[0] * math.prod(x_shape[2:]) * w_shape[0] * w_shape[1] * k
    return out_shape[0] * math.prod(out_shape[2:]) * w_shape[0] * w_shape[1] * k


def _count_matmul(name: str, args, out) -> tuple[int, int]:
    """(matmul/conv FLOPs, bias FLOPs) of a matmul/conv op: the bias add in a
    forward op, the bias-gradient reduction in ``convolution_backward``
    (counted as a reduction, like the ``sum`` that gives a Linear's)."""
    if name in ("mm", "matmul"):
        return _mm(args[0], args[1]), 0
    if name == "addmm":
        return _mm(args[1], args[2]), out.numel()
    if name == "bmm":
        return _bmm(args[0], args[1]), 0
    if name == "baddbmm":
        return _bmm(args[1], args[2]), out.numel()
    if name in ("convolution", "_convolution", "mkldnn_convolution"):
        x, w, b = args[0], args[1], args[2]
        transposed = bool(args[6]) if name != "mkldnn_convolution" and len(args) > 6 else False
        macs = _conv_macs(x.shape, w.shape, out.shape, transposed)
        return 2 * macs, (out.numel() if b is not None else 0)
    if name == "convolution_backward":
        grad_out, x, w = args[0], args[1], args[2]
        transposed = bool(args[7])
        mask = args[10]
        macs = _conv_macs(x.shape, w.shape, grad_out.shape, transposed)
        flops = 2 * macs * (int(bool(mask[0])) + int(bool(mask[1])))
        bias = grad_out.numel() if mask[2] else 0
        return flops, bias
    raise KeyError(name)


MATMUL_OPS = {"mm", "matmul", "addmm", "bmm", "baddbmm", "convolution", "_convolution",
              "mkldnn_convolution", "convolution_backward"}


def _per_out(k: float):
    return lambda args, out: int(k * _out_numel(out))


def _per_in(k: float):
    return lambda args, out: int(k * _numel(args[0]))


def _pool_fwd(args, out):
    k = args[1]
    k = [k, k] if isinstance(k, int) else list(k)
    if len(k) == 1:
        k = k * 2
    values = out[0] if isinstance(out, (tuple, list)) else out
    return values.numel() * (math.prod(k) - 1)


def _avgpool_fwd(args, out):
    k = args[1]
    k = [k, k] if isinstance(k, int) else list(k)
    if len(k) == 1:
        k = k * 2
    return out.numel() * math.prod(k)


def _adam(args, out):
    params = args[0]
    n = sum(p.numel() for p in params)
    return ADAM_FLOPS_PER_ELEMENT * n


def _foreach(args, out):
    return sum(t.numel() for t in args[0])


# op name -> (category, flops(args, out)). Conventions: one FLOP per element for
# add/sub/mul/div, a comparison, a max/ReLU select, exp, log, sqrt.
OTHER_OPS: dict[str, tuple[str, Callable[[Any, Any], float]]] = {
    # activations
    "relu": ("activation", _per_out(1)), "relu_": ("activation", _per_out(1)),
    "clamp_min": ("activation", _per_out(1)), "clamp_min_": ("activation", _per_out(1)),
    "threshold": ("activation", _per_out(1)), "threshold_backward": ("activation", _per_out(1)),
    "hardtanh": ("activation", _per_out(2)), "hardtanh_backward": ("activation", _per_out(2)),
    "leaky_relu": ("activation", _per_out(2)), "leaky_relu_backward": ("activation", _per_out(2)),
    "gelu": ("activation", _per_out(8)), "gelu_backward": ("activation", _per_out(12)),
    "silu": ("activation", _per_out(4)), "silu_backward": ("activation", _per_out(6)),
    "sigmoid": ("activation", _per_out(3)), "sigmoid_backward": ("activation", _per_out(3)),
    "tanh": ("activation", _per_out(5)), "tanh_backward": ("activation", _per_out(3)),
    # pooling
    "max_pool2d_with_indices": ("pooling", _pool_fwd),
    "max_pool1d": ("pooling", _pool_fwd), "max_pool2d": ("pooling", _pool_fwd),
    "max_pool2d_with_indices_backward": ("pooling", _per_in(1)),
    "avg_pool2d": ("pooling", _avgpool_fwd), "avg_pool2d_backward": ("pooling", _per_out(1)),
    "_adaptive_avg_pool2d": ("pooling", lambda a, o: _numel(a[0])),
    "_adaptive_avg_pool2d_backward": ("pooling", _per_out(1)),
    "adaptive_max_pool2d": ("pooling", lambda a, o: _numel(a[0])),
    # normalisation (per element: statistics 3, normalise 2, affine 2)
    "native_batch_norm": ("normalization", _per_in(7)),
    "_native_batch_norm_legit": ("normalization", _per_in(7)),
    "_native_batch_norm_legit_no_training": ("normalization", _per_in(4)),
    "_native_batch_norm_legit_functional": ("normalization", _per_in(7)),
    "native_batch_norm_backward": ("normalization", _per_in(9)),
    "native_layer_norm": ("normalization", _per_in(7)),
    "native_layer_norm_backward": ("normalization", _per_in(9)),
    # softmax and loss
    "_log_softmax": ("loss", _per_out(5)), "_log_softmax_backward_data": ("loss", _per_out(4)),
    "_softmax": ("loss", _per_out(5)), "_softmax_backward_data": ("loss", _per_out(4)),
    "nll_loss_forward": ("loss", lambda a, o: _numel(a[1]) + 1),
    "nll_loss_backward": ("loss", lambda a, o: _numel(a[2]) + 1),
    "nll_loss2d_forward": ("loss", lambda a, o: _numel(a[1]) + 1),
    # element-wise arithmetic and comparisons
    **{op: ("elementwise", _per_out(1)) for op in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "reciprocal",
        "sqrt", "rsqrt", "exp", "log", "pow", "abs", "maximum", "minimum", "where", "lerp", "lerp_",
        "addcmul", "addcmul_", "addcdiv", "addcdiv_", "eq", "ne", "lt", "le", "gt", "ge",
        "clamp", "clamp_", "sign", "square", "masked_fill", "masked_fill_")},
    "native_dropout": ("elementwise", _per_in(2)), "native_dropout_backward": ("elementwise", _per_out(2)),
    # reductions
    "sum": ("reduction", _per_in(1)), "mean": ("reduction", _per_in(1)), "amax": ("reduction", _per_in(1)),
    "amin": ("reduction", _per_in(1)), "argmax": ("reduction", _per_in(1)), "argmin": ("reduction", _per_in(1)),
    "max": ("reduction", _per_in(1)), "min": ("reduction", _per_in(1)), "var": ("reduction", _per_in(3)),
    "norm": ("reduction", _per_in(2)), "linalg_vector_norm": ("reduction", _per_in(2)),
    # the optimizer
    "_fused_adam_": ("optimizer", _adam), "_fused_adamw_": ("optimizer", _adam),
    "_foreach_add_": ("optimizer", _foreach), "_foreach_add": ("optimizer", _foreach),
}

# Ops that move, view, allocate or generate data: 0 FLOPs by definition.
DATA_MOVEMENT = frozenset((
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "squeeze", "unsqueeze",
    "flatten", "detach", "alias", "clone", "copy_", "_to_copy", "to", "contiguous", "empty",
    "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "ones",
    "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "fill_", "zero_",
    "index_select", "index", "gather", "scatter", "cat", "stack", "slice", "select", "split",
    "split_with_sizes", "as_strided", "lift_fresh", "lift_fresh_copy", "randperm", "rand", "randn",
    "randint", "normal_", "uniform_", "bernoulli_", "_local_scalar_dense", "scalar_tensor",
    "max_pool2d_with_indices_out", "set_", "resize_", "unbind", "narrow", "_reshape_alias",
    "constant_pad_nd", "pad", "clamp_max_", "arange", "item", "is_nonzero", "_has_compatible_shallow_copy_type",
))


@dataclass
class FlopCount:
    matmul_conv: int = 0
    other: dict = field(default_factory=lambda: dict.fromkeys(OTHER_CATEGORIES, 0))
    by_op: dict = field(default_factory=dict)           # op -> {"calls", "flops", "category"}
    by_module: dict = field(default_factory=dict)       # module -> {"matmul_conv", "other"}
    data_movement: dict = field(default_factory=dict)   # op -> calls
    uncounted: dict = field(default_factory=dict)       # op -> calls

    @property
    def other_total(self) -> int:
        return sum(self.other.values())

    @property
    def total(self) -> int:
        return self.matmul_conv + self.other_total

    def to_dict(self) -> dict:
        return {
            "matmul_conv": self.matmul_conv,
            "other": dict(self.other),
            "other_total": self.other_total,
            "total": self.total,
            "by_op": self.by_op,
            "by_module": self.by_module,
            "data_movement": self.data_movement,
            "uncounted": self.uncounted,
        }

    def add(self, other: FlopCount) -> FlopCount:
        out = FlopCount(self.matmul_conv + other.matmul_conv)
        out.other = {k: self.other[k] + other.other[k] for k in OTHER_CATEGORIES}
        for src in (self, other):
            for op, d in src.by_op.items():
                e = out.by_op.setdefault(op, {"calls": 0, "flops": 0, "category": d["category"]})
                e["calls"] += d["calls"]
                e["flops"] += d["flops"]
            for m, d in src.by_module.items():
                e = out.by_module.setdefault(m, {"matmul_conv": 0, "other": 0})
                e["matmul_conv"] += d["matmul_conv"]
                e["other"] += d["other"]
            for attr in ("data_movement", "uncounted"):
                for op, n in getattr(src, attr).items():
                    getattr(out, attr)[op] = getattr(out, attr).get(op, 0) + n
        return out


def op_name(func) -> str:
    return func._schema.name.split("::")[-1] if hasattr(func, "_schema") else str(func)


class OpCounter(TorchDispatchMode):
    """Counts FLOPs of every aten op run while active. Use as a context
    manager; read ``.count`` (a :class:`FlopCount`). With ``module_tracker``
    (a ``torch.utils.module_tracker.ModuleTracker`` entered alongside), ops are
    attributed to the innermost running module."""

    def __init__(self, module_tracker=None):
        super().__init__()
        self.count = FlopCount()
        self.tracker = module_tracker

    def _module(self) -> str:
        """The innermost running module's qualified name as in
        ``named_modules()`` ("" for the root), or "Global" outside any."""
        if self.tracker is None:
            return "Global"
        parents = [p for p in self.tracker.parents if p != "Global"]
        if not parents:
            return "Global"
        inner = max(parents, key=lambda p: p.count("."))
        # ModuleTracker names the root by its class: "Sequential.3" -> "3".
        return inner.split(".", 1)[1] if "." in inner else ""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = op_name(func)
        c = self.count
        mm = other = 0
        category = None
        if name in MATMUL_OPS:
            mm, other = _count_matmul(name, args, out)
            category = MATMUL
            if other:
                c.other["reduction" if name == "convolution_backward" else "bias"] += other
        elif name in OTHER_OPS:
            category, fn = OTHER_OPS[name]
            other = int(fn(args, out))
            c.other[category] += other
        elif name in DATA_MOVEMENT:
            c.data_movement[name] = c.data_movement.get(name, 0) + 1
            return out
        else:
            c.uncounted[name] = c.uncounted.get(name, 0) + 1
            return out
        c.matmul_conv += mm
        e = c.by_op.setdefault(name, {"calls": 0, "flops": 0, "category": category})
        e["calls"] += 1
        e["flops"] += mm + other
        m = c.by_module.setdefault(self._module(), {"matmul_conv": 0, "other": 0})
        m["matmul_conv"] += mm
        m["other"] += other
        return out
