"""The seed notebook's two Keras models, built exactly in PyTorch.

Keras' defaults are reproduced: Glorot-uniform kernels, zero biases, 'valid'
convolutions. The final softmax of the Keras models is folded into the loss
(cross-entropy on logits), which is the same function, computed more stably.

One layout difference, the same maths: Keras flattens a conv feature map in
(H, W, C) order, PyTorch in (C, H, W) order. The Dense layer after Flatten sees
a fixed permutation of the same 800 features; with i.i.d. initialisation the
two are the same model in distribution.
"""

from __future__ import annotations

from torch import nn

from archbench.models.blocks import keras_init_
from archbench.models.registry import register_model


@register_model("mlp", description="seed MLP: Flatten-Dense256-Dense128-Dense10 (235,146 params)",
                expected={"cpu": "87.40 % ± 0.46 (3 seeds), 4.7 s", "H200": "87.46 % ± 0.48, 0.65 s"})
def mlp() -> nn.Module:
    return keras_init_(nn.Sequential(
        nn.Flatten(),
        nn.Linear(28 * 28, 256), nn.ReLU(),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, 10),
    ))


@register_model("cnn", description="seed CNN: Conv16-Pool-Conv32-Pool-Dense64-Dense10 (56,714 params)",
                expected={"cpu": "88.77 % ± 0.41 (3 seeds), 15.5 s", "H200": "88.76 % ± 0.54, 1.35 s"})
def cnn() -> nn.Module:
    return keras_init_(nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 5 * 5, 64), nn.ReLU(),
        nn.Linear(64, 10),
    ))
