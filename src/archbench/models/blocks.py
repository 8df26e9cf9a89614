"""Building blocks of the built-in models and of declarative specs.

This module registers nothing: the registry and the model files import it,
never the reverse.
"""

from __future__ import annotations

import contextlib
import copy
import math
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from archbench.errors import ModelError


class InputTooSmall(ModelError):
    """A model that cannot take images of the requested size: a layer gets a
    feature map smaller than its kernel or window. ``detail`` names the layer
    and what it gets; the registry adds the model, the smallest size it takes
    and the fix."""

    def __init__(self, detail: str, prefix: str = ""):
        super().__init__(prefix + detail)
        self.detail = detail


_ORDINALS = ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth"]


def _ordinal(i: int) -> str:
    if i <= len(_ORDINALS):
        return _ORDINALS[i - 1]
    return f"{i}{'th' if 10 <= i % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(i % 10, 'th')}"


def _path(name: str) -> str:
    """'2.body.0' -> 'model[2].body[0]' (how PyTorch indexes a Sequential)."""
    out = "model"
    for part in name.split("."):
        out += f"[{part}]" if part.isdigit() else f".{part}"
    return out


def _needs(m: nn.Module) -> str:
    def pair(v: int | Sequence[int]) -> str:
        a, b = (v, v) if isinstance(v, int) else tuple(v)
        return f"{a}x{b}"

    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        pad = m.padding if isinstance(m.padding, str) else pair(m.padding)
        return f", smaller than its {pair(m.kernel_size)} kernel" + (
            f" (padding {pad})" if m.padding not in (0, (0, 0), "valid") else "")
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        return f", smaller than its {pair(m.kernel_size)} window"
    return ""


# Where trace_shape runs its copy: on the CPU (two zero images) where that is cheap, else on the meta device. The
# meta device's first use imports torch's compiler stack (torch._dynamo, sympy: about 1 s), which a process that
# only builds and trains models (a pool worker) otherwise never pays; small images through torch's own layers
# take milliseconds on the CPU.
CPU_TRACE_MAX_VALUES = 3 * 64 * 64  # C*H*W of one image
CPU_TRACE_MAX_WORK = 4e9  # parameters x H x W: a bound on the multiply-adds per image


def _meta_is_warm() -> bool:
    """Whether the meta device's first use has been paid in this process
    (its compiler stack imported: by a meta run, or torch.optim)."""
    return "torch._dynamo" in sys.modules


def _trace_on_cpu(seq: nn.Sequential, input_shape: Sequence[int]) -> bool:
    """Whether :func:`trace_shape` runs ``seq`` on the CPU: not once the
    meta device is cheap (torch._dynamo already imported) or the default
    device is another; only for small images, layers whose forward is
    torch's own (or :class:`Residual`'s) with every tensor on the CPU and
    materialised (no lazy layers), and a bounded amount of work."""
    if _meta_is_warm() or torch.get_default_device().type != "cpu":
        return False
    if math.prod(input_shape) > CPU_TRACE_MAX_VALUES:
        return False
    if not all(type(m) is Residual or type(m).__module__.startswith("torch.nn.modules.") for m in seq.modules()):
        return False
    tensors = (*seq.parameters(), *seq.buffers())
    if any(is_lazy(t) or t.device.type != "cpu" for t in tensors):
        return False
    return sum(p.numel() for p in seq.parameters()) * math.prod(input_shape[1:]) <= CPU_TRACE_MAX_WORK


def trace_shape(layers: Sequence[nn.Module], input_shape: Sequence[int]) -> tuple[int, ...]:
    """The output shape (without the batch) of ``layers`` applied in order to
    images of ``input_shape`` (C, H, W), the way Keras infers shapes.

    Computed by running a copy of the layers, in eval mode and without
    gradients, on two images on the ``meta`` device (nothing is allocated),
    or, where that is cheaper (:func:`_trace_on_cpu`: small images through
    torch's own layers), on two zero images on the CPU, with the CPU
    generator's state restored afterwards; a CPU run that fails is run
    again on the meta device, so errors are the meta device's. Either way
    no random numbers are drawn and the layers themselves are untouched, so
    a factory can size its Dense layers from it and still build exactly as
    a hand-written model would. A layer that gets a map too small for it
    (or makes an empty one) raises :class:`InputTooSmall` naming the layer
    as ``model[i]`` of an ``nn.Sequential`` whose first layers are
    ``layers``."""
    seq = nn.Sequential(*layers)
    if _trace_on_cpu(seq, input_shape):
        # A failure is run again on the meta device (below), which says it as before.
        with contextlib.suppress(Exception), torch.random.fork_rng(devices=[]):
            return _trace(seq, input_shape, "cpu")
    return _trace(seq, input_shape, "meta")


def _trace(seq: nn.Sequential, input_shape: Sequence[int], device: str) -> tuple[int, ...]:
    copied = copy.deepcopy(seq).to(device).eval()
    leaves = [(n, m) for n, m in copied.named_modules() if n and next(m.children(), None) is None]
    seen: dict[type, int] = {}
    label: dict[int, str] = {}
    for n, m in leaves:
        seen[type(m)] = seen.get(type(m), 0) + 1
        top = n.split(".")[0]
        where = f"layer {int(top) + 1}, {_path(n)}" if "." not in n else f"in layer {int(top) + 1}: {_path(n)}"
        label[id(m)] = f"its {_ordinal(seen[type(m)])} {type(m).__name__} ({where})"
    entered: list[tuple[nn.Module, tuple[int, ...]]] = []

    def gets(m: nn.Module, shape: tuple[int, ...]) -> str:
        if len(shape) > 2:
            return (f"{label[id(m)]} gets a {'x'.join(map(str, shape[2:]))} feature map "
                    f"({shape[1]} channel{'s' if shape[1] != 1 else ''})")
        return f"{label[id(m)]} gets an input of shape {shape[1:]}"

    def pre(m: nn.Module, args: tuple[Any, ...]) -> None:
        entered.append((m, tuple(args[0].shape)))

    def post(m: nn.Module, args: tuple[Any, ...], out: Any) -> None:
        entered.pop()
        if isinstance(out, torch.Tensor) and out.numel() == 0:
            raise InputTooSmall(gets(m, tuple(args[0].shape)) + _needs(m) + " and makes an empty one")

    for _, m in leaves:
        m.register_forward_pre_hook(pre)
        m.register_forward_hook(post)
    try:
        with torch.no_grad():
            out = copied((torch.empty if device == "meta" else torch.zeros)(2, *input_shape, device=device))
    except InputTooSmall:
        raise
    except Exception as exc:  # noqa: BLE001 - a shape the layers cannot take: say which layer and what it got
        if not entered:  # not inside a layer (e.g. a residual sum): nothing more to say than PyTorch
            raise ModelError(f"layers fail on ({', '.join(map(str, input_shape))}) images: "
                             f"{type(exc).__name__}: {exc}") from exc
        m, shape = entered[-1]
        raise InputTooSmall(gets(m, shape) + (_needs(m) or f" (PyTorch: {exc})")) from None
    return tuple(out.shape[1:])


def flat_features(layers: Sequence[nn.Module], input_shape: Sequence[int]) -> int:
    """The width of the flat vector ``layers`` (ending in Flatten or a global
    pooling + Flatten) make of one (C, H, W) image; see :func:`trace_shape`."""
    shape = trace_shape(layers, input_shape)
    if len(shape) != 1:
        raise ModelError(f"these layers end in shape {shape}, not a flat vector: end them with nn.Flatten().")
    return shape[0]


def keras_init_(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Linear/Conv layer."""
    for m in model.modules():
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def conv_pool_bn(cin: int, cout: int, pool: bool = False) -> nn.Sequential:
    """conv -> [2x2 max-pool] -> BN -> ReLU: pooling before BatchNorm lets BN
    and ReLU (and their backward passes) run on 4x fewer elements."""
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, 3, padding=1, bias=False)]
    if pool:
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers, nn.BatchNorm2d(cout), nn.ReLU())


def dct_basis(k: int) -> torch.Tensor:
    """The k*k orthonormal 2-D DCT-II basis images, shape ``(k*k, k, k)``."""
    rows = []
    for u in range(k):
        v = torch.tensor([math.cos(math.pi * (i + 0.5) * u / k) for i in range(k)], dtype=torch.float64)
        rows.append(v / v.norm())
    return torch.stack([torch.outer(a, b) for a in rows for b in rows]).float()


def fixed_dct_conv(k: int = 3, channels: int = 1) -> nn.Conv2d:
    """A frozen k x k convolution from one channel onto the 2-D DCT basis and
    its negative (2*k*k channels): a fixed, complete set of patch features.
    Nothing flows back through it (no weight or input gradient), which on a
    CPU removes the most expensive backward pass of a small CNN: the weight
    gradient of a one-channel convolution at full resolution.

    With ``channels`` > 1 (colour images) the same filters are applied to
    each channel separately (a grouped convolution, ``groups=channels``):
    output channels ``2*k*k*c`` to ``2*k*k*(c+1) - 1`` are channel ``c``'s
    patch spectrum, so the stem stays a complete, fixed description of every
    patch and the layers after it learn how to mix colours. One channel
    builds exactly the one-channel stem."""
    basis = dct_basis(k)
    conv = nn.Conv2d(channels, 2 * k * k * channels, k, padding=k // 2, bias=False, groups=channels)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([basis, -basis])[:, None].repeat(channels, 1, 1, 1))
    conv.weight.requires_grad_(False)
    return conv


class Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)
