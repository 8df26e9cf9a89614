"""--jobs auto (archbench.run.jobs): the prediction it decides by, computed by
hand; the cases where it does not probe; a real decision on real steps; and
a study run through it, side by side, equal to the same units one at a time."""

import dataclasses
import glob
import json
from pathlib import Path

import pytest
import torch

from archbench import config
from archbench.config import ExecutionConfig, Source
from archbench.data import load_dataset
from archbench.errors import UsageError
from archbench.resolve import resolve
from archbench.run import jobs, threads
from archbench.run.study import RunOptions, run_study, run_units_locally

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _policy_default(monkeypatch):
    """This file tests the policy: the default is "auto" here (conftest pins one job for other tests)."""
    monkeypatch.delenv(config.ENV_JOBS, raising=False)


def two_free(monkeypatch, free=2):
    """This shared machine's other tenants decide how many cores are free now; the tests that need a
    number say it (the load sample is otherwise the real one)."""
    real = threads.sample_load

    def sample(interval=threads.SAMPLE_SECONDS):
        out = real(0.0)
        out.update(free_cores=free, usable_cores=max(free, out["usable_cores"]))
        return out

    monkeypatch.setattr(threads, "sample_load", sample)


def test_parse_jobs(monkeypatch):
    assert config.parse_jobs(None) == "auto"
    assert config.parse_jobs("auto") == config.parse_jobs(" AUTO ") == "auto"
    assert config.parse_jobs("3") == config.parse_jobs(3) == 3
    monkeypatch.setenv(config.ENV_JOBS, "2")
    assert config.parse_jobs(None) == 2
    assert config.parse_jobs(1) == 1  # given explicitly, the option wins over the environment
    monkeypatch.setenv(config.ENV_JOBS, "lots")
    with pytest.raises(UsageError, match=r"\$ARCHBENCH_JOBS 'lots' is invalid: expected 'auto'"):
        config.parse_jobs(None)
    for bad in (0, -2, True, 1.5, "two", "\u00b2", "\u0662", 4097, "99999999"):  # ², an Arabic-Indic 2
        with pytest.raises(UsageError, match="--jobs"):
            config.parse_jobs(bad)
    monkeypatch.setenv(config.ENV_JOBS, "\u00b2")
    with pytest.raises(UsageError, match=r"\$ARCHBENCH_JOBS '\u00b2' is invalid.*or unset ARCHBENCH_JOBS"):
        config.parse_jobs(None)


def test_errors_name_the_environment_when_it_set_the_jobs(monkeypatch, synthetic_fashion, tmp_path):
    from archbench.models.registry import register_object, unregister_object

    cfg = resolve({"models": ["mlp"], "seeds": [0, 1], "epochs": 1, "data_dir": str(synthetic_fashion),
                   "verify": False, "out": str(tmp_path / "runs")}, source=Source.API)
    monkeypatch.setenv(config.ENV_JOBS, "2")
    register_object("only_here", lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))
    try:
        cfg = dataclasses.replace(cfg, models=("only_here",), train={"only_here": cfg.train["mlp"]})
        with pytest.raises(UsageError, match=r"\$ARCHBENCH_JOBS=2: .*unset or set to auto or 1"):
            run_study(cfg, RunOptions(quiet=True, execution=ExecutionConfig.build()))
    finally:
        unregister_object("only_here")
    assert not (tmp_path / "runs").exists()  # refused before anything is written


def test_makespan_is_longest_first_onto_the_worker_that_frees_first():
    # 5 -> w1 (5), 4 -> w2 (4), 3 -> w2 (7), 3 -> w1 (8), 3 -> w2 (10): by hand.
    assert jobs.makespan([3, 5, 3, 4, 3], 2) == 10
    assert jobs.makespan([3, 5, 3, 4, 3], 1) == 18
    assert jobs.makespan([3, 5, 3, 4, 3], 9) == 5
    assert jobs.makespan([], 2) == 0


def test_prediction_by_hand():
    pending = [("a", 0), ("a", 1), ("b", 0)]
    steps = {"a": 1000, "b": 2000}
    ms = {"a": 2.0, "b": 4.0}  # each at its own thread count
    one = {"a": 1, "b": 1}
    # One at a time: 2 + 2 + 8 = 12 s. Two side by side: a 2 s, a 2 s, b 8 s -> makespan 8 s, times the
    # slowdown, plus the workers' start.
    two = 8.0 * jobs.SIDE_BY_SIDE_SLOWDOWN + jobs.POOL_START_SECONDS
    assert jobs.predict(pending, steps, ms, one, 2) == pytest.approx({1: 12.0, 2: two})
    # Three free cores, three units: up to three side by side (makespan 8 s again).
    assert jobs.predict(pending, steps, ms, one, 3) == pytest.approx({1: 12.0, 2: two, 3: two})
    # A model whose units take two threads each: two free cores hold one unit at a time.
    assert jobs.predict(pending, steps, ms, {"a": 1, "b": 2}, 2) == pytest.approx({1: 12.0})
    # More jobs than units: as many as there are units.
    assert set(jobs.predict(pending[:2], steps, ms, one, 16)) == {1, 2}


def test_unit_steps_follow_each_models_recipe():
    cfg = resolve({"models": ["mlp", "resnet_small"], "seeds": [0], "epochs": 3}, source=Source.API)
    assert jobs.unit_steps(cfg, "mlp", 1000) == 3 * 16  # batch 64: 15 full batches and one of 40
    assert jobs.unit_steps(cfg, "mlp", 10) == 3  # the batch shrinks to the data
    bs = cfg.train_config_for("resnet_small").batch_size
    assert jobs.unit_steps(cfg, "resnet_small", 1000) == 3 * -(-1000 // bs)


@pytest.fixture
def study(synthetic_fashion):
    cfg = resolve({"models": ["mlp", "cnn"], "seeds": [0, 1], "epochs": 2, "batch_size": 32,
                   "data_dir": str(synthetic_fashion), "verify": False}, source=Source.API)
    return cfg, load_dataset("fashion-mnist", synthetic_fashion, verify=False)


def test_no_probe_where_side_by_side_cannot_help(study, monkeypatch):
    cfg, data = study
    pending = [("mlp", 0), ("cnn", 0)]
    two_free(monkeypatch)
    one_unit = jobs.decide_jobs(pending[:1], cfg, data, CPU, "auto")
    assert one_unit["jobs"] == 1 and one_unit["note"] == "one unit to train" and one_unit["probe_ms_per_step"] is None
    gpu = jobs.decide_jobs(pending, cfg, data, torch.device("cuda"), "auto")
    assert gpu["jobs"] == 1 and "accelerator" in gpu["note"]
    wide = jobs.decide_jobs(pending, cfg, data, CPU, 2)  # 2 threads per unit fill the 2 free cores
    assert wide["jobs"] == 1 and "no room for a second unit" in wide["note"]
    from archbench.models.registry import register_object, unregister_object

    register_object("in_memory_net", lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))
    try:
        local = jobs.decide_jobs([("mlp", 0), ("in_memory_net", 0)], cfg, data, CPU, "auto")
    finally:
        unregister_object("in_memory_net")
    assert local["jobs"] == 1 and "in_memory_net" in local["note"] and "cannot rebuild" in local["note"]
    two_free(monkeypatch, free=1)
    busy = jobs.decide_jobs(pending, cfg, data, CPU, "auto")
    assert busy["jobs"] == 1 and busy["note"].startswith("1 core free")
    json.dumps([one_unit, gpu, wide, local, busy], allow_nan=False)


def test_a_real_decision_probes_each_model_once_and_leaves_the_rng_alone(study, monkeypatch):
    cfg, data = study
    two_free(monkeypatch)
    pending = [("mlp", 0), ("mlp", 1), ("cnn", 0), ("cnn", 1)]
    torch.manual_seed(123)
    before = torch.get_rng_state()
    d = jobs.decide_jobs(pending, cfg, data, CPU, "auto")
    assert torch.equal(torch.get_rng_state(), before)
    # Each model probed once, at the thread count its units train with (the rule's: one, for these models),
    # whatever the free cores.
    assert d["probe_ms_per_step"].keys() == {"mlp", "cnn"}
    assert all(list(per) == ["1"] and min(per.values()) > 0 for per in d["probe_ms_per_step"].values())
    assert d["threads_per_unit"] == 1
    assert set(d["predicted_seconds"]) == {"1", "2"}
    # The choice is the smaller prediction (fewer jobs on a tie) ...
    pred = {int(k): v for k, v in d["predicted_seconds"].items()}
    assert d["jobs"] == min(pred, key=lambda j: (pred[j], j))
    # ... and the prediction is the probe's step times times the units' steps (recomputed here).
    ms = {r: per["1"] for r, per in d["probe_ms_per_step"].items()}
    steps = {r: jobs.unit_steps(cfg, r, len(data.train_labels)) for r in ms}
    again = jobs.predict(pending, steps, ms, {"mlp": 1, "cnn": 1}, 2)
    assert {str(k): round(v, 2) for k, v in again.items()} == d["predicted_seconds"]
    # These units are tiny (a few steps): starting worker processes costs more than it saves.
    assert d["jobs"] == 1 and pred[2] > jobs.POOL_START_SECONDS
    line = jobs.describe_jobs(d)
    assert line.startswith("jobs auto: one unit at a time (predicted from each model's probed step: ")
    assert "with 2 jobs" in line and "2 of" in line


def test_longest_predicted_units_go_first():
    cfg = resolve({"models": ["mlp", "cnn"], "seeds": [0, 1], "epochs": 1}, source=Source.API)
    decision = {"threads_per_unit": 1, "probe_ms_per_step": {"mlp": {"1": 1.0}, "cnn": {"1": 5.0}}}
    pending = [("mlp", 0), ("mlp", 1), ("cnn", 0), ("cnn", 1)]
    assert jobs.order_for_pool(pending, decision, cfg, 640) == [("cnn", 0), ("cnn", 1), ("mlp", 0), ("mlp", 1)]
    assert jobs.order_for_pool(pending, {"probe_ms_per_step": None}, cfg, 640) == pending


def outcome(unit):
    """Everything a unit computed (not its timings)."""
    assert unit["status"] == "ok", unit.get("error")
    timing_free = [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in unit["history"]]
    return timing_free, unit["test"]


def test_a_study_run_side_by_side_by_auto_equals_one_at_a_time(study, tmp_path, monkeypatch, synthetic_fashion):
    """With the workers' start and the side-by-side slowdown taken as free, auto runs the four units two at
    a time (one thread each): the record says so, and every unit equals the same unit trained alone with
    one thread."""
    cfg, data = study
    two_free(monkeypatch)
    monkeypatch.setattr(jobs, "POOL_START_SECONDS", 0.0)
    monkeypatch.setattr(jobs, "SIDE_BY_SIDE_SLOWDOWN", 0.5)
    cfg = dataclasses.replace(cfg, out=str(tmp_path / "runs"))
    record, run_dir = run_study(cfg, RunOptions(quiet=True,
                                                execution=ExecutionConfig.build(threads="auto", timing=False)))
    d = record["execution"]["jobs_decision"]
    assert record["execution"]["jobs"] == "auto"
    assert d["jobs"] == 2 and d["threads_per_unit"] == 1 and d["units"] == 4
    assert json.loads((run_dir / "results.json").read_text())["execution"]["jobs_decision"] == d
    alone = {}
    run_units_locally([(m, s) for m in cfg.models for s in cfg.seeds], cfg, data, tmp_path / "alone",
                      lambda ref, seed, unit: alone.__setitem__((ref, seed), unit), lambda s: None, None, CPU,
                      threads=1, jobs=1)
    for ref in cfg.models:
        units = {u["seed"]: u for u in record["models"][ref]["units"]}
        for seed in cfg.seeds:
            u = units[seed]
            assert u["threads"]["threads"] == 1 and u["threads"]["policy"] == "auto"
            assert outcome(u) == outcome(alone[(ref, seed)]), (ref, seed)
    assert glob.glob(str(Path(run_dir) / "models" / "*")), "the workers saved the models"
    for ref in cfg.models:
        for u in record["models"][ref]["units"]:
            assert u["side_by_side"] == {"jobs": 2, "threads_cap": None, "chosen_by": "--jobs auto"}
    report = (Path(run_dir) / "report.md").read_text()
    assert ("All units trained side by side in worker processes, 2 at a time (as --jobs auto chose from each "
            "model's probed training step), so each one's train time was measured while another unit trained next "
            "to it") in report


def test_the_report_says_side_by_side_only_of_units_that_were():
    from archbench.report.sections import side_by_side_sentence

    alone, pooled = {"seed": 0, "status": "ok"}, {"seed": 1, "status": "ok", "side_by_side": {"jobs": 2,
                                                                                              "threads_cap": None}}
    # What was asked (--jobs 4096, or an auto decision) is not what ran: the units' own records are.
    assert side_by_side_sentence({"execution": {"jobs": 4096}, "models": {"m": {"units": [alone]}}}) == ""
    assert side_by_side_sentence({"execution": {"jobs": "auto", "jobs_decision": {"jobs": 2}},
                                  "models": {"m": {"units": [alone]}}}) == ""
    assert side_by_side_sentence({}) == ""
    # A resumed run: one unit in the first session's pool, one alone afterwards.
    mixed = side_by_side_sentence({"execution": {"jobs": 2}, "models": {"m": {"units": [alone, pooled]}}})
    assert mixed.startswith("1 of the 2 units trained side by side in worker processes, 2 at a time, so each")
    # The pool's size was pinned in the session that ran them: no "auto chose", whatever a later session decided.
    pinned = {**pooled, "side_by_side": {"jobs": 2, "threads_cap": None, "chosen_by": "--jobs"}}
    assert "auto chose" not in side_by_side_sentence({"execution": {"jobs_decision": {"jobs": 2}},
                                                      "models": {"m": {"units": [pinned]}}})
