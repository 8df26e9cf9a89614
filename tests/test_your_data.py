"""Your data through the whole tool (#15): a dataset of another shape runs
through `run`, `profile` and the report with the models built for it; a
validation split keeps the test set for one final evaluation; the streamed
path computes what the in-memory one does. Datasets are made by the tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from archbench.config import TrainConfig
from archbench.errors import UsageError
from archbench.resolve import resolve
from archbench.train import train
from tests.conftest import strict_json


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "archbench", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def write_npz(path: Path, shape=(32, 32, 3), n_train=60, n_test=30, classes=10, seed=0) -> Path:
    """Keras layout (NHWC uint8, integer labels), every class present; class c
    brightens a band of rows, so the task is learnable."""
    rng = np.random.default_rng(seed)

    def split(n):
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = rng.integers(0, 60, (n, *shape)).astype(np.uint8)
        h = shape[0]
        for i, c in enumerate(y):
            lo = (c * h) // classes
            x[i, lo:lo + max(1, h // classes)] += 150
        return x, y.astype(np.int64)

    xtr, ytr = split(n_train)
    xte, yte = split(n_test)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    return path


def _tiny_cfg(**kw) -> TrainConfig:
    return TrainConfig.from_dict({"epochs": 2, "batch_size": 16, **kw})


def _images(n, c=1, h=12, w=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, c, h, w), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


def _net(c=1, h=12, w=12, k=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, 16), torch.nn.ReLU(),
                               torch.nn.Linear(16, k))


def test_validation_curves_and_one_final_test():
    x, y = _images(64)
    xv, yv = _images(20, seed=1)
    xt, yt = _images(30, seed=2)
    r = train(_net(), x, y, xt, yt, _tiny_cfg(), seed=0, val_x=xv, val_y=yv)
    rows = [h.to_dict() for h in r.history]
    assert all(row["test_loss"] is None and row["test_acc"] is None for row in rows)
    assert all(row["val_loss"] is not None and 0 <= row["val_acc"] <= 1 for row in rows)
    assert len(r.test.predictions) == 30 and r.final_eval_seconds > 0  # evaluated once, after the epochs
    # without a validation split the rows keep exactly their old keys, with the test curve
    r2 = train(_net(), x, y, xt, yt, _tiny_cfg(), seed=0)
    assert set(r2.history[0].to_dict()) == {"epoch", "train_loss", "train_acc", "test_loss", "test_acc",
                                            "seconds", "eval_seconds"}
    # the split changes what the curve shows, not what trains: same weights, same final test
    assert [h.train_loss for h in r.history] == [h.train_loss for h in r2.history]
    assert r.test.predictions.tolist() == r2.test.predictions.tolist() and r.test.loss == r2.test.loss


@pytest.mark.parametrize("recipe", [{}, {"augment_crop": 2, "augment_flip": True, "tta_flip": True,
                                         "formulation": "plain"}])
def test_streamed_path_computes_the_same(recipe):
    x, y = _images(70, c=3)
    xt, yt = _images(25, c=3, seed=2)
    xv, yv = _images(15, c=3, seed=3)
    cfg = _tiny_cfg(**recipe)
    a = train(_net(3), x, y, xt, yt, cfg, seed=1, val_x=xv, val_y=yv)
    b = train(_net(3), x, y, xt, yt, cfg, seed=1, val_x=xv, val_y=yv, stream=True)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    assert [h.val_loss for h in a.history] == [h.val_loss for h in b.history]
    assert a.test.loss == b.test.loss and a.test.predictions.tolist() == b.test.predictions.tolist()


def test_config_checks_dataset_and_val_split(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"val_split.*strictly between 0 and 1"):
        resolve({"val_split": 1.0})
    with pytest.raises(UsageError, match=r"val_split"):
        resolve({"val_split": True})
    with pytest.raises(UsageError, match=r"unknown dataset 'nope\.npz'.*fashion-mnist.*no file or directory"):
        resolve({"dataset": "nope.npz"})
    npz = write_npz(tmp_path / "mine.npz")
    cfg = resolve({"dataset": "mine.npz", "val_split": 0.2, "models": ["cnn_bn"]})
    assert cfg.dataset == str(npz.resolve()) and cfg.val_split == 0.2
    # the user's own arrays: mirror symmetry unknown, so a recipe's flips are left out, and said so
    assert cfg.train["cnn_bn"].augment_flip is False and cfg.train["cnn_bn"].tta_flip is False
    assert any("not known" in n and "--augment-flip" in n for n in cfg.notes)
    # given explicitly, the user's flips are kept
    assert resolve({"dataset": "mine.npz", "augment_flip": True}).train["mlp"].augment_flip is True
    # the record keeps no val_split key when there is none (old records compare equal)
    assert "val_split" not in resolve({}).to_dict() and resolve({"val_split": 0.1}).to_dict()["val_split"] == 0.1


def test_experiment_file_dataset_path_is_relative_to_the_file(tmp_path, monkeypatch):
    from archbench.resolve import load_experiment

    (tmp_path / "exp").mkdir()
    write_npz(tmp_path / "exp" / "d.npz")
    (tmp_path / "exp" / "e.toml").write_text('dataset = "d.npz"\nval_split = 0.25\nmodels = ["mlp"]\n')
    monkeypatch.chdir(tmp_path)
    cfg = resolve({}, experiment=load_experiment(tmp_path / "exp" / "e.toml"))
    assert cfg.dataset == str((tmp_path / "exp" / "d.npz").resolve()) and cfg.val_split == 0.25


def test_rgb_npz_through_run_profile_and_report(tmp_path):
    """The acceptance check: a 3x32x32 10-class .npz through run, profile and
    the report, with the seed models built for it (parameters by hand)."""
    write_npz(tmp_path / "rgb.npz")
    r = _cli("run", "--dataset", "rgb.npz", "--models", "mlp,cnn", "--epochs", "1", "--batch-size", "16",
             "--val-split", "0.2", "--no-timing", "--quiet", "--name", "rgb", "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rec = strict_json((tmp_path / "runs" / "rgb" / "results.json").read_text())
    # Keras-like shape inference: mlp Flatten(3072)-256-128-10; cnn 32->30->15->13->6, Dense(32*6*6)->64->10
    mlp = 3072 * 256 + 256 + 256 * 128 + 128 + 128 * 10 + 10
    cnn = (3 * 16 * 9 + 16) + (16 * 32 * 9 + 32) + (32 * 6 * 6 * 64 + 64) + (64 * 10 + 10)
    assert (mlp, cnn) == (820_874, 79_530)
    assert rec["models"]["mlp"]["measurements"]["params"]["trainable"] == mlp
    assert rec["models"]["cnn"]["measurements"]["params"]["trainable"] == cnn
    card = rec["dataset"]
    assert card["image_shape"] == [3, 32, 32] and card["num_classes"] == 10
    # stratified: each class's 6 training images give round(0.2 * 6) = 1 to validation
    assert card["train_samples"] == 50 and card["val_samples"] == 10 and card["test_samples"] == 30
    assert card["class_counts"]["val"] == [1] * 10 and card["class_counts"]["train"] == [5] * 10
    unit = rec["models"]["cnn"]["units"][0]
    assert unit["history"][0]["test_acc"] is None and unit["history"][0]["val_acc"] is not None
    assert len(unit["test"]["predictions"]) == 30
    report = (tmp_path / "runs" / "rgb" / "report.md").read_text()
    assert "3 × 32 × 32" in report and "validation split" in report and "evaluated once" in report
    assert "10 of 60 training images (16.7 %) held out; --val-split asked for 20 %" in report
    # profile builds the same adapted model
    p = _cli("profile", "cnn", "--dataset", "rgb.npz", "--json", "--no-timing", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert prof["input_shape"] == [3, 32, 32] and prof["measurements"]["params"]["trainable"] == cnn


def test_digits_default_models_leave_out_what_cannot_take_8x8(tmp_path):
    pytest.importorskip("sklearn")
    r = _cli("run", "--dataset", "digits", "--epochs", "1", "--no-timing", "--quiet", "--name", "d",
             "--threads", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rec = strict_json((tmp_path / "runs" / "d" / "results.json").read_text())
    assert list(rec["models"]) == ["mlp"]
    assert any(n.startswith("cnn left out") and "8" in n for n in rec["config"]["notes"])
    assert rec["models"]["mlp"]["measurements"]["params"]["trainable"] == 64 * 256 + 256 + 256 * 128 + 128 + 1290
    # named explicitly, a model that cannot take 8x8 images is refused before anything is written
    r = _cli("run", "--dataset", "digits", "--models", "mlp,cnn", "--epochs", "1", "--quiet", "--name", "e",
             cwd=tmp_path)
    assert r.returncode != 0 and "cnn" in r.stderr and "8" in r.stderr
    assert not (tmp_path / "runs" / "e" / "results.json").exists()


def test_memory_mapped_run_gives_the_in_memory_results(tmp_path, monkeypatch):
    """Above the memory threshold the images stay uint8 in memory-mapped files
    and each batch is converted as it is read: recorded, and the same results."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # where the array cache is written
    write_npz(tmp_path / "rgb.npz", n_train=40, n_test=20)
    args = ("run", "--dataset", "rgb.npz", "--models", "cnn", "--epochs", "2", "--batch-size", "16",
            "--val-split", "0.25", "--no-timing", "--quiet", "--threads", "1")
    assert _cli(*args, "--name", "mem", cwd=tmp_path).returncode == 0
    monkeypatch.setenv("ARCHBENCH_MEMORY_LIMIT", "1000")  # bytes: far below the float32 copy
    r = _cli(*args, "--name", "map", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert list((tmp_path / "cache" / "archbench" / "arrays").iterdir())
    mem, mapped = (strict_json((tmp_path / "runs" / n / "results.json").read_text()) for n in ("mem", "map"))
    assert mem["dataset"]["storage"] == "memory" and mapped["dataset"]["storage"] == "memmap"
    assert mem["dataset"]["identity_sha256"] == mapped["dataset"]["identity_sha256"]
    a, b = mem["models"]["cnn"]["units"][0], mapped["models"]["cnn"]["units"][0]
    assert a["test"] == b["test"]
    assert [(h["train_loss"], h["val_loss"]) for h in a["history"]] == \
        [(h["train_loss"], h["val_loss"]) for h in b["history"]]


def test_costs_are_measured_for_the_data_class_count():
    """Every measurer builds its step with the data's class count (a 3-class
    model fed 10-class targets failed: costs lost, profile crashed)."""
    from archbench.measure import measure_model

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 6 * 6, 3))
    cfg = TrainConfig.from_dict({"batch_size": 16, "epochs": 2})
    m = measure_model(model, (2, 6, 6), cfg=cfg, num_classes=3, train_samples=50, epochs=2, timing=True,
                      latency_seconds=0.01)
    assert m["flops"]["per_epoch"]["steps"] == 4  # 3 full batches of 16 and a last one of 2
    assert m["speed"]["train_step"]["items_per_call"] == 16 and m["reference"]["speed"]["train_step"]["calls"] >= 10


def test_per_class_metrics_are_undefined_not_zero_without_test_images():
    from archbench.report.exports import per_class_table

    record = {"dataset": {"test_labels": [0, 0, 1, 1], "classes": ["a", "b", "c"]},
              "models": {"m": {"units": [{"seed": 0, "status": "ok", "test": {"predictions": [0, 1, 1, 1]}}]}}}
    cols, rows = per_class_table(record)
    by_class = {r[2]: dict(zip(cols, r)) for r in rows}
    assert by_class["a"]["recall_frac"] == 0.5 and by_class["a"]["precision_frac"] == 1.0
    assert by_class["b"]["precision_frac"] == pytest.approx(2 / 3)
    # class c: no test image and never predicted: nothing to measure, so no number (not 0.0)
    assert by_class["c"]["recall_frac"] is None and by_class["c"]["precision_frac"] is None
    assert by_class["c"]["f1_frac"] is None and by_class["c"]["support_count"] == 0


def test_experiment_file_dataset_is_never_read_from_the_working_directory(tmp_path, monkeypatch):
    from archbench.resolve import load_experiment

    (tmp_path / "exp").mkdir()
    write_npz(tmp_path / "d.npz")  # in the working directory, not beside the file
    (tmp_path / "exp" / "e.toml").write_text('dataset = "d.npz"\nmodels = ["mlp"]\n')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"unknown dataset '.*exp/d\.npz'"):
        load_experiment(tmp_path / "exp" / "e.toml")


def test_run_records_its_thread_policy_and_resume_keeps_it(tmp_path):
    from archbench.config import ExecutionConfig
    from archbench.run.study import thread_policy

    logs: list[str] = []
    new: dict = {}
    assert thread_policy(ExecutionConfig.build(threads=1, jobs=1), None, new, logs.append) == 1
    assert new["execution"] == {"threads": 1, "jobs": 1}
    # resumed without --threads: the stored policy, said in the log
    assert thread_policy(ExecutionConfig.build(jobs=1), tmp_path, new, logs.append) == 1
    assert logs == ["resuming with the run's thread policy: --threads 1"]
    # given explicitly, the new value is used for the units that have not started
    assert thread_policy(ExecutionConfig.build(threads="auto"), tmp_path, new, logs.append) == "auto"


def test_a_resumed_run_keeps_its_jobs_unless_given(tmp_path, monkeypatch):
    from archbench.config import ENV_JOBS, ExecutionConfig
    from archbench.run.study import stored_jobs

    monkeypatch.delenv(ENV_JOBS, raising=False)
    logs: list[str] = []
    record: dict = {"execution": {"threads": "auto", "jobs": 2}}
    assert stored_jobs(ExecutionConfig.build(), tmp_path, record, logs.append).jobs == 2
    assert logs == ["resuming with the run's jobs: --jobs 2"]
    assert stored_jobs(ExecutionConfig.build(jobs=1), tmp_path, record, logs.append).jobs == 1  # given: wins
    assert stored_jobs(ExecutionConfig.build(), None, record, logs.append).jobs == "auto"  # a new run
    monkeypatch.setenv(ENV_JOBS, "1")
    assert stored_jobs(ExecutionConfig.build(), tmp_path, record, logs.append).jobs == 1  # the environment's


def test_a_split_missing_classes_is_said():
    from archbench.report.datacheck import missing_class_warnings

    card = {"classes": ["a", "b", "c"], "class_counts": {"train": [8, 0, 0], "test": [1, 1, 1]}}
    (w,) = missing_class_warnings(card)
    assert w.startswith("The train split holds no image of 2 of 3 classes (b, c): the models never saw them")
    assert missing_class_warnings({"classes": ["a"], "class_counts": {"train": [3], "test": [2]}}) == []


def test_profile_takes_a_spec_file_and_a_dataset(tmp_path):
    """`profile examples/small_cnn.toml` (known by its own name, as in `run`), built for 8x8 digits
    with its head sized by units = "num_classes"."""
    pytest.importorskip("sklearn")
    spec = Path(__file__).resolve().parent.parent / "examples" / "small_cnn.toml"
    p = _cli("profile", str(spec), "--dataset", "digits", "--json", "--no-timing", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    prof = json.loads(p.stdout)
    assert prof["model"] == "small_cnn" and prof["input_shape"] == [1, 8, 8] and prof["num_classes"] == 10
    assert prof["dataset"]["train_samples"] == 1438 and prof["measurements"]["flops"]["per_epoch"]["steps"] == 23
