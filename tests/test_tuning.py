"""Equal tuning effort (issue #24, --tune): the trial values, the choice,
a study whose tuning must choose a known best value, and a resumed tuning."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from archbench.config import TrainConfig, parse_tune
from archbench.errors import UsageError
from archbench.resolve import resolve
from archbench.tuning import at_edge, choose, trial_values


def test_trial_values_are_spaced_around_the_recipe_or_over_the_range():
    five = trial_values(TrainConfig(lr=2e-3), {"lr": None}, 5, "m")
    lrs = [v["lr"] for v in five]
    assert lrs[2] == 2e-3  # the recipe's value is the middle trial
    assert lrs[0] == pytest.approx(2e-4) and lrs[-1] == pytest.approx(2e-2)
    ratios = [b / a for a, b in zip(lrs, lrs[1:])]
    assert all(r == pytest.approx(math.sqrt(10)) for r in ratios)  # geometric: 100x over 4 steps
    ranged = [v["lr"] for v in trial_values(TrainConfig(), {"lr": (1e-4, 1e-2)}, 3, "m")]
    assert ranged == pytest.approx([1e-4, 1e-3, 1e-2])
    linear = [v["label_smoothing"] for v in trial_values(TrainConfig(), {"label_smoothing": (0.0, 0.2)}, 5, "m")]
    assert linear == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2])  # a range from 0: linear
    # Two keys: every trial one value of each, each key's values all used once (a Latin hypercube), not in lock-step.
    both = trial_values(TrainConfig(), {"lr": None, "label_smoothing": (0.0, 0.2)}, 5, "m")
    assert sorted(v["label_smoothing"] for v in both) == pytest.approx(linear)
    assert [v["lr"] for v in both] == pytest.approx([1e-4, 10 ** -3.5, 1e-3, 10 ** -2.5, 1e-2])
    assert [v["label_smoothing"] for v in both] != pytest.approx(linear)


def test_tuning_options_are_checked_where_they_are_given():
    assert parse_tune("lr, weight_decay=0:1e-3") == {"lr": None, "weight_decay": (0.0, 1e-3)}
    assert parse_tune(["lr", "eps=1e-8:1e-6"]) == {"lr": None, "eps": (1e-8, 1e-6)}
    assert parse_tune({"lr": [1e-4, 1e-2]}) == {"lr": (1e-4, 1e-2)}
    cfg = resolve({"tune": ["lr"], "trials": 3})
    assert cfg.val_split == 0.1 and any("validation split" in n for n in cfg.notes)  # tuning needs one
    assert resolve({"tune": ["lr"], "val_split": 0.2}).val_split == 0.2
    assert cfg.to_dict()["tune"] == {"lr": None} and cfg.to_dict()["trials"] == 3
    assert "tune" not in resolve({}).to_dict()  # records without tuning keep their keys
    for bad, words in [({"tune": ["batch_size"]}, "'batch_size' cannot be tuned"),
                       ({"tune": ["lr=1e-2:1e-4"]}, "LOW < HIGH"),
                       ({"tune": ["lr=a:b"]}, "two numbers"),
                       ({"tune": ["lr", "lr"]}, "given twice"),
                       ({"trials": 3}, "--trials is for tuning"),
                       ({"tune_per_seed": True}, "--tune-per-seed is for tuning"),
                       ({"tune": ["weight_decay"]}, "--tune weight_decay=1e-5:1e-2"),
                       ({"tune": ["beta2"]}, "--tune beta2=0.99:0.9999"),
                       ({"tune": ["beta2=0.9:1.5"]}, "out of range"),
                       ({"tune": ["lr"], "trials": 1}, "trials")]:
        with pytest.raises(UsageError, match=words):
            resolve(bad)


def test_the_choice_is_the_best_validation_accuracy_and_says_when_it_is_at_an_edge():
    values = [{"lr": v} for v in (1e-4, 1e-3, 1e-2, 1e-1, 1.0)]
    assert choose(values, [0.5, 0.8, 0.7, None, 0.1]) == 1
    assert choose(values, [0.8, 0.5, 0.8, 0.8, 0.1]) == 2  # a tie: the value nearest the middle
    assert choose(values, [None] * 5) is None
    assert choose(values, [0.1, 0.2, 0.3, 0.4, float("nan")]) == 3  # a NaN score is no score
    assert at_edge(values, 0) == ["lr low"] and at_edge(values, 4) == ["lr high"] and at_edge(values, 2) == []


def _two_class_npz(path):
    """Dark images are class 0, bright ones class 1 (8x8, noisy): learnable
    in one epoch at lr 1e-3, not at all at lr 1e-9."""
    rng = np.random.default_rng(0)

    def split(n):
        y = np.arange(n) % 2
        x = rng.integers(0, 60, (n, 8, 8)) + (y * 150)[:, None, None]
        return x.astype(np.uint8), y.astype(np.int64)

    xtr, ytr = split(2000)
    xte, yte = split(100)
    np.savez(path, x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)


@pytest.mark.slow
def test_tuning_chooses_the_known_best_value_and_resumes_to_the_same_choice(tmp_path):
    data = tmp_path / "two.npz"
    _two_class_npz(data)
    env = {**os.environ, "COLUMNS": "100"}
    args = [sys.executable, "-m", "archbench", "run", "--dataset", str(data), "--models", "mlp", "--seeds", "0,1",
            "--epochs", "1", "--tune", "lr=1e-9:1e-3", "--trials", "2", "--no-timing", "--quiet", "--out",
            str(tmp_path), "--name", "t"]
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    path = tmp_path / "t" / "results.json"
    rec = json.loads(path.read_text())
    entry = rec["models"]["mlp"]
    trials = entry["trials"]
    assert [(t["trial"], t["seed"]) for t in trials] == [(0, 0), (1, 0)]  # trials with the first seed only
    assert [t["params"]["lr"] for t in trials] == pytest.approx([1e-9, 1e-3])
    assert all("test" not in t and "files" not in t for t in trials)  # a trial never sees the test set
    assert trials[1]["validation"]["accuracy"] == 1.0 and trials[0]["validation"]["accuracy"] <= 0.8
    assert entry["tuned"]["by_seed"]["0"]["trial"] == 1 and entry["tuned"]["by_seed"]["0"]["edge"] == ["lr high"]
    assert [u["seed"] for u in entry["units"]] == [0, 1] and all(u["test"]["accuracy"] == 1.0 for u in entry["units"])
    assert rec["config"]["val_split"] == 0.1 and rec["dataset"]["val_samples"] == 200
    md = (tmp_path / "t" / "report.md").read_text()
    assert "How was each model tuned?" in md and "| mlp | 2 | 0 | lr 0.001 | 100.00 % (chosen) |" in md
    assert "edge of the range" in md and "does not cover the noise of the choice" in md
    assert "Tuned by validation accuracy over 2 trials of lr: mlp lr 0.001." in md  # the bottom line says it
    assert (tmp_path / "t" / "plots" / "tuning_trials.png").exists()
    assert not (tmp_path / "t" / "trials").exists()  # the trials' checkpoint folders go once they are done
    # As an interrupted run leaves it: the second trial and every seed unfinished. Resuming retrains exactly
    # those, to the same numbers and the same choice.
    cut = json.loads(path.read_text())
    cut["models"]["mlp"]["trials"] = cut["models"]["mlp"]["trials"][:1]
    cut["models"]["mlp"]["units"] = []
    del cut["models"]["mlp"]["tuned"]
    path.write_text(json.dumps(cut))
    p = subprocess.run([sys.executable, "-m", "archbench", "run", "--resume", str(tmp_path / "t"), "--quiet"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    again = json.loads(path.read_text())["models"]["mlp"]
    assert again["trials"][0] == trials[0]  # kept, not retrained
    assert again["trials"][1]["validation"] == trials[1]["validation"]
    assert again["tuned"] == entry["tuned"]
    assert [u["test"]["predictions"] for u in again["units"]] == [u["test"]["predictions"] for u in entry["units"]]


@pytest.mark.slow
def test_trials_are_mlflow_runs_and_the_seeds_log_the_values_they_trained_with(tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    data = tmp_path / "two.npz"
    _two_class_npz(data)
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    p = subprocess.run([sys.executable, "-m", "archbench", "run", "--dataset", str(data), "--models", "mlp",
                        "--seeds", "0,1", "--epochs", "1", "--tune", "lr=1e-9:2e-3", "--trials", "2", "--no-timing",
                        "--quiet", "--out", str(tmp_path), "--name", "t", "--mlflow", uri],
                       capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    client = MlflowClient(tracking_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("archbench.model") == "mlp"]
    trials = sorted((r for r in runs if "archbench.trial" in r.data.tags), key=lambda r: r.data.tags["archbench.trial"])
    seeds = [r for r in runs if "archbench.trial" not in r.data.tags]
    assert [r.info.run_name for r in trials] == ["mlp-seed0-trial1", "mlp-seed0-trial2"]
    assert [float(r.data.params["train.lr"]) for r in trials] == pytest.approx([1e-9, 2e-3])
    assert "validation_accuracy" in trials[1].data.metrics and "test_accuracy" not in trials[1].data.metrics
    rec = json.loads((tmp_path / "t" / "results.json").read_text())
    assert len(seeds) == 2
    for r in seeds:  # the tuned value, not the recipe's 1e-3 ... and the test set's accuracy, once, after training
        assert float(r.data.params["train.lr"]) == pytest.approx(2e-3)
        unit = next(u for u in rec["models"]["mlp"]["units"] if str(u["seed"]) == r.data.tags["archbench.seed"])
        assert r.data.metrics["test_accuracy"] == pytest.approx(unit["test"]["accuracy"])
