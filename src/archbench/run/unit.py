"""The unit runner: train one (model, seed) unit, save it, describe it.

Every executor (in this process, a pool, Ray) calls :func:`train_unit`;
executors only schedule. A unit decides its CPU thread count once, at its
start (kept beside its checkpoint, so a resumed unit keeps its arithmetic),
checkpoints every epoch and resumes from the checkpoint an interrupted run
left; its weights go to ``models/`` (names: :mod:`archbench.run.rundir`).
Every unit record, a failed one included, is built here.
"""

from __future__ import annotations

import errno
import json
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch

from archbench.config import StudyConfig
from archbench.env import host_snapshot, unit_host
from archbench.errors import ArchbenchError, Interrupted, TrainingError
from archbench.measure.size import save_model_files
from archbench.models.registry import build_model
from archbench.records import (
    OutputError,
    ThreadDecision,
    Unit,
    atomic_write,
    atomic_write_text,
    write_error,
)
from archbench.run import Log
from archbench.run.progress import labelled
from archbench.run.rundir import RunDir
from archbench.run.signals import check_stop, stop_requested
from archbench.run.threads import decide_threads, describe
from archbench.train.loop import TrainResult, train


@dataclass(frozen=True)
class UnitContext:
    """What every unit of a study needs, the same for every executor: the
    configuration, the loaded data, the run directory, the device, and where
    the log and progress bars go (``progress``: a tqdm-like factory, or None)."""

    cfg: StudyConfig
    data: Any
    run_dir: RunDir
    device: torch.device
    log: Log
    progress: Any = None


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


def unit_model(ref: str, seed: int, data: Any) -> torch.nn.Module:
    """The unit's model, built for the data's image shape and classes and
    initialised from ``seed``."""
    return build_model(ref, seed, *data_shape(data))


def data_shape(data: Any) -> tuple[tuple[int, ...], int]:
    """(image shape (C, H, W), class count) of a loaded dataset."""
    return tuple(data.image_shape), int(data.num_classes)


def train_as_unit(model: torch.nn.Module, ref: str, seed: int, cfg: StudyConfig, data: Any,
                  **kw: Any) -> TrainResult:
    """Train ``model`` as unit (``ref``, ``seed``) trains: its recipe, the
    data's splits and storage, and under a FLOP budget its step budget and
    curve points, and the point at the recipe's epochs (``extra["at_epochs"]``)
    where the budget reaches it (``kw``: progress, checkpoint, resume_from)."""
    at_epochs = cfg.epochs_steps.get(ref)
    trial = cfg.trial_run  # a tuning trial never sees the test set
    result = train(model, data.train_images, data.train_labels, None if trial else data.test_images,
                   None if trial else data.test_labels,
                   cfg.train_config_for(ref), seed=seed,
                   val_x=getattr(data, "val_images", None), val_y=getattr(data, "val_labels", None),
                   stream=getattr(data, "storage", "memory") == "memmap", max_steps=cfg.budget_steps.get(ref),
                   eval_at=tuple(cfg.budget_points.get(ref, ())) + ((at_epochs,) if at_epochs else ()),
                   max_seconds=cfg.budget_seconds if cfg.match == "time" else None, **kw)
    curve = result.extra.get("curve")
    if at_epochs and curve:  # the equal-epochs point is not one of the curve's eighths (a shared step is kept twice)
        i = next((i for i, p in enumerate(curve) if p["step"] == at_epochs and "fraction" not in p), None)
        if i is not None:  # (a time budget may end before the recipe's epochs)
            result.extra["at_epochs"] = curve.pop(i)
    return result


def _unit_record(seed: int, result: TrainResult, t0: float, files: dict, resumed: bool,
                 host_start: dict | None = None) -> Unit:
    unit: Unit = {
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
    if result.extra.get("curve"):  # --match flops: the accuracy-against-compute points
        unit["curve"] = result.extra["curve"]
    if result.extra.get("at_epochs"):  # and the point at the recipe's epochs (the equal-epochs comparison)
        unit["at_epochs"] = result.extra["at_epochs"]
    return unit


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
    rd = RunDir(Path(run_dir))
    ckpt, stem = rd.checkpoint(ref, seed), rd.stem(ref, seed)

    def save_checkpoint(state: dict) -> None:
        _save_checkpoint(ckpt, state)
        check_stop()  # a Ctrl-C swallowed during the epoch stops the unit here, its epoch saved

    try:
        shape = data_shape(data)[0]
        model = unit_model(ref, seed, data)
        resume = load_checkpoint(ckpt, model, ref, seed)
        result = train_as_unit(model, ref, seed, cfg, data, progress=progress, checkpoint=save_checkpoint,
                               resume_from=resume)
        check_stop()
        if cfg.trial_run:  # a tuning trial: its score is the validation accuracy; no files are kept
            ckpt.unlink(missing_ok=True)
            val = result.history[-1].val_acc if result.history else None
            log(f"[{ref}] seed {seed}: validation accuracy "
                + (f"{100 * val:.2f} %" if val is not None else "n/a") + f", train {result.train_seconds:.2f} s")
            return _unit_record(seed, result, t0, {}, resume is not None, host0)
        files = save_model_files(model, rd.models, stem)
        onnx_note = _save_onnx(model, shape, rd.path, stem, files)
        unit = _unit_record(seed, result, t0, files, resume is not None, host0)
        if onnx_note:
            unit["onnx_note"] = onnx_note
        ckpt.unlink(missing_ok=True)
        log(f"[{ref}] seed {seed}: test accuracy {100 * result.test.accuracy:.2f} %, "
            f"train {result.train_seconds:.2f} s" + (" (resumed from a checkpoint)" if resume is not None else ""))
        return unit
    except (KeyboardInterrupt, Interrupted, OutputError):
        raise
    except BaseException as exc:  # noqa: BLE001 - a failing model must not sink the run
        return failed_unit(seed, exc, whose=f"{ref} seed {seed}", run_dir=rd.path)


def failed_unit(seed: int, exc: BaseException, *, why: str | None = None, whose: str = "",
                run_dir: Path | None = None) -> Unit:
    """The record of a unit that failed with ``exc`` (call it in the
    ``except`` block): ``error``, ``error_type`` and, for an error of the
    model's own code or of an executor, the ``traceback``. ``why``: the
    executor's own words (a worker that died, a Ray task that failed), put
    before the error. A Ctrl-C that torch turned into an error (inside
    torch.save, say) is raised as the KeyboardInterrupt it was; a full disk
    stops the run (no other unit could save its files either)."""
    if stop_requested():
        raise KeyboardInterrupt from None
    base: dict[str, Any] = {"seed": seed, "status": "failed", "error_type": type(exc).__name__}
    if why is not None:
        first = str(exc).splitlines()[0] if str(exc) else ""
        return cast(Unit, {**base, "error": f"{type(exc).__name__}: {why}: {first}",
                           "traceback": "".join(traceback.format_exception(exc))})
    if isinstance(exc, ArchbenchError):
        return cast(Unit, {**base, "error": str(exc)})
    full = _disk_full(exc)
    if full is not None and run_dir is not None:
        raise write_error(full, f"the files of {whose} in {run_dir}",
                          f"Make room, then continue with: archbench run --resume {run_dir}") from exc
    what = f"SystemExit({exc.code!r}) (sys.exit() called)" if isinstance(exc, SystemExit) else \
        f"{type(exc).__name__}: {exc}"
    return cast(Unit, {**base, "error": what, "traceback": traceback.format_exc()})


# --------------------------------------------------------------------------- the unit's thread count

def _read_decision(path: Path) -> ThreadDecision | None:
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    n = d.get("threads") if isinstance(d, dict) else None
    return cast(ThreadDecision, d) if isinstance(n, int) and not isinstance(n, bool) and n >= 1 else None


def unit_threads(spec: int | str, ref: str, seed: int, cfg: StudyConfig, data: Any, run_dir: Path,
                 device: torch.device) -> ThreadDecision:
    """The unit's thread decision (see :func:`archbench.run.threads.decide_threads`).
    A unit resuming from its epoch checkpoint gets the decision it started
    with (``reused``: true, ``requested``: what this run asked for): its
    arithmetic must not change halfway. A new decision is written beside the
    checkpoint (atomically) before the unit trains."""
    rd = RunDir(Path(run_dir))
    ckpt, saved = rd.checkpoint(ref, seed), rd.thread_decision(ref, seed)
    note = None
    if ckpt.exists():
        prev = _read_decision(saved)
        if prev is not None:
            return cast(ThreadDecision, {**prev, "reused": True, "requested": spec})
        note = "resumed from a checkpoint whose thread count was not recorded (an older run?): chosen anew"
    decision = decide_threads(spec, ref, seed, cfg.train_config_for(ref), data, device, build=unit_model)
    if note:
        decision["note"] = f"{decision['note']}; {note}" if decision.get("note") else note
    atomic_write_text(saved, json.dumps(decision))
    return decision


def _epochs(n: int) -> str:
    return f"{n} epoch{'s' if n != 1 else ''}"


def train_unit(ref: str, seed: int, cfg: StudyConfig, data: Any, run_dir: Path, device: torch.device,
               threads: int | str, progress: Any, log: Log, where: str = "") -> Unit:
    """What every executor runs for one unit: decide its thread count (kept
    for its whole training), train it (:func:`run_unit`), and record the
    decision in the unit. Torch's thread count is left at the unit's: the
    executor restores its caller's."""
    decision = unit_threads(threads, ref, seed, cfg, data, run_dir, device)
    torch.set_num_threads(decision["threads"])
    steps = cfg.budget_steps.get(ref)
    log(f"[{ref}] seed {seed}: training " + (f"{steps:,} steps (the FLOP budget)" if steps else
                                             f"{cfg.budget_seconds:g} s (the time budget)" if cfg.match == "time"
                                             else _epochs(cfg.train_config_for(ref).epochs)) + " on "
        f"{len(data.train_labels):,} images ({device}{where}), {describe(decision)}")
    unit = run_unit(ref, seed, cfg, data, run_dir, labelled(progress, ref, seed), log)
    rd = RunDir(Path(run_dir))
    if not rd.checkpoint(ref, seed).exists():  # finished: its decision goes with its checkpoint
        rd.thread_decision(ref, seed).unlink(missing_ok=True)
    unit["threads"] = decision
    return unit
