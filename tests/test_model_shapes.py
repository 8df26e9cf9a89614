"""Models built for the dataset's shape (issue #15): hand-computed counts,
the named error for a model that cannot take the images, user factories
with and without the shape arguments, specs that infer their input, and
bit-identical construction for the default (1, 28, 28) / 10 classes."""

import copy
import math
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from archbench.errors import ModelError
from archbench.measure import count_parameters
from archbench.models import (
    InputTooSmall,
    adapts,
    blocks,
    check_model_io,
    create_model,
    get_entry,
    input_shape_of,
    list_models,
    min_input_of,
    trace_shape,
)
from archbench.models.blocks import (
    Residual,
    conv_bn,
    conv_pool_bn,
    dct_basis,
    fixed_dct_conv,
    keras_init_,
)
from archbench.models.registry import register_spec
from archbench.models.spec import SpecError, build_from_spec

ZOO = ["logreg", "cnn_bn", "resnet_small", "dct_cnn", "resnet_wide"]


def trainable(m: nn.Module) -> int:
    return count_parameters(m)["trainable"]


# ---- the seed models, adapted as Keras' Sequential would build them ------------------------------------------------

@pytest.mark.parametrize("shape, k, params", [
    ((3, 32, 32), 10, 3072 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
    ((1, 8, 8), 10, 64 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
    ((3, 32, 32), 100, 3072 * 256 + 256 + 256 * 128 + 128 + 128 * 100 + 100),
    ((1, 28, 28), 10, 784 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10),
])
def test_mlp_counts_by_hand(shape, k, params):
    m = create_model("mlp", input_shape=shape, num_classes=k)
    assert trainable(m) == params
    assert m.eval()(torch.zeros(2, *shape)).shape == (2, k)


def test_the_acceptance_numbers():
    assert 3072 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10 == 820_874
    assert trainable(create_model("mlp", input_shape=(3, 32, 32), num_classes=10)) == 820_874
    # cnn, 'valid' convolutions and 2x2 pooling: 32 -> 30 -> 15 -> 13 -> 6, so the Dense takes 32·6·6 = 1152.
    conv1, conv2, dense1, dense2 = 3 * 9 * 16 + 16, 16 * 9 * 32 + 32, 32 * 6 * 6 * 64 + 64, 64 * 10 + 10
    assert (conv1, conv2, dense1, dense2) == (448, 4640, 73_792, 650)
    assert conv1 + conv2 + dense1 + dense2 == 79_530
    m = create_model("cnn", input_shape=(3, 32, 32), num_classes=10)
    assert trainable(m) == 79_530
    assert m[7].in_features == 1152 and m[0].in_channels == 3 and m[-1].out_features == 10


@pytest.mark.parametrize("shape, k", [((1, 10, 10), 10), ((3, 64, 48), 7), ((1, 28, 28), 100)])
def test_cnn_counts_by_hand(shape, k):
    c, h, w = shape

    def side(s):  # conv 3 valid, pool 2, conv 3 valid, pool 2
        return ((s - 2) // 2 - 2) // 2

    flat = 32 * side(h) * side(w)
    params = (c * 9 * 16 + 16) + (16 * 9 * 32 + 32) + (flat * 64 + 64) + (64 * k + k)
    m = create_model("cnn", input_shape=shape, num_classes=k)
    assert trainable(m) == params
    assert m.eval()(torch.zeros(2, *shape)).shape == (2, k)


def test_cnn_cannot_take_8x8_and_says_which_layer_and_the_fix():
    # 8 -> conv 6 -> pool 3 -> conv 1 -> pool: a 2x2 window on a 1x1 map.
    with pytest.raises(InputTooSmall) as err:
        create_model("cnn", input_shape=(1, 8, 8), num_classes=10)
    msg = str(err.value)
    assert isinstance(err.value, ModelError)
    assert "model 'cnn' cannot take (1, 8, 8) images" in msg
    assert "second MaxPool2d (layer 6, model[5]) gets a 1x1 feature map" in msg
    assert "2x2 window" in msg
    assert "at least 10x10" in msg
    fit = re.search(r"takes 8x8 images \(([^)]*)\)", msg).group(1).split(", ")
    assert "mlp" in fit and "logreg" in fit and "cnn" not in fit
    assert "resize" in msg


def test_a_conv_that_gets_too_small_a_map_is_named():
    with pytest.raises(InputTooSmall, match=r"first Conv2d \(layer 1, model\[0\]\) gets a 2x2 feature map "
                                            r"\(1 channel\), smaller than its 3x3 kernel"):
        create_model("cnn", input_shape=(1, 2, 2))


def test_a_nested_layer_is_named_by_its_path():
    with pytest.raises(InputTooSmall, match=r"model 'resnet_small' cannot take \(1, 3, 3\) images: its second "
                                            r"MaxPool2d \(layer 5, model\[4\]\) gets a 1x1 feature map"):
        create_model("resnet_small", input_shape=(1, 3, 3))
    layers = [nn.MaxPool2d(2), Residual(nn.Sequential(nn.Conv2d(1, 1, 3)))]
    with pytest.raises(InputTooSmall, match=r"first Conv2d \(in layer 2: model\[1\]\.body\[0\]\) gets a 2x2"):
        trace_shape(layers, (1, 4, 4))


# ---- the zoo ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ZOO)
@pytest.mark.parametrize("shape, k", [((1, 8, 8), 10), ((3, 32, 32), 100), ((3, 16, 24), 7), ((1, 28, 28), 10)])
def test_zoo_models_map_images_to_one_logit_per_class(name, shape, k):
    m = create_model(name, input_shape=shape, num_classes=k)
    check_model_io(m, name, shape, k)
    assert m.eval()(torch.zeros(2, *shape)).shape == (2, k)
    first = next(x for x in m.modules() if isinstance(x, (nn.Conv2d, nn.Linear)))
    assert (first.in_channels if isinstance(first, nn.Conv2d) else first.in_features) == (
        shape[0] if isinstance(first, nn.Conv2d) else math.prod(shape))


def test_zoo_counts_by_hand():
    assert trainable(create_model("logreg", input_shape=(3, 32, 32), num_classes=100)) == 3072 * 100 + 100
    # cnn_bn: 'same' convs, two 2x2 pools: the Dense takes 64·(H//4)·(W//4); 3 input channels change the first conv.
    default = trainable(create_model("cnn_bn"))
    m = create_model("cnn_bn", input_shape=(3, 32, 32), num_classes=100)
    assert trainable(m) == default + 2 * 9 * 32 + (64 * 8 * 8 - 64 * 7 * 7) * 10 + (64 * 8 * 8 + 1) * 90
    # resnet_small: global pooling, so only the first conv and the last layer change.
    assert trainable(create_model("resnet_small", input_shape=(3, 9, 13), num_classes=100)) == \
        trainable(create_model("resnet_small")) + 2 * 9 * 32 + 90 * 65


@pytest.mark.parametrize("name, side", [("mlp", 1), ("logreg", 1), ("cnn", 10), ("cnn_bn", 4), ("resnet_small", 4),
                                        ("resnet_wide", 4), ("dct_cnn", 8)])
def test_min_input_is_the_smallest_size_that_builds(name, side):
    # By hand: cnn 10 -> 8 -> 4 -> 2 -> 1; two 2x2 pools need 4; dct_cnn pools three times (8 -> 4 -> 2 -> 1).
    assert min_input_of(name) == (side, side) == get_entry(name).min_input
    assert min_input_of(name, channels=3) == (side, side)
    create_model(name, input_shape=(1, side, side))
    create_model(name, input_shape=(3, side, side + 5))
    if side > 1:
        for shape in ((1, side - 1, side), (1, side, side - 1)):
            with pytest.raises(InputTooSmall, match=rf"needs images of at least {side}x{side}"):
                create_model(name, input_shape=shape)


def test_which_models_take_the_8x8_digits():
    fits = {n for n in list_models() if all(s <= 8 for s in min_input_of(n))}
    assert fits == {"mlp", "logreg", "cnn_bn", "resnet_small", "resnet_wide", "dct_cnn"}


def test_min_input_draws_no_random_numbers():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    from archbench.models import registry

    registry._MIN_INPUT.clear()
    for n in list_models():
        min_input_of(n, channels=2)
    assert torch.equal(torch.rand(3), expected)


def test_descriptions_quote_the_counts_of_the_default_shape():
    quoted = 0
    for n in list_models():
        e = get_entry(n)
        m = re.search(r"\(([\d,]+) params", e.description)
        if m:
            assert "for 1x28x28 images, 10 classes" in e.description and e.input_shape == (1, 28, 28)
            assert int(m.group(1).replace(",", "")) == trainable(create_model(n))
            quoted += 1
    assert quoted >= 3


def test_dct_stem_applies_the_same_fixed_filters_to_each_channel():
    conv = fixed_dct_conv(3, channels=3)
    assert conv.out_channels == 54 and conv.groups == 3 and not conv.weight.requires_grad
    x = torch.rand(2, 3, 6, 6)
    one = fixed_dct_conv(3)
    out = conv(x)
    for c in range(3):
        assert torch.allclose(out[:, 18 * c:18 * (c + 1)], one(x[:, c:c + 1]), atol=1e-6)
    m = create_model("dct_cnn", input_shape=(3, 32, 32), num_classes=10)
    assert count_parameters(m)["non_trainable"] == 3 * 18 * 9
    assert m[2].num_features == 54 and m[4][0].in_channels == 54


# ---- bit-identical defaults ---------------------------------------------------------------------------------------
# The models as the registry built them before they adapted (commit 50ebfce), written out again.

def _head_dct():
    basis = dct_basis(3)
    conv = nn.Conv2d(1, 18, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.cat([basis, -basis])[:, None])
    conv.weight.requires_grad_(False)
    return conv


HEAD = {
    "mlp": lambda: keras_init_(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 256), nn.ReLU(), nn.Linear(256, 128),
                                             nn.ReLU(), nn.Linear(128, 10))),
    "cnn": lambda: keras_init_(nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))),
    "logreg": lambda: keras_init_(nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))),
    "cnn_bn": lambda: nn.Sequential(
        conv_bn(1, 32), conv_bn(32, 32), nn.MaxPool2d(2), conv_bn(32, 64), conv_bn(64, 64), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.3), nn.Linear(64 * 7 * 7, 10)),
    "resnet_small": lambda: nn.Sequential(
        conv_bn(1, 32), nn.MaxPool2d(2), Residual(nn.Sequential(conv_bn(32, 32), conv_bn(32, 32))),
        conv_bn(32, 64), nn.MaxPool2d(2), Residual(nn.Sequential(conv_bn(64, 64), conv_bn(64, 64))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(64, 10)),
    "dct_cnn": lambda: (lambda stem: nn.Sequential(
        stem, nn.MaxPool2d(2), nn.BatchNorm2d(18), nn.ReLU(), conv_pool_bn(18, 48), conv_pool_bn(48, 96, pool=True),
        conv_pool_bn(96, 96), conv_pool_bn(96, 256, pool=True), nn.AdaptiveMaxPool2d(1), nn.Flatten(),
        nn.Linear(256, 10)))(_head_dct()),
    "resnet_wide": lambda: nn.Sequential(
        conv_bn(1, 64), conv_bn(64, 128), nn.MaxPool2d(2),
        Residual(nn.Sequential(conv_bn(128, 128), conv_bn(128, 128))),
        conv_bn(128, 256), nn.MaxPool2d(2), Residual(nn.Sequential(conv_bn(256, 256), conv_bn(256, 256))),
        nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(256, 10)),
}


def _built(factory, seed):
    torch.manual_seed(seed)
    m = factory()
    return [(n, type(x)) for n, x in m.named_modules()], m.state_dict(), torch.rand(4)  # the RNG stream after it


@pytest.fixture(params=["cpu", "meta"])
def trace_on(request, monkeypatch):
    """trace_shape on the CPU where it may (as in a fresh process), or on
    the meta device only (as once torch._dynamo is imported)."""
    if request.param == "cpu":
        monkeypatch.setattr(blocks, "_meta_is_warm", lambda: False)
    else:
        monkeypatch.setattr(blocks, "_trace_on_cpu", lambda seq, shape: False)
    return request.param


@pytest.mark.parametrize("name", sorted(HEAD))
@pytest.mark.parametrize("kwargs", [{}, {"input_shape": (1, 28, 28), "num_classes": 10}])
def test_default_construction_is_bit_identical_to_before(name, kwargs, trace_on):
    assert set(HEAD) == set(list_models())
    for seed in (0, 5):
        (mods, sd, after), (mods2, sd2, after2) = _built(HEAD[name], seed), _built(
            lambda: create_model(name, **kwargs), seed)
        assert mods == mods2
        assert list(sd) == list(sd2) and all(torch.equal(sd[k], sd2[k]) for k in sd)
        assert torch.equal(after, after2)  # the same random numbers drawn, no more, no fewer


def test_shape_inference_draws_no_random_numbers(trace_on):
    # The adapted cnn equals the same layers written out by hand in the same order: inferring the Dense width
    # (on the meta device) drew nothing from the generator.
    hand = lambda: keras_init_(nn.Sequential(  # noqa: E731
        nn.Conv2d(3, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(1152, 64), nn.ReLU(), nn.Linear(64, 100)))
    (_, sd, after), (_, sd2, after2) = _built(hand, 1), _built(
        lambda: create_model("cnn", input_shape=(3, 32, 32), num_classes=100), 1)
    assert all(torch.equal(sd[k], sd2[k]) for k in sd) and torch.equal(after, after2)


# trace_shape runs small images through torch's own layers on the CPU (the meta device's first use imports torch's
# compiler stack, ~1 s per process); the answer, the errors, the generator and the layers are as on the meta device.

TRACED = [
    lambda c: [nn.Conv2d(c, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(), nn.MaxPool2d(2),
               nn.Flatten()],
    lambda c: [conv_bn(c, 8), nn.MaxPool2d(2), Residual(nn.Sequential(conv_bn(8, 8))), nn.AdaptiveMaxPool2d(1)],
    lambda c: [nn.Conv2d(c, 4, 5, stride=2, padding=2), nn.AvgPool2d(3, ceil_mode=True), nn.Dropout(0.5),
               nn.Flatten(), nn.Linear(4, 3)],  # the Linear fits only some sizes: a PyTorch error elsewhere
    lambda c: [nn.Conv2d(c + 1, 4, 3)],  # wrong channels
    lambda c: [nn.MaxPool2d(2), Residual(nn.Sequential(nn.Conv2d(c, c, 3)))],  # a residual sum of two shapes
    lambda c: [nn.Flatten(), nn.Linear(c * 7 * 7, 5), nn.Unflatten(1, (5, 1))],
    lambda c: [nn.Conv2d(c, 4, 3, bias=False), nn.FractionalMaxPool2d(2, output_size=(3, 3)), nn.Flatten()],
]


def _outcome(fn):
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - the error is the outcome compared
        return type(exc), str(exc)


@pytest.mark.parametrize("make", range(len(TRACED)))
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (1, 7, 7), (3, 4, 4), (1, 2, 2), (2, 9, 5)])
def test_tracing_on_the_cpu_answers_as_the_meta_device(make, shape, monkeypatch):
    monkeypatch.setattr(blocks, "_meta_is_warm", lambda: False)
    used = []
    trace = blocks._trace
    monkeypatch.setattr(blocks, "_trace", lambda seq, s, device: used.append(device) or trace(seq, s, device))
    torch.manual_seed(0)
    layers = TRACED[make](shape[0])
    before = [copy.deepcopy(m.state_dict()) for m in layers]
    rng = torch.get_rng_state()
    got = _outcome(lambda: trace_shape(layers, shape))
    assert used[0] == "cpu"
    assert torch.equal(torch.get_rng_state(), rng)  # FractionalMaxPool2d draws its samples: none are kept
    assert all(m.training and not m._forward_hooks and not m._forward_pre_hooks for x in layers for m in x.modules())
    assert all(torch.equal(a, b) for m, sd in zip(layers, before) for a, b in zip(m.state_dict().values(), sd.values()))
    assert got == _outcome(lambda: blocks._trace(nn.Sequential(*layers), shape, "meta"))


def test_what_is_traced_on_the_meta_device(monkeypatch):
    monkeypatch.setattr(blocks, "_meta_is_warm", lambda: False)
    small = nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten())
    assert blocks._trace_on_cpu(small, (3, 32, 32))
    assert not blocks._trace_on_cpu(small, (3, 224, 224))  # large images
    assert not blocks._trace_on_cpu(nn.Sequential(nn.Conv2d(3, 2048, 3), nn.Conv2d(2048, 2048, 3)), (3, 32, 32))
    assert not blocks._trace_on_cpu(nn.Sequential(nn.LazyLinear(4)), (3, 32, 32))  # not materialised

    class Own(nn.Module):  # a forward of its own may depend on the values: as before, on the meta device
        def forward(self, x):
            return x

    assert not blocks._trace_on_cpu(nn.Sequential(Own()), (3, 32, 32))
    with torch.device("meta"):
        assert not blocks._trace_on_cpu(nn.Sequential(nn.Conv2d(3, 8, 3)), (3, 32, 32))
        assert not blocks._trace_on_cpu(nn.Sequential(nn.Flatten()), (3, 32, 32))  # the default device
    monkeypatch.setattr(blocks, "_meta_is_warm", lambda: True)
    assert not blocks._trace_on_cpu(small, (3, 32, 32))


def test_building_the_seed_cnn_imports_no_compiler_stack():
    # What a spawned pool worker pays before its first epoch: building a model traces its shapes.
    # (Only what building adds is checked: a torch that imports them itself is not this test's concern.)
    code = ("import sys, archbench.models as m; before = set(sys.modules); m.create_model('cnn'); "
            "m.create_model('resnet_small', input_shape=(3, 32, 32), num_classes=100); "
            "print(sorted({'torch._dynamo', 'sympy'} & (set(sys.modules) - before)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# ---- arguments, user factories -------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, words", [
    ({"input_shape": (28, 28)}, "input_shape = (28, 28) is invalid"),
    ({"input_shape": (1, 0, 28)}, "three positive integers"),
    ({"num_classes": 0}, "num_classes = 0 is invalid"),
    ({"num_classes": True}, "num_classes = True is invalid"),
])
def test_bad_shape_arguments_are_named(kwargs, words):
    with pytest.raises(ModelError, match=re.escape(words)):
        create_model("mlp", **kwargs)


USER = """
import math
from torch import nn

def both(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))

def shape_only(input_shape=(1, 28, 28)):
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 10))

def anything(**kwargs):
    CALLS.append(kwargs)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(kwargs.get("input_shape", (1, 28, 28))),
                                                 kwargs.get("num_classes", 10)))

def fixed():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

def needs_width(width, input_shape=(1, 28, 28)):
    return nn.Linear(784, width)

class Net(nn.Module):
    def __init__(self, input_shape=(1, 28, 28), *, num_classes=10):
        super().__init__()
        self.fc = nn.Linear(math.prod(input_shape), num_classes)

    def forward(self, x):
        return self.fc(x.flatten(1))

CALLS = []
"""


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "shape_user_models.py").write_text(textwrap.dedent(USER))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "shape_user_models"
    sys.modules.pop("shape_user_models", None)


def test_user_factories_get_the_shape_if_they_name_it(user_module):
    shape, k = (3, 32, 32), 100
    for fn in ("both", "anything", "Net"):
        ref = f"{user_module}:{fn}"
        assert adapts(ref)
        m = create_model(ref, input_shape=shape, num_classes=k)
        check_model_io(m, ref, shape, k)
        assert trainable(m) == 3072 * 100 + 100
    assert sys.modules[user_module].CALLS[-1] == {"input_shape": shape, "num_classes": k}
    # Given no shape, a factory that needs one gets the default; one with defaults keeps them.
    assert trainable(create_model(f"{user_module}:both")) == 7850
    create_model(f"{user_module}:anything")
    assert sys.modules[user_module].CALLS[-1] == {}
    # Only the shape: the class count is left to the caller's check.
    m = create_model(f"{user_module}:shape_only", input_shape=shape, num_classes=k)
    check_model_io(m, "shape_only", shape, 10)
    with pytest.raises(ModelError, match=r"expected \(2, 100\)"):
        check_model_io(m, "shape_only", shape, k)


def test_user_factories_without_the_arguments_are_called_as_before(user_module):
    ref = f"{user_module}:fixed"
    assert not adapts(ref) and min_input_of(ref) is None
    m = create_model(ref, input_shape=(3, 32, 32), num_classes=10)
    assert trainable(m) == 7850
    with pytest.raises(ModelError, match=r"fails on a float batch of shape \(2, 3, 32, 32\)"):
        check_model_io(m, ref, (3, 32, 32), 10)
    with pytest.raises(ModelError, match="need no arguments"):
        create_model(f"{user_module}:needs_width", input_shape=(1, 28, 28))


# ---- specs -----------------------------------------------------------------------------------------------------

SEED_CNN = [
    {"type": "conv2d", "filters": 16, "kernel": 3, "activation": "relu"}, {"type": "maxpool", "size": 2},
    {"type": "conv2d", "filters": 32, "kernel": 3, "activation": "relu"}, {"type": "maxpool", "size": 2},
    {"type": "flatten"}, {"type": "dense", "units": 64, "activation": "relu"},
]


def test_a_spec_takes_the_datasets_shape_like_the_seed_cnn():
    spec = {"layers": SEED_CNN + [{"type": "dense", "units": "num_classes"}]}
    for shape, k in (((3, 32, 32), 10), ((1, 28, 28), 10), ((1, 12, 20), 100)):
        m = build_from_spec(spec, input_shape=shape, num_classes=k)
        assert trainable(m) == trainable(create_model("cnn", input_shape=shape, num_classes=k))
        assert m(torch.zeros(2, *shape)).shape == (2, k)
    assert trainable(build_from_spec(spec, input_shape=(3, 32, 32), num_classes=10)) == 79_530


def test_spec_shape_and_class_mismatches_are_named():
    spec = {"input_shape": [1, 28, 28], "layers": SEED_CNN + [{"type": "dense", "units": 10}]}
    build_from_spec(spec, input_shape=(1, 28, 28), num_classes=10)
    with pytest.raises(SpecError, match=re.escape(
            "declares input_shape = [1, 28, 28] but the images are (3, 32, 32): remove input_shape from the spec")):
        build_from_spec(spec, input_shape=(3, 32, 32), num_classes=10)
    del spec["input_shape"]
    with pytest.raises(SpecError, match=re.escape(
            "the last layer outputs shape (10,); expected (100,) logits, one per class: its units = 10 is fixed; "
            "write units = \"num_classes\"")):
        build_from_spec(spec, input_shape=(3, 32, 32), num_classes=100)
    with pytest.raises(SpecError, match="declares num_classes = 10 but the dataset has 100 classes"):
        build_from_spec({**spec, "num_classes": 10}, input_shape=(3, 32, 32), num_classes=100)


def test_registered_specs_adapt_and_name_their_smallest_input():
    spec = {"layers": SEED_CNN + [{"type": "dense", "units": "num_classes"}]}
    register_spec("shape_test_cnn", spec)
    assert adapts("shape_test_cnn") and input_shape_of("shape_test_cnn") == (1, 28, 28)
    assert min_input_of("shape_test_cnn") == (10, 10)
    with pytest.raises(InputTooSmall, match=r"model 'shape_test_cnn' cannot take \(1, 8, 8\) images: layer 3 "
                                            r"\(maxpool\): window 2x2 is larger than its input 1x1; it needs "
                                            r"images of at least 10x10"):
        create_model("shape_test_cnn", input_shape=(1, 8, 8), num_classes=10)
    # Neither the class count nor a size above 28x28 is known when it is registered: both are checked at build time.
    big = {"layers": [{"type": "maxpool", "size": 2}] * 5 + [{"type": "flatten"}, {"type": "dense", "units": 100}]}
    register_spec("shape_test_big", big)
    assert min_input_of("shape_test_big") == (32, 32)
    assert create_model("shape_test_big", input_shape=(3, 32, 32), num_classes=100)(
        torch.zeros(2, 3, 32, 32)).shape == (2, 100)
    with pytest.raises(SpecError, match=r"expected \(10,\) logits"):
        create_model("shape_test_big", input_shape=(3, 32, 32), num_classes=10)
    fixed = {"input_shape": [1, 28, 28], "layers": [{"type": "flatten"}, {"type": "dense", "units": 10}]}
    register_spec("shape_test_fixed", fixed)
    assert not adapts("shape_test_fixed") and min_input_of("shape_test_fixed") is None
