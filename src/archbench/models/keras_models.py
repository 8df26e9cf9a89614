"""Keras models on the PyTorch backend (optional extra: ``pip install 'archbench[keras]'``).

With ``KERAS_BACKEND=torch`` a Keras 3 model is a ``torch.nn.Module`` whose
weights are torch parameters, so archbench trains and measures it like any
other model: ``--models path/model.keras`` or a ``module:function`` that
returns a ``keras.Model`` (the seed notebook's own ``Sequential`` code runs
unchanged). The wrapper:

- lays out the batch as the model's input expects: archbench's images are
  ``(N, C, H, W)``; a Keras input of shape ``(H, W)`` gets ``(N, H, W)``,
  ``(H, W, C)`` gets channels-last, ``(C·H·W,)`` a flat vector;
- folds a final softmax into the loss, as archbench's own seed models do
  (the last layer's activation becomes linear: the model returns logits and
  the cross-entropy is computed from them, the same function, more stably);
- passes ``training=`` from the module's train/eval mode, so Dropout and
  BatchNormalization behave as in ``model.fit``;
- seeds Keras' initialisers from torch's RNG, so a unit's seed fixes the
  initial weights as it does for every other model.

archbench sets ``KERAS_BACKEND=torch`` when Keras has not been imported yet;
a Keras already running on another backend is refused with the fix.

Other datasets than 28x28 Fashion-MNIST: a ``.keras`` file has a fixed
input, and building it for images it cannot take (or for another class
count than its last layer's) is an error that says so before anything
trains. A ``module:function`` that builds a Keras model adapts to the data
when it takes ``input_shape`` (and ``num_classes``): it gets archbench's
``(C, H, W)``; :func:`keras_input_shape` turns that into the Keras input
shape the notebook's code used, ``(H, W)`` for one channel and channels-last
``(H, W, C)`` otherwise::

    def mlp(input_shape=(1, 28, 28), num_classes=10):
        return keras.Sequential([keras.Input(shape=keras_input_shape(input_shape)), layers.Flatten(),
                                 layers.Dense(256, activation="relu"), layers.Dense(num_classes)])

(``keras_input_shape(input_shape, channel_axis=True)`` for a ``Conv2D``
first layer, which needs ``(H, W, 1)`` for one channel.)
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import nn

from archbench.errors import ModelError


def _keras() -> Any:
    if "keras" not in sys.modules:
        os.environ.setdefault("KERAS_BACKEND", "torch")
    try:
        import keras
    except ImportError:
        raise ModelError("Keras models need Keras 3: pip install 'archbench[keras]'.") from None
    if keras.backend.backend() != "torch":
        raise ModelError(f"Keras runs on the {keras.backend.backend()!r} backend; archbench trains Keras models "
                         "on PyTorch: set KERAS_BACKEND=torch before Python starts (or before importing keras).")
    return keras


def is_keras_model(obj: Any) -> bool:
    keras = sys.modules.get("keras")
    return keras is not None and isinstance(obj, keras.Model)


@contextmanager
def keras_seeded() -> Iterator[None]:
    """Keras' initialisers seeded from the seed torch was given for this unit
    (``torch.initial_seed()``), while the block runs. Keras draws its
    initialisers' seeds from Python's ``random`` when a layer is created, so
    Python's and NumPy's generators are seeded inside the block and restored
    after it; torch's generator is left exactly as it was."""
    import random

    import numpy as np

    py, npy, tstate = random.getstate(), np.random.get_state(), torch.get_rng_state()
    _keras().utils.set_random_seed(torch.initial_seed() % (2**31 - 1))  # also reseeds torch: undone below
    torch.set_rng_state(tstate)
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)


def keras_input_shape(input_shape: tuple[int, ...], *, channel_axis: bool = False) -> tuple[int, ...]:
    """The Keras input shape for archbench's (C, H, W) images: ``(H, W)`` for
    one channel (as the seed notebook's MLP takes Fashion-MNIST), else
    channels-last ``(H, W, C)`` (Keras' default layout). ``channel_axis=True``
    keeps the channel axis for one channel too, ``(H, W, 1)``, as Keras'
    ``Conv2D`` needs (the notebook's CNN)."""
    c, h, w = input_shape
    return (h, w) if c == 1 and not channel_axis else (h, w, c)


def fits(keras_shape: tuple[int, ...], image_shape: tuple[int, ...]) -> bool:
    """Whether a Keras input of ``keras_shape`` takes (C, H, W) images (in one of
    the layouts :meth:`KerasModule.adapt` makes)."""
    c, h, w = image_shape
    return keras_shape in ((h, w, c), (c, h, w), (c * h * w,)) or (c == 1 and keras_shape == (h, w))


class KerasModule(nn.Module):
    """A Keras model as an archbench model: (N, C, H, W) images in, logits out."""

    def __init__(self, model: Any, name: str, input_shape: tuple[int, ...] | None = None,
                 num_classes: int | None = None):
        super().__init__()
        keras = _keras()
        self.keras_model = model
        shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
        if shape is None or any(d is None for d in shape):
            want = keras_input_shape(tuple(input_shape or (1, 28, 28)))
            raise ModelError(f"Keras model {name!r} has no fixed input shape; give it one "
                             f"(keras.Input(shape={want})).")
        self.keras_input_shape = tuple(int(d) for d in shape)
        if input_shape is not None and not fits(self.keras_input_shape, tuple(input_shape)):
            c, h, w = input_shape
            raise ModelError(
                f"Keras model {name!r} takes inputs of shape {self.keras_input_shape}, which does not fit images of "
                f"shape ({c}, {h}, {w}): its input shape is fixed; build it with "
                f"keras.Input(shape={keras_input_shape(tuple(input_shape))}) (a module:function taking input_shape "
                "adapts to every dataset), or choose a dataset of its shape.")
        outputs = getattr(model, "outputs", None)
        out = outputs[0].shape[-1] if outputs else None
        if num_classes is not None and out is not None and int(out) != num_classes:
            raise ModelError(f"Keras model {name!r} ends in {int(out)} outputs but the dataset has {num_classes} "
                             f"classes: end it with layers.Dense({num_classes}) (a module:function taking "
                             "num_classes adapts to every dataset).")
        last = model.layers[-1] if model.layers else None
        self.softmax_folded = getattr(last, "activation", None) is keras.activations.softmax
        if self.softmax_folded and last is not None:
            last.activation = keras.activations.linear

    def adapt(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s = self.keras_input_shape
        if s == (h, w) and c == 1:
            return x.reshape(n, h, w)
        if s == (h, w, c):
            return x.permute(0, 2, 3, 1)
        if s == (c, h, w):
            return x
        if s == (c * h * w,):
            return x.reshape(n, c * h * w)
        raise ModelError(f"the Keras model's input shape {s} does not fit images of shape ({c}, {h}, {w}); "
                         f"expected ({h}, {w}), ({h}, {w}, {c}), ({c}, {h}, {w}) or ({c * h * w},).")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.keras_model(self.adapt(x), training=self.training)


def wrap(model: Any, name: str, input_shape: tuple[int, ...] | None = None,
         num_classes: int | None = None) -> KerasModule:
    """``model`` as an archbench model; with ``input_shape``/``num_classes``,
    refused (named) where its fixed input or output does not fit them."""
    return KerasModule(model, name, input_shape, num_classes)


def load_keras_file(path: str | Path, input_shape: tuple[int, ...] | None = None,
                    num_classes: int | None = None) -> KerasModule:
    """A ``.keras`` file as an archbench model. Its saved weights are replaced
    by a fresh initialisation from the unit's seed (archbench compares
    architectures: every unit trains from scratch). Its input shape is
    fixed: images of another shape (or another class count) are refused."""
    keras = _keras()
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"Keras model file {str(p)!r} does not exist.")
    try:
        loaded = keras.saving.load_model(p, compile=False)
    except Exception as exc:  # noqa: BLE001 - any failure of a user file is reported with context
        raise ModelError(f"cannot load Keras model {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    try:
        with keras_seeded():
            fresh = keras.models.clone_model(loaded)  # same architecture, new weights from the seeded RNG
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"cannot rebuild Keras model {str(p)!r} from its configuration: {exc}") from exc
    return wrap(fresh, str(p), input_shape, num_classes)
