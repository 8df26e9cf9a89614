"""Logging studies to MLflow (optional extra: ``pip install 'archbench[mlflow]'``).

As MLflow users expect it:

- one MLflow experiment per study (``--mlflow-experiment``; by default the
  experiment file's stem, e.g. ``zoo``, or ``archbench``);
- one parent MLflow run per archbench run (named after the run directory,
  found again on ``--resume``), holding the report, results.json, the tables
  and the plots as artifacts;
- one nested run per (model, seed) unit: params = the unit's resolved
  configuration, metrics logged once each with their step (per-epoch
  ``train_loss``, ``train_accuracy``, ``test_loss``, ``test_accuracy``,
  ``epoch_seconds`` at step = epoch; ``train_seconds`` and the measured costs
  once), tags = model, seed, status (and the error of a failed unit), and the
  trained model (``mlflow.pytorch`` format with its input/output signature,
  loadable as ``runs:/<run id>/model``).

The default tracking store is a local SQLite file next to the run
directories (``sqlite:///<out>/mlflow.db``); ``archbench run`` prints the
command that opens the UI. MLflow's ids stay in MLflow: the run record holds
archbench's results only. Nothing global is changed (no fluent
``mlflow.set_tracking_uri``): everything goes through one ``MlflowClient``.
"""

from __future__ import annotations

import re
import tempfile
import time
from pathlib import Path
from typing import Any

from archbench.errors import UsageError
from archbench.records import ModelRecord, RunRecord, Unit, flatten, lookup
from archbench.run import Log


def default_uri(out_dir: str | Path) -> str:
    return f"sqlite:///{Path(out_dir).resolve() / 'mlflow.db'}"


def _is_file_store(path: Path) -> bool:
    """Whether ``path`` holds an MLflow file store (experiment folders with meta.yaml)."""
    return path.is_dir() and any(p.is_file() for p in path.glob("*/meta.yaml"))


def store_uri(given: str, out_dir: str | Path) -> tuple[str, str | None]:
    """The tracking URI for ``--mlflow GIVEN`` and a note saying what it
    became, or None. ``default``: :func:`default_uri`. A directory (a path or
    ``file://``): MLflow 3 refuses a directory as its store (the file store is
    in maintenance mode), so it becomes ``sqlite:///DIR/mlflow.db`` with the
    artifacts in ``DIR/mlflow-artifacts``, unless ``$MLFLOW_ALLOW_FILE_STORE``
    keeps MLflow's file store. A directory that already holds a file store is
    refused with the migration command (its runs would be split over two stores)."""
    import os
    import urllib.parse
    import urllib.request

    if given == "default":
        return default_uri(out_dir), None
    try:
        parts = urllib.parse.urlsplit(given)
    except ValueError as exc:  # e.g. an unclosed IPv6 bracket: http://[::1
        raise UsageError(f"--mlflow {given!r} is not a URI ({exc}). Expected sqlite:///path/mlflow.db, a "
                         "directory, or http(s)://host:port.") from None
    if parts.scheme not in ("", "file") and len(parts.scheme) > 1:  # a one-letter scheme is a Windows drive
        return given, None
    path = Path(urllib.request.url2pathname(parts.path)) if parts.scheme == "file" else Path(given)
    if os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").strip().lower() in ("1", "true", "yes"):
        return given, None
    db = f"sqlite:///{path.resolve() / 'mlflow.db'}"
    if _is_file_store(path):
        raise UsageError(f"--mlflow {given!r} is an MLflow file store, which MLflow 3 no longer opens. Migrate it "
                         f"once (mlflow migrate-filestore --source {path} --target {db}) and give --mlflow {db}, "
                         "or set MLFLOW_ALLOW_FILE_STORE=true to keep the file store.")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"--mlflow {given!r}: cannot create the directory ({exc.strerror}); choose another.") from None
    return db, (f"--mlflow {given}: MLflow 3 stores runs in a database, not a directory: logging to {db}, "
                f"artifacts in {path.resolve() / 'mlflow-artifacts'}")


def ui_command(uri: str) -> str:
    """The command that opens the MLflow UI on this store."""
    if uri.startswith(("http://", "https://")):
        return f"open {uri} in a browser"
    return f"mlflow ui --backend-store-uri {uri}"


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise UsageError("--mlflow needs MLflow, which is not installed: pip install 'archbench[mlflow]'.") from None
    return MlflowClient(tracking_uri=uri)


def trained_values(record: RunRecord, model: str, unit: Unit) -> dict[str, float]:
    """The recipe values a unit trained with in place of its model's recipe:
    a tuning trial's own, or (``--tune``) the values chosen for its seed."""
    if "trial" in unit:
        return dict(unit.get("params") or {})
    tuned = lookup(record, "models", model, "tuned", "by_seed") or {}
    pick = tuned.get(str(unit["seed"])) or (
        next(iter(tuned.values()), None) if not lookup(record, "config", "tune_per_seed") else None)
    return dict((pick or {}).get("params") or {})


def unit_params(record: RunRecord, model: str, seed: int, values: dict[str, float] | None = None) -> dict[str, str]:
    """A unit's MLflow params: the study's, then its recipe with ``values``
    (tuned or a trial's, :func:`trained_values`) in place of the recipe's."""
    cfg = record["config"]
    entry = record["models"][model]
    params = {"model": model, "seed": seed, "dataset": cfg.get("dataset"), "train_limit": cfg.get("train_limit"),
              "test_limit": cfg.get("test_limit"), "device": record.get("device")}
    recipe = dict(entry.get("recipe") or (cfg.get("train") or {}).get(model, {}))
    recipe.update(values or {})
    params.update(flatten(recipe, "train."))
    return {k: str(v)[:500] for k, v in params.items()}


def unit_metrics(entry: ModelRecord, unit: Unit) -> list[tuple[str, float, int]]:
    """(name, value, step): each metric once; per-epoch ones at step = epoch."""
    out = []
    names = {"train_loss": "train_loss", "train_acc": "train_accuracy", "test_loss": "test_loss",
             "test_acc": "test_accuracy", "val_loss": "validation_loss", "val_acc": "validation_accuracy",
             "seconds": "epoch_seconds"}
    for h in unit.get("history", []):
        for k, name in names.items():
            value = lookup(h, k)
            if value is not None:
                out.append((name, float(value), int(h["epoch"])))
    if unit.get("status") == "ok":
        out.append(("train_seconds", float(unit["timings"]["train_seconds"]), 0))
        test, hist = unit.get("test"), unit.get("history") or []
        if test and not any(h.get("test_acc") is not None for h in hist):
            # With a validation split the curve is the validation split's: the test set, once, after training.
            out += [("test_accuracy", float(test["accuracy"]), len(hist)),
                    ("test_loss", float(test["loss"]), len(hist))]
    from archbench.report.analysis import model_costs

    costs = model_costs(entry)  # the same values the report's cost table shows
    for name, key in (("params", "params"), ("flops_forward_per_sample", "flops_inference"),
                      ("flops_train_per_sample", "flops_train"), ("peak_train_memory_bytes", "peak_memory"),
                      ("saved_size_safetensors_bytes", "saved_bytes")):
        v = costs[key]
        if isinstance(v, (int, float)):
            out.append((name, float(v), 0))
    return out


def record_shape(record: RunRecord) -> tuple[tuple[int, ...], int]:
    """(image shape (C, H, W), class count) the run's models were built for:
    its data card's (runs made before the data card: Fashion-MNIST's)."""
    ds = record.get("dataset") or {}
    shape = tuple(ds.get("image_shape") or (1, 28, 28))
    return shape, int(ds.get("num_classes") or len(ds.get("classes") or ()) or 10)


def _trained_model(record: RunRecord, model: str, unit: Unit, run_dir: Path) -> Any:
    """The unit's trained model, rebuilt from its saved weights."""
    import torch

    from archbench.models.registry import build_model

    m = build_model(model, unit["seed"], *record_shape(record))
    state = torch.load(Path(run_dir) / "models" / unit["files"]["state_dict"], map_location="cpu",
                       weights_only=True)
    # The file holds each tensor once: under every name (tied weights' aliases share the storage), or, as
    # files written before that did, under its first name only; the aliases are restored through it.
    from archbench.measure.size import _plain_state

    expected = set(_plain_state(m))
    if set(state) not in (expected, set(m.state_dict())):
        raise RuntimeError(f"saved weights do not fit the model: missing {sorted(expected - set(state))[:3]}, "
                           f"unexpected {sorted(set(state) - expected)[:3]}")
    m.load_state_dict(state, strict=False)
    return m.eval()


class Tracker:
    """Logs one archbench run to MLflow (see the module docstring)."""

    def __init__(self, uri: str, experiment: str = "archbench"):
        self.uri = uri
        self.experiment = experiment
        self.client = _client(uri)  # fails now, with the install hint, if MLflow is missing
        self.parent_id: str | None = None
        self.run_ids: dict[tuple[str, int], str] = {}

    def _experiment_id(self, out_dir: Path) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return str(exp.experiment_id)
        local = self.uri.startswith(("sqlite:", "file:")) or "://" not in self.uri
        # Beside a SQLite store (its directory, given as --mlflow DIR, or the default store in --out)
        home = (Path(self.uri[len("sqlite:///"):]).resolve().parent if self.uri.startswith("sqlite:///")
                else out_dir.resolve())
        artifacts = (home / "mlflow-artifacts").as_uri() if local else None
        return str(self.client.create_experiment(self.experiment, artifact_location=artifacts))

    def start(self, record: RunRecord, run_dir: Path) -> str:
        """The parent run of this archbench run: found again when resuming (by
        its run directory), else created with the study's configuration."""
        run_dir = Path(run_dir)
        where = str(run_dir.resolve())
        experiments = [e.experiment_id for e in self.client.search_experiments()]
        found = self.client.search_runs(experiments, filter_string=f"tags.`archbench.run_dir` = '{where}'",
                                        max_results=1) if experiments else []
        if found:
            self.parent_id = str(found[0].info.run_id)
            self.client.update_run(self.parent_id, status="RUNNING")
            return self.parent_id
        from mlflow.entities import Param

        exp_id = self._experiment_id(run_dir.parent)
        run = self.client.create_run(exp_id, run_name=record["name"], tags={
            "archbench.run": record["name"], "archbench.run_dir": where, "archbench.kind": "study"})
        self.parent_id = str(run.info.run_id)
        cfg = {k: v for k, v in record["config"].items() if k in ("models", "seeds", "dataset", "train_limit",
                                                                   "test_limit", "verify")}
        cfg["device"] = record.get("device")
        self.client.log_batch(self.parent_id, params=[Param(k, str(v)[:500]) for k, v in flatten(cfg).items()])
        return self.parent_id

    def log_unit(self, record: RunRecord, model: str, unit: Unit, run_dir: Path, log: Log = lambda s: None
                 ) -> str | None:
        """Log one unit as a nested run; returns its run id (None if MLflow
        failed: the unit is kept in results.json all the same)."""
        try:
            rid = self._log_unit(record, model, unit, Path(run_dir), log)
        except Exception as exc:  # noqa: BLE001 - tracking must not lose the unit
            log(f"[{model}] seed {unit['seed']}: could not log to MLflow ({type(exc).__name__}: {exc})")
            return None
        if "trial" not in unit:
            self.run_ids[(model, unit["seed"])] = rid
        return rid

    def _log_unit(self, record: RunRecord, model: str, unit: Unit, run_dir: Path, log: Log) -> str:
        from mlflow.entities import Metric, Param, RunTag

        if self.parent_id is None:
            self.start(record, run_dir)
        assert self.parent_id is not None
        exp_id = self.client.get_run(self.parent_id).info.experiment_id
        trial = unit.get("trial")
        tags = {"mlflow.parentRunId": self.parent_id, "archbench.run": record["name"], "archbench.model": model,
                "archbench.seed": str(unit["seed"]), "archbench.status": unit.get("status", "?")}
        if trial is not None:  # a tuning trial: its own nested run, scored on the validation split
            tags["archbench.trial"] = str(trial)
        run = self.client.create_run(exp_id, run_name=f"{model}-seed{unit['seed']}" + (
            f"-trial{trial + 1}" if trial is not None else ""), tags=tags)
        rid = str(run.info.run_id)
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, step) for k, v, step in unit_metrics(record["models"][model], unit)]
        params = [Param(k, v) for k, v in unit_params(record, model, unit["seed"],
                                                      trained_values(record, model, unit)).items()]
        error_tags = [RunTag("archbench.error", unit["error"][:5000])] if unit.get("error") else []
        self.client.log_batch(rid, metrics=metrics, params=params, tags=error_tags)
        if unit.get("status") == "ok" and trial is None:  # a trial keeps no model file
            try:
                self._log_model(record, model, unit, run_dir, rid)
            except Exception as exc:  # noqa: BLE001 - the metrics are logged; say why the model is not
                log(f"[{model}] seed {unit['seed']}: MLflow run logged without its model "
                    f"({type(exc).__name__}: {exc})")
                self.client.set_tag(rid, "archbench.model_not_logged", f"{type(exc).__name__}: {exc}"[:5000])
        self.client.set_terminated(rid, "FINISHED" if unit.get("status") == "ok" else "FAILED")
        return rid

    def _log_model(self, record: RunRecord, model: str, unit: Unit, run_dir: Path, rid: str) -> None:
        """The trained model in MLflow's pytorch format, with its signature
        (float32 images in, logits out), as the run's ``model`` artifact."""
        import mlflow.pytorch
        import torch
        from mlflow.models import infer_signature

        m = _trained_model(record, model, unit, run_dir)
        x = torch.zeros(1, *record_shape(record)[0])
        with torch.no_grad():
            y = m(x)
        signature = infer_signature(x.numpy(), y.numpy())
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model"
            # pickle: the nn.Module itself, as mlflow.pytorch.load_model users expect it (any batch size,
            # .eval() and .train() work; a user model's module must be importable where it is loaded). pt2
            # (torch.export) loads as a graph module that refuses .eval(). MLflow's warning that loading a
            # pickle runs code concerns whoever loads it: said once, in the run's tag, not per unit on screen.
            import logging

            quiet = logging.getLogger("mlflow.pytorch")
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                mlflow.pytorch.save_model(m, str(path), signature=signature, input_example=x.numpy(),
                                          serialization_format="pickle",
                                          pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"])
            finally:
                quiet.setLevel(level)
            self.client.log_artifacts(rid, str(path), artifact_path="model")
        self.client.set_tag(rid, "archbench.model_format", "mlflow.pytorch, pickle: load it only from a store you "
                            "trust (unpickling runs code)")

    def finish(self, record: RunRecord, run_dir: Path, status: str = "FINISHED") -> None:
        """Log the study's answer on the parent run (:func:`study_metrics`:
        each model's mean accuracy, its interval and costs as metrics; the
        verdicts and the bottom line as tags), so studies sort and compare in
        the MLflow UI; attach the report, results.json, tables and plots; close it."""
        if self.parent_id is None:
            return
        run_dir = Path(run_dir)
        if status == "FINISHED":
            from mlflow.entities import Metric, RunTag

            metrics, tags = study_metrics(record)
            now = int(time.time() * 1000)
            self.client.log_batch(self.parent_id, metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
                                  tags=[RunTag(k, v) for k, v in tags.items()])
        for f in ("report.md", "report.html", "results.json"):
            if (run_dir / f).exists():
                self.client.log_artifact(self.parent_id, str(run_dir / f))
        for sub in ("tables", "plots"):
            if (run_dir / sub).is_dir():
                self.client.log_artifacts(self.parent_id, str(run_dir / sub), artifact_path=sub)
        self.client.set_terminated(self.parent_id, status)


def metric_key(text: str) -> str:
    """``text`` as an MLflow metric or tag key (letters, digits, ``_-. /``)."""
    return re.sub(r"[^A-Za-z0-9_\-. /]", "_", text)[:250]


def study_metrics(record: RunRecord) -> tuple[dict[str, float], dict[str, str]]:
    """The parent run's metrics and tags: per model ``<model>.accuracy_mean``,
    ``.accuracy_ci_low``, ``.accuracy_ci_high``, ``.seeds`` and its measured
    costs (base units); tags ``archbench.bottom_line`` and, per pair,
    ``archbench.verdict.<a>_vs_<b>``."""
    import math

    from archbench.report.analysis import analyze
    from archbench.report.conclusions import bottom_line
    from archbench.report.terminal import plain

    an = analyze(record)
    metrics: dict[str, float] = {}
    for name, m in an["models"].items():
        a, key = m["accuracy"], metric_key(name)
        if a.get("n"):
            metrics.update({f"{key}.accuracy_mean": a["mean"], f"{key}.accuracy_ci_low": a["ci"]["low"],
                            f"{key}.accuracy_ci_high": a["ci"]["high"], f"{key}.seeds": float(a["n"])})
        for cost, value in m["costs"].items():
            if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
                metrics[f"{key}.{cost}"] = float(value)
    tags = {"archbench.bottom_line": plain(" ".join(bottom_line(an, record)))[:5000]}
    for p in an["pairs"]:
        ci = p["difference_ci"]
        tags[metric_key(f"archbench.verdict.{p['a']}_vs_{p['b']}")] = (
            f"{p['verdict']}; difference {100 * p['difference']:+.2f} pp (95 % CI {100 * ci['low']:+.2f} "
            f"to {100 * ci['high']:+.2f}), p = {p['p_value']:.3g}, {p['scope']}")[:5000]
    return metrics, tags


def probe(uri: str, timeout: float = 5.0) -> None:
    """Fail now, in seconds, when the tracking store cannot be used: a URI
    MLflow does not understand, or a server that does not answer (MLflow's
    client retries every call to an unreachable server for minutes, which
    would be paid per unit). A UsageError names the URI and the fix."""
    import urllib.error
    import urllib.parse
    import urllib.request

    fix = "fix the --mlflow URI, start the tracking server, or leave --mlflow out"
    try:
        client = _client(uri)
    except UsageError:
        raise
    except Exception as exc:  # noqa: BLE001 - MLflow's own exception types vary by version
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"--mlflow {uri!r} is not a usable tracking URI ({type(exc).__name__}: {first}). Expected "
                         f"sqlite:///path/mlflow.db, a directory, or http(s)://host:port; {fix}.") from None
    if urllib.parse.urlsplit(uri).scheme in ("http", "https"):
        url = uri.rstrip("/") + "/api/2.0/mlflow/experiments/search?max_results=1"
        try:
            urllib.request.urlopen(urllib.request.Request(url, headers={"User-Agent": "archbench"}),
                                   timeout=timeout).close()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise UsageError(f"--mlflow {uri!r}: the server answers but is not an MLflow tracking server "
                                 f"(HTTP 404 for {url}); {fix}.") from None
            # Any other status (401, 403, 405, ...): a server is there; the client handles the rest.
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise UsageError(f"--mlflow {uri!r}: the tracking server does not answer within {timeout:g} s "
                             f"({reason}); {fix}.") from None
        return
    try:
        client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - named, before anything is written
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise UsageError(f"--mlflow {uri!r}: cannot open the tracking store ({type(exc).__name__}: {first}); "
                         f"{fix}.") from None
