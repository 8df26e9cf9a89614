"""The CPU thread policy (archbench.run.threads) and the local executor's use of
it: free cores, the probe's isolation, the recorded decision, its reuse on
resume, and units side by side in a process pool (bit-identical results)."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from archbench import config
from archbench.config import Source
from archbench.data import load_dataset
from archbench.env import usable_cpus
from archbench.errors import Interrupted, UsageError
from archbench.models import create_model
from archbench.resolve import resolve
from archbench.run import threads
from archbench.run.pool import check_parallel_models
from archbench.run.rundir import RunDir
from archbench.run.study import run_units_locally
from archbench.run.unit import unit_model, unit_threads
from tests.conftest import write_synthetic_fashion

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _policy_default(monkeypatch):
    """This file tests the policy itself: the default is "auto" here (conftest pins it for other tests)."""
    monkeypatch.delenv(config.ENV_THREADS, raising=False)


def test_env_var_sets_the_default(monkeypatch):
    monkeypatch.setenv(config.ENV_THREADS, "3")
    assert config.parse_threads(None) == 3
    monkeypatch.setenv(config.ENV_THREADS, "many")
    with pytest.raises(UsageError, match=r"\$ARCHBENCH_THREADS 'many' is invalid"):
        config.parse_threads(None)
    assert config.parse_threads(2) == 2  # given explicitly, the option wins


@pytest.fixture
def study(synthetic_fashion):
    """(cfg, data) of a two-model, 2-epoch study on the synthetic data."""
    cfg = resolve({"models": ["mlp", "cnn"], "seeds": [0], "epochs": 2, "batch_size": 32,
                   "data_dir": str(synthetic_fashion), "verify": False}, source=Source.API)
    return cfg, load_dataset("fashion-mnist", synthetic_fashion, verify=False)


def run(cfg, data, run_dir, **kw):
    units, lines = {}, []
    run_units_locally([(m, s) for m in cfg.models for s in cfg.seeds], cfg, data, Path(run_dir),
                      lambda ref, seed, unit: units.__setitem__((ref, seed), unit), lines.append, None, CPU, **kw)
    return units, lines


def outcome(unit):
    """Everything a unit computed (not its timings)."""
    assert unit["status"] == "ok", unit.get("error")
    timing_free = [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")} for h in unit["history"]]
    return timing_free, unit["test"]


# --------------------------------------------------------------------------- free cores


def test_free_cores_on_this_machine_is_between_one_and_the_usable_cores():
    load = threads.sample_load()
    assert 1 <= load["free_cores"] <= usable_cpus() == load["usable_cores"]
    assert 1 <= threads.free_cores() <= usable_cpus()
    json.dumps(load)


@pytest.mark.parametrize("busy, free", [((0.02, 0.03), 2), ((1.0, 0.05), 1), ((0.5, 0.0), 1), ((1.0, 1.0), 1),
                                        ((0.2, 0.0), 2)])
def test_free_cores_counts_a_core_free_only_when_mostly_idle(monkeypatch, busy, free):
    samples = iter([{0: (0, 0), 1: (0, 0)}, {0: (int(100 * busy[0]), 100), 1: (int(100 * busy[1]), 100)}])
    monkeypatch.setattr(threads, "cpu_times", lambda: next(samples))
    monkeypatch.setattr(threads, "usable_cpus", lambda: 2)
    monkeypatch.setattr(threads, "affinity_cpus", lambda: {0, 1})
    load = threads.sample_load(0)
    assert load["free_cores"] == free
    assert load["busy_cores"] == pytest.approx(sum(busy), abs=0.011)


# --------------------------------------------------------------------------- the probe


@pytest.mark.parametrize("ref", ["cnn", "dropout"])
def test_the_probe_leaves_the_model_rng_and_thread_count_untouched(study, ref):
    cfg, data = study
    torch.manual_seed(123)
    model = create_model("cnn") if ref == "cnn" else torch.nn.Sequential(  # dropout draws from torch's RNG
        torch.nn.Flatten(), torch.nn.Linear(784, 32), torch.nn.Dropout(0.5), torch.nn.Linear(32, 10))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    before = torch.get_num_threads()
    bs = cfg.train_config_for("cnn").batch_size
    ms = threads.probe_threads(model, cfg.train_config_for("cnn"), data.train_images[:bs], data.train_labels[:bs],
                               CPU, [1, 2], rounds=2, burst_ms=1.0)
    assert set(ms) == {1, 2} and all(v > 0 for v in ms.values())
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.get_num_threads() == before
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert model.training


def test_pick_prefers_fewer_threads_unless_more_are_clearly_faster():
    assert threads.pick({1: 1.00, 2: 0.97}) == 1
    assert threads.pick({1: 1.00, 2: 0.90}) == 2
    assert threads.pick({1: 0.90, 2: 14.0}) == 1
    assert threads.candidates(1) == [1] and threads.candidates(2) == [1, 2] and threads.candidates(6) == [1, 2, 4, 6]


def test_the_auto_rule_is_a_function_of_the_step_and_the_cores_only():
    # Below two threads' worth of work: one thread, whatever the cores.
    assert threads.rule_threads(0.09e9, 2) == threads.rule_threads(0.09e9, 64) == 1
    assert threads.rule_threads(None, 64) == 1  # not counted: one thread
    # Powers of two up to the usable cores, one per FLOPS_PER_THREAD.
    per = threads.FLOPS_PER_THREAD
    assert threads.rule_threads(2 * per, 2) == 2 and threads.rule_threads(2 * per - 1, 2) == 1
    assert threads.rule_threads(100 * per, 2) == 2 and threads.rule_threads(100 * per, 16) == 16
    assert threads.rule_threads(5 * per, 16) == 4 and threads.rule_threads(5 * per, 3) == 2


def test_auto_decides_from_the_model_not_the_load(study, monkeypatch):
    cfg, data = study
    rng = torch.get_rng_state()
    # Whatever the load sample would say, "auto" never asks for it.
    monkeypatch.setattr(threads, "sample_load", lambda *a, **k: pytest.fail("auto sampled the load"))
    d = threads.decide_threads("auto", "mlp", 0, cfg.train_config_for("mlp"), data, CPU, build=unit_model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert d["policy"] == "auto" and d["usable_cores"] == usable_cpus()
    # The mlp's step: 784x256 + 256x10... counted, times 3 (forward and backward), times the batch of 32.
    assert d["step_flops"] == threads.step_flops("mlp", 0, cfg.train_config_for("mlp"), data, build=unit_model)
    assert 1e6 < d["step_flops"] / 32 < 1e7 and d["threads"] == threads.rule_threads(d["step_flops"], usable_cpus())
    assert json.loads(json.dumps(d)) == d and "load" not in d and "free_cores" not in d
    again = threads.decide_threads("auto", "mlp", 0, cfg.train_config_for("mlp"), data, CPU, build=unit_model)
    assert {k: v for k, v in again.items() if k != "rule_seconds"} == {k: v for k, v in d.items()
                                                                      if k != "rule_seconds"}


# --------------------------------------------------------------------------- the executor


def test_a_fixed_thread_count_is_used_recorded_and_the_callers_count_restored(study, tmp_path):
    cfg, data = study
    torch.set_num_threads(2)
    seen = []
    units, lines = {}, []

    def on_result(ref, seed, unit):
        seen.append(torch.get_num_threads())
        units[ref] = unit

    run_units_locally([("mlp", 0)], cfg, data, tmp_path / "run", on_result, lines.append, None, CPU, threads=1)
    d = units["mlp"]["threads"]
    assert d["policy"] == "fixed" and d["threads"] == 1 and "step_flops" not in d
    assert units["mlp"]["host"]["torch_threads"] == 1 and seen == [1]
    assert torch.get_num_threads() == 2
    json.dumps(units["mlp"], allow_nan=False)
    assert "1 thread (fixed" in lines[0]
    assert not (tmp_path / "run" / "checkpoints" / "mlp-seed0.threads.json").exists()  # gone with the checkpoint


@pytest.mark.parametrize("bad", [0, -1, "two", 1.5, True])
def test_bad_thread_and_job_counts_are_usage_errors(study, tmp_path, bad):
    cfg, data = study
    with pytest.raises(UsageError, match="--threads"):
        run_units_locally([("mlp", 0)], cfg, data, tmp_path, lambda *a: None, print, None, CPU, threads=bad)
    with pytest.raises(UsageError, match="--jobs"):
        run_units_locally([("mlp", 0)], cfg, data, tmp_path, lambda *a: None, print, None, CPU, jobs=bad)


def test_the_decision_is_persisted_and_reused_when_the_unit_resumes(study, tmp_path):
    cfg, data = study
    run_dir = tmp_path / "run"
    ckpt, saved = RunDir(run_dir).checkpoint("mlp", 0), RunDir(run_dir).thread_decision("mlp", 0)
    first = unit_threads(1, "mlp", 0, cfg, data, run_dir, CPU)
    assert json.loads(saved.read_text()) == first and first["threads"] == 1
    # No checkpoint: the unit starts over, and the thread count is decided anew.
    assert unit_threads(2, "mlp", 0, cfg, data, run_dir, CPU)["threads"] == 2

    # Interrupted after epoch 1 with 1 thread (a bar's close at epoch 2 plays Ctrl-C) ...
    class Stop:
        def __init__(self, desc, **kw):
            self.desc = desc

        def update(self, n):
            pass

        def set_postfix_str(self, s):
            pass

        def close(self):
            if "epoch 2" in self.desc:  # ("mlp seed 0 epoch 2/2": the bar names its unit)
                raise KeyboardInterrupt

    with pytest.raises(Interrupted):
        run_units_locally([("mlp", 0)], cfg, data, run_dir, lambda *a: None, print, Stop, CPU, threads=1)
    assert ckpt.exists() and json.loads(saved.read_text())["threads"] == 1
    # ... and resumed asking for 2: it keeps 1, says so, and ends as an uninterrupted 1-thread run.
    resumed, _ = run(dataclasses.replace(cfg, models=("mlp",)), data, run_dir, threads=2)
    d = resumed[("mlp", 0)]["threads"]
    assert d["threads"] == 1 and d["reused"] is True and d["requested"] == 2 and d["policy"] == "fixed"
    assert resumed[("mlp", 0)]["training"]["resumed_from_checkpoint"]
    clean, _ = run(dataclasses.replace(cfg, models=("mlp",)), data, tmp_path / "clean", threads=1)
    assert outcome(resumed[("mlp", 0)]) == outcome(clean[("mlp", 0)])
    assert not ckpt.exists() and not saved.exists()


def test_two_jobs_give_bit_identical_results_to_one(study, tmp_path):
    cfg, data = study
    one, _ = run(cfg, data, tmp_path / "one", threads=1, jobs=1)
    two, lines = run(cfg, data, tmp_path / "two", threads=1, jobs=2)
    assert set(one) == set(two) == {("mlp", 0), ("cnn", 0)}
    for key in one:
        assert outcome(two[key]) == outcome(one[key]), key
        assert two[key]["threads"]["threads"] == one[key]["threads"]["threads"] == 1
    # Every running unit is visible: a line per unit per epoch (no bars here), and the workers' own logs.
    for ref in ("mlp", "cnn"):
        assert sum(line.startswith(f"{ref} seed 0 epoch ") for line in lines) == 2, lines
        assert any(line.startswith(f"[{ref}] seed 0: test accuracy") for line in lines), lines
    assert any(line.startswith("local pool: 2 units, 2 side by side") for line in lines)
    assert not list((tmp_path / "two" / "checkpoints").glob("*"))


def test_models_that_exist_only_in_this_process_are_refused_with_jobs(study, tmp_path):
    from archbench.models.registry import register_object, unregister_object

    cfg, data = study
    register_object("in_memory_net", lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)))
    try:
        with pytest.raises(UsageError, match=r"'in_memory_net'.*module:callable.*jobs=1"):
            check_parallel_models(["mlp", "in_memory_net"], 2)
        with pytest.raises(UsageError, match="in_memory_net"):
            run_units_locally([("mlp", 0), ("in_memory_net", 0)], cfg, data, tmp_path, lambda *a: None, print,
                              None, CPU, threads=1, jobs=2)
    finally:
        unregister_object("in_memory_net")
    check_parallel_models(["mlp", "cnn", "mypkg.models:net"], 2)  # importable: fine


STOPPER = """
import sys
from pathlib import Path
import torch
from archbench.config import Source
from archbench.resolve import resolve
from archbench.data import load_dataset
from archbench.run.study import run_units_locally
from archbench.run.signals import stop_on_signals

d, run_dir = sys.argv[1], Path(sys.argv[2])
cfg = resolve({"models": ["mlp"], "seeds": [0, 1], "epochs": 500, "batch_size": 64, "data_dir": d,
               "verify": False}, source=Source.API)
data = load_dataset("fashion-mnist", d, verify=False)
with stop_on_signals(sigterm=True):
    try:
        run_units_locally([("mlp", 0), ("mlp", 1)], cfg, data, run_dir, lambda *a: print("RESULT", *a[:2]),
                          lambda s: print(s, flush=True), None, torch.device("cpu"), threads=1, jobs=2)
    except Exception as exc:
        print("RAISED", type(exc).__name__, exc, flush=True)
"""


def start_stopper(tmp_path):
    """The STOPPER script in a process of its own, once both units' first epoch checkpoints exist:
    (process, its run directory, the checkpoints)."""
    d = write_synthetic_fashion(tmp_path / "data", n_train=512, n_test=40)
    run_dir = tmp_path / "run"
    script = tmp_path / "stopper.py"
    script.write_text(textwrap.dedent(STOPPER))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(script), str(d), str(run_dir)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=env)
    ckpts = [run_dir / "checkpoints" / f"mlp-seed{s}.pt" for s in (0, 1)]
    deadline = time.monotonic() + 60
    while not all(c.exists() for c in ckpts) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.1)
    if not all(c.exists() for c in ckpts):
        proc.kill()
        pytest.fail(f"no checkpoints within 60 s: {proc.communicate()[0][-2000:]}")
    return proc, run_dir, ckpts


def test_sigterm_stops_the_workers_keeps_their_checkpoints_and_raises_interrupted(tmp_path):
    proc, run_dir, ckpts = start_stopper(tmp_path)
    try:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert "RAISED Interrupted during mlp seed 0, mlp seed 1" in out, out
    assert "RESULT" not in out
    assert all(c.exists() for c in ckpts)
    assert all(json.loads((run_dir / "checkpoints" / f"mlp-seed{s}.threads.json").read_text())["threads"] == 1
               for s in (0, 1))
    pids = {int(w.split("pid ")[1].split(")")[0]) for w in out.splitlines() if "(cpu, pid " in w}
    assert len(pids) == 2
    time.sleep(0.5)
    for pid in pids:  # the workers are gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_workers_stop_when_their_parent_is_killed(tmp_path):
    """kill -9 of the parent: each worker gets SIGTERM (PR_SET_PDEATHSIG), stops after its current write and
    keeps its epoch checkpoint, instead of training on unwatched (and racing a later --resume)."""
    if not sys.platform.startswith("linux"):
        pytest.skip("PR_SET_PDEATHSIG is Linux's")
    proc, _, ckpts = start_stopper(tmp_path)
    try:
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        workers = [int(pid) for pid in children
                   if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        assert len(workers) == 2, children
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10  # well before they would finish their 500 epochs (and drop the checkpoints)
    alive = list(workers)
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in alive if Path(f"/proc/{pid}").exists()
                 and "zombie" not in Path(f"/proc/{pid}/status").read_text()]
    assert not alive, f"workers {alive} still running 10 s after their parent was killed"
    assert all(c.exists() for c in ckpts)  # each kept its last epoch checkpoint


def test_separated_says_when_more_bursts_are_needed():
    # clear: every 2-thread burst faster than every 1-thread burst
    assert threads.separated({1: [10.0, 10.5, 11.0, 10.2, 10.4], 2: [6.0, 6.3, 6.1, 6.2, 6.4]}, [1, 2])
    # noisy: a tenant's bursts spread 2 threads' samples over 1 thread's
    assert not threads.separated({1: [10.0, 10.5, 11.0, 10.2, 10.4], 2: [6.0, 14.0, 19.0, 9.0, 10.3]}, [1, 2])
    # the order of the counts does not matter; a dropped count is not compared
    assert threads.separated({1: [6.0, 6.1, 6.2], 2: [9.0, 9.5, 9.9], 4: [6.05, 30.0, 6.1]}, [2, 1])


# --------------------------------------------------------------------------- same command, same numbers

FASHION = Path("/usr/share/datasets/fashion-mnist")


def _cli_run(out: Path, name: str) -> dict:
    """`archbench run` in a process of its own, the thread policy left at its default (auto)."""
    env = {k: v for k, v in os.environ.items() if k != config.ENV_THREADS}
    env.update(ARCHBENCH_JOBS="1", PYTHONPATH=os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                                               os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "archbench", "run", "--models", "mlp,cnn_bn", "--seeds", "0", "--epochs", "1",
           "--train-limit", "300", "--test-limit", "200", "--no-timing", "--quiet", "--no-verify",
           "--data-dir", str(FASHION), "--out", str(out), "--name", name]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / name / "results.json").read_text())


def _numbers(record: dict) -> dict:
    out = {}
    for ref, entry in record["models"].items():
        (unit,) = entry["units"]
        assert unit["status"] == "ok", unit.get("error")
        out[ref] = (unit["test"], [{k: v for k, v in h.items() if k not in ("seconds", "eval_seconds")}
                                   for h in unit["history"]],
                    {k: v for k, v in unit["threads"].items() if k != "rule_seconds"})
    return out


@pytest.mark.skipif(not FASHION.is_dir(), reason="needs Fashion-MNIST in /usr/share/datasets")
def test_the_same_command_gives_the_same_numbers_on_a_quiet_and_a_busy_machine(tmp_path):
    """The default thread policy on a quiet machine and with one core kept busy by another process (a busy
    loop): identical test accuracies, losses, predictions and curves. (The old policy took 1 or 2 threads from
    the free cores, and the numbers moved with the load.) cnn_bn's step is large enough for two threads
    where two cores are usable: the rule's count, not the free cores, is what it trains with."""
    quiet = _numbers(_cli_run(tmp_path, "quiet"))
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)  # the spinner holds a core before the run starts
        assert spinner.poll() is None
        busy = _numbers(_cli_run(tmp_path, "busy"))
    finally:
        spinner.kill()
        spinner.wait()
    assert busy == quiet
    assert quiet["mlp"][2]["threads"] == 1
    assert quiet["cnn_bn"][2]["threads"] == min(2, usable_cpus())
    # The report says what the numbers depend on, and the command that reproduces them.
    report = (tmp_path / "busy" / "report.md").read_text()
    assert "never by the machine's load" in report
    assert "this command reproduces them: `archbench run --models mlp,cnn_bn --seeds 0 --train-limit 300" in report
