"""Equal compute (issue #24, --match flops): the budget arithmetic, the
loop's step budget with a stretched schedule, and a study at equal FLOPs."""

import dataclasses
import json
import os
import subprocess
import sys

import pytest
import torch

import archbench.train.loop as loop
from archbench.config import TrainConfig
from archbench.errors import UsageError
from archbench.models import build_model
from archbench.resolve import resolve
from archbench.run.budget import plan, steps_within
from archbench.train import train
from archbench.train.loop import samples_of


def test_steps_within_a_sample_budget_by_hand():
    # 100 images in batches of 32: steps of 32, 32, 32, 4 per epoch.
    assert steps_within(100, 100, 32) == 4 and samples_of(4, 100, 32) == 100
    assert steps_within(99, 100, 32) == 3 and samples_of(3, 100, 32) == 96  # a partial epoch: full batches
    assert steps_within(250, 100, 32) == 4 + 4 + 1 and samples_of(9, 100, 32) == 232
    assert steps_within(31, 100, 32) == 0
    for samples in range(0, 400):
        steps = steps_within(samples, 100, 32)
        assert samples - 32 < samples_of(steps, 100, 32) <= samples  # short of the budget by less than a step


def test_plan_gives_every_model_the_costliest_models_flops():
    cfg = resolve({"models": ["mlp", "cnn"], "epochs": 5, "batch_size": 64, "match": "flops"})
    fps = {"mlp": 1_000.0, "cnn": 4_000.0}  # hand-set FLOPs per training sample
    p = plan(cfg, fps, 6_000)
    assert p["budget_flops"] == 4_000 * 6_000 * 5 and p["by"] == "cnn's 5 epochs"
    cnn, mlp = p["models"]["cnn"], p["models"]["mlp"]
    assert cnn["steps"] == 5 * 94 and cnn["samples"] == 30_000 and cnn["epochs"] == 5.0  # 6,000 = 93 x 64 + 48
    assert mlp["samples"] == 120_000 and mlp["steps"] == 20 * 94 and mlp["epochs"] == 20.0
    for m in p["models"].values():
        assert 0 <= p["budget_flops"] - m["train_flops"] < 64 * m["flops_per_sample"]
        # 8 points at the eighths of the budget: each the step nearest its fraction, the last the whole budget
        assert len(m["points"]) == 8 and m["points"] == sorted(m["points"]) and m["points"][-1] == m["steps"]
        for k, step in enumerate(m["points"], 1):
            want = k * p["budget_flops"] / 8 / m["flops_per_sample"]
            assert abs(samples_of(step, 6_000, 64) - want) <= 64
    # The step at each model's recipe epochs, evaluated too: the equal-epochs question in the same run.
    assert cnn["epochs_step"] == cnn["steps"] == 5 * 94 and mlp["epochs_step"] == 5 * 94
    few = plan(dataclasses.replace(cfg, budget_flops=2e6), fps, 6_000)["models"]["cnn"]  # 7 steps of 64 images
    assert len(few["points"]) == 8 and few["points"][0] == 1 and few["points"][-1] == few["steps"] == 7
    assert few["epochs_step"] is None  # the budget ends before the recipe's 5 epochs
    own = plan(dataclasses.replace(cfg, budget_flops=1e6), fps, 6_000)
    assert own["by"] == "--budget-flops" and own["models"]["mlp"]["samples"] == 960  # 15 x 64 <= 1,000
    with pytest.raises(UsageError, match="less than one step of cnn"):
        plan(dataclasses.replace(cfg, budget_flops=1e5), fps, 6_000)
    with pytest.raises(UsageError, match="measuring them failed for cnn"):
        plan(cfg, {"mlp": 1_000.0, "cnn": None}, 6_000)
    with pytest.raises(UsageError, match="--match flops with --budget-flops"):
        resolve({"budget_flops": 1e9})


def test_the_loop_trains_the_step_budget_with_the_schedule_stretched_to_it(fashion, monkeypatch):
    cfg = TrainConfig(epochs=1, batch_size=64, schedule="onecycle", warmup=0.2)
    x, y = fashion.train_images[:640], fashion.train_labels[:640]
    xt, yt = fashion.test_images[:200], fashion.test_labels[:200]
    seen = []
    real = loop.set_lr
    monkeypatch.setattr(loop, "set_lr", lambda opt, lr: (seen.append(lr), real(opt, lr)))
    r = train(build_model("mlp", 0), x, y, xt, yt, cfg, seed=0, max_steps=10 + 3)  # 10 steps an epoch
    assert r.steps == 13 and r.samples_seen == 640 + 3 * 64 and [h.epoch for h in r.history] == [1, 2]
    assert seen == [cfg.lr_at(i, 13) for i in range(13)] and seen[-1] == 0.0  # onecycle ends at 0 at the budget
    # A budget of whole epochs is the recipe with those epochs, to the bit; so is it with the curve's
    # evaluations along the way (evaluation changes no weight and draws no random number).
    a = train(build_model("mlp", 0), x, y, xt, yt, dataclasses.replace(cfg, epochs=2), seed=0)
    b = train(build_model("mlp", 0), x, y, xt, yt, cfg, seed=0, max_steps=20, eval_at=(3, 10, 17))
    assert a.test.loss == b.test.loss and torch.equal(a.test.predictions, b.test.predictions)
    assert [h.train_loss for h in a.history] == [h.train_loss for h in b.history]
    curve = b.extra["curve"]
    assert [p["step"] for p in curve] == [3, 10, 17] and [p["samples"] for p in curve] == [192, 640, 640 + 448]
    assert curve[1]["accuracy"] == a.history[0].test_acc  # after step 10: the end of epoch 1
    assert all(p["split"] == "test" and p["seconds"] > 0 for p in curve)
    assert curve[0]["seconds"] < curve[1]["seconds"] < curve[2]["seconds"]
    from archbench.report.target import _decode

    right = _decode(curve[1]["correct"], 200)
    assert right.sum().item() == round(curve[1]["accuracy"] * 200)


@pytest.mark.slow
def test_a_study_at_equal_flops(tmp_path, fashion_dir):
    env = {**os.environ, "COLUMNS": "100"}
    p = subprocess.run([sys.executable, "-m", "archbench", "run", "--match", "flops", "--seeds", "0,1", "--epochs",
                        "1", "--train-limit", "640", "--test-limit", "200", "--no-timing", "--quiet", "--out",
                        str(tmp_path), "--name", "f", "--check-determinism"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "identical results" in p.stdout  # retrained as the unit trained: its FLOP budget, not the recipe's epochs
    rec = json.loads((tmp_path / "f" / "results.json").read_text())
    budget = rec["budget"]
    assert rec["config"]["match"] == "flops" and budget["by"] == "cnn's 1 epoch"
    for m in ("mlp", "cnn"):
        fps = rec["models"][m]["measurements"]["flops"]["train_per_sample"]
        step = fps * 64
        for u in rec["models"][m]["units"]:
            spent = budget["models"][m]["samples"] * fps
            assert u["timings"]["steps"] == budget["models"][m]["steps"]
            assert 0 <= budget["budget_flops"] - spent < step
    assert budget["models"]["mlp"]["steps"] >= 2.9 * budget["models"]["cnn"]["steps"]  # ~3x fewer FLOPs a sample
    assert len(rec["models"]["mlp"]["units"][0]["history"]) == 4  # 3.01 epochs: three whole and a few steps
    for m in ("mlp", "cnn"):  # 8 points along every unit's training, at the same fractions of the budget
        for u in rec["models"][m]["units"]:
            assert [p["step"] for p in u["curve"]] == budget["models"][m]["points"] and len(u["curve"]) == 8
            assert u["curve"][-1]["step"] == u["timings"]["steps"]
    spent = [[p["samples"] * budget["models"][m]["flops_per_sample"] for p in rec["models"][m]["units"][0]["curve"]]
             for m in ("mlp", "cnn")]
    step = max(budget["models"][m]["flops_per_sample"] * 64 for m in ("mlp", "cnn"))
    assert all(abs(a - b) < step for a, b in zip(*spent))  # matching fractions of the budget
    md = (tmp_path / "f" / "report.md").read_text()
    assert "At equal training compute" in md and (tmp_path / "f" / "plots" / "accuracy_vs_compute.png").exists()
    assert "8/8 of the budget" in md and "Along the budget" in md
    assert "--match flops" in md or "recipes differ" not in md  # the same comparison; no false recipe claim
    assert "equal training compute" in p.stdout  # the terminal's bottom line says it too
    # The equal-epochs comparison from the same run: each unit evaluated at its recipe's epoch too (the mlp
    # after 1 of its ~3 epochs; the cnn at its last step), on the test set, paired across models.
    for m in ("mlp", "cnn"):
        for u in rec["models"][m]["units"]:
            at = u["at_epochs"]
            assert at["step"] == budget["models"][m]["epochs_step"] == 10 and at["samples"] == 640
    cnn0 = rec["models"]["cnn"]["units"][0]
    assert cnn0["at_epochs"]["accuracy"] == cnn0["curve"][-1]["accuracy"] == cnn0["test"]["accuracy"]
    assert "At equal epochs instead (epochs mlp 1, cnn 1;" in " ".join(p.stdout.split())


# --- cost to a target accuracy (--target) ------------------------------------------------------------------------

def test_reach_interpolates_between_the_evaluations_around_the_target():
    from archbench.report.target import reach

    curve = [{"accuracy": 0.70, "flops": 100.0, "seconds": 1.0, "epochs": 1.0},
             {"accuracy": 0.80, "flops": 200.0, "seconds": 3.0, "epochs": 2.0},
             {"accuracy": 0.84, "flops": 300.0, "seconds": 4.0, "epochs": 3.0}]
    r = reach(curve, 0.82)  # half way from 0.80 to 0.84
    assert r == {"flops": pytest.approx(250.0), "seconds": pytest.approx(3.5), "epochs": pytest.approx(2.5),
                 "at_first_point": False}
    assert reach(curve, 0.80)["flops"] == pytest.approx(200.0)
    assert reach(curve, 0.65) == {"flops": 100.0, "seconds": 1.0, "epochs": 1.0, "at_first_point": True}
    assert reach(curve, 0.90) is None


def test_leads_along_the_budget_follow_the_verdict():
    """Two models' curve points built by hand: a leads clearly at the first point, b at the last."""
    import base64

    import numpy as np

    from archbench.report.target import budget_leads

    n = 2000
    gen = torch.Generator().manual_seed(0)

    def point(step, acc_rate):
        right = (torch.rand(n, generator=gen) < acc_rate).numpy()
        return {"step": step, "samples": step * 64, "seconds": float(step), "split": "test", "loss": 0.5,
                "accuracy": float(right.mean()), "correct": base64.b64encode(np.packbits(right).tobytes()).decode()}

    def units(rates):
        return [{"seed": s, "status": "ok", "curve": [point(i + 1, r + 0.002 * s) for i, r in enumerate(rates)]}
                for s in range(3)]

    rec = {"dataset": {"test_labels": [0] * n},
           "budget": {"n_train": 640, "models": {"a": {"flops_per_sample": 10.0}, "b": {"flops_per_sample": 10.0}}},
           "models": {"a": {"units": units([0.80, 0.81])}, "b": {"units": units([0.60, 0.90])}}}
    leads = budget_leads(rec)
    assert [(p["leader"], p["established"]) for p in leads] == [("a", True), ("b", True)]
    from archbench.report.conclusions import leads_conclusions

    text = leads_conclusions(leads)[-1].text
    assert "changes from a to b between 1/2 and 2/2 of the budget" in text


def test_target_costs_of_a_record():
    from archbench.report.target import target_costs
    from tests.fixed_records import consistent_gap_record

    rec = consistent_gap_record()
    tg = target_costs(rec)
    finals = {m: sum(u["history"][-1]["test_acc"] for u in e["units"]) / len(e["units"])
              for m, e in rec["models"].items()}
    low = min(finals, key=finals.get)
    assert tg["value"] == pytest.approx(finals[low]) and low in tg["source"]
    fps = rec["models"]["cnn"]["measurements"]["flops"]["train_per_sample"]
    cnn = tg["models"]["cnn"]
    assert cnn["reached"] == cnn["units"] == 5
    assert cnn["flops"]["mean"] == pytest.approx(cnn["epochs"]["mean"] * rec["dataset"]["train_samples"] * fps,
                                                 rel=0.01)
    assert target_costs(rec, 0.999)["models"]["cnn"]["reached"] == 0  # never reached: said, not guessed
    with pytest.raises(UsageError, match="between 0 and 1, e.g. 0.85"):
        resolve({"target": 85})


def test_the_equal_epochs_sentence_says_when_the_comparisons_disagree():
    from archbench.report.conclusions import epochs_sentence

    pair = {"difference": 0.012, "difference_ci": {"low": 0.004, "high": 0.02}, "unmeasured": []}
    ec = {"leader": "cnn", "runner_up": "mlp", "pair": pair, "established": True, "split": "test",
          "epochs": {"mlp": 5, "cnn": 5}, "flops": {"mlp": 1e12, "cnn": 4e12}, "accuracy": {"mlp": 0.8, "cnn": 0.81}}
    mlp_wins = {"ranked": ["mlp", "cnn"], "pairs": [{"a": "mlp", "b": "cnn", "winner": "mlp"}]}
    text = epochs_sentence(ec, mlp_wins)
    assert "cnn 4.0× mlp's training FLOPs" in text and "**cnn** is more accurate: +1.20 pp over mlp" in text
    assert "disagree: equal epochs favour cnn, equal compute mlp" in text
    undecided = {"ranked": ["mlp", "cnn"], "pairs": [{"a": "mlp", "b": "cnn", "winner": None}]}
    assert "Only the equal-epochs comparison establishes" in epochs_sentence(ec, undecided)
    agree = {"ranked": ["cnn", "mlp"], "pairs": [{"a": "cnn", "b": "mlp", "winner": "cnn"}]}
    assert "disagree" not in epochs_sentence(ec, agree) and "Only" not in epochs_sentence(ec, agree)
    loose = {**ec, "established": False}
    assert "not established" in epochs_sentence(loose, agree)
    assert "Only the equal-compute comparison" in epochs_sentence(loose, agree)
    assert epochs_sentence(None, agree) is None


# --- equal time (--match time) -----------------------------------------------------------------------------------

def test_the_loop_trains_for_a_time_budget_with_its_curve_at_the_eighths(fashion):
    cfg = TrainConfig(epochs=1, batch_size=64, schedule="onecycle", warmup=0.2)
    x, y = fashion.train_images[:640], fashion.train_labels[:640]
    xt, yt = fashion.test_images[:200], fashion.test_labels[:200]
    r = train(build_model("mlp", 0), x, y, xt, yt, cfg, seed=0, max_seconds=0.4)
    assert r.train_seconds >= 0.4 and r.steps >= 1
    assert r.samples_seen == samples_of(r.steps, 640, 64)
    assert len(r.history) == -(-r.steps // 10)  # whole epochs of 10 steps, then part of one (however fast)
    curve = r.extra["curve"]
    assert [p["fraction"] for p in curve] == [k / 8 for k in range(1, 9)]
    assert all(p["seconds"] >= p["fraction"] * 0.4 for p in curve)  # each evaluated once its eighth has passed
    assert [p["step"] for p in curve] == sorted(p["step"] for p in curve) and curve[-1]["step"] == r.steps
    assert curve[-1]["accuracy"] == r.test.accuracy  # the last point is the end of training
    with pytest.raises(UsageError, match="a time budget of 0 s trains nothing"):
        train(build_model("mlp", 0), x, y, xt, yt, cfg, seed=0, max_seconds=0)
    for bad, words in [({"match": "time"}, "--budget-seconds S"),
                       ({"budget_seconds": 5}, "--match time with --budget-seconds")]:
        with pytest.raises(UsageError, match=words):
            resolve(bad)


@pytest.mark.slow
def test_a_study_at_equal_time(tmp_path):
    env = {**os.environ, "COLUMNS": "100"}
    env.pop("ARCHBENCH_JOBS", None)  # the default, auto: equal time runs its units one at a time all the same
    p = subprocess.run([sys.executable, "-m", "archbench", "run", "--match", "time", "--budget-seconds", "1",
                        "--seeds", "0,1", "--epochs", "1", "--train-limit", "640", "--test-limit", "200", "--no-timing",
                        "--out", str(tmp_path), "--name", "t"], env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr
    assert "units train one at a time" in p.stderr  # side by side, the clock would measure the sharing
    rec = json.loads((tmp_path / "t" / "results.json").read_text())
    assert rec["config"]["match"] == "time" and rec["budget"]["budget_seconds"] == 1.0
    for m in ("mlp", "cnn"):
        for u in rec["models"][m]["units"]:
            assert u["timings"]["train_seconds"] >= 1.0 and len(u["curve"]) == 8
            assert u["at_epochs"]["step"] == 10  # the recipe's one epoch, reached within the second
    md = (tmp_path / "t" / "report.md").read_text()
    assert "At equal training time" in md and "belongs to this machine" in md and "8/8 of the budget" in md


def test_compare_refuses_to_merge_runs_that_answer_different_questions():
    from archbench.records import merge_records

    def rec(name, **cfg):
        return {"name": name, "dataset": {"name": "d"}, "config": cfg, "models": {}, "environment": {}}

    with pytest.raises(UsageError, match="equal training FLOPs .* vs equal training time \\(3 s\\)"):
        merge_records([rec("a", match="flops"), rec("b", match="time", budget_seconds=3)], "m")
    with pytest.raises(UsageError, match="equal epochs vs equal epochs, tuned \\(lr, 5 trials\\)"):
        merge_records([rec("a"), rec("b", tune={"lr": None})], "m")
    assert merge_records([rec("a", match="flops"), rec("b", match="flops")], "m")["merged_from"] == ["a", "b"]
