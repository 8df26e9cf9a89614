"""Building blocks of the built-in models and of declarative specs.

This module registers nothing: the registry and the model files import it,
never the reverse.
"""

from __future__ import annotations

import math

import torch
from torch import nn


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
