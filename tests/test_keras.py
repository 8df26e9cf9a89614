"""Keras models on the PyTorch backend: the seed notebook's own Sequential
code runs unchanged and is counted like archbench's built-in mlp/cnn."""

import os
import sys

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras", reason="Keras is not installed (pip install 'archbench[keras]'; make test "
                                              "installs it)")

from archbench.measure import count_forward, count_parameters, count_train_step  # noqa: E402
from archbench.models import create_model  # noqa: E402

# The seed notebook's two models, as written there.
NOTEBOOK = '''
import keras
from keras import layers


def mlp():
    return keras.Sequential([
        keras.Input(shape=(28, 28)),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def cnn():
    return keras.Sequential([
        keras.Input(shape=(28, 28, 1)),
        layers.Conv2D(16, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
'''


@pytest.fixture
def notebook(tmp_path, monkeypatch):
    (tmp_path / "seed_notebook.py").write_text(NOTEBOOK)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "seed_notebook"
    sys.modules.pop("seed_notebook", None)


@pytest.mark.parametrize("name, params", [("mlp", 235_146), ("cnn", 56_714)])
def test_notebook_models_count_like_the_builtin_ones(notebook, name, params):
    torch.manual_seed(0)
    m = create_model(f"{notebook}:{name}")
    builtin = create_model(name)
    assert count_parameters(m)["trainable"] == params == count_parameters(builtin)["trainable"]
    assert count_forward(m, (1, 28, 28)).matmul_conv == count_forward(builtin, (1, 28, 28)).matmul_conv
    assert count_train_step(m, batch_size=64)["total"].matmul_conv == \
        count_train_step(builtin, batch_size=64)["total"].matmul_conv
    # The final softmax is folded into the loss: the model returns logits, which need not sum to 1.
    assert m.softmax_folded
    out = m.eval()(torch.rand(3, 1, 28, 28))
    assert out.shape == (3, 10) and not torch.allclose(out.sum(1), torch.ones(3))


def test_a_units_seed_fixes_keras_initialisation_without_touching_torchs_stream(notebook):
    def weights(seed):
        torch.manual_seed(seed)
        m = create_model(f"{notebook}:cnn")
        return [p.detach().clone() for p in m.parameters()], torch.rand(4)

    (a, ra), (b, _), (c, _) = weights(0), weights(0), weights(1)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))
    torch.manual_seed(0)
    assert torch.equal(ra, torch.rand(4))  # seeding Keras left torch's global stream where it was


def test_a_keras_file_trains_through_the_cli(notebook, tmp_path, fashion_dir):
    import json

    from archbench.cli import main

    sys.path.insert(0, str(tmp_path))
    import seed_notebook

    path = tmp_path / "cnn.keras"
    seed_notebook.cnn().save(path)
    rc = main(["run", "--models", f"{path},{notebook}:mlp", "--train-limit", "1024", "--test-limit", "300",
               "--epochs", "1", "--quiet", "--no-timing", "--out", str(tmp_path / "runs"), "--name", "k"])
    assert rc == 0
    rec = json.loads((tmp_path / "runs" / "k" / "results.json").read_text())
    for ref, params in ((str(path), 56_714), (f"{notebook}:mlp", 235_146)):
        e = rec["models"][ref]
        assert e["measurements"]["params"]["trainable"] == params
        u = e["units"][0]
        assert u["status"] == "ok" and u["test"]["accuracy"] > 0.3
        # Each weight saved once, though Keras lists its parameters under two names.
        assert e["measurements"]["saved_size_bytes"]["safetensors"] < 4 * params + 8_000


def test_a_keras_model_that_cannot_take_the_images_is_refused(tmp_path, monkeypatch):
    from archbench.errors import ModelError
    from archbench.models import check_model_io

    (tmp_path / "wrong_shape.py").write_text(
        "import keras\n"
        "def make():\n"
        "    return keras.Sequential([keras.Input(shape=(32, 32, 3)), keras.layers.Flatten(), "
        "keras.layers.Dense(10)])\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    m = create_model("wrong_shape:make")
    with pytest.raises(ModelError, match=r"input shape \(32, 32, 3\) does not fit images of shape \(1, 28, 28\)"):
        check_model_io(m, "wrong_shape:make", (1, 28, 28))


ADAPTING = '''
import keras
from keras import layers

from archbench.models import keras_input_shape


def mlp(input_shape=(1, 28, 28), num_classes=10):
    return keras.Sequential([
        keras.Input(shape=keras_input_shape(input_shape)),
        layers.Flatten(),
        layers.Dense(256, activation="relu"),
        layers.Dense(128, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ])


def cnn(input_shape=(1, 28, 28), num_classes=10):
    return keras.Sequential([
        keras.Input(shape=keras_input_shape(input_shape, channel_axis=True)),
        layers.Conv2D(16, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(num_classes, activation="softmax"),
    ])
'''


@pytest.mark.parametrize("shape, k", [((3, 32, 32), 10), ((1, 12, 12), 100)])
def test_keras_factories_that_take_the_shape_adapt_like_the_builtin_models(tmp_path, monkeypatch, shape, k):
    from archbench.models import check_model_io, keras_input_shape

    assert keras_input_shape((1, 28, 28)) == (28, 28) and keras_input_shape((3, 32, 32)) == (32, 32, 3)
    assert keras_input_shape((1, 28, 28), channel_axis=True) == (28, 28, 1)
    (tmp_path / "adapting_keras.py").write_text(ADAPTING)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        for name in ("mlp", "cnn"):
            m = create_model(f"adapting_keras:{name}", input_shape=shape, num_classes=k)
            check_model_io(m, name, shape, k)
            builtin = create_model(name, input_shape=shape, num_classes=k)
            assert count_parameters(m)["trainable"] == count_parameters(builtin)["trainable"]
            assert count_forward(m, shape).matmul_conv == count_forward(builtin, shape).matmul_conv
    finally:
        sys.modules.pop("adapting_keras", None)


def test_a_keras_file_has_a_fixed_input_and_class_count(notebook, tmp_path):
    import seed_notebook  # the notebook fixture put it on sys.path

    from archbench.errors import ModelError

    path = tmp_path / "cnn.keras"
    seed_notebook.cnn().save(path)
    assert create_model(str(path), input_shape=(1, 28, 28), num_classes=10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ModelError, match=r"takes inputs of shape \(28, 28, 1\), which does not fit images of shape "
                                         r"\(3, 32, 32\): its input shape is fixed; build it with "
                                         r"keras.Input\(shape=\(32, 32, 3\)\)"):
        create_model(str(path), input_shape=(3, 32, 32), num_classes=10)
    with pytest.raises(ModelError, match=r"ends in 10 outputs but the dataset has 100 classes"):
        create_model(str(path), input_shape=(1, 28, 28), num_classes=100)
