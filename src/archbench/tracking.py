"""Logging runs to MLflow (optional extra: ``pip install 'archbench[mlflow]'``).

Each finished (model, seed) unit becomes one MLflow run in the experiment
``archbench/<run name>``: params = the unit's resolved configuration, metrics
= its per-epoch history (step = epoch) and final measurements, tags = model,
seed, status; after the study, the report files are attached to every unit's
run as artifacts. The default tracking store is a local SQLite file next to
the run directories (``sqlite:///<out>/mlflow.db``).
"""

from __future__ import annotations

import time
from pathlib import Path

from archbench.errors import UsageError
from archbench.records import flatten


def default_uri(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("--mlflow needs MLflow, which is not installed: pip install 'archbench[mlflow]'.") from None
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, record: dict, run_dir: Path) -> str:
    name = f"archbench/{record['name']}"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = (Path(run_dir).resolve() / "mlflow-artifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def unit_params(record: dict, model: str, seed: int) -> dict:
    cfg = record["config"]
    entry = record["models"][model]
    params = {"model": model, "seed": seed, "dataset": cfg.get("dataset"), "train_limit": cfg.get("train_limit"),
              "test_limit": cfg.get("test_limit"), "device": record.get("device")}
    params.update(flatten(entry.get("recipe") or cfg.get("train", {}), "train."))
    return {k: str(v)[:500] for k, v in params.items()}


def unit_metrics(entry: dict, unit: dict) -> list[tuple[str, float, int]]:
    out = []
    for h in unit.get("history", []):
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds"):
            if h.get(k) is not None:
                out.append((k if k != "seconds" else "epoch_seconds", float(h[k]), int(h["epoch"])))
    if unit.get("status") == "ok":
        out += [("test_accuracy", float(unit["test"]["accuracy"]), 0), ("test_loss", float(unit["test"]["loss"]), 0),
                ("train_seconds", float(unit["timings"]["train_seconds"]), 0)]
    meas = entry.get("measurements") or {}
    for name, path in (("params", ("params", "trainable")), ("flops_forward_per_sample", ("flops", "forward_per_sample")),
                       ("flops_train_per_sample", ("flops", "train_per_sample")),
                       ("peak_train_memory_bytes", ("memory", "train_step", "peak_bytes")),
                       ("saved_size_safetensors_bytes", ("saved_size_bytes", "safetensors"))):
        v = meas
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            out.append((name, float(v), 0))
    return out


def log_unit(uri: str, record: dict, model: str, unit: dict, run_dir: Path) -> str:
    """Log one unit as an MLflow run; returns the run id (also stored in the unit)."""
    from mlflow.entities import Metric, Param, RunTag

    client = _client(uri)
    exp_id = _experiment_id(client, record, run_dir)
    run = client.create_run(exp_id, run_name=f"{model}-seed{unit['seed']}", tags={
        "archbench.run": record["name"], "archbench.model": model, "archbench.seed": str(unit["seed"]),
        "archbench.status": unit.get("status", "?")})
    rid = run.info.run_id
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, v, step in unit_metrics(record["models"][model], unit)]
    params = [Param(k, v) for k, v in unit_params(record, model, unit["seed"]).items()]
    tags = [RunTag("archbench.error", unit["error"][:5000])] if unit.get("error") else []
    client.log_batch(rid, metrics=metrics, params=params, tags=tags)
    client.set_terminated(rid, "FINISHED" if unit.get("status") == "ok" else "FAILED")
    unit["mlflow_run_id"] = rid
    return rid


def log_reports(uri: str, record: dict, run_dir: Path) -> None:
    """Attach report.md, report.html and results.json to every unit's run."""
    client = _client(uri)
    files = [Path(run_dir) / f for f in ("report.md", "report.html", "results.json")]
    for entry in record["models"].values():
        for unit in entry.get("units", []):
            rid = unit.get("mlflow_run_id")
            if rid:
                for f in files:
                    if f.exists():
                        client.log_artifact(rid, str(f), artifact_path="report")
