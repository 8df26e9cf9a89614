import math
import sys
import textwrap

import pytest
import torch
from torch import nn

from archbench.errors import ModelError
from archbench.measure import count_parameters
from archbench.models import check_model_io, create_model, list_models, register_model


def test_seed_param_counts_from_layer_shapes():
    # Hand-computed: weights + biases of each layer.
    mlp = 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    cnn = (3 * 3 * 1 * 16 + 16) + (3 * 3 * 16 * 32 + 32) + (5 * 5 * 32 * 64 + 64) + (64 * 10 + 10)
    assert (mlp, cnn) == (235_146, 56_714)
    assert count_parameters(create_model("mlp"))["trainable"] == mlp
    assert count_parameters(create_model("cnn"))["trainable"] == cnn


def test_keras_initialisation_glorot_uniform_zero_bias():
    torch.manual_seed(0)
    m = create_model("cnn")
    for layer in m.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            w = layer.weight
            rf = w[0, 0].numel() if w.dim() > 2 else 1
            fan_in, fan_out = w.shape[1] * rf, w.shape[0] * rf
            limit = math.sqrt(6 / (fan_in + fan_out))
            assert w.abs().max() <= limit
            # Uniform(-a, a) has std a/sqrt(3); with >= 144 samples within 25 %.
            assert abs(w.std().item() - limit / math.sqrt(3)) < 0.25 * limit / math.sqrt(3)
            assert torch.count_nonzero(layer.bias) == 0


def test_same_seed_same_weights():
    torch.manual_seed(3)
    a = create_model("mlp")
    torch.manual_seed(3)
    b = create_model("mlp")
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_registry_lists_and_rejects():
    assert {"mlp", "cnn"} <= set(list_models())
    with pytest.raises(ModelError, match="unknown model 'resnet9000'.*cnn, .*mlp"):
        create_model("resnet9000")
    with pytest.raises(ModelError, match="already registered"):
        register_model("mlp")(lambda: nn.Linear(1, 1))


def _write_module(tmp_path, name, body):
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))


def test_module_callable_from_working_directory(tmp_path, monkeypatch):
    _write_module(tmp_path, "my_models_ok", """
        from torch import nn
        def tiny():
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
        NOT_CALLABLE = 3
        def needs_arg(width):
            return nn.Linear(784, width)
        def not_a_module():
            return "hello"
        def wrong_shape():
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 7))
    """)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    m = create_model("my_models_ok:tiny")
    check_model_io(m, "my_models_ok:tiny")
    assert count_parameters(m)["trainable"] == 7850
    with pytest.raises(ModelError, match="has no attribute 'nope'"):
        create_model("my_models_ok:nope")
    with pytest.raises(ModelError, match="not a callable"):
        create_model("my_models_ok:NOT_CALLABLE")
    with pytest.raises(ModelError, match="need no arguments"):
        create_model("my_models_ok:needs_arg")
    with pytest.raises(ModelError, match="returned str"):
        create_model("my_models_ok:not_a_module")
    with pytest.raises(ModelError, match=r"\(2, 7\).*expected \(2, 10\)"):
        check_model_io(create_model("my_models_ok:wrong_shape"), "my_models_ok:wrong_shape")
    with pytest.raises(ModelError, match="cannot import module 'no_such_mod'"):
        create_model("no_such_mod:f")


def test_check_model_io_restores_training_mode_and_reports_crash():
    class Boom(nn.Module):
        def forward(self, x):
            raise RuntimeError("kaboom")

    m = Boom().train()
    with pytest.raises(ModelError, match="kaboom"):
        check_model_io(m, "boom")
    assert m.training
