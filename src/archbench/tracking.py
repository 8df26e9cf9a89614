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
from typing import Any

from archbench.errors import UsageError
from archbench.records import ModelRecord, RunRecord, Unit, flatten, lookup


def default_uri(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def _client(uri: str):
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("--mlflow needs MLflow, which is not installed: pip install 'archbench[mlflow]'.") from None
    return MlflowClient(tracking_uri=uri)


def _experiment_id(client, record: RunRecord, run_dir: Path) -> str:
    name = f"archbench/{record['name']}"
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    artifacts = (Path(run_dir).resolve() / "mlflow-artifacts").as_uri()
    return client.create_experiment(name, artifact_location=artifacts)


def unit_params(record: RunRecord, model: str, seed: int) -> dict[str, str]:
    cfg = record["config"]
    entry = record["models"][model]
    params = {"model": model, "seed": seed, "dataset": cfg.get("dataset"), "train_limit": cfg.get("train_limit"),
              "test_limit": cfg.get("test_limit"), "device": record.get("device")}
    params.update(flatten(entry.get("recipe") or (cfg.get("train") or {}).get(model, {}), "train."))
    return {k: str(v)[:500] for k, v in params.items()}


def unit_metrics(entry: ModelRecord, unit: Unit) -> list[tuple[str, float, int]]:
    out = []
    for h in unit.get("history", []):
        for k in ("train_loss", "train_acc", "test_loss", "test_acc", "seconds"):
            value = lookup(h, k)
            if value is not None:
                out.append((k if k != "seconds" else "epoch_seconds", float(value), int(h["epoch"])))
    if unit.get("status") == "ok":
        out += [("test_accuracy", float(unit["test"]["accuracy"]), 0), ("test_loss", float(unit["test"]["loss"]), 0),
                ("train_seconds", float(unit["timings"]["train_seconds"]), 0)]
    meas = entry.get("measurements") or {}
    for name, path in (("params", ("params", "trainable")),
                       ("flops_forward_per_sample", ("flops", "forward_per_sample")),
                       ("flops_train_per_sample", ("flops", "train_per_sample")),
                       ("peak_train_memory_bytes", ("memory", "train_step", "peak_bytes")),
                       ("saved_size_safetensors_bytes", ("saved_size_bytes", "safetensors"))):
        v: Any = meas
        for p in path:
            v = v.get(p) if isinstance(v, dict) else None
        if isinstance(v, (int, float)):
            out.append((name, float(v), 0))
    return out


class Tracker:
    """Logs a study's units to one MLflow store. The MLflow run ids stay here
    (the run record holds archbench's results only)."""

    def __init__(self, uri: str):
        self.uri = uri
        self.client = _client(uri)  # fails now, with the install hint, if MLflow is missing
        self.run_ids: dict[tuple[str, int], str] = {}

    def log_unit(self, record: RunRecord, model: str, unit: Unit, run_dir: Path, log=lambda s: None) -> str | None:
        """Log one unit as an MLflow run; returns its run id (None if MLflow failed: the unit is kept)."""
        try:
            rid = self._log_unit(record, model, unit, run_dir)
        except Exception as exc:  # noqa: BLE001 - tracking must not lose the unit
            log(f"[{model}] seed {unit['seed']}: could not log to MLflow ({type(exc).__name__}: {exc})")
            return None
        self.run_ids[(model, unit["seed"])] = rid
        return rid

    def _log_unit(self, record: RunRecord, model: str, unit: Unit, run_dir: Path) -> str:
        from mlflow.entities import Metric, Param, RunTag

        exp_id = _experiment_id(self.client, record, run_dir)
        run = self.client.create_run(exp_id, run_name=f"{model}-seed{unit['seed']}", tags={
            "archbench.run": record["name"], "archbench.model": model, "archbench.seed": str(unit["seed"]),
            "archbench.status": unit.get("status", "?")})
        rid = run.info.run_id
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v, step in unit_metrics(record["models"][model], unit)]
        params = [Param(k, v) for k, v in unit_params(record, model, unit["seed"]).items()]
        tags = [RunTag("archbench.error", unit["error"][:5000])] if unit.get("error") else []
        self.client.log_batch(rid, metrics=metrics, params=params, tags=tags)
        self.client.set_terminated(rid, "FINISHED" if unit.get("status") == "ok" else "FAILED")
        return rid

    def log_reports(self, record: RunRecord, run_dir: Path) -> None:
        """Attach report.md, report.html and results.json to every unit's run."""
        files = [Path(run_dir) / f for f in ("report.md", "report.html", "results.json")]
        for rid in self.run_ids.values():
            for f in files:
                if f.exists():
                    self.client.log_artifact(rid, str(f), artifact_path="report")
