"""Running a study: every (model, seed) unit trained, measured and recorded.

Each finished unit is written into ``results.json`` atomically before the
next one starts; a unit that fails (NaN loss, an exception) is recorded with
its error and the study goes on. Units run through an executor (this process,
or Ray); each runs :func:`archbench.unit.run_unit`.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from archbench.config import StudyConfig, config_differences
from archbench.data import load_dataset
from archbench.env import environment
from archbench.errors import Interrupted, UsageError
from archbench.executors import run_units_locally, run_units_on_ray
from archbench.models import check_model_io, create_model, input_shape_of
from archbench.records import RunRecord, Unit, load_record, model_entry, new_record, save_record
from archbench.report import write_reports
from archbench.train import resolve_device, train
from archbench.unit import build_model, measure_entry

Log = Callable[[str], None]


@dataclass
class RunOptions:
    """How to run a study (not what it is: that is the StudyConfig)."""

    quiet: bool = False
    log: Log | None = None
    resume: str | Path | None = None        # a run directory to continue
    check_determinism: bool = False
    timing: bool = True
    executor: str = "local"                 # "local" or "ray"
    executor_options: dict[str, Any] = field(default_factory=dict)
    mlflow_uri: str | None = None
    mlflow_experiment: str = "archbench"    # the MLflow experiment (one per study)
    notebook: bool = False                  # progress bars for Jupyter (tqdm.auto)


def default_run_name() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def progress_factory(quiet: bool, notebook: bool = False) -> Callable[..., Any] | None:
    if quiet:
        return None
    if notebook:
        from tqdm.auto import tqdm as auto_tqdm

        return lambda **kw: auto_tqdm(leave=True, unit_scale=True, **kw)
    from tqdm import tqdm

    tty = sys.stderr.isatty()

    def make(**kw: Any) -> Any:
        # In a log file (not a terminal), refresh rarely instead of spamming carriage returns.
        return tqdm(file=sys.stderr, dynamic_ncols=True, leave=True, unit_scale=True,
                    mininterval=0.1 if tty else 10.0, **kw)

    return make


def _open_run(cfg: StudyConfig, opts: RunOptions, data: Any, device: torch.device, log: Log
              ) -> tuple[RunRecord, Path]:
    """The run directory and its record: a new one, or the one to resume."""
    if opts.resume is not None:
        run_dir = Path(opts.resume)
        record = load_record(run_dir)
        diffs = config_differences(record["config"], cfg.to_dict())
        if diffs:
            raise UsageError(f"cannot resume {run_dir}: the configuration differs from the stored one ("
                             + "; ".join(diffs) + "). Resume with the stored options, or start a new run "
                             "with --name.")
        log(f"resuming {run_dir}: " + ", ".join(
            f"{m} {sum(u['status'] == 'ok' for u in e['units'])}/{len(cfg.seeds)} done"
            for m, e in record["models"].items()))
        return record, run_dir
    run_dir = Path(cfg.out) / (cfg.name or default_run_name())
    if (run_dir / "results.json").exists():
        raise UsageError(f"run directory {run_dir} already holds results.json; choose another --name, "
                         f"or continue it with --resume {run_dir}.")
    run_dir.mkdir(parents=True, exist_ok=True)
    described = data.describe()
    described["test_labels"] = data.test_labels.tolist()  # paired statistics need them
    record = new_record(run_dir.name, cfg.to_dict(), environment(), described)
    record["device"] = str(device)
    save_record(record, run_dir)
    return record, run_dir


def run_study(cfg: StudyConfig, opts: RunOptions | None = None) -> tuple[RunRecord, Path]:
    """Run every (model, seed) unit of ``cfg``; return (record, run_dir).

    With ``opts.resume`` (a run directory), finished units are kept and the
    rest run (from their last epoch checkpoint, if any); ``cfg`` must be the
    configuration stored there. Ctrl-C saves what finished and raises
    :class:`Interrupted` with the command that resumes.
    """
    opts = opts or RunOptions()
    log: Log = opts.log or (lambda s: None)
    device = resolve_device(cfg.device)
    data = load_dataset(cfg.dataset, cfg.data_dir, verify=cfg.verify).subset(cfg.train_limit, cfg.test_limit)
    # Every model must build and map a batch to logits before anything is written.
    for ref in cfg.models:
        check_model_io(create_model(ref), ref, input_shape_of(ref), data.spec.num_classes)
    tracker = None
    if opts.mlflow_uri is not None:
        from archbench.tracking import Tracker

        tracker = Tracker(opts.mlflow_uri, opts.mlflow_experiment)
    record, run_dir = _open_run(cfg, opts, data, device, log)
    if tracker is not None:
        try:
            tracker.start(record, run_dir)
        except Exception as exc:  # noqa: BLE001 - named, before any unit runs
            raise UsageError(f"cannot log to MLflow at {opts.mlflow_uri}: {type(exc).__name__}: {exc}. Check the "
                             "--mlflow URI (or leave --mlflow out).") from exc

    def on_result(ref: str, seed: int, unit: Unit) -> None:
        entry = record["models"][ref]
        entry["units"] = [u for u in entry["units"] if u["seed"] != seed] + [unit]
        entry["units"].sort(key=lambda u: cfg.seeds.index(u["seed"]) if u["seed"] in cfg.seeds else 1 << 30)
        if unit["status"] != "ok":
            log(f"[{ref}] seed {seed}: FAILED — {unit['error']}")
        if tracker is not None:
            tracker.log_unit(record, ref, unit, run_dir, log)
        save_record(record, run_dir)

    try:
        for ref in cfg.models:
            entry = model_entry(record, ref)
            if not entry.get("measurements"):
                measure_entry(entry, ref, cfg, len(data.train_labels), device, opts.timing, log)
                save_record(record, run_dir)
        pending = [(ref, seed) for ref in cfg.models for seed in cfg.seeds
                   if not any(u["seed"] == seed and u["status"] == "ok" for u in record["models"][ref]["units"])]
        if opts.executor == "ray":
            run_units_on_ray(pending, cfg, data, run_dir, on_result, log, **opts.executor_options)
        else:
            run_units_locally(pending, cfg, data, run_dir, on_result, log,
                              progress_factory(opts.quiet, opts.notebook), device,
                              threads=opts.executor_options.get("cpus_per_unit"))
    except (KeyboardInterrupt, Interrupted) as exc:
        save_record(record, run_dir)
        if tracker is not None:
            tracker.finish(record, run_dir, "KILLED")
        where = f" {exc}" if isinstance(exc, Interrupted) else ""
        raise Interrupted(f"interrupted{where}. Finished units are saved in {run_dir / 'results.json'}; "
                          f"continue with: archbench run --resume {run_dir}") from None
    if opts.check_determinism:
        record["determinism_check"] = determinism_check(record, cfg, data, device, log)
        save_record(record, run_dir)
    write_reports(record, run_dir)
    if tracker is not None:
        tracker.finish(record, run_dir)
    return record, run_dir


def determinism_check(record: RunRecord, cfg: StudyConfig, data: Any, device: torch.device, log: Log
                      ) -> dict[str, Any]:
    """Retrain the first finished unit with the same seed and compare."""
    for ref in cfg.models:
        for u in record["models"][ref]["units"]:
            if u["status"] != "ok":
                continue
            log(f"[{ref}] seed {u['seed']}: retraining to check determinism")
            result = train(build_model(ref, u["seed"]), data.train_images, data.train_labels, data.test_images,
                           data.test_labels, cfg.train_config_for(ref), seed=u["seed"])
            same_preds = result.test.predictions.tolist() == u["test"]["predictions"]
            out: dict[str, Any] = {
                "model": ref, "seed": u["seed"], "device": str(device),
                "identical": same_preds and result.test.loss == u["test"]["loss"]
                and [h.train_loss for h in result.history] == [h["train_loss"] for h in u["history"]],
                "test_loss": [u["test"]["loss"], result.test.loss],
                "test_accuracy": [u["test"]["accuracy"], result.test.accuracy],
                "predictions_identical": same_preds,
            }
            log(f"determinism check: {'identical' if out['identical'] else 'DIFFERENT'} "
                f"(test loss {out['test_loss'][0]!r} vs {out['test_loss'][1]!r})")
            return out
    return {"identical": None, "note": "no finished unit to check"}

