"""The unit runner: train one (model, seed) unit, save it, describe it.

Every executor (local, Ray) calls :func:`run_unit`; executors only schedule.
A unit checkpoints every epoch into ``checkpoints/`` and resumes from the
checkpoint an interrupted run left; its weights go to ``models/``, under a
file name that is the model's name where that is a safe, short file name and
otherwise its safe characters plus a hash of the whole name (so ``net 1`` and
``net_1`` never share files, and a 300-character name still fits).
"""

from __future__ import annotations

import errno
import hashlib
import re
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import torch

from archbench.config import StudyConfig
from archbench.env import host_snapshot, unit_host
from archbench.errors import ArchbenchError, Interrupted, TrainingError
from archbench.measure import measure_model, save_model_files
from archbench.models import create_model, get_entry, is_reference
from archbench.records import ModelRecord, OutputError, Unit, atomic_write, write_error
from archbench.signals import check_stop, stop_requested
from archbench.train import TrainResult, train

Log = Callable[[str], None]


MAX_STEM = 100


def safe_name(model: str) -> str:
    """The file-name stem of ``model``'s files, distinct for distinct names:
    the name itself when it is made of ``A-Za-z0-9_.-`` only, does not start
    with a dot and has at most 100 characters; else its safe characters
    (shortened to 80) and 12 hex digits of the SHA-256 of the whole name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", model)
    if safe == model and len(model) <= MAX_STEM and not model.startswith("."):
        return model
    digest = hashlib.sha256(model.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    return f"{safe.lstrip('.')[:80]}-{digest}"


# Fatal for the whole run, not for one model: no other unit could save its files either.
_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS}
def _disk_full(exc: BaseException) -> OSError | None:
    """The OSError (no space, quota, file size limit, read-only) behind
    ``exc``: torch.save reports it as a RuntimeError whose context it is."""
    seen: set[int] = set()
    e: BaseException | None = exc
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in _FULL:
            return e
        e = e.__cause__ or e.__context__
    return None


CHECKPOINT_KEYS = ("epoch", "model", "optimizer", "generator", "torch_rng", "history", "train_seconds")


def load_checkpoint(path: Path, model: torch.nn.Module, ref: str, seed: int) -> dict | None:
    """The epoch checkpoint an interrupted run left for this unit (None if
    there is none). One that cannot be read, or that does not fit the model,
    is a TrainingError naming the file and the fix."""
    if not path.exists():
        return None
    fix = (f"Delete it to restart this unit from epoch 1 (rm '{path}'), then resume the run "
           f"(archbench run --resume {path.parent.parent}).")
    try:
        # Loaded on the CPU: RNG states must stay there; weights are copied to the device.
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - any damage: truncated, garbage, another format
        if stop_requested():
            raise KeyboardInterrupt from None
        raise TrainingError(f"the checkpoint {path} of {ref} seed {seed} cannot be read ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''}): it is damaged. {fix}") from None
    missing = [k for k in CHECKPOINT_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise TrainingError(f"the checkpoint {path} of {ref} seed {seed} lacks {', '.join(missing)}: it is not an "
                            f"archbench epoch checkpoint. {fix}")
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state["model"].items()} if isinstance(state["model"], dict) else {}
    if want != have:
        raise TrainingError(f"the checkpoint {path} of {ref} seed {seed} does not fit the model (its weights have "
                            f"other names or shapes: was the model changed since?). {fix}")
    return state


def _save_checkpoint(path: Path, state: dict) -> None:
    atomic_write(path, lambda fh: torch.save(state, fh), binary=True)


def build_model(ref: str, seed: int, input_shape: tuple[int, ...] | None = None,
                num_classes: int | None = None) -> torch.nn.Module:
    """The unit's model for images of ``input_shape`` (C, H, W) in
    ``num_classes`` classes (None: the model's own default), initialised from ``seed``."""
    torch.manual_seed(seed)
    return create_model(ref, input_shape=input_shape, num_classes=num_classes)


def data_shape(data: Any) -> tuple[tuple[int, ...], int]:
    """(image shape (C, H, W), class count) of a loaded dataset."""
    return tuple(data.image_shape), int(data.num_classes)


def _unit_record(seed: int, result: TrainResult, t0: float, files: dict, resumed: bool,
                 host_start: dict | None = None) -> Unit:
    return {
        "seed": seed, "status": "ok",
        "history": [h.to_dict() for h in result.history],
        "test": {"loss": result.test.loss, "accuracy": result.test.accuracy,
                 "predictions": result.test.predictions.tolist(), "views": result.test_views},
        "timings": {
            "train_seconds": result.train_seconds,
            # evaluation: the per-epoch curve (one view each) and the final test's test-time views
            "eval_seconds": sum(h.eval_seconds for h in result.history) + result.final_eval_seconds,
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


def _save_onnx(model: torch.nn.Module, input_shape: tuple[int, ...], run_dir: Path, stem: str,
               files: dict) -> str | None:
    """The trained model as ONNX beside its weights, when the optional onnx
    package is installed; a model ONNX cannot export keeps its unit (the
    reason is returned, to be recorded)."""
    from archbench.measure.size import onnx_available

    if not onnx_available():
        return "onnx not installed (pip install archbench[onnx])"
    try:
        files.update(save_model_files(model, run_dir / "models", stem, formats=("onnx",),
                                      input_shape=input_shape))
    except (KeyboardInterrupt, OutputError):
        raise
    except Exception as exc:  # noqa: BLE001 - the trained weights are saved; ONNX is an extra format
        if stop_requested():  # a Ctrl-C the exporter turned into an error is still a Ctrl-C
            raise KeyboardInterrupt from None
        full = _disk_full(exc)
        if full is not None:
            raise write_error(full, f"the ONNX file of {stem} in {run_dir}",
                              f"Make room, then continue with: archbench run --resume {run_dir}") from exc
        return f"ONNX export failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:500]
    return None


def run_unit(ref: str, seed: int, cfg: StudyConfig, data: Any, run_dir: Path, progress: Any, log: Log) -> Unit:
    """Train, save and describe one (model, seed) unit. Failures come back as
    a unit with status "failed" (Ctrl-C is re-raised)."""
    t0, host0 = time.perf_counter(), host_snapshot()
    ckpt = run_dir / "checkpoints" / f"{safe_name(ref)}-seed{seed}.pt"

    def save_checkpoint(state: dict) -> None:
        _save_checkpoint(ckpt, state)
        check_stop()  # a Ctrl-C swallowed during the epoch stops the unit here, its epoch saved

    try:
        shape, classes = data_shape(data)
        model = build_model(ref, seed, shape, classes)
        resume = load_checkpoint(ckpt, model, ref, seed)
        result = train(model, data.train_images, data.train_labels, data.test_images, data.test_labels,
                       cfg.train_config_for(ref), seed=seed, progress=progress,
                       checkpoint=save_checkpoint, resume_from=resume,
                       val_x=getattr(data, "val_images", None), val_y=getattr(data, "val_labels", None),
                       stream=getattr(data, "storage", "memory") == "memmap")
        check_stop()
        files = save_model_files(model, run_dir / "models", f"{safe_name(ref)}-seed{seed}")
        onnx_note = _save_onnx(model, shape, run_dir, f"{safe_name(ref)}-seed{seed}", files)
        unit = _unit_record(seed, result, t0, files, resume is not None, host0)
        if onnx_note:
            unit["onnx_note"] = onnx_note
        ckpt.unlink(missing_ok=True)
        log(f"[{ref}] seed {seed}: test accuracy {100 * result.test.accuracy:.2f} %, "
            f"train {result.train_seconds:.2f} s" + (" (resumed from a checkpoint)" if resume is not None else ""))
        return unit
    except (KeyboardInterrupt, Interrupted, OutputError):
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failing model must not sink the run
        return cast(Unit, {"seed": seed, "status": "failed", **_failure(exc, f"{ref} seed {seed}", run_dir)})


def _failure(exc: BaseException, whose: str, run_dir: Path) -> dict[str, str]:
    """What a failed unit records about ``exc`` (``error``, ``error_type``,
    and for an error of the model's own code its ``traceback``; call it in
    the ``except`` block). A Ctrl-C that torch turned into an error (inside
    torch.save, say) is raised as the KeyboardInterrupt it was; a full disk
    stops the run (no other unit could save its files either)."""
    if stop_requested():
        raise KeyboardInterrupt from None
    if isinstance(exc, ArchbenchError):
        return {"error": str(exc), "error_type": type(exc).__name__}
    full = _disk_full(exc)
    if full is not None:
        raise write_error(full, f"the files of {whose} in {run_dir}",
                          f"Make room, then continue with: archbench run --resume {run_dir}") from exc
    what = f"SystemExit({exc.code!r}) (sys.exit() called)" if isinstance(exc, SystemExit) else \
        f"{type(exc).__name__}: {exc}"
    return {"error": what, "error_type": type(exc).__name__, "traceback": traceback.format_exc()}


def batch_reason(ref: str, seed: int, cfg: StudyConfig, data: Any) -> str | None:
    """Why ``ref``'s seeds cannot train as one batched model under its recipe
    (None: they can; see :func:`archbench.train.batched.batchable`)."""
    from archbench.train.batched import batchable

    return batchable(build_model(ref, seed, *data_shape(data)), cfg.train_config_for(ref))


def run_batched_units(ref: str, seeds: list[int], cfg: StudyConfig, data: Any, run_dir: Path, progress: Any,
                      log: Log) -> list[Unit]:
    """Train ``seeds`` of one model as one batched model
    (:func:`archbench.train.batched.train_seeds`: each seed's results are those
    of its own run), then save and describe each seed as :func:`run_unit`
    does. The batch keeps no epoch checkpoints: interrupted, it trains again
    from the start. A failure fails every seed of the batch (Ctrl-C is re-raised)."""
    from archbench.train.batched import train_seeds

    t0, host0 = time.perf_counter(), host_snapshot()
    shape, classes = data_shape(data)
    try:
        results = train_seeds(ref, seeds, data.train_images, data.train_labels, data.test_images, data.test_labels,
                              cfg.train_config_for(ref), input_shape=shape, num_classes=classes,
                              val_x=getattr(data, "val_images", None), val_y=getattr(data, "val_labels", None),
                              progress=progress, stream=getattr(data, "storage", "memory") == "memmap")
        check_stop()
        units: list[Unit] = []
        for seed, result in zip(seeds, results):
            model = result.extra["model"]
            stem = f"{safe_name(ref)}-seed{seed}"
            files = save_model_files(model, run_dir / "models", stem)
            onnx_note = _save_onnx(model, shape, run_dir, stem, files)
            unit = _unit_record(seed, result, t0, files, False, host0)
            batched = result.extra.get("batched") or {}
            # Wall time and host are the batch's; train_seconds is this seed's share of the batch's training time.
            unit["training"]["batched_with"] = list(seeds)
            unit["training"]["batch_train_seconds"] = batched.get("batch_train_seconds")
            unit["training"]["first_batch_bit_identical"] = batched.get("first_batch_bit_identical")
            if onnx_note:
                unit["onnx_note"] = onnx_note
            units.append(unit)
            log(f"[{ref}] seed {seed}: test accuracy {100 * result.test.accuracy:.2f} %, "
                f"train {result.train_seconds:.2f} s (its share of {len(seeds)} seeds trained as one batch)")
        return units
    except (KeyboardInterrupt, Interrupted, OutputError):
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - a failing batch must not sink the run
        fail = _failure(exc, f"{ref} seeds {seeds}", run_dir)
        fail["error"] = f"batched with seeds {seeds}: {fail['error']}"
        return [cast(Unit, {"seed": s, "status": "failed", **fail}) for s in seeds]


def measure_entry(entry: ModelRecord, ref: str, cfg: StudyConfig, train_samples: int, device: torch.device,
                  timing: bool, log: Log, input_shape: tuple[int, ...] = (1, 28, 28), num_classes: int = 10) -> None:
    """Fill a model entry's description, recipe and measured costs (or
    ``measurement_error``: training still runs when measuring fails), for
    images of ``input_shape`` in ``num_classes`` classes (the dataset's)."""
    t0 = time.perf_counter()
    model = build_model(ref, cfg.seeds[0], input_shape, num_classes)
    entry["description"] = get_entry(ref).description if not is_reference(ref) else f"user model {ref}"
    log(f"[{ref}] measuring costs (params, FLOPs, memory, saved size" + (", latency)" if timing else ")"))
    tcfg = cfg.train_config_for(ref)
    entry["recipe"] = tcfg.to_dict()
    try:
        # The costs of the step this unit trains (its whole recipe), and of a plain PyTorch reference step.
        # Saved sizes of files named as the units' (a .pt file's bytes include its name).
        entry["measurements"] = measure_model(model, input_shape, device=device, cfg=tcfg,
                                              num_classes=num_classes,
                                              train_samples=train_samples, epochs=tcfg.epochs, timing=timing,
                                              files_stem=f"{safe_name(ref)}-seed{cfg.seeds[0]}")
        entry.pop("measurement_error", None)
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded; training still runs
        if stop_requested():
            raise KeyboardInterrupt from None
        entry["measurement_error"] = f"{type(exc).__name__}: {exc}"
        log(f"[{ref}] measuring FAILED — {entry['measurement_error']}")
    entry["measure_seconds"] = time.perf_counter() - t0
