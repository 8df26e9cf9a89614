"""Every cost, for every model: ordinary model patterns that used to lose
their costs (an ``expand()`` view of a Parameter, a module ONNX cannot
export, nested tensors in eval) measure fully and exactly; a failure in one
cost is recorded with its reason while the others stand; "partial" marks
only uncounted arithmetic. Models are written here, not taken from the registry."""

import json

import pytest
import torch
from torch import nn

from archbench.measure import count_forward, count_train_step, measure_model
from archbench.measure.counting import OpCounter, SafeModuleTracker
from archbench.report.per_model import model_section
from archbench.report.profile import render_profile
from tests.pattern_models import PAD, TOK, E, MaskedEncoder, ProjLSTM, Queries


def _mha(lq: int, lk: int) -> int:
    """Hand formula: Q, K, V and output projections plus Q·Kᵀ and A·V, in FLOPs."""
    return 2 * (lq * E * E + 2 * lk * E * E + lq * E * E) + 2 * 2 * lq * lk * E


HAND = {  # matmul/conv FLOPs of one sample's forward pass
    Queries: 2 * 28 * 28 * E + _mha(4, TOK) + 2 * 4 * E * 10,
    ProjLSTM: 2 * TOK * (128 * 28 + 128 * 16 + 16 * 32) + 2 * 16 * 10,
    MaskedEncoder: 2 * 28 * 28 * E + 2 * (_mha(TOK - PAD, TOK - PAD) + 2 * 2 * (TOK - PAD) * E * 2 * E) + 2 * E * 10,
}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("cls", [Queries, ProjLSTM, MaskedEncoder])
def test_the_three_patterns_measure_every_cost_exactly(cls, tmp_path):
    torch.manual_seed(0)
    model = cls()
    meas = measure_model(model, batch_size=8, timing=False, files_dir=tmp_path, files_stem="m")
    assert "errors" not in meas
    assert meas["params"]["total"] == _params(model)
    fl = meas["flops"]
    assert fl["forward_per_sample"] == HAND[cls] and fl["partial"] == {"forward": False, "train_step": False}
    # the training step: forward (8 samples, train mode: the slow path, every token) and twice that in backward
    assert fl["train_step_forward"] > 0 and fl["train_step_backward"] > fl["train_step_forward"]
    assert meas["reference"]["flops"]["partial"] == {"train_step": False}
    assert meas["memory"]["train_step"]["peak_bytes"] > 4 * meas["params"]["param_bytes"]
    assert meas["memory"]["inference_batch1"]["peak_bytes"] > 0
    sizes = meas["saved_size_bytes"]
    for fmt in ("safetensors", "state_dict"):
        assert sizes[fmt] == (tmp_path / sizes["files"][fmt].rsplit("/", 1)[1]).stat().st_size
    if cls is ProjLSTM:  # ONNX cannot export it: its size is missing with the reason, the others stand
        assert sizes["onnx"] is None and "ONNX export failed" in sizes["onnx_note"]
        assert "projections" in sizes["onnx_note"] and "graph(" not in sizes["onnx_note"]
        assert not (tmp_path / "m.onnx").exists() and not (tmp_path / "m.onnx.tmp").exists()
    else:
        assert sizes["onnx"] == (tmp_path / "m.onnx").stat().st_size


def test_a_masked_encoder_in_eval_is_exact_per_layer_too():
    from archbench.measure import layer_table

    model = MaskedEncoder().eval()
    rows = layer_table(model)
    assert sum(r["matmul_conv_flops"] for r in rows) == HAND[MaskedEncoder] == count_forward(model).matmul_conv
    by_name = {r["layer"]: r for r in rows}
    # the layers run on nested tensors (the padded tokens dropped): no one output shape, exact counts
    assert by_name["enc.layers.0.linear1"]["output_shape"] is None
    assert by_name["enc.layers.0.linear1"]["matmul_conv_flops"] == 2 * (TOK - PAD) * E * 2 * E


def test_an_expanded_parameter_counts_under_no_grad_and_in_backward():
    model = Queries()
    with torch.no_grad(), SafeModuleTracker() as mt, OpCounter(mt) as counter:
        model(torch.zeros(2, 1, 28, 28))
    assert counter.count.matmul_conv == 2 * HAND[Queries]
    assert counter.count.by_module["head"]["matmul_conv"] == 2 * 2 * 4 * E * 10
    # In training the backward ops are charged to the module they belong to, as before.
    step = count_train_step(model, batch_size=4)
    assert step["backward"].by_module["attn"]["matmul_conv"] > 0


class FailsInTraining(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(784, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("no training here")
        return self.lin(x.flatten(1))


def test_a_failed_cost_is_recorded_and_the_others_stand(tmp_path):
    meas = measure_model(FailsInTraining(), timing=False, files_dir=tmp_path)
    assert meas["params"]["total"] == 7850
    assert meas["saved_size_bytes"]["safetensors"] > 7850 * 4
    assert meas["inference"]["views"] == 1
    errors = meas["errors"]
    for cost in ("flops", "memory", "reference"):  # each runs the training step, and each says so
        assert cost not in meas and errors[cost] == "RuntimeError: no training here"
    # Both renderers show what was measured and name what was not, with the reason.
    text = render_profile({"model": "f", "input_shape": [1, 28, 28], "batch_size": 64, "device": "cpu",
                           "layers": None, "measurements": meas})
    assert "Not measured" in text and "no training here" in text and "safetensors" in text
    blocks = model_section("f", {"measurements": meas, "units": []})
    bullets = "\n".join(blocks[-1].items)
    assert "Parameters: 7,850 trainable" in bullets and "Not measured — memory" in bullets


@pytest.mark.parametrize("name", ["Queries", "ProjLSTM", "MaskedEncoder"])
def test_profile_exits_0_without_a_traceback_or_a_graph_dump(name, tmp_path, capfd):
    from archbench.cli import main

    assert main(["profile", f"tests.pattern_models:{name}", "--json", "--no-timing", "--batch-size", "8",
                 "--out", str(tmp_path / "files")]) == 0
    out, err = capfd.readouterr()
    rec = json.loads(out)  # nothing but the JSON on stdout (the exporter's C++ log is kept off it)
    assert "Traceback" not in err and "Warning" not in err and "graph(" not in err
    meas = rec["measurements"]
    assert "errors" not in meas and {"params", "flops", "memory", "saved_size_bytes", "reference"} <= set(meas)
    assert rec["layers"] and sum(r["params"] for r in rec["layers"]) == meas["params"]["total"]


def test_markers_restrides_and_nested_conversions_are_data_movement():
    x = torch.randn(2, 3, 4, 4)
    with OpCounter() as counter:
        with torch.profiler.record_function("marker"):
            y = x.clone().as_strided_((2, 3, 4, 4), (48, 1, 12, 3))
        nt = torch._nested_tensor_from_mask(torch.randn(2, 5, 3), torch.tensor([[1, 1, 1, 0, 0], [1] * 5]).bool())
        nt.to_padded_tensor(0.0)
    c = counter.count
    assert not c.uncounted and not c.partial and c.other_total == 0 and y.shape == x.shape
    assert {"as_strided_", "_record_function_enter_new", "_nested_tensor_from_mask"} <= set(c.data_movement)
    # an op with arithmetic and no formula still makes a count partial
    with OpCounter() as counter:
        torch.special.erfcx(x)
    assert counter.count.partial and "special_erfcx" in counter.count.uncounted


def test_the_reference_step_is_not_partial_and_its_flag_is_printed():
    plain = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    ref = count_train_step(plain, batch_size=8, reference=True)["total"]
    assert not ref.partial and "_record_function_enter_new" in ref.data_movement
    meas = measure_model(plain, batch_size=8, timing=False)
    meas["reference"]["flops"]["partial"] = {"train_step": True}
    text = render_profile({"model": "p", "input_shape": [1, 28, 28], "batch_size": 8, "device": "cpu",
                           "layers": [], "measurements": meas})
    line = next(t for t in text.splitlines() if "other FLOPs" in t and "matmul/conv +" in t)
    assert "(partial)" in line


def test_dct_cnn_says_10_views_in_models_and_in_the_runs_table(capsys, monkeypatch):
    from archbench.cli import main
    from archbench.measure import count_inference
    from archbench.measure.step import inference_pass
    from archbench.models import create_model
    from archbench.report.table import comparison_rows
    from archbench.report.units import fmt_si
    from archbench.resolve import resolve

    model = create_model("dct_cnn")
    cfg = resolve({"models": ["dct_cnn"]}).train_config_for("dct_cnn")
    evaluated = count_inference(inference_pass(model, cfg)).matmul_conv  # what a run records for dct_cnn
    monkeypatch.setenv("COLUMNS", "1000")  # one line per row: no cell wrapped
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs/sample (1 view)" in out
    line = next(t for t in out.splitlines() if t.startswith("dct_cnn "))
    assert f"{count_forward(model).matmul_conv:,}; {evaluated:,} as evaluated (10 views)" in line
    mlp = next(t for t in out.splitlines() if t.startswith("mlp "))
    assert "views" not in mlp
    # The run's comparison table says the same of the same figure.
    record = {"models": {"dct_cnn": {"units": [], "measurements": {"flops": {
        "forward_per_sample": evaluated, "inference_views": 10, "partial": {"forward": False}}}}}}
    analysis = {"models": {"dct_cnn": {"accuracy": {"n": 0}, "failed": [], "costs": {
        "params": 1, "saved_bytes": 1, "flops_inference": evaluated, "flops_train": None, "peak_memory": None,
        "train_time": None}}}}
    assert comparison_rows(record, analysis)[0][4] == f"{fmt_si(evaluated, 'FLOPs')} (10 views)"


def test_a_kept_pt_with_tied_weights_loads_back_into_the_model(tmp_path):
    from archbench.measure import save_model_files
    from tests.test_measured_step import Tied

    torch.manual_seed(0)
    model = Tied()
    files = save_model_files(model, tmp_path, "tied", formats=("safetensors", "state_dict"))
    state = torch.load(tmp_path / files["state_dict"]["path"], weights_only=True)
    fresh = Tied()
    fresh.load_state_dict(state)  # strict: every name, the alias included
    assert fresh.a.weight is fresh.b.weight and torch.equal(fresh.a.weight, model.a.weight)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    # The shared weight is written once: the file is no bigger than one copy of the weights (plus its index).
    weights = sum(p.numel() * 4 for p in model.parameters())
    assert files["state_dict"]["bytes"] < weights + 64 * 64 * 4
    from safetensors.torch import load_file

    assert "b.weight" not in load_file(tmp_path / files["safetensors"]["path"])  # safetensors: each tensor once


def test_lazy_modules_are_materialised_before_measuring_and_training():
    from archbench.config import TrainConfig
    from archbench.errors import ModelError
    from archbench.models import create_model
    from archbench.models.registry import build_model
    from archbench.train import loop

    model = build_model("tests.pattern_models:LazyMLP", 0)
    assert model.training and model.body[1].weight.shape == (32, 784)
    again = build_model("tests.pattern_models:LazyMLP", 0)  # initialised from the unit's seed, as any model
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters()))
    meas = measure_model(model, batch_size=8, timing=False)
    assert "errors" not in meas and meas["params"]["total"] == 784 * 32 + 32 + 32 * 10 + 10
    assert meas["flops"]["forward_per_sample"] == 2 * (784 * 32 + 32 * 10)
    x, y = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (16,))
    r = loop.train(model, x, y, None, None, TrainConfig(epochs=1, batch_size=8, device="cpu"), seed=0)
    assert len(r.history) == 1
    with pytest.raises(ModelError, match="lazy modules.*failed"):
        create_model("tests.pattern_models:BrokenLazy")


def test_one_adam_convention_for_every_implementation_and_no_flops_for_index_arithmetic():
    from archbench.config import TrainConfig
    from archbench.measure.counting import ADAM_FLOPS_PER_ELEMENT, WEIGHT_DECAY_FLOPS_PER_ELEMENT
    from archbench.measure.step import trained_step

    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16), nn.ReLU(), nn.Linear(16, 10))
    n, tensors = _params(model), len(list(model.parameters()))
    fused = count_train_step(model, batch_size=8)["optimizer"]
    plain = count_train_step(model, batch_size=8, reference=True)["optimizer"]  # torch.optim.Adam's for-loop
    assert fused.other["optimizer"] == plain.other["optimizer"] == ADAM_FLOPS_PER_ELEMENT * n + tensors
    assert fused.other_total == plain.other_total  # nothing else: the for-loop's ops are the update
    decayed = count_train_step(model, batch_size=8, cfg=TrainConfig(optimizer="adamw", weight_decay=5e-4))
    assert decayed["optimizer"].other["optimizer"] == \
        (ADAM_FLOPS_PER_ELEMENT + WEIGHT_DECAY_FLOPS_PER_ELEMENT) * n + tensors
    # The augmentation's crop offsets and mirrored columns are integer arithmetic and the crop a gather: the data
    # phase's only FLOPs are the flip draws' comparisons, one per image.
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 26 * 26, 10))
    from archbench.measure import count_step

    data = count_step(trained_step(cnn, TrainConfig(batch_size=8, augment_crop=2, augment_flip=True)))["data"]
    assert data.total == data.by_op["lt"]["flops"] == 8 and list(data.by_op) == ["lt"]
    assert {"add", "mul", "rsub", "where"} <= set(data.data_movement) and not data.uncounted


def test_the_recorded_formulation_is_the_one_trained():
    from archbench.config import TrainConfig
    from archbench.measure.step import trained_step
    from archbench.train import loop

    x, y = torch.randint(0, 255, (16, 28, 28), dtype=torch.uint8), torch.randint(0, 10, (16,))
    cfg = TrainConfig(epochs=1, batch_size=8, device="cpu")  # the "fast" formulation, the default
    assert cfg.formulation == "fast"
    cnn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.MaxPool2d(2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))
    for model, trained in ((Queries(), "plain"), (cnn, "fast")):  # a custom module: nothing to rewrite
        assert loop.train(model, x, y, None, None, cfg, seed=0).formulation == trained
        assert trained_step(model, cfg).description["formulation"].split(" (")[0] == trained
