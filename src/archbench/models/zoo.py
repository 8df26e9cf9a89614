"""The model zoo beyond the seed: a baseline and two stronger networks, each
with a training recipe tuned for Fashion-MNIST (see docs/zoo.md for how each
recipe's numbers were measured).

Every model adapts to the dataset: its first layer takes the images'
channels, its last layer has one output per class, and the width of a Dense
layer after Flatten is inferred from the image size (``trace_shape``, which
draws no random numbers, so (1, 28, 28) with 10 classes builds exactly the
model the recipes were measured with). The architectures themselves do not
change with the size: a model whose pooling would shrink the images below
one pixel is refused with the layer that fails and the smallest size it
takes (``archbench.models.min_input_of``: 4x4 for cnn_bn and the ResNets,
8x8 for dct_cnn, 1x1 for logreg)."""

from __future__ import annotations

import math

from torch import nn

from archbench.models.blocks import (
    Residual,
    conv_bn,
    conv_pool_bn,
    fixed_dct_conv,
    flat_features,
    keras_init_,
)
from archbench.models.registry import register_model

MNIST = (1, 28, 28)

# What the zoo recipes share: AdamW with a one-cycle schedule, label smoothing,
# on-device crop/flip augmentation, bf16 autocast and flip test-time augmentation.
FAST_RECIPE = {"optimizer": "adamw", "weight_decay": 5e-4, "schedule": "onecycle", "warmup": 0.2,
               "label_smoothing": 0.1, "augment_crop": 2, "augment_flip": True, "precision": "bf16",
               "tta_flip": True}


@register_model("logreg", description="baseline: multinomial logistic regression "
                                      "(7,850 params for 1x28x28 images, 10 classes)")
def logreg(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    return keras_init_(nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes)))


@register_model("cnn_bn", description="wider CNN with BatchNorm: 2x(conv-BN-ReLU) per stage, 32-64 channels, dropout",
                recipe={**FAST_RECIPE, "epochs": 6, "batch_size": 256, "lr": 6e-3},
                expected={"cpu": "92.5 % in 112 s (seed 0, 2-core Xeon, bf16)"})
def cnn_bn(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    features = [
        conv_bn(input_shape[0], 32), conv_bn(32, 32), nn.MaxPool2d(2),
        conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2),
        nn.Flatten(),
    ]
    return nn.Sequential(*features, nn.Dropout(0.3),
                         nn.Linear(flat_features(features, input_shape), num_classes))  # 64·7·7 for 28x28


@register_model("resnet_small",
                description="small residual network: stem, two residual stages (32, 64 ch), global pooling",
                recipe={**FAST_RECIPE, "epochs": 8, "batch_size": 256, "lr": 6e-3},
                expected={"cpu": "92.78 % (3 seeds) in 119 s (2-core Xeon, bf16)"})
def resnet_small(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    features = [
        conv_bn(input_shape[0], 32), nn.MaxPool2d(2),                      # 14x14
        Residual(nn.Sequential(conv_bn(32, 32), conv_bn(32, 32))),
        conv_bn(32, 64), nn.MaxPool2d(2),                                  # 7x7
        Residual(nn.Sequential(conv_bn(64, 64), conv_bn(64, 64))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    ]
    return nn.Sequential(*features, nn.Linear(flat_features(features, input_shape), num_classes))


@register_model("dct_cnn",
                description="fixed DCT stem (18 frozen 3x3 filters per image channel), then conv-pool-BN-ReLU, "
                            "48-96-256 channels",
                recipe={**FAST_RECIPE, "epochs": 8, "batch_size": 256, "lr": 6e-3, "tta_shift": 1},
                expected={"cpu": "94.10 % (3 seeds, 93.96-94.25) in 111 s (2-core Xeon, bf16)"})
def dct_cnn(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    """The CPU's best accuracy for two minutes (docs/zoo.md): a frozen stem
    that needs no backward pass, pooling before BatchNorm, channels growing
    as the resolution halves, global max pooling. Colour images get the same
    fixed filters on each channel (18 stem channels per image channel)."""
    stem = fixed_dct_conv(3, channels=input_shape[0])                  # 28x28, 18 channels
    features = [
        stem, nn.MaxPool2d(2), nn.BatchNorm2d(stem.out_channels), nn.ReLU(),   # 14x14
        conv_pool_bn(stem.out_channels, 48),
        conv_pool_bn(48, 96, pool=True),                               # 7x7
        conv_pool_bn(96, 96),
        conv_pool_bn(96, 256, pool=True),                              # 3x3
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    ]
    return nn.Sequential(*features, nn.Linear(flat_features(features, input_shape), num_classes))


@register_model("resnet_wide", description="wider residual network for GPUs: 64-128-256 channels, three stages",
                recipe={**FAST_RECIPE, "epochs": 27, "batch_size": 512, "lr": 4e-3},
                expected={"H200": "95.17 % (3 seeds, 95.03-95.25) in 29.5 s; 18 epochs: 95.03 % in 19.5 s"})
def resnet_wide(input_shape: tuple[int, int, int] = MNIST, num_classes: int = 10) -> nn.Module:
    features = [
        conv_bn(input_shape[0], 64),                                       # 28x28
        conv_bn(64, 128), nn.MaxPool2d(2),                                 # 14x14
        Residual(nn.Sequential(conv_bn(128, 128), conv_bn(128, 128))),
        conv_bn(128, 256), nn.MaxPool2d(2),                                # 7x7
        Residual(nn.Sequential(conv_bn(256, 256), conv_bn(256, 256))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(),
    ]
    return nn.Sequential(*features, nn.Linear(flat_features(features, input_shape), num_classes))
