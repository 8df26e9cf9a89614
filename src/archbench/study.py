"""Running a study: every (model, seed) unit trained, measured and recorded.

Each finished unit is written into ``results.json`` atomically before the
next one starts; a unit that fails (NaN loss, an exception) is recorded with
its error and the study goes on.
"""

from __future__ import annotations

import datetime as _dt
import re
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from archbench.data import load_dataset
from archbench.env import environment
from archbench.errors import ArchbenchError, UsageError
from archbench.measure import measure_model, save_model_files
from archbench.models import check_model_io, create_model, get_entry, input_shape_of, is_reference
from archbench.records import model_entry, new_record, save_record
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
        for m in self.models:
            if not is_reference(m):
                get_entry(m)  # raises with the list of known models
        self.train.validate()
        return self

    def to_dict(self) -> dict:
        return {
            "models": list(self.models), "seeds": list(self.seeds), "dataset": self.dataset,
            "data_dir": str(self.data_dir) if self.data_dir is not None else None, "verify": self.verify, "train_limit": self.train_limit,
            "test_limit": self.test_limit, "train": self.train.to_dict(),
        }


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def default_run_name() -> str:
    return _dt.datetime.now().strftime("%Y%m%d-%H%M%S")


def _progress_factory(quiet: bool):
    if quiet:
        return None
    from tqdm import tqdm

    def make(**kw):
        return tqdm(file=sys.stderr, dynamic_ncols=True, leave=True, unit_scale=True, **kw)

    return make


def run_study(cfg: StudyConfig, quiet: bool = False,
              log: Callable[[str], None] | None = None) -> tuple[dict, Path]:
    """Run every (model, seed) unit of ``cfg``; return (record, run_dir)."""
    cfg.validate()
    log = log or (lambda s: None)
    device = resolve_device(cfg.train.device)
    data = load_dataset(cfg.dataset, cfg.data_dir, verify=cfg.verify)
    data = data.subset(cfg.train_limit, cfg.test_limit)
    # Every model must build and map a batch to logits before anything is written.
    for ref in cfg.models:
        check_model_io(create_model(ref), ref, input_shape_of(ref), data.spec.num_classes)
    name = cfg.name or default_run_name()
    run_dir = Path(cfg.out) / name
    if (run_dir / "results.json").exists():
        raise UsageError(f"run directory {run_dir} already holds results.json; choose another --name or --out.")
    run_dir.mkdir(parents=True, exist_ok=True)
    described = data.describe()
    described["test_labels"] = data.test_labels.tolist()  # paired statistics need them
    record = new_record(name, cfg.to_dict(), environment(), described)
    record["device"] = str(device)
    save_record(record, run_dir)
    progress = _progress_factory(quiet)
    for ref in cfg.models:
        entry = model_entry(record, ref)
        shape = input_shape_of(ref)
        torch.manual_seed(cfg.seeds[0])
        model = create_model(ref)
        entry["description"] = get_entry(ref).description if not is_reference(ref) else f"user model {ref}"
        log(f"[{ref}] measuring costs (params, FLOPs, memory, saved size, latency)")
        entry["measurements"] = measure_model(model, shape, cfg.train.batch_size, device=device,
                                              train_samples=len(data.train_labels), epochs=cfg.train.epochs)
        save_record(record, run_dir)
        for seed in cfg.seeds:
            log(f"[{ref}] seed {seed}: training {cfg.train.epochs} epochs on {len(data.train_labels):,} images ({device})")
            unit = {"seed": seed, "status": "running"}
            t0 = time.perf_counter()
            try:
                torch.manual_seed(seed)
                model = create_model(ref)
                result = train(model, data.train_images, data.train_labels, data.test_images,
                               data.test_labels, cfg.train, seed=seed, progress=progress)
                files = save_model_files(model, run_dir / "models", f"{safe_name(ref)}-seed{seed}")
            except ArchbenchError as exc:
                unit.update(status="failed", error=str(exc), error_type=type(exc).__name__)
            except Exception as exc:  # noqa: BLE001 - a failing model must not sink the run
                unit.update(status="failed", error=f"{type(exc).__name__}: {exc}",
                            error_type=type(exc).__name__, traceback=traceback.format_exc())
            else:
                unit.update(
                    status="ok",
                    history=[h.to_dict() for h in result.history],
                    test={"loss": result.test.loss, "accuracy": result.test.accuracy,
                          "predictions": result.test.predictions.tolist()},
                    timings={
                        "train_seconds": result.train_seconds,
                        "wall_seconds": time.perf_counter() - t0,
                        "steps": result.steps,
                        "samples_per_second": result.samples_seen / result.train_seconds,
                    },
                    training={"device": result.device, "formulation": result.formulation,
                              "cuda_graphs": result.cuda_graphs},
                    files={fmt: d["path"] for fmt, d in files.items()},
                    saved_size_bytes={fmt: d["bytes"] for fmt, d in files.items()},
                )
                log(f"[{ref}] seed {seed}: test accuracy {100 * result.test.accuracy:.2f} %, "
                    f"train {result.train_seconds:.2f} s")
            if unit["status"] != "ok":
                log(f"[{ref}] seed {seed}: FAILED — {unit['error']}")
            entry["units"].append(unit)
            save_record(record, run_dir)
    write_reports(record, run_dir)
    return record, run_dir
