import os

import pytest
import torch
from torch import nn

from archbench.measure import (
    LiveTensorTracker,
    count_forward,
    count_parameters,
    count_train_step,
    measure_inference_memory,
    measure_step_memory,
    profiler_step_peak,
    save_model_files,
)
from archbench.models import create_model


def conv_macs(cin, cout, h, w, k, stride=1, pad=0, dil=1, groups=1):
    ho = (h + 2 * pad - dil * (k - 1) - 1) // stride + 1
    wo = (w + 2 * pad - dil * (k - 1) - 1) // stride + 1
    return cout * ho * wo * (cin // groups) * k * k, ho, wo


@pytest.mark.parametrize("stride,pad,dil,groups",
                         [(1, 0, 1, 1), (2, 1, 1, 1), (1, 2, 2, 1), (3, 1, 1, 4), (2, 0, 2, 2)])
def test_conv_forward_macs_match_formula(stride, pad, dil, groups):
    conv = nn.Conv2d(8, 12, 3, stride=stride, padding=pad, dilation=dil, groups=groups)
    macs, _, _ = conv_macs(8, 12, 17, 15, 3, stride, pad, dil, groups)
    r = count_forward(conv, (8, 17, 15), batch_size=3)
    assert r.matmul_conv == 2 * 3 * macs


def test_linear_forward_macs():
    assert count_forward(nn.Linear(37, 11), (37,), batch_size=5).matmul_conv == 2 * 5 * 37 * 11


def seed_layer_macs(name):
    """Per-sample MACs of each parameterised layer, in order, by hand."""
    if name == "mlp":
        return [784 * 256, 256 * 128, 128 * 10]
    c1, h, w = conv_macs(1, 16, 28, 28, 3)       # 26x26
    c2, h, w = conv_macs(16, 32, h // 2, w // 2, 3)  # 13x13 -> 11x11
    return [c1, c2, 32 * (h // 2) * (w // 2) * 64, 64 * 10]


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_seed_model_flops_are_derived_counts(name):
    layers = seed_layer_macs(name)
    fwd = count_forward(create_model(name))
    assert fwd.matmul_conv == 2 * sum(layers)
    # A step: forward; backward = weight gradients of every layer + input gradients
    # of every layer but the first (its input needs no gradient).
    b = 64
    expected = 2 * b * (sum(layers) + sum(layers) + sum(layers[1:]))
    step = count_train_step(create_model(name), batch_size=b)
    assert step["total"].matmul_conv == expected
    assert step["forward"].matmul_conv == 2 * b * sum(layers)
    assert step["optimizer"].matmul_conv == 0


def test_seed_numbers_from_the_issue():
    assert count_forward(create_model("mlp")).matmul_conv == 469_504
    assert count_forward(create_model("cnn")).matmul_conv // 2 == 706_752
    assert count_train_step(create_model("mlp"))["total"].matmul_conv == 64_454_656
    assert count_train_step(create_model("cnn"))["total"].matmul_conv == 258_932_736


def test_tracker_counts_exact_bytes_of_known_tensors():
    tracker = LiveTensorTracker()
    with tracker:
        a = torch.empty(1000)            # 4,000 B
        b = torch.zeros(250, 4, dtype=torch.float64)  # 8,000 B
        v = a.view(10, 100)              # a view: no new storage
        assert tracker.live_bytes == 12_000
        del a, v
        c = b + 1                        # 8,000 B; `a` is gone by now
    assert tracker.live_bytes == 16_000
    assert tracker.peak_bytes == 16_000
    del b, c


def test_tracker_sees_a_temporary_peak():
    tracker = LiveTensorTracker()
    x = torch.ones(1000)
    with tracker:
        y = (x * 2).sum()    # x*2 (4,000 B) lives only inside this expression
        z = torch.ones(10)   # by now the temporary is freed
    assert tracker.peak_bytes == 4_000 + 4
    assert tracker.live_bytes == 4 + 40
    del y, z


def _snapshot(model):
    return ({k: v.clone() for k, v in model.state_dict().items()}, model.training,
            [p.requires_grad for p in model.parameters()], [p.grad for p in model.parameters()],
            len(model._forward_hooks))


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_measurers_never_change_the_model(name):
    model = create_model(name).eval()
    before = _snapshot(model)
    count_forward(model)
    count_train_step(model)
    measure_step_memory(model)
    measure_step_memory(model, first_step=True)
    measure_inference_memory(model)
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]


def test_step_memory_breakdown_of_the_mlp_by_hand():
    model = create_model("mlp")
    r = measure_step_memory(model, batch_size=64)
    param_bytes = 235_146 * 4
    assert r.breakdown["parameters"] == param_bytes
    assert r.breakdown["optimizer_state"] == 2 * param_bytes + 6 * 4  # m, v + 6 step counters
    # The batch and its labels, and the step's loss slot, prediction slot and batch indices.
    assert r.breakdown["input"] == 64 * 784 * 4 + 64 * 8 + 4 + 64 * 8 + 64 * 8
    # Saved for backward: both ReLU outputs and the log-softmax output; the logits
    # (the step keeps them for its predictions); two float32 scalars: the loss and
    # nll_loss's total weight.
    assert r.activations_saved_bytes == 64 * (256 + 128 + 10 + 10) * 4 + 2 * 4
    # During the optimizer step, parameters, gradients, m, v and the input are all alive.
    assert r.breakdown["gradients"] == param_bytes
    assert r.peak_bytes >= 4 * param_bytes + r.breakdown["input"]
    assert r.peak_bytes == sum(r.breakdown.values())


def test_step_memory_grows_with_batch_for_the_cnn():
    small = measure_step_memory(create_model("cnn"), batch_size=16)
    large = measure_step_memory(create_model("cnn"), batch_size=64)
    assert large.activations_saved_bytes > 3.5 * small.activations_saved_bytes
    assert large.breakdown["parameters"] == small.breakdown["parameters"] == 56_714 * 4


def test_saved_files_are_real_and_reload(tmp_path):
    model = create_model("cnn")
    out = save_model_files(model, tmp_path, "cnn")
    for d in out.values():
        path = tmp_path / d["path"]
        assert d["bytes"] == os.stat(path).st_size > count_parameters(model)["param_bytes"]
    from safetensors.torch import load_file

    back = load_file(str(tmp_path / out["safetensors"]["path"]))
    sd = model.state_dict()
    assert set(back) == set(sd) and all(torch.equal(back[k], sd[k]) for k in sd)
    pt = torch.load(tmp_path / out["state_dict"]["path"])
    assert all(torch.equal(pt[k], sd[k]) for k in sd)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    # safetensors adds a small JSON header to the raw bytes.
    assert out["safetensors"]["bytes"] - count_parameters(model)["raw_weight_bytes"] < 2048


def test_parameter_counts_shared_and_frozen():
    lin = nn.Linear(4, 4)
    frozen = nn.Linear(4, 2)
    frozen.requires_grad_(False)
    m = nn.Sequential(lin, nn.ReLU(), lin, frozen, nn.BatchNorm1d(2))
    c = count_parameters(m)
    assert c["trainable"] == 20 + 4 and c["non_trainable"] == 10
    assert c["buffers"] == 2 + 2 + 1
    assert c["raw_weight_bytes"] == (20 + 4 + 10) * 4 + (2 + 2) * 4 + 8


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_step_peak_agrees_with_the_profiler_memory_timeline(name):
    """Independent check: PyTorch's profiler sees every allocation and free of
    the CPU allocator during the same step."""
    ours = measure_step_memory(create_model(name), batch_size=64).peak_bytes
    theirs = profiler_step_peak(create_model(name), batch_size=64)
    assert abs(ours - theirs) <= 0.01 * theirs


def test_first_step_allocates_adam_state_inside_the_step():
    """torch.optim.Adam (the plain reference step) creates its state lazily,
    inside the first step; archbench's lean Adam creates it up front."""
    steady = measure_step_memory(create_model("mlp"), reference=True)
    first = measure_step_memory(create_model("mlp"), first_step=True, reference=True)
    assert steady.before_step_bytes - first.before_step_bytes == steady.breakdown["optimizer_state"]
    assert first.breakdown["optimizer_state"] == steady.breakdown["optimizer_state"]  # allocated by then
    assert first.before_step_bytes == 235_146 * 4 + 4 + 64 * 8 + 64 * 8  # params + the step's slots only
    lean = measure_step_memory(create_model("mlp"), first_step=True)
    assert lean.before_step_bytes == steady.before_step_bytes


def test_inference_memory_at_batch_one():
    r = measure_inference_memory(create_model("mlp"))
    assert r["weights_and_input_bytes"] == 235_146 * 4 + 784 * 4
    # Largest live set: the 256-wide hidden layer's input and output, at most.
    assert 0 < r["activations_peak_bytes"] <= 4 * (256 + 256 + 128 + 10)


def test_measuring_never_changes_the_model_even_when_it_fails():
    from archbench.measure import measure_model

    class FailsInTraining(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(784, 10)
            self.lin.bias.requires_grad_(False)

        def forward(self, x):
            if self.training:
                raise RuntimeError("no training here")
            return self.lin(x.flatten(1))

    model = FailsInTraining().eval()
    hook = model.register_forward_hook(lambda *a: None)
    before = _snapshot(model)
    # The training step's costs fail (recorded with the reason); the others are measured.
    errors = measure_model(model, timing=False)["errors"]
    assert errors["memory"] == errors["flops"] == "RuntimeError: no training here"
    after = _snapshot(model)
    assert all(torch.equal(before[0][k], after[0][k]) for k in before[0])
    assert before[1:] == after[1:]
    assert list(model._forward_hooks.values()) == [hook.hooks_dict_ref()[hook.id]]
