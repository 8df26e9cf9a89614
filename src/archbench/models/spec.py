"""Declarative model specs: a Keras-``Sequential``-like list of layers in TOML.

    [model]
    name = "small_cnn"
    layers = [
      { type = "conv2d", filters = 16, kernel = 3, activation = "relu" },
      { type = "maxpool", size = 2 },
      { type = "flatten" },
      { type = "dense", units = 64, activation = "relu" },
      { type = "dense", units = "num_classes" },
    ]

The input is the dataset's: the first layer takes its channels and every
layer's input size is inferred from the one before (as Keras' ``Sequential``
does). ``input_shape = [C, H, W]`` and ``num_classes = K`` are optional;
where given they pin the spec to that shape or class count, and building it
for a dataset of another one is an error that says so. Without a dataset
(e.g. when a spec is checked as it is read) the input is (1, 28, 28) and the
class count 10.

Layer types and their fields (defaults in brackets):

- ``dense``: units (an integer, or "num_classes": one per class of the
  dataset), activation [none], bias [true]
- ``conv2d``: filters, kernel, stride [1], padding ["valid" | "same" | int, "valid"],
  activation [none], bias [true]
- ``maxpool`` / ``avgpool``: size, stride [size]
- ``globalavgpool``; ``flatten``; ``batchnorm``; ``dropout``: rate
- ``relu`` / ``gelu`` / ``silu`` / ``tanh`` / ``sigmoid`` (also as ``activation``)
- ``residual``: layers (a list as above, mapping its input shape to itself)

Shapes are inferred layer by layer; every error names the layer index, the
field, the bad value and what is allowed, before anything trains. A layer
whose weights would not fit in this machine's memory is refused with its
size in bytes before anything is allocated. Kernels are Glorot-uniform and
biases zero, as Keras initialises them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from torch import nn

from archbench.env import physical_memory
from archbench.errors import ModelError
from archbench.models.blocks import InputTooSmall, Residual, keras_init_

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
FIELDS = {
    "dense": {"units", "activation", "bias"},
    "conv2d": {"filters", "kernel", "stride", "padding", "activation", "bias"},
    "maxpool": {"size", "stride"}, "avgpool": {"size", "stride"},
    "globalavgpool": set(), "flatten": set(), "batchnorm": set(), "dropout": {"rate"},
    "residual": {"layers"},
    **{a: set() for a in ACTIVATIONS},
}


class SpecError(ModelError):
    """A model spec that cannot be built."""


class SpecInputTooSmall(SpecError, InputTooSmall):
    """A spec whose layers cannot take the input's size."""


class _Layer:
    def __init__(self, where: str, kind: str, d: dict) -> None:
        self.where, self.kind, self.d = where, kind, d

    def fail(self, field: str | None, value: object, expect: str) -> NoReturn:
        what = f"field {field!r} = {value!r}" if field else f"value {value!r}"
        raise SpecError(f"{self.where} ({self.kind}): {what} is invalid: expected {expect}.")

    def int_field(self, name: str, default: int | None = None, lo: int = 1) -> int:
        v = self.d.get(name, default)
        if v is None:
            raise SpecError(f"{self.where} ({self.kind}): field {name!r} is required (an integer >= {lo}).")
        if not isinstance(v, int) or isinstance(v, bool) or v < lo:
            self.fail(name, v, f"an integer >= {lo}")
        return v


def _weights(layer: _Layer, params: int, cls: Callable[..., nn.Module], *args: Any, **kwargs: Any) -> nn.Module:
    """``cls(*args, **kwargs)``: a layer of ``params`` float32 parameters,
    refusing one that cannot fit in memory (named, with its bytes) before
    allocating it."""
    nbytes = 4 * params
    memory = physical_memory()
    if memory is not None and nbytes > memory:
        raise SpecError(f"{layer.where} ({layer.kind}): {params:,} parameters = {nbytes:,} bytes as float32, more "
                        f"than this machine's memory ({memory:,} bytes); make the layer smaller.")
    try:
        return cls(*args, **kwargs)
    except (RuntimeError, MemoryError, OverflowError, ValueError) as exc:
        raise SpecError(f"{layer.where} ({layer.kind}): cannot allocate its {params:,} parameters ({nbytes:,} "
                        f"bytes as float32): {type(exc).__name__}: {exc}; make the layer smaller.") from exc


def _activation(layer: _Layer) -> list[nn.Module]:
    a = layer.d.get("activation")
    if a is None or a in ("none", "linear"):
        return []
    if a == "softmax":
        layer.fail("activation", a, "relu, gelu, silu, tanh, sigmoid or none — the loss applies softmax "
                   "itself (cross-entropy on logits), so the last layer stays linear")
    if a not in ACTIVATIONS:
        layer.fail("activation", a, "one of relu, gelu, silu, tanh, sigmoid, none")
    return [ACTIVATIONS[a]()]


def _shape(s: Sequence[int]) -> str:
    return "(" + ", ".join(map(str, s)) + ("," if len(s) == 1 else "") + ")"


def build_layers(layers: object, shape: tuple[int, ...], prefix: str = "layer",
                 num_classes: int = 10) -> tuple[list[nn.Module], tuple[int, ...]]:
    if not isinstance(layers, list) or not layers:
        raise SpecError(f"{prefix}s: expected a non-empty list of layer tables, got {layers!r}.")
    mods: list[nn.Module] = []
    for i, d in enumerate(layers):
        where = f"{prefix} {i}"
        if not isinstance(d, dict) or "type" not in d:
            raise SpecError(f"{where}: expected a table with a 'type' field, got {d!r}.")
        kind = d["type"]
        if kind not in FIELDS:
            raise SpecError(f"{where}: unknown layer type {kind!r}; known: {', '.join(sorted(FIELDS))}.")
        layer = _Layer(where, kind, d)
        unknown = set(d) - FIELDS[kind] - {"type"}
        if unknown:
            raise SpecError(f"{where} ({kind}): unknown field(s) {sorted(unknown)}; "
                            f"allowed: {sorted(FIELDS[kind]) or 'none'}.")
        if kind == "dense":
            if len(shape) != 1:
                raise SpecError(f"{where} (dense) needs a flat input but gets shape {_shape(shape)}: "
                                "add { type = \"flatten\" } before it.")
            units = num_classes if d.get("units") == "num_classes" else layer.int_field("units")
            bias = bool(d.get("bias", True))
            mods.append(_weights(layer, shape[0] * units + units * bias,
                                 nn.Linear, shape[0], units, bias=bias))
            mods += _activation(layer)
            shape = (units,)
        elif kind == "conv2d":
            if len(shape) != 3:
                raise SpecError(f"{where} (conv2d) needs a (channels, height, width) input but gets {_shape(shape)}.")
            filters, k = layer.int_field("filters"), layer.int_field("kernel")
            stride = layer.int_field("stride", 1)
            pad = d.get("padding", "valid")
            if pad == "valid":
                p = 0
            elif pad == "same":
                if stride != 1 or k % 2 == 0:
                    layer.fail("padding", pad, "'same' only with stride 1 and an odd kernel; give an integer")
                p = k // 2
            elif isinstance(pad, int) and not isinstance(pad, bool) and pad >= 0:
                p = pad
            else:
                layer.fail("padding", pad, "'valid', 'same' or an integer >= 0")
            c, h, w = shape
            if k > h + 2 * p or k > w + 2 * p:
                raise SpecInputTooSmall(f"{where} (conv2d): kernel {k}x{k} is larger than its input {h}x{w}"
                                        + (f" padded by {p}" if p else "") + f" (input shape {_shape(shape)}).")
            bias = bool(d.get("bias", True))
            mods.append(_weights(layer, c * filters * k * k + filters * bias,
                                 nn.Conv2d, c, filters, k, stride, p, bias=bias))
            mods += _activation(layer)
            shape = (filters, (h + 2 * p - k) // stride + 1, (w + 2 * p - k) // stride + 1)
        elif kind in ("maxpool", "avgpool"):
            if len(shape) != 3:
                raise SpecError(f"{where} ({kind}) needs a (channels, height, width) input but gets {_shape(shape)}.")
            size = layer.int_field("size")
            stride = layer.int_field("stride", size)
            c, h, w = shape
            if size > h or size > w:
                raise SpecInputTooSmall(f"{where} ({kind}): window {size}x{size} is larger than its input {h}x{w}.")
            mods.append((nn.MaxPool2d if kind == "maxpool" else nn.AvgPool2d)(size, stride))
            shape = (c, (h - size) // stride + 1, (w - size) // stride + 1)
        elif kind == "globalavgpool":
            if len(shape) != 3:
                raise SpecError(f"{where} (globalavgpool) needs a (channels, height, width) input but gets "
                                f"{_shape(shape)}.")
            mods += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
            shape = (shape[0],)
        elif kind == "flatten":
            mods.append(nn.Flatten())
            shape = (math.prod(shape),)
        elif kind == "batchnorm":
            mods.append(nn.BatchNorm2d(shape[0]) if len(shape) == 3 else nn.BatchNorm1d(shape[0]))
        elif kind == "dropout":
            rate = d.get("rate")
            if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not 0 <= rate < 1:
                layer.fail("rate", rate, "a number in [0, 1)")
            mods.append(nn.Dropout(float(rate)))
        elif kind in ACTIVATIONS:
            mods.append(ACTIVATIONS[kind]())
        elif kind == "residual":
            inner, out_shape = build_layers(d.get("layers"), shape, prefix=f"{where}.layer", num_classes=num_classes)
            if out_shape != shape:
                raise SpecError(f"{where} (residual): its layers map {_shape(shape)} to {_shape(out_shape)}; "
                                "a residual block must keep the shape (use padding \"same\", stride 1).")
            mods.append(Residual(nn.Sequential(*inner)))
    return mods, shape


def build_from_spec(spec: dict, source: str = "spec", *, input_shape: tuple[int, ...] | None = None,
                    num_classes: int | None = None, check_classes: bool = True) -> nn.Module:
    """An ``nn.Sequential`` from a spec table (the ``[model]`` table's
    content) for images of ``input_shape`` in ``num_classes`` classes (the
    dataset's; None: the spec's own ``input_shape``/``num_classes``, else
    (1, 28, 28) and 10). ``check_classes=False`` skips checking that the
    last layer has one output per class (for checking a spec before its
    dataset is known)."""
    if not isinstance(spec, dict):
        raise SpecError(f"{source}: expected a table with 'layers', got {type(spec).__name__}.")
    unknown = set(spec) - {"name", "input_shape", "layers", "num_classes"}
    if unknown:
        raise SpecError(f"{source}: unknown key(s) {sorted(unknown)}; allowed: input_shape, layers, name, num_classes.")
    declared = spec.get("input_shape")
    if declared is not None and not (isinstance(declared, list) and declared
                                     and all(isinstance(v, int) and v > 0 for v in declared)):
        raise SpecError(f"{source}: input_shape = {declared!r} is invalid: expected a list of positive integers.")
    if input_shape is not None and declared is not None and tuple(declared) != tuple(input_shape):
        raise SpecError(f"{source} declares input_shape = {declared!r} but the images are {_shape(input_shape)}: "
                        "remove input_shape from the spec (the input is inferred from the dataset) or set it to "
                        f"{list(input_shape)!r}.")
    declared_k = spec.get("num_classes")
    if declared_k is not None and not (isinstance(declared_k, int) and not isinstance(declared_k, bool)
                                       and declared_k > 0):
        raise SpecError(f"{source}: num_classes = {declared_k!r} is invalid: expected a positive integer.")
    if num_classes is not None and declared_k is not None and declared_k != num_classes:
        raise SpecError(f"{source} declares num_classes = {declared_k} but the dataset has {num_classes} classes: "
                        f"remove num_classes from the spec and end it with {{ type = \"dense\", units = "
                        f"\"num_classes\" }}, or set it to {num_classes}.")
    shape = tuple(input_shape if input_shape is not None else declared or (1, 28, 28))
    n_classes = num_classes if num_classes is not None else declared_k or 10
    try:
        mods, out = build_layers(spec.get("layers"), shape, num_classes=n_classes)
    except InputTooSmall as exc:
        raise SpecInputTooSmall(exc.detail, prefix=f"{source}: ") from None
    except SpecError as exc:
        raise SpecError(f"{source}: {exc}") from None
    if check_classes and out != (n_classes,):
        last = spec["layers"][-1]
        fixed = isinstance(last, dict) and last.get("type") == "dense" and isinstance(last.get("units"), int)
        raise SpecError(f"{source}: the last layer outputs shape {_shape(out)}; expected ({n_classes},) logits, "
                        "one per class"
                        + (f": its units = {last['units']} is fixed; write units = \"num_classes\" (one per class "
                           f"of the dataset) or units = {n_classes}." if fixed else
                           f" — end with {{ type = \"dense\", units = \"num_classes\" }} (or units = {n_classes})."))
    return keras_init_(nn.Sequential(*mods))


def load_spec_file(path: str | Path) -> tuple[str, dict]:
    """(name, spec) from a TOML file holding a [model] table."""
    from archbench.errors import read_toml

    path = Path(path)
    data = read_toml(path, "model spec", SpecError)
    if "model" not in data:
        raise SpecError(f"model spec {str(path)!r} has no [model] table.")
    model = data["model"]
    if not isinstance(model, dict):
        raise SpecError(f"model spec {str(path)!r}: model = {model!r} is invalid: expected a [model] table with "
                        "'layers'.")
    name = model.get("name", path.stem)
    if not isinstance(name, str) or not name:
        raise SpecError(f"model spec {str(path)!r}: name = {name!r} is invalid: expected a non-empty string.")
    return name, model
