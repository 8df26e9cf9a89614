"""dct_cnn: the fixed DCT stem, its counts by hand, and that it stays fixed."""

import pytest
import torch

from archbench.measure import count_forward, count_train_step
from archbench.measure.params import count_parameters
from archbench.models import create_model, recipe_of
from archbench.models.blocks import dct_basis, fixed_dct_conv
from archbench.train import TrainConfig, train

# (c_in, c_out, output side) of dct_cnn's convolutions, the stem first.
CONVS = [(1, 18, 28), (18, 48, 14), (48, 96, 14), (96, 96, 7), (96, 256, 7)]
BN = [18, 48, 96, 96, 256]


@pytest.mark.parametrize("k", [2, 3, 5])
def test_dct_basis_is_orthonormal_and_starts_with_the_mean(k):
    b = dct_basis(k).reshape(k * k, k * k).double()
    assert torch.allclose(b @ b.T, torch.eye(k * k, dtype=torch.float64), atol=1e-6)
    assert torch.allclose(b[0], torch.full((k * k,), 1 / k, dtype=torch.float64), atol=1e-7)


def test_fixed_dct_conv_projects_patches_onto_the_basis_and_its_negative():
    conv = fixed_dct_conv(3)
    assert conv.out_channels == 18 and not conv.weight.requires_grad
    x = torch.rand(2, 1, 5, 5)
    out = conv(x)
    patch = x[0, 0, 1:4, 1:4].reshape(9)  # the patch centred on (2, 2)
    coeffs = dct_basis(3).reshape(9, 9) @ patch
    assert torch.allclose(out[0, :9, 2, 2], coeffs, atol=1e-6)
    assert torch.allclose(out[0, 9:, 2, 2], -coeffs, atol=1e-6)


def test_dct_cnn_params_and_flops_by_hand():
    model = create_model("dct_cnn")
    p = count_parameters(model)
    weights = sum(ci * co * 9 for ci, co, _ in CONVS)
    assert p["non_trainable"] == 18 * 9
    assert p["trainable"] == weights - 18 * 9 + 2 * sum(BN) + 256 * 10 + 10
    macs = [side * side * ci * co * 9 for ci, co, side in CONVS] + [256 * 10]
    assert count_forward(model, (1, 28, 28)).matmul_conv == 2 * sum(macs)
    # A training step: the forward, then the weight and input gradients of
    # every trainable layer, and nothing for the frozen stem. (The first
    # trainable conv does need its input gradient: the BatchNorm before it
    # has trainable weights.)
    b = 4
    step = count_train_step(model, (1, 28, 28), batch_size=b, num_classes=10)
    assert step["total"].matmul_conv == 2 * b * (sum(macs) + 2 * sum(macs[1:]))


def test_the_stem_stays_fixed_through_training(fashion):
    torch.manual_seed(0)
    model = create_model("dct_cnn")
    stem = model[0].weight.detach().clone()
    cfg = TrainConfig(**{**recipe_of("dct_cnn"), "epochs": 1, "batch_size": 64, "device": "cpu"})
    r = train(model, fashion.train_images[:1024], fashion.train_labels[:1024],
              fashion.test_images[:200], fashion.test_labels[:200], cfg, seed=0)
    assert torch.equal(model[0].weight, stem) and model[0].weight.grad is None
    assert r.history[0].train_loss < 2.3
