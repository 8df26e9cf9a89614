"""The seed notebook's two Keras models, built exactly in PyTorch.

Keras' defaults are reproduced: Glorot-uniform kernels, zero biases, 'valid'
convolutions. The final softmax of the Keras models is folded into the loss
(cross-entropy on logits), which is the same function, computed more stably.

One layout difference, the same maths: Keras flattens a conv feature map in
(H, W, C) order, PyTorch in (C, H, W) order. The Dense layer after Flatten sees
a fixed permutation of the same 800 features; with i.i.d. initialisation the
two are the same model in distribution.

Both adapt to the dataset as the notebook's Keras ``Sequential`` code would
if given its shape: the first layer takes the images' channels (the MLP's
first Dense takes C·H·W features), the Dense after the CNN's Flatten takes
as many features as the convolutions leave (shape inference, 'valid'
padding), and the last layer has one output per class. For (1, 28, 28) and
10 classes they are built exactly as in the notebook.
"""

from __future__ import annotations

import math

from torch import nn

from archbench.models.blocks import flat_features, keras_init_
from archbench.models.registry import register_model

MNIST = (1, 28, 28)


@register_model("mlp", description="seed MLP: Flatten-Dense256-Dense128-Dense(classes) "
                                   "(235,146 params for 1x28x28 images, 10 classes)",
                expected={"cpu": "87.40 % ± 0.46 (3 seeds), 4.7 s", "H200": "87.46 % ± 0.48, 0.65 s"})
def mlp(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    return keras_init_(nn.Sequential(
        nn.Flatten(),
        nn.Linear(math.prod(input_shape), 256), nn.ReLU(),
        nn.Linear(256, 128), nn.ReLU(),
        nn.Linear(128, num_classes),
    ))


@register_model("cnn", description="seed CNN: Conv16-Pool-Conv32-Pool-Dense64-Dense(classes) "
                                   "(56,714 params for 1x28x28 images, 10 classes)",
                expected={"cpu": "88.77 % ± 0.41 (3 seeds), 15.5 s", "H200": "88.76 % ± 0.54, 1.35 s"})
def cnn(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    features = [
        nn.Conv2d(input_shape[0], 16, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    return keras_init_(nn.Sequential(
        *features,
        nn.Linear(flat_features(features, input_shape), 64), nn.ReLU(),  # 32·5·5 = 800 for 28x28
        nn.Linear(64, num_classes),
    ))
