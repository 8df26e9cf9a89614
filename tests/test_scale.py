"""Sweeps on a real local Ray instance, and runs logged to MLflow."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--models", "mlp,cnn", "--seeds", "0,1", "--train-limit", "1280", "--test-limit", "200", "--epochs", "2",
        "--quiet", "--no-timing", "--device", "cpu", "--cpus-per-unit", "1"]


def _env():
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop("RAY_ADDRESS", None)  # a local Ray instance, started by the run
    return env


def archbench(*args, timeout=600):
    env = _env()
    return subprocess.run([sys.executable, "-m", "archbench", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


def units(run_dir: Path) -> dict:
    rec = json.loads((run_dir / "results.json").read_text())
    return {(m, u["seed"]): u for m, e in rec["models"].items() for u in e["units"]}


def comparable(u: dict) -> dict:
    return {"history": [{k: h[k] for k in ("train_loss", "train_acc", "test_loss", "test_acc")} for h in u["history"]],
            "test": u["test"]}


@pytest.fixture(scope="module")
def local_run(tmp_path_factory, fashion_dir):
    out = tmp_path_factory.mktemp("local")
    p = archbench("run", *TINY, "--out", str(out), "--name", "local")
    assert p.returncode == 0, p.stderr
    return out / "local"


def test_ray_sweep_equals_the_local_executor(local_run, tmp_path):
    pytest.importorskip("ray")
    loud = [a for a in TINY if a != "--quiet"]  # the progress lines are the point here
    p = archbench("run", *loud, "--executor", "ray", "--out", str(tmp_path), "--name", "ray")
    assert p.returncode == 0, p.stderr
    assert "ray: units done 4, running 0, failed 0" in p.stderr
    ours, ref = units(tmp_path / "ray"), units(local_run)
    assert set(ours) == set(ref) == {(m, s) for m in ("mlp", "cnn") for s in (0, 1)}
    for key in ref:
        assert comparable(ours[key]) == comparable(ref[key]), key


def test_killing_a_ray_worker_mid_sweep_loses_no_unit(tmp_path, fashion_dir):
    pytest.importorskip("ray")
    env = _env()
    args = [a if a != "1280" else "6400" for a in TINY]
    args[args.index("--epochs") + 1] = "4"
    proc = subprocess.Popen([sys.executable, "-m", "archbench", "run", *args, "--executor", "ray",
                             "--out", str(tmp_path), "--name", "k"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    pid_file = tmp_path / "k" / ".workers" / "cnn-seed0.pid"
    deadline = time.time() + 300
    while not pid_file.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the cnn unit never started"
        time.sleep(0.05)
    time.sleep(1.0)  # let it train a little
    os.kill(int(pid_file.read_text()), signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    got = units(tmp_path / "k")
    assert set(got) == {(m, s) for m in ("mlp", "cnn") for s in (0, 1)}
    assert all(u["status"] == "ok" for u in got.values()), {k: u.get("error") for k, u in got.items()}


def test_mlflow_logging_reads_back(tmp_path, fashion_dir):
    pytest.importorskip("mlflow")
    uri = f"sqlite:///{tmp_path / 'ml.db'}"
    p = archbench("run", "--models", "mlp,cnn", "--seeds", "0", "--train-limit", "640", "--test-limit", "200",
                  "--epochs", "2", "--quiet", "--no-timing", "--out", str(tmp_path), "--name", "m", "--mlflow", uri,
                  "--mlflow-experiment", "study")
    assert p.returncode == 0, p.stderr
    assert f"mlflow ui --backend-store-uri {uri}" in p.stdout
    import mlflow.pytorch
    import torch
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("study")  # one experiment for the study, not one per run
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("archbench.kind") == "study"]
    assert len(parents) == 1 and parents[0].info.run_name == "m"
    parent = parents[0]
    children = {r.data.tags["archbench.model"]: r for r in runs if r.data.tags.get("mlflow.parentRunId")
                == parent.info.run_id}
    assert set(children) == {"mlp", "cnn"}
    rec = json.loads((tmp_path / "m" / "results.json").read_text())
    # The parent run carries the answer: each model's mean accuracy and interval as metrics (the studies sort
    # and compare in the UI), the verdict and the bottom line as tags.
    pm = client.get_run(parent.info.run_id).data
    for m in ("mlp", "cnn"):
        mean = rec["models"][m]["units"][0]["test"]["accuracy"]
        assert pm.metrics[f"{m}.accuracy_mean"] == pytest.approx(mean)
        assert 0 <= pm.metrics[f"{m}.accuracy_ci_low"] < mean < pm.metrics[f"{m}.accuracy_ci_high"] <= 1
        assert pm.metrics[f"{m}.params"] == rec["models"][m]["measurements"]["params"]["trainable"]
    verdicts = [v for k, v in pm.tags.items() if k.startswith("archbench.verdict.")]
    assert len(verdicts) == 1 and "these two trained networks" in verdicts[0]
    assert "not established" in pm.tags["archbench.bottom_line"]
    u = rec["models"]["mlp"]["units"][0]
    assert "mlflow_run_id" not in u  # MLflow's ids stay in MLflow: the record holds archbench's results
    run = children["mlp"]
    assert run.data.params["model"] == "mlp" and run.data.params["train.epochs"] == "2"
    # Each metric once, with its step: the test accuracy per epoch, its last value the final one.
    acc = client.get_metric_history(run.info.run_id, "test_accuracy")
    assert [m.step for m in acc] == [1, 2] and acc[-1].value == pytest.approx(u["test"]["accuracy"])
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.value for m in history] == pytest.approx([h["train_loss"] for h in u["history"]])
    assert "test_acc" not in run.data.metrics
    # The report, results and tables on the parent run.
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "results.json", "tables", "plots"} <= arts
    assert "tables/comparison.csv" in {a.path for a in client.list_artifacts(parent.info.run_id, "tables")}
    # The trained model, with its signature, reproduces the unit's test predictions.
    mlflow.set_tracking_uri(uri)
    try:
        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
    finally:
        mlflow.set_tracking_uri(None)
    from archbench.data import load_dataset
    from archbench.train import to_input

    data = load_dataset("fashion-mnist", fashion_dir).subset(640, 200)
    with torch.no_grad():
        preds = model.eval()(to_input(data.test_images, torch.device("cpu"))).argmax(1).tolist()
    assert preds == u["test"]["predictions"]
    mlmodel = [f.read_text() for f in (tmp_path / "mlflow-artifacts").rglob("MLmodel")]
    assert len(mlmodel) == 2 and all("signature:" in t and "inputs:" in t for t in mlmodel)
