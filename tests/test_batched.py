"""Seeds as one batched model (archbench.train.batched, issue #14 item 4):
each seed's initial weights, data order and augmented images, per-epoch
losses and accuracies, final weights and buffers, test loss and predictions
are bit-identical to a separate ``train`` of that seed, at 1 and at 2
intra-op threads; what cannot be batched with those results is refused."""

import math

import numpy as np
import pytest
import torch
from torch import nn

from archbench.config import TrainConfig
from archbench.errors import TrainingError, UsageError
from archbench.models import create_model, recipe_of
from archbench.train import batched, train
from archbench.train.batched import batchable, train_seeds
from archbench.train.loop import _Step, augment
from archbench.unit import build_model
from tests.conftest import make_arrays

SHAPE = (1, 28, 28)


@pytest.fixture
def threads():
    """Run the test body with ``threads(n)`` intra-op threads (CPU arithmetic depends on the count), restored after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data():
    a = make_arrays(n_train=90, n_test=30, seed=3)
    return {k: torch.from_numpy(v.astype(np.int64) if "labels" in k else v) for k, v in a.items()}


def bn_net():
    """A small convolutional model with batch norm: running statistics, one with a cumulative average."""
    return nn.Sequential(nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16, momentum=None), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(16 * 5 * 5, 10))


class Scale(nn.Module):
    """A custom layer with its own parameter (run per seed through functional_call)."""

    def __init__(self):
        super().__init__()
        self.s = nn.Parameter(torch.rand(10) + 0.5)

    def forward(self, x):
        return x * self.s


def generic_net():
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 48), nn.LayerNorm(48), nn.GELU(), nn.Linear(48, 10), Scale())


class _Recorder:
    """Records every training step's batch (images and labels) and the model's weights at the first step."""

    def __init__(self, monkeypatch, cls):
        self.batches: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.first_state: dict[str, torch.Tensor] | None = None
        rec, call = self, cls.__call__

        def spy(step, xb, yb, loss_out, pred_out):
            if rec.first_state is None:
                rec.first_state = {n: t.detach().clone() for n, t in step.model.state_dict().items()}
            rec.batches.append((xb.detach().clone(), yb.clone()))
            return call(step, xb, yb, loss_out, pred_out)

        monkeypatch.setattr(cls, "__call__", spy)


def _separate(source, seed, cfg, data, monkeypatch, **kw):
    """``train`` of one seed alone, as a unit trains it; returns (model, result, recorder)."""
    if isinstance(source, str):
        model = build_model(source, seed, SHAPE, 10)
    else:
        torch.manual_seed(seed)
        model = source()
    with monkeypatch.context() as m:
        rec = _Recorder(m, _Step)
        result = train(model, data["train_images"], data["train_labels"], data["test_images"], data["test_labels"],
                       cfg, seed=seed, **kw)
    return model, result, rec


def _batched(source, seeds, cfg, data, monkeypatch, **kw):
    with monkeypatch.context() as m:
        rec = _Recorder(m, batched._FoldedStep)
        results = train_seeds(source, seeds, data["train_images"], data["train_labels"], data["test_images"],
                              data["test_labels"], cfg, input_shape=SHAPE, num_classes=10, **kw)
    return results, rec


def assert_same_as_separate(source, cfg, data, monkeypatch, seeds=(0, 1, 2), **kw):
    """Every per-seed quantity of the batched run equals the separate run's, bit for bit."""
    results, brec = _batched(source, seeds, cfg, data, monkeypatch, **kw)
    assert len(results) == len(seeds)
    k = len(seeds)
    for i, (seed, got) in enumerate(zip(seeds, results)):
        model, want, srec = _separate(source, seed, cfg, data, monkeypatch, **kw)
        # Initial weights: seed i's slice of every stacked tensor at the first step.
        assert brec.first_state is not None and srec.first_state is not None
        assert brec.first_state.keys() == srec.first_state.keys()
        for name, t in srec.first_state.items():
            assert torch.equal(brec.first_state[name][i], t), f"seed {seed}: initial {name} differs"
        # Data order and augmentation: seed i's rows of every folded batch are the separate run's batch.
        assert len(brec.batches) == len(srec.batches)
        for (bx, by), (sx, sy) in zip(brec.batches, srec.batches):
            b = sy.shape[0]
            assert bx.shape[0] == k * b
            assert torch.equal(by[i * b:(i + 1) * b], sy)
            assert torch.equal(bx[i * b:(i + 1) * b], sx)
        # Curves, final weights and buffers, test loss and predictions.
        assert [h.train_loss for h in got.history] == [h.train_loss for h in want.history]
        assert [h.train_acc for h in got.history] == [h.train_acc for h in want.history]
        assert [(h.test_loss, h.test_acc) for h in got.history] == [(h.test_loss, h.test_acc) for h in want.history]
        assert [(h.val_loss, h.val_acc) for h in got.history] == [(h.val_loss, h.val_acc) for h in want.history]
        trained = got.extra["model"]
        for (name, p), q in zip(model.state_dict().items(), trained.state_dict().values()):
            assert torch.equal(p, q), f"seed {seed}: final {name} differs by {(p.float() - q.float()).abs().max()}"
        assert got.test.loss == want.test.loss and got.test.accuracy == want.test.accuracy
        assert torch.equal(got.test.predictions, want.test.predictions)
        assert (got.steps, got.samples_seen, got.test_views, got.formulation) == \
            (want.steps, want.samples_seen, want.test_views, want.formulation)
        assert got.extra["batched"]["seeds"] == k and got.extra["batched"]["first_batch_bit_identical"]
    return results


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_seed_models_are_bit_identical_to_separate_runs(name, data, monkeypatch, threads):
    threads(1)
    # 90 images in batches of 32: the last batch holds 26 (the partial batch is per seed too).
    assert_same_as_separate(name, TrainConfig(device="cpu", epochs=2, batch_size=32), data, monkeypatch)


@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_bit_identical_with_two_threads(name, data, monkeypatch, threads):
    threads(2)  # the separate runs use 2 threads as well: MKL splits long sums among threads
    assert_same_as_separate(name, TrainConfig(device="cpu", epochs=1, batch_size=32), data, monkeypatch,
                            seeds=(0, 1))


def test_batch_norm_model_is_bit_identical(data, monkeypatch, threads):
    threads(1)
    results = assert_same_as_separate(bn_net, TrainConfig(device="cpu", epochs=2, batch_size=32), data,
                                      monkeypatch, seeds=(4, 5))
    # Running statistics moved from their initial values (and equal the separate runs': checked above).
    assert not torch.equal(results[0].extra["model"][1].running_mean, torch.zeros(8))


class NamedK(nn.Module):
    """A custom layer whose parameter's name is one the stacked layers could use for themselves."""

    def __init__(self):
        super().__init__()
        self.k = nn.Parameter(torch.ones(10))

    def forward(self, x):
        return x * self.k


def test_batch_statistics_only_and_odd_names(data, monkeypatch, threads):
    """Batch norm without affine weights or running statistics still normalises each seed's batch alone."""
    threads(1)
    net = lambda: nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4, affine=False, track_running_stats=False),  # noqa: E731
                                nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 13 * 13, 10), NamedK())
    assert_same_as_separate(net, TrainConfig(device="cpu", epochs=1, batch_size=32), data, monkeypatch,
                            seeds=(0, 1))


def test_zoo_recipe_is_bit_identical(data, monkeypatch, threads):
    """resnet_small's recipe: bf16 autocast, AdamW with a one-cycle schedule, label smoothing, crop and flip
    augmentation drawn per seed, test-time flips; batch norm and residual adds."""
    threads(1)
    cfg = TrainConfig(**{**recipe_of("resnet_small"), "device": "cpu", "epochs": 1, "batch_size": 45})
    assert cfg.precision == "bf16" and cfg.augment_crop and cfg.tta_flip
    assert_same_as_separate("resnet_small", cfg, data, monkeypatch, seeds=(0, 1))


def test_plain_formulation_validation_split_and_other_layers(data, monkeypatch, threads):
    """LayerNorm and a custom parameter run per seed through functional_call, GELU once per seed (its vector
    loop's tail rounds otherwise); the curve on a validation split, the test set once at the end."""
    threads(1)
    kw = {"val_x": data["test_images"][:12], "val_y": data["test_labels"][:12]}
    results = assert_same_as_separate(generic_net, TrainConfig(device="cpu", epochs=2, formulation="plain"), data,
                                      monkeypatch, seeds=(0, 1), **kw)
    assert results[0].history[0].val_loss is not None and results[0].history[0].test_loss is None
    assert results[0].extra["batched"]["per_seed_functional_call"] == ["LayerNorm", "Scale"]


def test_streamed_batches_are_bit_identical(data, monkeypatch, threads):
    """stream=True: uint8 images gathered per batch and converted, as train() does for memory-mapped data."""
    threads(1)
    assert_same_as_separate("cnn", TrainConfig(device="cpu", epochs=1, batch_size=32), data, monkeypatch,
                            seeds=(0, 1), stream=True)


def test_augmentation_of_a_folded_batch_is_each_seeds_own(threads):
    """The folded batch's crop/flip is k augment() calls with the seeds' generators (3 channels, channels-last)."""
    x = torch.rand(3 * 5, 3, 8, 8).contiguous(memory_format=torch.channels_last)
    for pad, flip in ((2, True), (0, True), (1, False)):
        gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
        got = batched._augment_seeds(x, 3, pad, flip, gens)
        gens = [torch.Generator().manual_seed(s) for s in (7, 8, 9)]
        want = torch.cat([augment(x[i * 5:(i + 1) * 5], pad, flip, g) for i, g in enumerate(gens)])
        assert torch.equal(got, want) and got.is_contiguous(memory_format=torch.channels_last)


def test_progress_and_results(data, threads):
    threads(1)
    seen = []

    class Bar:
        def __init__(self, total, desc, unit):
            self.total, self.n, self.desc = total, 0, desc
            seen.append(self)

        def update(self, k):
            self.n += k

        def set_postfix_str(self, s):
            self.post = s

        def close(self):
            pass

    results = train_seeds("mlp", [0, 1], data["train_images"], data["train_labels"], None, None,
                          TrainConfig(device="cpu", epochs=2), input_shape=SHAPE, num_classes=10, progress=Bar)
    assert [b.n for b in seen] == [180, 180] and "2 seeds" in seen[0].desc and "img/s" in seen[-1].post
    r = results[0]
    assert math.isnan(r.test.loss) and r.steps == 4 and r.samples_seen == 180 and not r.cuda_graphs
    assert r.train_seconds == pytest.approx(r.extra["batched"]["batch_train_seconds"] / 2)


# --- refusals ----------------------------------------------------------------------------------------------------

def test_dropout_is_refused(data):
    cfg = TrainConfig(device="cpu", epochs=1)
    reason = batchable(create_model("cnn_bn"), cfg)
    assert reason is not None and "'7' (Dropout)" in reason and "train the seeds separately" in reason
    with pytest.raises(UsageError, match=r"cnn_bn.*Dropout.*train the seeds separately"):
        train_seeds("cnn_bn", [0, 1], data["train_images"], data["train_labels"], None, None, cfg,
                    input_shape=SHAPE, num_classes=10)
    assert batchable(nn.Sequential(nn.Flatten(), nn.Dropout(0.0), nn.Linear(784, 10)), cfg) is None


@pytest.mark.parametrize("model, match", [
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 8), nn.RReLU(), nn.Linear(8, 10)), r"RReLU"),
    (lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.SyncBatchNorm(10)), r"synchronises"),
    (lambda: nn.utils.parametrizations.weight_norm(nn.Linear(784, 10)), r"parametrised"),
    (lambda: nn.Sequential(nn.Flatten(), nn.LazyLinear(10)), r"lazy"),
])
def test_other_refusals(model, match):
    reason = batchable(model(), TrainConfig(device="cpu"))
    assert reason is not None and match.lower() in reason.lower()


def test_cuda_with_graphs_is_refused():
    """The batched step is not captured as a CUDA graph: on a GPU that costs more than batching saves."""
    mlp = create_model("mlp")
    reason = batchable(mlp, TrainConfig(device="cuda"))
    assert reason is not None and "CUDA graph" in reason and "cuda_graphs to false" in reason
    assert batchable(mlp, TrainConfig(device="cuda", cuda_graphs=False)) is None
    assert batchable(mlp, TrainConfig(device="cpu")) is None


def test_tied_weights_are_refused():
    a = nn.Linear(10, 10)
    b = nn.Linear(10, 10)
    b.weight = a.weight
    reason = batchable(nn.Sequential(nn.Flatten(), nn.Linear(784, 10), a, b), TrainConfig(device="cpu"))
    assert reason is not None and "tied" in reason


class MixesBatch(nn.Module):
    def forward(self, x):
        return x - x.mean(0, keepdim=True)


def test_a_forward_that_mixes_the_batch_is_refused(data, threads):
    threads(1)
    with pytest.raises(UsageError, match=r"mixes the images of a batch.*train the seeds separately"):
        train_seeds(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 16), MixesBatch(), nn.Linear(16, 10)),
                    [0, 1], data["train_images"], data["train_labels"], None, None, TrainConfig(device="cpu"),
                    input_shape=SHAPE, num_classes=10)


class FixedBatch(nn.Module):
    def forward(self, x):
        return x.reshape(32, -1)


def test_a_forward_that_assumes_the_batch_size_is_refused(data, threads):
    threads(1)
    with pytest.raises(UsageError, match=r"fails on a batch of 2 seeds' images"):
        train_seeds(lambda: nn.Sequential(FixedBatch(), nn.Linear(784, 10)), [0, 1], data["train_images"],
                    data["train_labels"], None, None, TrainConfig(device="cpu", batch_size=32),
                    input_shape=SHAPE, num_classes=10)


def test_seeds_must_share_an_architecture(data):
    widths = iter([8, 16])
    with pytest.raises(UsageError, match=r"seed 1's model has other layers.*share one architecture"):
        train_seeds(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, next(widths))), [0, 1],
                    data["train_images"], data["train_labels"], None, None, TrainConfig(device="cpu"),
                    input_shape=SHAPE, num_classes=10)


def test_a_diverging_seed_is_named(data, threads):
    threads(1)
    with pytest.raises(TrainingError, match=r"training loss of seed 3 became nan.*train the seeds separately"):
        train_seeds(lambda: nn.Sequential(nn.Flatten(), nn.Linear(784, 10)), [3, 4], data["train_images"],
                    data["train_labels"], None, None, TrainConfig(device="cpu", lr=1e38, epochs=1),
                    input_shape=SHAPE, num_classes=10)


def test_batch_seeds_through_the_cli_gives_each_seed_its_own_results(synthetic_fashion, tmp_path, capsys):
    """`archbench run --batch-seeds`: the mlp's seeds train as one batch and every unit equals the separate
    run's; a model that cannot be batched (dropout) trains one by one, and the log says why."""
    import json

    from archbench.cli import main

    common = ["--models", "mlp,cnn_bn", "--seeds", "0,1", "--data-dir", str(synthetic_fashion), "--no-verify",
              "--epochs", "2", "--batch-size", "32", "--no-timing", "--threads", "1", "--out", str(tmp_path)]
    assert main(["run", *common, "--name", "alone"]) == 0
    assert main(["run", *common, "--name", "batched", "--batch-seeds"]) == 0
    err = capsys.readouterr().err
    assert "[mlp] seeds 0, 1: training 2 epochs" in err and "as one batched model" in err
    assert "[cnn_bn] seeds 0, 1 train one by one, not as one batch:" in err and "dropout" in err.lower()
    alone, batched = (json.loads((tmp_path / n / "results.json").read_text()) for n in ("alone", "batched"))
    assert batched["execution"]["batch_seeds"] is True
    for m in ("mlp", "cnn_bn"):
        for a, b in zip(alone["models"][m]["units"], batched["models"][m]["units"]):
            assert a["seed"] == b["seed"] and a["test"] == b["test"]
            assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
            assert [h["test_loss"] for h in a["history"]] == [h["test_loss"] for h in b["history"]]
            assert ("batched_with" in b["training"]) == (m == "mlp")
    assert batched["models"]["mlp"]["units"][0]["training"]["batched_with"] == [0, 1]
    report = (tmp_path / "batched" / "report.md").read_text()
    assert "trained as one batched model, so wall and training times are each unit's share" in report
    assert "each unit's share" not in (tmp_path / "alone" / "report.md").read_text()
    # the saved weights are each seed's own
    from safetensors.torch import load_file

    for s in (0, 1):
        wa = load_file(str(tmp_path / "alone" / "models" / f"mlp-seed{s}.safetensors"))
        wb = load_file(str(tmp_path / "batched" / "models" / f"mlp-seed{s}.safetensors"))
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
