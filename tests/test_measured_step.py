"""The measurers run the step the unit trains (the training loop's own code),
a plain PyTorch reference beside it, and the evaluation's test-time views;
memory is the allocator's, checked against the profiler's memory timeline."""

import pytest
import torch
from torch import nn

import archbench.train.loop as loop
import archbench.train.step as step_mod
from archbench.config import TrainConfig
from archbench.errors import UsageError
from archbench.measure import (
    count_forward,
    count_inference,
    count_step,
    measure_inference_memory,
    measure_model,
    measure_step_memory,
    profiler_step_peak,
)
from archbench.measure.memory import step_peak
from archbench.measure.step import inference_pass, reference_step, trained_step
from archbench.models import create_model
from archbench.models.blocks import Residual
from archbench.train.optim import LeanAdam
from tests.test_counting import F_IN, L_TOK, TokenModel

ZOO = TrainConfig(batch_size=32, optimizer="adamw", weight_decay=5e-4, label_smoothing=0.1, augment_crop=2,
                  augment_flip=True, precision="bf16", tta_flip=True, tta_shift=1)


def depthwise():
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
        Residual(nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU(),
                               nn.Conv2d(16, 32, 1), nn.ReLU(), nn.Conv2d(32, 16, 1))),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 14 * 14, 10))


def grouped_dilated():
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3, groups=4, dilation=2), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 11 * 11, 10))


def frozen_stem():
    m = create_model("cnn")
    m[0].requires_grad_(False)
    return m


class Flat(nn.Module):
    """A token model fed Fashion-MNIST-shaped input (28 rows of 28 -> tokens)."""

    def __init__(self, kind):
        super().__init__()
        self.proj = nn.Linear(28, L_TOK * F_IN)
        self.inner = TokenModel(kind)

    def forward(self, x):
        return self.inner(self.proj(x.flatten(1, 2)[:, :1]).view(x.shape[0], L_TOK, F_IN))


MODELS = {"depthwise": depthwise, "grouped_dilated": grouped_dilated, "frozen": frozen_stem,
          "attention": lambda: Flat("mha"), "encoder": lambda: Flat("encoder"), "lstm": lambda: Flat("lstm"),
          "dct_cnn": lambda: create_model("dct_cnn")}


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("recipe", ["default", "zoo", "reference"])
def test_step_peak_is_the_allocators_peak(name, recipe):
    """The reported peak is within 1 % of the profiler's memory timeline over
    the same step (every allocation the CPU allocator reports), for the
    trained step under the default and the zoo recipe and for the reference."""
    cfg = ZOO if recipe == "zoo" else TrainConfig(batch_size=32)
    ref = recipe == "reference"
    ours = measure_step_memory(MODELS[name](), batch_size=16, cfg=cfg, reference=ref)
    theirs = profiler_step_peak(MODELS[name](), batch_size=16, cfg=cfg, reference=ref)
    assert abs(ours.peak_bytes - theirs) <= 0.01 * theirs
    # The breakdown is reconciled to the peak: what no op returned is "scratch".
    if ours.tracked_peak_bytes <= ours.peak_bytes:
        assert sum(ours.breakdown.values()) == ours.peak_bytes


def test_op_scratch_is_counted_and_shown():
    r = measure_step_memory(depthwise(), batch_size=32, reference=True)
    assert r.breakdown["scratch"] > 0.05 * r.peak_bytes  # NCHW depthwise kernels allocate inside the op
    assert r.peak_bytes == r.tracked_peak_bytes + r.breakdown["scratch"]


def test_frozen_parameters_and_buffers_are_counted_separately():
    m = frozen_stem()
    r = measure_step_memory(m, batch_size=16)
    assert r.breakdown["parameters"] == 56_714 * 4  # the frozen stem included
    bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    r = measure_step_memory(bn, batch_size=16)
    assert r.breakdown["buffers"] == 4 * 4 + 4 * 4 + 8  # running mean, var, num_batches_tracked
    assert r.breakdown["parameters"] == sum(p.numel() for p in bn.parameters()) * 4


def test_trained_step_is_the_training_loops_step():
    model = create_model("cnn")
    step = trained_step(model, ZOO)
    assert type(step.setup.step) is step_mod.Step
    assert isinstance(step.setup.opt, LeanAdam) and step.setup.opt.decoupled  # AdamW, as make_optimizer builds
    assert step.setup.autocast_dtype == torch.bfloat16 and step.setup.step.label_smoothing == 0.1
    assert step.setup.channels_last and step.setup.run_model is not step.model  # the fast CPU view
    assert (step.crop, step.flip, step.batch_size) == (2, True, 32)
    d = step.description
    assert d["precision"] == "bf16 autocast" and d["optimizer"].startswith("AdamW") and d["batch_size"] == 32
    assert d["augmentation"] == "crop 2, flip" and "label smoothing 0.1" in d["loss"]


def test_the_training_loop_builds_its_step_with_the_same_function(monkeypatch):
    built = []
    real = step_mod.build_step

    def spy(model, cfg, device):
        built.append(cfg)
        return real(model, cfg, device)

    monkeypatch.setattr(loop, "build_step", spy)
    x, y = torch.randint(0, 255, (8, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (8,))
    loop.train(create_model("mlp"), x, y, None, None, TrainConfig(epochs=1, batch_size=4, device="cpu"), seed=0)
    assert len(built) == 1


def test_the_recipe_changes_what_is_counted():
    model = create_model("cnn")
    plain = count_step(trained_step(model, TrainConfig(batch_size=32)))
    zoo = count_step(trained_step(model, ZOO))
    assert "_fused_adamw_" in zoo["optimizer"].by_op and "_fused_adam_" in plain["optimizer"].by_op
    assert zoo["data"].data_movement.get("gather") == 1  # augmentation: crop and flip as one gather
    assert zoo["total"].matmul_conv == plain["total"].matmul_conv  # the same products, in bf16
    assert not zoo["total"].uncounted and not plain["total"].uncounted
    smoothed = count_step(trained_step(model, TrainConfig(batch_size=32, label_smoothing=0.1)))
    assert smoothed["forward"].other_total > plain["forward"].other_total  # the smoothing term's sum and scale
    fp32 = measure_step_memory(model, cfg=TrainConfig(batch_size=32))
    bf16 = measure_step_memory(model, cfg=ZOO)
    assert bf16.peak_bytes < 0.75 * fp32.peak_bytes
    assert bf16.activations_saved_bytes < 0.75 * fp32.activations_saved_bytes


def test_reference_step_is_plain_pytorch():
    """The model as written, torch.optim.Adam's default (for-loop) update in
    fp32: its denominator sqrt(v)/c + eps makes two temporaries the size of
    the largest parameter (the MLP's 784x256 weight)."""
    model = create_model("mlp")
    step = reference_step(model, ZOO)
    assert type(step.setup.opt) is torch.optim.Adam and step.setup.run_model is step.model
    assert step.setup.opt.defaults["fused"] is None and step.setup.opt.defaults["foreach"] is None
    assert step.setup.autocast_dtype is None and step.setup.step.label_smoothing == 0.0
    assert (step.crop, step.flip) == (0, False)
    r = measure_step_memory(model, batch_size=64, reference=True)
    assert r.breakdown["temporaries"] == 2 * 784 * 256 * 4
    lean = measure_step_memory(model, batch_size=64)
    assert r.peak_bytes - lean.peak_bytes > 1_500_000  # the 38 % more than the fused update


def test_inference_counts_every_test_time_view():
    model = create_model("cnn")
    inf = inference_pass(model, ZOO)
    assert len(inf.views) == 10  # (unshifted + 4 shifts) x (as is, mirrored)
    c = count_inference(inf)
    assert c.matmul_conv == 10 * count_forward(model).matmul_conv
    meas = measure_model(model, cfg=ZOO, timing=False, reference=False)
    assert meas["flops"]["inference_views"] == 10
    assert meas["flops"]["forward_per_sample"] == 10 * meas["flops"]["forward_one_view_per_sample"]
    assert meas["memory"]["inference_eval_batch"]["batch_size"] == ZOO.eval_batch_size
    assert meas["step"]["precision"] == "bf16 autocast" and meas["inference"]["views"] == 10


def test_per_sample_memory_extrapolates():
    """peak(B) = fixed + B x per_sample, from B and B/2, predicts a third batch size."""
    meas = measure_model(create_model("cnn"), batch_size=64, timing=False, reference=False)
    ps = meas["memory"]["per_sample"]
    predicted = ps["fixed_bytes"] + 48 * ps["per_sample_bytes"]
    actual = step_peak(trained_step(create_model("cnn"), TrainConfig(batch_size=48)))
    assert abs(predicted - actual) <= 0.02 * actual


def test_inference_memory_at_the_evaluation_batch():
    r = measure_inference_memory(create_model("mlp"), batch_size=100)
    assert r["weights_and_input_bytes"] == 235_146 * 4 + 100 * 784 * 4
    assert r["activations_peak_bytes"] >= 100 * (256 + 128) * 4  # two hidden layers' outputs at least


def test_named_errors_instead_of_tracebacks():
    frozen = create_model("mlp").requires_grad_(False)
    with pytest.raises(UsageError, match="no trainable parameters"):
        measure_model(frozen, timing=False)
    x, y = torch.randint(0, 255, (8, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (8,))
    with pytest.raises(UsageError, match="no trainable parameters"):
        loop.train(frozen, x, y, None, None, TrainConfig(epochs=1, batch_size=4, device="cpu"), seed=0)
    bn1d = nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.BatchNorm1d(8), nn.Linear(8, 10))
    with pytest.raises(UsageError, match="batch size 1"):
        measure_model(bn1d, batch_size=1, timing=False)


class Tied(nn.Module):
    """Two layers sharing one weight (weight tying)."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(784, 64)
        self.a, self.b = nn.Linear(64, 64), nn.Linear(64, 64)
        self.b.weight = self.a.weight
        self.out = nn.Linear(64, 10)

    def forward(self, x):
        h = torch.relu(self.inp(x.flatten(1)))
        return self.out(torch.relu(self.b(torch.relu(self.a(h)))))


def test_tied_parameters_are_measured_and_trained(tmp_path):
    model = Tied()
    meas = measure_model(model, batch_size=16, timing=False)
    assert meas["params"]["trainable"] == 784 * 64 + 64 + 64 * 64 + 64 + 64 + 64 * 10 + 10
    assert meas["memory"]["train_step"]["breakdown"]["parameters"] == 4 * meas["params"]["trainable"]
    # Both layers' products, forward and backward, through the one weight.
    assert meas["flops"]["forward_per_sample"] == 2 * (784 * 64 + 2 * 64 * 64 + 64 * 10)
    x, y = torch.randint(0, 255, (8, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (8,))
    before = model.a.weight.detach().clone()
    loop.train(model, x, y, None, None, TrainConfig(epochs=1, batch_size=4, device="cpu"), seed=0)
    assert model.a.weight is model.b.weight and not torch.equal(model.a.weight, before)


def test_saved_sizes_are_those_of_the_runs_files(tmp_path):
    from archbench.measure import save_model_files

    model = create_model("mlp")
    meas = measure_model(model, timing=False, reference=False, files_stem="mlp-seed0")
    written = save_model_files(model, tmp_path, "mlp-seed0")
    assert meas["saved_size_bytes"]["state_dict"] == written["state_dict"]["bytes"]  # the name is in a .pt
    assert measure_model(model, timing=False, reference=False)["saved_size_bytes"]["state_dict"] != \
        written["state_dict"]["bytes"]


def test_profile_keeps_its_files_and_records_the_host(tmp_path, capsys):
    import json

    from archbench.cli import main

    assert main(["profile", "mlp", "--json", "--no-timing", "--out", str(tmp_path)]) == 0
    rec = json.loads(capsys.readouterr().out)
    files = rec["measurements"]["saved_size_bytes"]["files"]
    for fmt, path in files.items():
        assert path.startswith(str(tmp_path)) and (tmp_path / path.rsplit("/", 1)[1]).stat().st_size == \
            rec["measurements"]["saved_size_bytes"][fmt]
    assert {"cpu", "usable_cpus", "torch_threads", "load_start", "load_end"} <= set(rec["host"])


def test_tail_percentiles_need_enough_samples():
    from archbench.measure.timing import Timing

    few = Timing([0.001 * i for i in range(1, 51)]).to_dict()
    assert few["calls"] == 50 and few["p90_seconds"] is None and few["p99_seconds"] is None
    assert few["max_seconds"] == 0.05
    many = Timing([0.001 * i for i in range(1, 1001)]).to_dict()
    assert many["p99_seconds"] == pytest.approx(0.99001) and many["p90_seconds"] is not None
