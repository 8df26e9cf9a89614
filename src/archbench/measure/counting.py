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
* **fused ops** that do matrix products and other arithmetic in one kernel,
  counted from their arguments (:data:`FUSED_OPS`): scaled-dot-product
  attention on every backend, the eval fast paths of ``nn.MultiheadAttention``
  (``_native_multi_head_attention``) and ``nn.TransformerEncoderLayer``
  (``_transformer_encoder_layer_fwd``), and the recurrent layers' kernels
  (oneDNN, cuDNN, MIOpen, the fused cells, and the ``lstm``/``gru``/``rnn_*``
  ops themselves where a backend runs them whole).
* anything else is **uncounted**: listed by name with its call count, never
  silently zero. A count with uncounted ops is *partial* (:attr:`FlopCount.partial`).

Per-module attribution uses ``torch.utils.module_tracker.ModuleTracker`` (:class:`SafeModuleTracker`)
(forward and backward): each op is charged to the innermost module running.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.module_tracker import ModuleTracker

if TYPE_CHECKING:
    from torch._ops import OpOverload

MATMUL = "matmul_conv"
OTHER_CATEGORIES = ("bias", "activation", "pooling", "normalization", "loss", "elementwise",
                    "reduction", "interpolation", "optimizer")

# Adam's update per parameter element: m <- m + (1-b1)(g-m) [2: sub, fma],
# v <- b2 v + (1-b2) g^2 [4], denom = sqrt(v)/sqrt(bc2) + eps [3],
# p <- p - (lr/bc1) m/denom [3]. Weight decay adds 2 (mul, add), whether it is
# Adam's (g + wd p) or AdamW's decoupled one (p - lr wd p). The same
# convention for every implementation: fused, foreach or for-loop.
ADAM_FLOPS_PER_ELEMENT = 12
WEIGHT_DECAY_FLOPS_PER_ELEMENT = 2


def _numel(t: object) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _out_numel(out: Any) -> int:
    return sum(t.numel() for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))


def _mm(a: torch.Tensor, b: torch.Tensor) -> int:
    return 2 * a.shape[0] * a.shape[1] * b.shape[1]


def _bmm(a: torch.Tensor, b: torch.Tensor) -> int:
    return 2 * a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2]


def _conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int], transposed: bool) -> int:
    # w: (Cout, Cin/groups, *k) normally; (Cin, Cout/groups, *k) when transposed.
    k = math.prod(w_shape[2:])
    if transposed:
        return x_shape[0] * math.prod(x_shape[2:]) * w_shape[0] * w_shape[1] * k
    return out_shape[0] * math.prod(out_shape[2:]) * w_shape[0] * w_shape[1] * k


def _count_matmul(name: str, args: Sequence[Any], out: Any) -> tuple[int, int]:
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
    if name == "addbmm":  # sum over the batch of products, added to self
        return _bmm(args[1], args[2]), out.numel()
    if name in ("mv", "dot", "vdot"):
        return 2 * args[0].numel(), 0
    if name == "addmv":
        return 2 * args[1].numel(), out.numel()
    if name == "addr":  # self + outer(vec1, vec2): one multiply-add per element
        return 2 * out.numel(), 0
    if name == "linear":  # reaches dispatch whole only for nested tensors (otherwise it decomposes into addmm)
        x, w = args[0], args[1]
        b = args[2] if len(args) > 2 else None
        return 2 * (x.numel() // w.shape[1]) * w.shape[0] * w.shape[1], (out.numel() if b is not None else 0)
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


MATMUL_OPS = {"mm", "matmul", "addmm", "bmm", "baddbmm", "addbmm", "mv", "dot", "vdot", "addmv", "addr", "linear",
              "convolution", "_convolution", "mkldnn_convolution", "convolution_backward"}


def _per_out(k: float) -> Callable[[Sequence[Any], Any], int]:
    return lambda args, out: int(k * _out_numel(out))


def _per_in(k: float) -> Callable[[Sequence[Any], Any], int]:
    return lambda args, out: int(k * _numel(args[0]))


def _pool_fwd(args: Sequence[Any], out: Any) -> int:
    k = args[1]
    k = [k, k] if isinstance(k, int) else list(k)
    if len(k) == 1:
        k = k * 2
    values = out[0] if isinstance(out, (tuple, list)) else out
    return values.numel() * (math.prod(k) - 1)


def _avgpool_fwd(args: Sequence[Any], out: Any) -> int:
    k = args[1]
    k = [k, k] if isinstance(k, int) else list(k)
    if len(k) == 1:
        k = k * 2
    return out.numel() * math.prod(k)


def _batch_norm(training_index: int) -> Callable[[Sequence[Any], Any], int]:
    """7 FLOPs per element when the op computes batch statistics, 4 when it
    uses running statistics (eval mode, grad enabled or not)."""
    return lambda args, out: (7 if len(args) > training_index and args[training_index] else 4) * _numel(args[0])


def adam_update_flops(elements: int, weight_decay: float) -> int:
    """Adam's or AdamW's update of ``elements`` parameter elements, by the convention above."""
    return (ADAM_FLOPS_PER_ELEMENT + (WEIGHT_DECAY_FLOPS_PER_ELEMENT if weight_decay else 0)) * elements


def _fused_adam(a: _Args) -> tuple[int, dict[str, int]]:
    return 0, {"optimizer": adam_update_flops(sum(p.numel() for p in a.get("self")), a.get("weight_decay") or 0.0)}


def _foreach(args: Sequence[Any], out: Any) -> int:
    return sum(t.numel() for t in args[0])


# op name -> (category, flops(args, out)). Conventions: one FLOP per element for
# add/sub/mul/div, a comparison, a max/ReLU select, exp, log, sqrt.
OTHER_OPS: dict[str, tuple[str, Callable[[Any, Any], float]]] = {
    # activations
    "relu": ("activation", _per_out(1)), "relu_": ("activation", _per_out(1)),
    "clamp_min": ("activation", _per_out(1)), "clamp_min_": ("activation", _per_out(1)),
    "clamp_max": ("activation", _per_out(1)), "clamp_max_": ("activation", _per_out(1)),
    "relu6": ("activation", _per_out(2)), "elu": ("activation", _per_out(5)),
    "elu_backward": ("activation", _per_out(3)),
    "threshold": ("activation", _per_out(1)), "threshold_backward": ("activation", _per_out(1)),
    "hardtanh": ("activation", _per_out(2)), "hardtanh_backward": ("activation", _per_out(2)),
    "leaky_relu": ("activation", _per_out(2)), "leaky_relu_backward": ("activation", _per_out(2)),
    "gelu": ("activation", _per_out(8)), "gelu_backward": ("activation", _per_out(12)),
    "silu": ("activation", _per_out(4)), "silu_backward": ("activation", _per_out(6)),
    "sigmoid": ("activation", _per_out(3)), "sigmoid_": ("activation", _per_out(3)),
    "sigmoid_backward": ("activation", _per_out(3)),
    "tanh": ("activation", _per_out(5)), "tanh_": ("activation", _per_out(5)),
    "tanh_backward": ("activation", _per_out(3)),
    # pooling
    "max_pool2d_with_indices": ("pooling", _pool_fwd),
    "max_pool1d": ("pooling", _pool_fwd), "max_pool2d": ("pooling", _pool_fwd),
    "max_pool2d_with_indices_backward": ("pooling", _per_in(1)),
    "avg_pool2d": ("pooling", _avgpool_fwd), "avg_pool2d_backward": ("pooling", _per_out(1)),
    "_adaptive_avg_pool2d": ("pooling", lambda a, o: _numel(a[0])),
    "_adaptive_avg_pool2d_backward": ("pooling", _per_out(1)),
    "adaptive_max_pool2d": ("pooling", lambda a, o: _numel(a[0])),
    "adaptive_max_pool2d_backward": ("pooling", _per_in(1)),
    # normalisation (per element: statistics 3, normalise 2, affine 2; with
    # running statistics (eval mode) only normalise and affine: 4)
    "native_batch_norm": ("normalization", _batch_norm(5)),
    "_native_batch_norm_legit": ("normalization", _batch_norm(5)),
    "_native_batch_norm_legit_functional": ("normalization", _batch_norm(5)),
    "cudnn_batch_norm": ("normalization", _batch_norm(5)),
    "miopen_batch_norm": ("normalization", _batch_norm(5)),
    "_batch_norm_with_update": ("normalization", _per_in(7)),
    "_batch_norm_with_update_functional": ("normalization", _per_in(7)),
    "_native_batch_norm_legit_no_training": ("normalization", _per_in(4)),
    "_batch_norm_no_update": ("normalization", _per_in(4)),
    "native_batch_norm_backward": ("normalization", _per_in(9)),
    "batch_norm_backward": ("normalization", _per_in(9)),
    "cudnn_batch_norm_backward": ("normalization", lambda a, o: 9 * _numel(a[0])),
    "miopen_batch_norm_backward": ("normalization", lambda a, o: 9 * _numel(a[0])),
    "native_layer_norm": ("normalization", _per_in(7)),
    "native_layer_norm_backward": ("normalization", _per_in(9)),
    "native_group_norm": ("normalization", _per_in(7)),
    "native_group_norm_backward": ("normalization", lambda a, o: 9 * _numel(a[1])),
    # softmax and loss
    "_log_softmax": ("loss", _per_out(5)), "_log_softmax_backward_data": ("loss", _per_out(4)),
    "_softmax": ("loss", _per_out(5)), "_safe_softmax": ("loss", _per_out(5)),
    "_softmax_backward_data": ("loss", _per_out(4)),
    "nll_loss_forward": ("loss", lambda a, o: _numel(a[1]) + 1),
    "nll_loss_backward": ("loss", lambda a, o: _numel(a[2]) + 1),
    "nll_loss2d_forward": ("loss", lambda a, o: _numel(a[1]) + 1),
    # element-wise arithmetic and comparisons
    **{op: ("elementwise", _per_out(1)) for op in (
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "reciprocal",
        "sqrt", "rsqrt", "exp", "log", "pow", "abs", "maximum", "minimum", "where", "lerp", "lerp_",
        "addcmul", "addcmul_", "addcdiv", "addcdiv_", "eq", "ne", "lt", "le", "gt", "ge",
        "clamp", "clamp_", "sign", "square", "masked_fill", "masked_fill_")},
    # dropout: 2 per element (mask, scale); none when called with train=False (eval: a copy)
    "native_dropout": ("elementwise", lambda a, o: 0 if len(a) > 2 and a[2] is False else 2 * _numel(a[0])),
    "native_dropout_backward": ("elementwise", _per_out(2)),
    # reductions
    "sum": ("reduction", _per_in(1)), "mean": ("reduction", _per_in(1)), "amax": ("reduction", _per_in(1)),
    "amin": ("reduction", _per_in(1)), "argmax": ("reduction", _per_in(1)), "argmin": ("reduction", _per_in(1)),
    "max": ("reduction", _per_in(1)), "min": ("reduction", _per_in(1)), "var": ("reduction", _per_in(3)),
    "norm": ("reduction", _per_in(2)), "linalg_vector_norm": ("reduction", _per_in(2)),
    # interpolation: a weighted sum of 2^d neighbours (d interpolated dimensions;
    # bicubic: 16) = 2 * taps - 1 per output element; backward scatters each
    # output gradient to its taps with a weight: 2 * taps per output gradient.
    **{op: ("interpolation", _per_out(2 * taps - 1)) for op, taps in (
        ("upsample_linear1d", 2), ("upsample_bilinear2d", 4), ("_upsample_bilinear2d_aa", 4),
        ("upsample_trilinear3d", 8), ("upsample_bicubic2d", 16), ("_upsample_bicubic2d_aa", 16))},
    **{op + "_backward": ("interpolation", _per_in(2 * taps)) for op, taps in (
        ("upsample_linear1d", 2), ("upsample_bilinear2d", 4), ("_upsample_bilinear2d_aa", 4),
        ("upsample_trilinear3d", 8), ("upsample_bicubic2d", 16), ("_upsample_bicubic2d_aa", 16))},
    # nearest-neighbour upsampling copies (0 FLOPs, see DATA_MOVEMENT); its backward sums gradients
    **{op + "_backward": ("interpolation", _per_in(1)) for op in (
        "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
        "_upsample_nearest_exact2d", "_upsample_nearest_exact3d")},
    # the optimizer
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
    "constant_pad_nd", "pad", "arange", "item", "is_nonzero", "_has_compatible_shallow_copy_type",
    "unsafe_split", "unsafe_split_with_sizes", "unsafe_chunk", "chunk", "transpose_", "t_", "select_backward",
    "slice_backward", "expand_as", "view_as", "repeat", "flip", "roll", "squeeze_", "unsqueeze_",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    # restrides and layout conversions (channels-last, nested tensors, oneDNN blocked layouts)
    "as_strided_", "as_strided_copy", "as_strided_scatter", "_nested_tensor_from_mask",
    "_nested_tensor_from_mask_left_aligned", "to_padded_tensor", "_nested_from_padded",
    "_nested_from_padded_and_nested_example", "_nested_tensor_from_tensor_list", "_nested_view_from_buffer",
    "_nested_view_from_buffer_copy", "_nested_tensor_size", "_nested_tensor_strides",
    "_nested_tensor_storage_offsets", "_nested_get_values", "to_mkldnn", "to_dense", "_to_dense",
    # profiler markers (torch.optim's record_function around each step): no data at all
    "_record_function_enter", "_record_function_enter_new", "_record_function_exit",
    # boolean logic: not floating point
    "bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "logical_not", "logical_and", "logical_or",
    "logical_xor",
))


# --------------------------------------------------------------------------- fused ops
# Ops whose one kernel does matrix products and other arithmetic: each formula
# takes the op's arguments by schema name and returns (matmul/conv FLOPs,
# {category: other FLOPs}). Conventions (docs/measurement.md):
#
# * attention over P (query, key) pairs per head with head dims d (query/key)
#   and dv (value): forward 2·P·(d + dv) matmul FLOPs (Q·Kᵀ and A·V), plus per
#   pair 1 scale and 5 softmax (1 more with a mask or bias); a fused kernel's
#   backward recomputes Q·Kᵀ: 2·P·(3d + 2dv) (as PyTorch's FlopCounterMode),
#   plus 1 scale, 2 recomputing the probabilities and 4 softmax-backward per
#   pair. Causal masks are not discounted (as the math backend computes).
# * recurrent layers over R rows (time steps x batch) of H hidden units with
#   weights W: forward 2·R·Σ|W| (input, hidden and projection weights);
#   backward the same again for the data gradients and again for the weight
#   gradients (cuDNN/MIOpen skip what their output mask leaves out). Per hidden
#   unit and row: RNN_CELL_FLOPS.

class _Args:
    """An op's arguments by their schema names, defaults filled in."""

    def __init__(self, func: OpOverload, args: Sequence[Any], kwargs: dict[str, Any]) -> None:
        values: dict[str, Any] = {}
        for i, a in enumerate(func._schema.arguments):
            if i < len(args) and not a.kwarg_only:
                values[a.name] = args[i]
            elif a.name in kwargs:
                values[a.name] = kwargs[a.name]
            else:
                values[a.name] = a.default_value if a.has_default_value() else None
        self.values = values

    def __getattr__(self, name: str) -> Any:
        try:
            return self.__dict__["values"][name]
        except KeyError:
            raise AttributeError(name) from None

    def get(self, *names: str) -> Any:
        """The first of ``names`` the schema has (argument names differ between overloads)."""
        for n in names:
            if n in self.values:
                return self.values[n]
        return None


def _lengths(t: torch.Tensor) -> list[int]:
    """Sequence lengths of a (batch, length, features) tensor, nested or not;
    an unbatched (length, features) tensor is one sequence."""
    if t.is_nested:
        return [int(r[0]) for r in t._nested_tensor_size().tolist()]
    if t.dim() == 2:
        return [t.shape[0]]
    return [t.shape[1]] * t.shape[0]


def _attention_pairs(q: torch.Tensor, k: torch.Tensor, layout: str, cum_q: torch.Tensor | None = None,
                     cum_k: torch.Tensor | None = None) -> int:
    """(query, key) pairs summed over batch and heads. ``layout`` "bhld":
    (..., L, d) with every leading dimension a batch or head; "blhd":
    (B, L, H, d); with ``cum_q``/``cum_k`` (variable-length batches) the
    sequence lengths are their differences and q is (total, H, d) or (1, total, H, d)."""
    if cum_q is not None and cum_k is not None:
        lq = (cum_q[1:] - cum_q[:-1]).tolist()
        lk = (cum_k[1:] - cum_k[:-1]).tolist()
        return q.shape[-2] * sum(a * b for a, b in zip(lq, lk))
    if layout == "bhld":
        return math.prod(q.shape[:-2]) * q.shape[-2] * k.shape[-2]
    return q.shape[0] * q.shape[2] * q.shape[1] * k.shape[1]


def _attention(a: _Args, layout: str = "bhld", backward: bool = False,
               cum: tuple[str, str] = ("cum_seq_q", "cum_seq_k")) -> tuple[int, dict[str, int]]:
    q, k, v = a.query, a.key, a.value
    pairs = _attention_pairs(q, k, layout, a.get(cum[0]), a.get(cum[1]))
    d, dv = q.shape[-1], v.shape[-1]
    masked = a.get("attn_mask", "attn_bias", "bias") is not None
    if backward:
        return 2 * pairs * (3 * d + 2 * dv), {"elementwise": pairs * (1 + masked), "loss": 6 * pairs}
    return 2 * pairs * (d + dv), {"elementwise": pairs * (1 + masked), "loss": 5 * pairs}


def _mha_parts(query: torch.Tensor, key: torch.Tensor, embed_dim: int, num_heads: int, masked: bool,
               need_weights: bool) -> tuple[int, dict]:
    """Projections, attention and output projection of one multi-head
    attention with embed_dim E (key/value projections from ``key``)."""
    lq, lk = _lengths(query), _lengths(key)
    e = embed_dim
    nq, nk = sum(lq), sum(lk)
    pairs = num_heads * sum(a * b for a, b in zip(lq, lk))
    d = e // num_heads
    mm = 2 * (nq * e * e + 2 * nk * e * e + pairs * 2 * d + nq * e * e)
    other = {"bias": (nq + 2 * nk) * e + nq * e, "elementwise": nq * e + (pairs if masked else 0),
             "loss": 5 * pairs, "reduction": pairs if need_weights else 0}
    return mm, other


def _native_mha(a: _Args) -> tuple[int, dict]:
    return _mha_parts(a.query, a.key, a.embed_dim, a.num_head, a.mask is not None, bool(a.need_weights))


def _encoder_layer(a: _Args) -> tuple[int, dict]:
    mm, other = _mha_parts(a.src, a.src, a.embed_dim, a.num_heads, a.mask is not None, False)
    n = sum(_lengths(a.src))
    e, f = a.embed_dim, a.ffn_weight_1.shape[0]
    mm += 2 * (2 * n * e * f)
    other["bias"] += n * f + n * e
    other["activation"] = (8 if a.use_gelu else 1) * n * f
    other["normalization"] = 2 * 7 * n * e
    other["elementwise"] += 2 * n * e  # the two residual additions
    return mm, other


# Per hidden unit and row (time step x batch element): the gates' nonlinearities
# (sigmoid 3, tanh 5, relu 1), the cell's element-wise arithmetic (summing the
# input and hidden gate contributions included), and their backward.
RNN_CELL_FLOPS = {
    "lstm": {"activation": 19, "elementwise": 8, "activation_backward": 15, "elementwise_backward": 16},
    "gru": {"activation": 11, "elementwise": 7, "activation_backward": 9, "elementwise_backward": 14},
    "rnn_tanh": {"activation": 5, "elementwise": 1, "activation_backward": 3, "elementwise_backward": 2},
    "rnn_relu": {"activation": 1, "elementwise": 1, "activation_backward": 1, "elementwise_backward": 2},
}
_GATES = {4: "lstm", 3: "gru", 1: "rnn_tanh"}


def _rows(x: torch.Tensor) -> int:
    """Time steps x batch elements of an RNN input (padded or packed)."""
    return x.numel() // x.shape[-1] if x.numel() else 0


def _rnn_kind(gate_rows: int, hidden: int, relu: bool = False) -> str:
    kind = _GATES.get(gate_rows // hidden, "lstm")
    return "rnn_relu" if kind == "rnn_tanh" and relu else kind


def _cell_other(kind: str, units: int, gates: int, biases: bool, backward: bool) -> dict:
    c = RNN_CELL_FLOPS[kind]
    if backward:
        return {"activation": c["activation_backward"] * units, "elementwise": c["elementwise_backward"] * units,
                "reduction": gates * units if biases else 0}
    return {"activation": c["activation"] * units, "elementwise": c["elementwise"] * units,
            "bias": 2 * gates * units if biases else 0}


def _layer_groups(weights: list, layers: int, directions: int) -> list[list]:
    per = len(weights) // max(1, layers * directions)
    return [list(weights[i * per:(i + 1) * per]) for i in range(layers * directions)]


def _rnn_stack(x: torch.Tensor, groups: list[list], hidden: int, biases: bool, relu: bool, backward: bool = False,
               mask: Sequence[bool] = (True, True, True, True), directions: int = 1) -> tuple[int, dict[str, int]]:
    """A stack of recurrent layers, each group [w_ih, w_hh, (b_ih, b_hh), (w_hr)]."""
    rows = _rows(x)
    mm = 0
    other: dict[str, int] = {}
    for i, g in enumerate(groups):
        w_ih, w_hh = g[0], g[1]
        w_hr = g[-1] if len(g) in (3, 5) else None  # LSTM projection
        macs_in, macs_rec = rows * w_ih.numel(), rows * (w_hh.numel() + (w_hr.numel() if w_hr is not None else 0))
        if not backward:
            mm += 2 * (macs_in + macs_rec)
        else:
            first_layer = i < directions
            data = macs_rec + (macs_in if (mask[0] or not first_layer) else 0)
            weights = (macs_in + macs_rec) if mask[3] else 0
            mm += 2 * (data + weights)
        gates = w_ih.shape[0]
        kind = _rnn_kind(gates, hidden, relu)
        units = rows * hidden
        for cat, v in _cell_other(kind, units, gates // hidden, biases, backward).items():
            other[cat] = other.get(cat, 0) + v
    return mm, other


def _mkldnn_rnn_layer(a: _Args) -> tuple[int, dict[str, int]]:
    return _rnn_stack(a.input, [[a.weight0, a.weight1] + ([a.weight2, a.weight3] if a.has_biases else [])],
                      a.hidden_size, bool(a.has_biases), a.mode == 0)


def _mkldnn_rnn_layer_backward(a: _Args) -> tuple[int, dict[str, int]]:
    return _rnn_stack(a.input, [[a.weight1, a.weight2] + ([a.weight3, a.weight4] if a.has_biases else [])],
                      a.hidden_size, bool(a.has_biases), a.mode == 0, backward=True)


def _cudnn_rnn(a: _Args, backward: bool = False) -> tuple[int, dict[str, int]]:
    directions = 2 if a.bidirectional else 1
    groups = _layer_groups(a.weight, a.num_layers, directions)
    biases = a.weight_stride0 in (4, 5)
    mask = tuple(a.get("output_mask") or (True,) * 4)
    return _rnn_stack(a.input, groups, a.hidden_size, biases, a.mode == 0, backward, mask, directions)


def _whole_rnn(kind: str) -> Callable[[_Args], tuple[int, dict[str, int]]]:
    """``aten::lstm``/``gru``/``rnn_tanh``/``rnn_relu`` where a backend runs them
    as one op (their .input and .data overloads)."""
    def count(a: _Args) -> tuple[int, dict[str, int]]:
        hx = a.hx[0] if isinstance(a.hx, (list, tuple)) else a.hx
        hidden = (a.hx[1] if kind == "lstm" else hx).shape[-1]
        x = a.get("input", "data")
        directions = 2 if a.bidirectional else 1
        groups = _layer_groups(a.params, a.num_layers, directions)
        return _rnn_stack(x, groups, hidden, bool(a.has_biases), kind == "rnn_relu")
    return count


def _rnn_cell(kind: str) -> Callable[[_Args], tuple[int, dict[str, int]]]:
    def count(a: _Args) -> tuple[int, dict[str, int]]:
        g = [a.w_ih, a.w_hh] + ([a.b_ih, a.b_hh] if a.b_ih is not None else [])
        return _rnn_stack(a.input, [g], a.w_hh.shape[1], a.b_ih is not None, kind == "rnn_relu")
    return count


def _fused_cell(kind: str, backward: bool = False) -> Callable[[_Args], tuple[int, dict]]:
    """The element-wise halves of CUDA's fused LSTM/GRU cells (their gate
    matrix products are ``mm``/``addmm`` ops of their own)."""
    def count(a: _Args) -> tuple[int, dict]:
        state = a.get("cx", "hx", "grad_hy")
        units = state.numel()
        gates = 4 if kind == "lstm" else 3
        biases = a.get("input_bias") is not None if not backward else bool(a.get("has_bias"))
        return 0, _cell_other(kind, units, gates, biases, backward)
    return count


_SDPA_BHLD = ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
              "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
              "_scaled_dot_product_fused_attention_overrideable", "_scaled_dot_product_attention_math",
              "_scaled_dot_product_attention_math_for_mps")

FUSED_OPS: dict[str, Callable[[_Args], tuple[int, dict]]] = {
    "_fused_adam_": _fused_adam, "_fused_adamw_": _fused_adam,
    **{op: _attention for op in _SDPA_BHLD},
    **{op + "_backward": (lambda a: _attention(a, backward=True)) for op in _SDPA_BHLD[:5]},
    "_flash_attention_forward": lambda a: _attention(a, "blhd"),
    "_flash_attention_backward": lambda a: _attention(a, "blhd", backward=True),
    "_efficient_attention_forward": lambda a: _attention(a, "blhd", cum=("cu_seqlens_q", "cu_seqlens_k")),
    "_efficient_attention_backward": lambda a: _attention(a, "blhd", backward=True,
                                                          cum=("cu_seqlens_q", "cu_seqlens_k")),
    "_native_multi_head_attention": _native_mha,
    "_transformer_encoder_layer_fwd": _encoder_layer,
    "mkldnn_rnn_layer": _mkldnn_rnn_layer,
    "mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward,
    "_cudnn_rnn": _cudnn_rnn,
    "_cudnn_rnn_backward": lambda a: _cudnn_rnn(a, backward=True),
    "miopen_rnn": _cudnn_rnn,
    "miopen_rnn_backward": lambda a: _cudnn_rnn(a, backward=True),
    "lstm": _whole_rnn("lstm"), "gru": _whole_rnn("gru"),
    "rnn_tanh": _whole_rnn("rnn_tanh"), "rnn_relu": _whole_rnn("rnn_relu"),
    "lstm_cell": _rnn_cell("lstm"), "gru_cell": _rnn_cell("gru"),
    "rnn_tanh_cell": _rnn_cell("rnn_tanh"), "rnn_relu_cell": _rnn_cell("rnn_relu"),
    "_thnn_fused_lstm_cell": _fused_cell("lstm"),
    "_thnn_fused_lstm_cell_backward_impl": _fused_cell("lstm", backward=True),
    "_thnn_fused_lstm_cell_backward": _fused_cell("lstm", backward=True),
    "_thnn_fused_gru_cell": _fused_cell("gru"),
    "_thnn_fused_gru_cell_backward": _fused_cell("gru", backward=True),
    "_addmm_activation": lambda a: (_mm(a.mat1, a.mat2), {
        "bias": a.mat1.shape[0] * a.mat2.shape[1],
        "activation": (8 if a.use_gelu else 1) * a.mat1.shape[0] * a.mat2.shape[1]}),
}


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

    @property
    def partial(self) -> bool:
        """True when some op that ran has no formula: the totals are lower bounds."""
        return bool(self.uncounted)

    def to_dict(self) -> dict:
        return {
            "partial": self.partial,
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


def _floating(args: Sequence[Any]) -> bool:
    """Whether an op reads floating-point data (a tensor or a list of them)."""
    return any(isinstance(t, torch.Tensor) and (t.is_floating_point() or t.is_complex())
               for t in tree_flatten(list(args))[0])


def _in_graph(a: object) -> bool:
    """A tensor autograd can hook: one that requires grad and is a leaf or
    has a grad_fn. A view of a parameter made under ``no_grad`` (a learned
    query or CLS token passed on as ``expand()``) requires grad yet has
    neither, and torch's ModuleTracker would assert on it."""
    return isinstance(a, torch.Tensor) and a.requires_grad and (a.is_leaf or a.grad_fn is not None)


class SafeModuleTracker(ModuleTracker):
    """``torch.utils.module_tracker.ModuleTracker`` that registers its
    backward hooks only on tensors autograd can hook (:func:`_in_graph`) and
    none with gradients disabled (no backward will run): the same attribution
    for every model, without the assertion on views made under ``no_grad``."""

    def _fw_pre_hook(self, mod: torch.nn.Module, input: Any) -> None:
        # Entering a module in forward; its backward ends when its inputs' gradients are computed.
        name = self._get_mod_name(mod)
        self._get_append_fn(name, False)()
        self._on_gradients(input, self._get_pop_fn(name, True))

    def _fw_post_hook(self, mod: torch.nn.Module, input: Any, output: Any) -> None:
        # Leaving it in forward; its backward starts when its outputs' gradients arrive.
        name = self._get_mod_name(mod)
        self._get_pop_fn(name, False)()
        self._on_gradients(output, self._get_append_fn(name, True))

    def _on_gradients(self, tensors: Any, fn: Callable[..., None]) -> None:
        from torch.autograd.graph import register_multi_grad_hook

        hooked = [a for a in tree_flatten(tensors)[0] if _in_graph(a)] if torch.is_grad_enabled() else []
        if hooked:
            self._hooks.append(register_multi_grad_hook(hooked, fn))


def op_name(func: object) -> str:
    return func._schema.name.split("::")[-1] if hasattr(func, "_schema") else str(func)


class OpCounter(TorchDispatchMode):
    """Counts FLOPs of every aten op run while active. Use as a context
    manager; read ``.count`` (a :class:`FlopCount`). With ``module_tracker``
    (a ``torch.utils.module_tracker.ModuleTracker`` entered alongside), ops are
    attributed to the innermost running module."""

    def __init__(self, module_tracker: ModuleTracker | None = None) -> None:
        super().__init__()
        self.count = FlopCount()
        self.tracker = module_tracker
        self.phases: dict[str, FlopCount] = {}

    def set_phase(self, name: str) -> None:
        """Count from now on into ``phases[name]`` (also ``.count``)."""
        self.count = self.phases.setdefault(name, FlopCount())

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

    def __torch_dispatch__(self, func: OpOverload, types: Sequence[type], args: Sequence[Any] = (),
                           kwargs: dict[str, Any] | None = None) -> Any:
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
        elif name in FUSED_OPS:
            try:
                mm, parts = FUSED_OPS[name](_Args(func, args, kwargs or {}))
            except Exception:  # noqa: BLE001 - arguments this formula cannot read: listed, never zero
                c.uncounted[name] = c.uncounted.get(name, 0) + 1
                return out
            category = MATMUL if mm else max(parts, key=lambda k: parts[k])
            other = 0
            for cat, v in parts.items():
                c.other[cat] += int(v)
                other += int(v)
        elif name in OTHER_OPS and not _floating(args):
            # Integer index arithmetic (the augmentation's crop offsets) and boolean logic: not floating point.
            c.data_movement[name] = c.data_movement.get(name, 0) + 1
            return out
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
