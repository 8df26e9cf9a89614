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


class KerasModule(nn.Module):
    """A Keras model as an archbench model: (N, C, H, W) images in, logits out."""

    def __init__(self, model: Any, name: str):
        super().__init__()
        keras = _keras()
        self.keras_model = model
        shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
        if shape is None or any(d is None for d in shape):
            raise ModelError(f"Keras model {name!r} has no fixed input shape; give it one "
                             "(keras.Input(shape=(28, 28)) or (28, 28, 1)).")
        self.keras_input_shape = tuple(int(d) for d in shape)
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


def wrap(model: Any, name: str) -> KerasModule:
    return KerasModule(model, name)


def load_keras_file(path: str | Path) -> KerasModule:
    """A ``.keras`` file as an archbench model. Its saved weights are replaced
    by a fresh initialisation from the unit's seed (archbench compares
    architectures: every unit trains from scratch)."""
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
    return wrap(fresh, str(p))
