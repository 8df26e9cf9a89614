"""The unit runner: train one (model, seed) unit, save it, describe it.

Every executor (local, Ray) calls :func:`run_unit`; executors only schedule.
A unit checkpoints every epoch into ``checkpoints/`` and resumes from the
checkpoint an interrupted run left; its weights go to ``models/``.
"""

from __future__ import annotations

import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from archbench.config import StudyConfig
from archbench.env import host_snapshot, unit_host
from archbench.errors import ArchbenchError, Interrupted
from archbench.measure import measure_model, save_model_files
from archbench.models import create_model, get_entry, input_shape_of, is_reference
from archbench.records import ModelRecord, Unit, atomic_write
from archbench.train import TrainResult, train

Log = Callable[[str], None]


def safe_name(model: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", model)


def _save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh), binary=True)


def build_model(ref: str, seed: int) -> torch.nn.Module:
    """The unit's model, initialised from ``seed``."""
    torch.manual_seed(seed)
    return create_model(ref)


def _unit_record(seed: int, result: TrainResult, t0: float, files: dict, resumed: bool,
                 host_start: dict | None = None) -> Unit:
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
        "host": unit_host(host_start),  # CPU, cores, threads, load at start and end: what the timings ran on
    }


def run_unit(ref: str, seed: int, cfg: StudyConfig, data: Any, run_dir: Path, progress: Any, log: Log) -> Unit:
    """Train, save and describe one (model, seed) unit. Failures come back as
    a unit with status "failed" (Ctrl-C is re-raised)."""
    t0, host0 = time.perf_counter(), host_snapshot()
    ckpt = run_dir / "checkpoints" / f"{safe_name(ref)}-seed{seed}.pt"
    try:
        # Loaded on the CPU: RNG states must stay there; weights are copied to the device.
        resume = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
        model = build_model(ref, seed)
        result = train(model, data.train_images, data.train_labels, data.test_images, data.test_labels,
                       cfg.train_config_for(ref), seed=seed, progress=progress,
                       checkpoint=lambda state: _save_checkpoint(ckpt, state), resume_from=resume)
        files = save_model_files(model, run_dir / "models", f"{safe_name(ref)}-seed{seed}")
        unit = _unit_record(seed, result, t0, files, resume is not None, host0)
        ckpt.unlink(missing_ok=True)
        log(f"[{ref}] seed {seed}: test accuracy {100 * result.test.accuracy:.2f} %, "
            f"train {result.train_seconds:.2f} s" + (" (resumed from a checkpoint)" if resume is not None else ""))
        return unit
    except (KeyboardInterrupt, Interrupted):
        raise
    except ArchbenchError as exc:
        return {"seed": seed, "status": "failed", "error": str(exc), "error_type": type(exc).__name__}
    except Exception as exc:  # noqa: BLE001 - a failing model must not sink the run
        return {"seed": seed, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "error_type": type(exc).__name__, "traceback": traceback.format_exc()}


def measure_entry(entry: ModelRecord, ref: str, cfg: StudyConfig, train_samples: int, device: torch.device,
                  timing: bool, log: Log) -> None:
    """Fill a model entry's description, recipe and measured costs (or
    ``measurement_error``: training still runs when measuring fails)."""
    model = build_model(ref, cfg.seeds[0])
    entry["description"] = get_entry(ref).description if not is_reference(ref) else f"user model {ref}"
    log(f"[{ref}] measuring costs (params, FLOPs, memory, saved size" + (", latency)" if timing else ")"))
    tcfg = cfg.train_config_for(ref)
    entry["recipe"] = tcfg.to_dict()
    try:
        # The costs of the step this unit trains (its whole recipe), and of a plain PyTorch reference step.
        entry["measurements"] = measure_model(model, input_shape_of(ref), device=device, cfg=tcfg,
                                              train_samples=train_samples, epochs=tcfg.epochs, timing=timing)
        entry.pop("measurement_error", None)
    except Exception as exc:  # noqa: BLE001 - recorded; training still runs
        entry["measurement_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{ref}] measuring FAILED — {entry['measurement_error']}")
