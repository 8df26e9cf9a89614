import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from archbench.errors import UsageError
from archbench.measure import count_parameters
from archbench.models import create_model
from archbench.models.spec import SpecError, build_from_spec
from archbench.resolve import load_experiment, resolve

SEED_CNN = {"layers": [
    {"type": "conv2d", "filters": 16, "kernel": 3, "activation": "relu"},
    {"type": "maxpool", "size": 2},
    {"type": "conv2d", "filters": 32, "kernel": 3, "activation": "relu"},
    {"type": "maxpool", "size": 2},
    {"type": "flatten"},
    {"type": "dense", "units": 64, "activation": "relu"},
    {"type": "dense", "units": 10},
]}


def test_the_seed_cnn_maps_one_to_one():
    m = build_from_spec(SEED_CNN)
    assert count_parameters(m)["trainable"] == 56_714
    ref = create_model("cnn")
    assert [type(a) for a in m] == [type(b) for b in ref]
    assert m(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_every_layer_type_and_residual():
    spec = {"layers": [
        {"type": "conv2d", "filters": 8, "kernel": 3, "padding": "same", "stride": 1, "bias": False},
        {"type": "batchnorm"}, {"type": "gelu"},
        {"type": "residual", "layers": [{"type": "conv2d", "filters": 8, "kernel": 3, "padding": 1},
                                        {"type": "silu"}]},
        {"type": "avgpool", "size": 2}, {"type": "conv2d", "filters": 4, "kernel": 3, "stride": 2, "padding": 1},
        {"type": "dropout", "rate": 0.1}, {"type": "globalavgpool"}, {"type": "dense", "units": 10},
    ]}
    m = build_from_spec(spec)
    assert m(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("layers, words", [
    ([{"type": "conv2d", "filters": 4, "kernel": 3}, {"type": "dense", "units": 10}],
     "layer 1 (dense) needs a flat input but gets shape (4, 26, 26): add { type = \"flatten\" } before it"),
    ([{"type": "conv2d", "filters": 4, "kernel": 29}], "layer 0 (conv2d): kernel 29x29 is larger than its input 28x28"),
    ([{"type": "maxpool", "size": 2}] * 5 + [{"type": "flatten"}, {"type": "dense", "units": 10}],
     "layer 4 (maxpool): window 2x2 is larger than its input 1x1"),
    ([{"type": "flatten"}, {"type": "dense", "units": -5}], "layer 1 (dense): field 'units' = -5 is invalid"),
    ([{"type": "flatten"}, {"type": "dense", "units": 10, "activation": "softmax"}],
     "field 'activation' = 'softmax' is invalid"),
    ([{"type": "conv2d", "filters": 4, "kernel": 3, "padding": "full"}], "field 'padding' = 'full' is invalid"),
    ([{"type": "dense2"}], "layer 0: unknown layer type 'dense2'"),
    ([{"type": "flatten", "units": 3}], "layer 0 (flatten): unknown field(s) ['units']"),
    ([{"type": "residual", "layers": [{"type": "conv2d", "filters": 4, "kernel": 3}]}],
     "layer 0 (residual): its layers map (1, 28, 28) to (4, 26, 26)"),
    ([{"type": "flatten"}, {"type": "dense", "units": 7}], "the last layer outputs shape (7,); expected (10,)"),
    ([{"type": "dropout", "rate": 1.5}], "field 'rate' = 1.5 is invalid"),
])
def test_spec_errors_name_layer_field_value_and_fix(layers, words):
    with pytest.raises(SpecError) as err:
        build_from_spec({"layers": layers})
    assert words in str(err.value)


layer_st = st.fixed_dictionaries({"type": st.sampled_from(
    ["dense", "conv2d", "maxpool", "avgpool", "flatten", "batchnorm", "dropout", "relu", "globalavgpool",
     "residual", "bogus"])}, optional={
    "units": st.one_of(st.integers(-2, 40), st.text(max_size=3)), "filters": st.integers(-1, 8),
    "kernel": st.one_of(st.integers(-1, 40), st.none()), "stride": st.integers(-1, 3),
    "padding": st.one_of(st.sampled_from(["same", "valid", "x"]), st.integers(-1, 3)),
    "size": st.integers(-1, 30), "rate": st.one_of(st.floats(-1, 2), st.just(float("nan"))),
    "activation": st.sampled_from(["relu", "nope", None]),
    "layers": st.just([{"type": "relu"}]), "extra": st.integers()})


@settings(max_examples=300, deadline=None)
@given(st.lists(layer_st, max_size=6), st.one_of(st.just([1, 28, 28]), st.lists(st.integers(-1, 30), max_size=4)))
def test_arbitrary_specs_build_or_raise_spec_errors(layers, shape):
    try:
        m = build_from_spec({"layers": layers, "input_shape": shape})
    except SpecError:
        return
    assert isinstance(m, nn.Module)
    assert m.eval()(torch.zeros(2, *shape)).shape == (2, 10)


def test_experiment_file_resolves_recipes_and_overrides(tmp_path):
    (tmp_path / "exp.toml").write_text(
        'name = "e"\nseeds = [0, 1]\ntrain_limit = 100\n[train]\nepochs = 2\n'
        '[[models]]\nname = "mlp"\n'
        '[[models]]\nname = "resnet_small"\n'
        '[[models]]\nname = "tiny"\nspec = { layers = [{ type = "flatten" }, { type = "dense", units = 10 }] }\n'
        'train = { lr = 0.01 }\n')
    cfg = resolve(experiment=load_experiment(tmp_path / "exp.toml"))
    assert cfg.models == ("mlp", "resnet_small", "tiny") and cfg.seeds == (0, 1) and cfg.name == "e"
    assert cfg.train_config_for("mlp").epochs == 2 and cfg.train_config_for("mlp").lr == 1e-3
    r = cfg.train_config_for("resnet_small")
    assert r.epochs == 2  # [train] wins over the model's recipe ...
    assert r.precision == "bf16" and r.schedule == "onecycle"  # ... which sets the rest
    assert cfg.train_config_for("tiny").lr == 0.01
    assert count_parameters(create_model("tiny"))["trainable"] == 7850


@pytest.mark.parametrize("text, words", [
    ('seeds = [0]\nbogus = 1\n[[models]]\nname = "mlp"\n', "the top level: unknown key(s) ['bogus']"),
    ('[[models]]\nname = "mlp"\ncolour = "red"\n', "models #1: unknown key(s) ['colour']"),
    ('[train]\nepoch = 5\n[[models]]\nname = "mlp"\n', "[train]: unknown key(s) ['epoch']"),
    ('[train]\nepochs = 0\n[[models]]\nname = "mlp"\n', "epochs = 0 is invalid"),
    ('[train]\nepochs = true\n[[models]]\nname = "mlp"\n', "epochs = True is invalid: expected an integer"),
    ('[train]\nlr = "fast"\n[[models]]\nname = "mlp"\n', "lr = 'fast' is invalid"),
    ('[train]\nprecision = "fp16"\n[[models]]\nname = "mlp"\n', "expected one of fp32, bf16"),
    ('train_limit = true\n[[models]]\nname = "mlp"\n', "train_limit = True is invalid"),
    ('verify = "false"\n[[models]]\nname = "mlp"\n', "verify = 'false' is invalid: expected true or false"),
    ('name = "../../x"\n[[models]]\nname = "mlp"\n', "name = '../../x' is invalid"),
    ('seeds = [0]\n', "at least one [[models]] table"),
    ('seeds = "0,1"\n[[models]]\nname = "mlp"\n', "seeds = '0,1' is invalid"),
    ('[[models]\nname = "mlp"\n', "not valid TOML"),
])
def test_malformed_experiment_files(tmp_path, text, words):
    (tmp_path / "bad.toml").write_text(text)
    with pytest.raises(UsageError) as err:
        load_experiment(tmp_path / "bad.toml")
    assert words in str(err.value)


def test_seed_study_file_equals_the_default_config():
    from pathlib import Path

    from archbench.resolve import config_differences

    cfg = resolve(experiment=load_experiment(Path(__file__).parents[1] / "examples" / "seed_study.toml"))
    assert config_differences(cfg.to_dict(), resolve().to_dict()) == []
