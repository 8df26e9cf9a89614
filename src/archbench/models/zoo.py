"""The model zoo beyond the seed: a baseline and two stronger networks, each
with a training recipe tuned for Fashion-MNIST (see docs/zoo.md for how each
recipe's numbers were measured)."""

from __future__ import annotations

import math

import torch
from torch import nn

from archbench.models.registry import register_model
from archbench.models.seed import keras_init_


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


def fixed_dct_conv(k: int = 3) -> nn.Conv2d:
    """A frozen k x k convolution from one channel onto the 2-D DCT basis and
    its negative (2*k*k channels): a fixed, complete set of patch features.
    Nothing flows back through it (no weight or input gradient), which on a
    CPU removes the most expensive backward pass of a small CNN: the weight
    gradient of a one-channel convolution at full resolution."""
    basis = dct_basis(k)
    conv = nn.Conv2d(1, 2 * k * k, k, padding=k // 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([basis, -basis])[:, None])
    conv.weight.requires_grad_(False)
    return conv


class Residual(nn.Module):
    """x + body(x)."""

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body

    def forward(self, x):
        return x + self.body(x)


# What the zoo recipes share: AdamW with a one-cycle schedule, label smoothing,
# on-device crop/flip augmentation, bf16 autocast and flip test-time augmentation.
FAST_RECIPE = {"optimizer": "adamw", "weight_decay": 5e-4, "schedule": "onecycle", "warmup": 0.2,
               "label_smoothing": 0.1, "augment_crop": 2, "augment_flip": True, "precision": "bf16",
               "tta_flip": True}


@register_model("logreg", description="baseline: multinomial logistic regression (7,850 params)")
def logreg() -> nn.Module:
    return keras_init_(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10)))


@register_model("cnn_bn", description="wider CNN with BatchNorm: 2x(conv-BN-ReLU) per stage, 32-64 channels, dropout",
                recipe={**FAST_RECIPE, "epochs": 6, "batch_size": 256, "lr": 6e-3},
                expected={"cpu": "92.5 % in 112 s (seed 0, 2-core Xeon, bf16)"})
def cnn_bn() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 32), conv_bn(32, 32), nn.MaxPool2d(2),
        conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 10),
    )


@register_model("resnet_small", description="small residual network: stem, two residual stages (32, 64 ch), global pooling",
                recipe={**FAST_RECIPE, "epochs": 8, "batch_size": 256, "lr": 6e-3},
                expected={"cpu": "92.78 % (3 seeds) in 119 s (2-core Xeon, bf16)"})
def resnet_small() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 32), nn.MaxPool2d(2),                                   # 14x14
        Residual(nn.Sequential(conv_bn(32, 32), conv_bn(32, 32))),
        conv_bn(32, 64), nn.MaxPool2d(2),                                  # 7x7
        Residual(nn.Sequential(conv_bn(64, 64), conv_bn(64, 64))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 10),
    )


@register_model("dct_cnn", description="fixed DCT stem (18 frozen 3x3 filters), then conv-pool-BN-ReLU, 48-96-256 channels",
                recipe={**FAST_RECIPE, "epochs": 8, "batch_size": 256, "lr": 6e-3, "tta_shift": 1},
                expected={"cpu": "94.10 % (3 seeds, 93.96-94.25) in 111 s (2-core Xeon, bf16)"})
def dct_cnn() -> nn.Module:
    """The CPU's best accuracy for two minutes (docs/zoo.md): a frozen stem
    that needs no backward pass, pooling before BatchNorm, channels growing
    as the resolution halves, global max pooling."""
    stem = fixed_dct_conv(3)                                           # 28x28, 18 channels
    return nn.Sequential(
        stem, nn.MaxPool2d(2), nn.BatchNorm2d(stem.out_channels), nn.ReLU(),   # 14x14
        conv_pool_bn(stem.out_channels, 48),
        conv_pool_bn(48, 96, pool=True),                               # 7x7
        conv_pool_bn(96, 96),
        conv_pool_bn(96, 256, pool=True),                              # 3x3
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )


@register_model("resnet_wide", description="wider residual network for GPUs: 64-128-256 channels, three stages",
                recipe={**FAST_RECIPE, "epochs": 27, "batch_size": 512, "lr": 4e-3},
                expected={"H200": "95.17 % (3 seeds, 95.03-95.25) in 29.5 s; 18 epochs: 95.03 % in 19.5 s"})
def resnet_wide() -> nn.Module:
    return nn.Sequential(
        conv_bn(1, 64),                                                    # 28x28
        conv_bn(64, 128), nn.MaxPool2d(2),                                 # 14x14
        Residual(nn.Sequential(conv_bn(128, 128), conv_bn(128, 128))),
        conv_bn(128, 256), nn.MaxPool2d(2),                                # 7x7
        Residual(nn.Sequential(conv_bn(256, 256), conv_bn(256, 256))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(256, 10),
    )
