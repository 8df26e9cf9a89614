"""Running a study: every (model, seed) unit trained, measured and recorded.

Each finished unit is written into ``results.json`` atomically before the
next one starts; a unit that fails (NaN loss, an exception) is recorded with
its error and the study goes on.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from archbench.data import get_dataset_spec, load_dataset
from archbench.env import environment
from archbench.errors import ArchbenchError, UsageError
from archbench.measure import measure_model, save_model_files
from archbench.models import check_model_io, create_model, get_entry, input_shape_of, is_reference, register_spec
from archbench.records import atomic_write, flatten, load_record, model_entry, new_record, save_record
from archbench.report import write_reports
from archbench.train import TrainConfig, resolve_device, train

DEFAULT_MODELS = ("mlp", "cnn")


@dataclass
class StudyConfig:
    models: list[str] = field(default_factory=lambda: list(DEFAULT_MODELS))
    seeds: list[int] = field(default_factory=lambda: [0])
    train: TrainConfig = field(default_factory=TrainConfig)
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    verify: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    out: str = "runs"
    name: str | None = None
    model_train: dict = field(default_factory=dict)   # model -> training options over `train`
    specs: dict = field(default_factory=dict)         # name -> declarative spec (experiment files)

    def train_config_for(self, ref: str) -> TrainConfig:
        """`train` with the model's own options laid over it (its registered
        recipe and any per-model settings, as resolved into `model_train`)."""
        return TrainConfig.from_dict({**self.train.to_dict(), **self.model_train.get(ref, {})}).validate()

    def validate(self) -> "StudyConfig":
        if not self.models:
            raise UsageError("no models given; pass --models NAME[,NAME...] (see `archbench models`).")
        if not self.seeds:
            raise UsageError("no seeds given; pass --seeds 0 or --seeds 0,1,2.")
        if len(set(self.models)) != len(self.models):
            raise UsageError(f"models {self.models} name the same model twice.")
        for lim, flag in ((self.train_limit, "--train-limit"), (self.test_limit, "--test-limit")):
            if lim is not None and lim < 1:
                raise UsageError(f"{flag} {lim} is invalid: expected an integer >= 1 (or leave it out for all samples).")
        for name, spec in self.specs.items():
            register_spec(name, spec)
        for m in self.models:
            if not is_reference(m):
                get_entry(m)  # raises with the list of known models
        unknown = set(self.model_train) - set(self.models)
        if unknown:
            raise UsageError(f"training options given for {sorted(unknown)}, which are not among the models {self.models}.")
        self.train.validate()
        spec = get_dataset_spec(self.dataset)  # raises with the list of known datasets
        for m in self.models:
            tc = self.train_config_for(m)
            if not spec.mirror_symmetric and (tc.augment_flip or tc.tta_flip):
                raise UsageError(
                    f"model {m}: horizontal flips (augment_flip/tta_flip) are on, but {spec.name}'s classes change "
                    "in a mirror image; set augment_flip = false and tta_flip = false for it.")
        return self

    @classmethod
    def from_dict(cls, d: dict, out: str = "runs", name: str | None = None) -> "StudyConfig":
        known = {"models", "seeds", "dataset", "data_dir", "verify", "train_limit", "test_limit", "train",
                 "model_train", "specs"}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"unknown configuration key(s) {sorted(unknown)}; known: {sorted(known)}.")
        return cls(models=list(d["models"]), seeds=list(d["seeds"]), train=TrainConfig.from_dict(d["train"]),
                   dataset=d.get("dataset", "fashion-mnist"), data_dir=d.get("data_dir"),
                   verify=d.get("verify", True), train_limit=d.get("train_limit"),
                   test_limit=d.get("test_limit"), out=out, name=name,
                   model_train={k: dict(v) for k, v in (d.get("model_train") or {}).items()},
                   specs=dict(d.get("specs") or {}))

    def to_dict(self) -> dict:
        return {
            "models": list(self.models), "seeds": list(self.seeds), "dataset": self.dataset,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None, "verify": self.verify, "train_limit": self.train_limit,
            "test_limit": self.test_limit, "train": self.train.to_dict(),
            "model_train": {k: dict(v) for k, v in self.model_train.items()},
            "specs": dict(self.specs),
        }


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def default_run_name() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _progress_factory(quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    tty = sys.stderr.isatty()

    def make(**kw):
        # In a log file (not a terminal), refresh rarely instead of spamming carriage returns.
        return tqdm(file=sys.stderr, dynamic_ncols=True, leave=True, unit_scale=True,
                    mininterval=0.1 if tty else 10.0, **kw)

    return make


def config_differences(stored: dict, new: dict) -> list[str]:
    """Keys whose values differ between two resolved configs, as 'key: old -> new'."""
    a, b = flatten(stored), flatten(new)
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


class Interrupted(ArchbenchError):
    """The user stopped the run (Ctrl-C); finished units are saved."""

    exit_code = 130


def _save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh), binary=True)


def _train_unit(ref: str, seed: int, cfg: StudyConfig, data, run_dir: Path, progress, device):
    """Train one (model, seed) unit, checkpointing every epoch and resuming
    from a checkpoint left by an interrupted run. Returns (model, result)."""
    ckpt = run_dir / "checkpoints" / f"{safe_name(ref)}-seed{seed}.pt"
    # Loaded on the CPU: RNG states must stay there; weights are copied to the device.
    resume = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    torch.manual_seed(seed)
    model = create_model(ref)
    result = train(model, data.train_images, data.train_labels, data.test_images, data.test_labels,
                   cfg.train_config_for(ref), seed=seed, progress=progress,
                   checkpoint=lambda state: _save_checkpoint(ckpt, state), resume_from=resume)
    return model, result, ckpt, resume is not None


def _unit_record(seed: int, result, t0: float, files: dict, resumed: bool) -> dict:
    return {
        "seed": seed, "status": "ok",
        "history": [h.to_dict() for h in result.history],
        "test": {"loss": result.test.loss, "accuracy": result.test.accuracy,
                 "predictions": result.test.predictions.tolist()},
        "timings": {
            "train_seconds": result.train_seconds,
            "wall_seconds": time.perf_counter() - t0,
            "steps": result.steps,
            "samples_per_second": result.samples_seen / result.train_seconds,
        },
        "training": {"device": result.device, "formulation": result.formulation,
                     "cuda_graphs": result.cuda_graphs, "resumed_from_checkpoint": resumed},
        "files": {fmt: d["path"] for fmt, d in files.items()},
        "saved_size_bytes": {fmt: d["bytes"] for fmt, d in files.items()},
    }


def _measure_into(entry: dict, ref: str, cfg: StudyConfig, data, device, timing: bool, log) -> None:
    torch.manual_seed(cfg.seeds[0])
    model = create_model(ref)
    entry["description"] = get_entry(ref).description if not is_reference(ref) else f"user model {ref}"
    log(f"[{ref}] measuring costs (params, FLOPs, memory, saved size" + (", latency)" if timing else ")"))
    try:
        tcfg = cfg.train_config_for(ref)
        entry["recipe"] = tcfg.to_dict()
        entry["measurements"] = measure_model(model, input_shape_of(ref), tcfg.batch_size, device=device,
                                              train_samples=len(data.train_labels), epochs=tcfg.epochs,
                                              timing=timing)
        entry.pop("measurement_error", None)
    except Exception as exc:  # noqa: BLE001 - recorded; training still runs
        entry["measurement_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{ref}] measuring FAILED — {entry['measurement_error']}")


def run_unit(ref: str, seed: int, cfg: StudyConfig, data, run_dir: Path, progress, device, log) -> dict:
    """Train, save and describe one (model, seed) unit. Failures come back as
    a unit with status "failed" (Ctrl-C is re-raised)."""
    t0 = time.perf_counter()
    try:
        model, result, ckpt, resumed = _train_unit(ref, seed, cfg, data, run_dir, progress, device)
        files = save_model_files(model, run_dir / "models", f"{safe_name(ref)}-seed{seed}")
        unit = _unit_record(seed, result, t0, files, resumed)
        ckpt.unlink(missing_ok=True)
        log(f"[{ref}] seed {seed}: test accuracy {100 * result.test.accuracy:.2f} %, "
            f"train {result.train_seconds:.2f} s" + (" (resumed from a checkpoint)" if resumed else ""))
        return unit
    except ArchbenchError as exc:
        return {"seed": seed, "status": "failed", "error": str(exc), "error_type": type(exc).__name__}
    except (KeyboardInterrupt, Interrupted):
        raise
    except Exception as exc:  # noqa: BLE001 - a failing model must not sink the run
        return {"seed": seed, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "error_type": type(exc).__name__, "traceback": traceback.format_exc()}


def run_study(cfg: StudyConfig, quiet: bool = False, log: Callable[[str], None] | None = None,
              resume: str | os.PathLike | None = None, check_determinism: bool = False,
              timing: bool = True, executor: str = "local", executor_options: dict | None = None,
              mlflow_uri: str | None = None) -> tuple[dict, Path]:
    """Run every (model, seed) unit of ``cfg``; return (record, run_dir).

    With ``resume`` (a run directory), finished units are kept and the rest
    run (from their last epoch checkpoint, if any); the configuration must be
    the one stored there. Ctrl-C saves what finished and raises
    :class:`Interrupted` with the command that resumes.
    """
    cfg.validate()
    log = log or (lambda s: None)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.dataset, cfg.data_dir, verify=cfg.verify)
    data = data.subset(cfg.train_limit, cfg.test_limit)
    # Every model must build and map a batch to logits before anything is written.
    for ref in cfg.models:
        check_model_io(create_model(ref), ref, input_shape_of(ref), data.spec.num_classes)
    if resume is not None:
        run_dir = Path(resume)
        record = load_record(run_dir)
        diffs = config_differences(record["config"], cfg.to_dict())
        if diffs:
            raise UsageError(
                f"cannot resume {run_dir}: the configuration differs from the stored one ("
                + "; ".join(diffs) + "). Resume with the stored options, or start a new run with --name."
            )
        log(f"resuming {run_dir}: " + ", ".join(
            f"{m} {sum(u.get('status') == 'ok' for u in e.get('units', []))}/{len(cfg.seeds)} done"
            for m, e in record["models"].items()))
    else:
        name = cfg.name or default_run_name()
        run_dir = Path(cfg.out) / name
        if (run_dir / "results.json").exists():
            raise UsageError(f"run directory {run_dir} already holds results.json; choose another --name, "
                             f"or continue it with --resume {run_dir}.")
        run_dir.mkdir(parents=True, exist_ok=True)
        described = data.describe()
        described["test_labels"] = data.test_labels.tolist()  # paired statistics need them
        record = new_record(run_dir.name, cfg.to_dict(), environment(), described)
        record["device"] = str(device)
        save_record(record, run_dir)
    progress = _progress_factory(quiet)
    state = {"current": None}
    try:
        for ref in cfg.models:
            entry = model_entry(record, ref)
            if not entry.get("measurements"):
                _measure_into(entry, ref, cfg, data, device, timing, log)
                save_record(record, run_dir)
        pending = []
        for ref in cfg.models:
            entry = record["models"][ref]
            for seed in cfg.seeds:
                if not any(u.get("seed") == seed and u.get("status") == "ok" for u in entry["units"]):
                    pending.append((ref, seed))

        def on_result(ref: str, seed: int, unit: dict) -> None:
            entry = record["models"][ref]
            entry["units"] = [u for u in entry["units"] if u.get("seed") != seed] + [unit]
            entry["units"].sort(key=lambda u: cfg.seeds.index(u["seed"]) if u["seed"] in cfg.seeds else 1 << 30)
            if unit["status"] != "ok":
                log(f"[{ref}] seed {seed}: FAILED — {unit['error']}")
            if mlflow_uri is not None:
                from archbench.tracking import log_unit

                try:
                    log_unit(mlflow_uri, record, ref, unit, run_dir)
                except ArchbenchError:
                    raise
                except Exception as exc:  # noqa: BLE001 - tracking must not lose the unit
                    log(f"[{ref}] seed {seed}: could not log to MLflow ({type(exc).__name__}: {exc})")
            save_record(record, run_dir)

        if executor == "ray":
            from archbench.executors import run_units_on_ray

            run_units_on_ray(pending, cfg, data, run_dir, on_result, log, **(executor_options or {}))
        else:
            threads = (executor_options or {}).get("cpus_per_unit")
            if threads:
                torch.set_num_threads(threads)
            for ref, seed in pending:
                state["current"] = (ref, seed)
                log(f"[{ref}] seed {seed}: training {cfg.train_config_for(ref).epochs} epochs on "
                    f"{len(data.train_labels):,} images ({device})")
                on_result(ref, seed, run_unit(ref, seed, cfg, data, run_dir, progress, device, log))
                state["current"] = None
    except KeyboardInterrupt:
        save_record(record, run_dir)
        current = state["current"]
        where = f" during {current[0]} seed {current[1]} (its last finished epoch is checkpointed)" if current else ""
        raise Interrupted(f"interrupted{where}. Finished units are saved in {run_dir / 'results.json'}; "
                          f"continue with: archbench run --resume {run_dir}") from None
    if check_determinism:
        record["determinism_check"] = determinism_check(record, cfg, data, device, log)
        save_record(record, run_dir)
    write_reports(record, run_dir)
    if mlflow_uri is not None:
        from archbench.tracking import log_reports

        log_reports(mlflow_uri, record, run_dir)
    return record, run_dir


def determinism_check(record: dict, cfg: StudyConfig, data, device, log) -> dict:
    """Retrain the first finished unit with the same seed and compare."""
    for ref in cfg.models:
        for u in record["models"][ref]["units"]:
            if u.get("status") != "ok":
                continue
            log(f"[{ref}] seed {u['seed']}: retraining to check determinism")
            torch.manual_seed(u["seed"])
            result = train(create_model(ref), data.train_images, data.train_labels, data.test_images,
                           data.test_labels, cfg.train_config_for(ref), seed=u["seed"])
            same_preds = result.test.predictions.tolist() == u["test"]["predictions"]
            out = {
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
