"""Running a study: every (model, seed) unit trained, measured and recorded.

Each finished unit is written into ``results.json`` atomically before the
next one starts; a unit that fails (NaN loss, an exception) is recorded with
its error and the study goes on. Units run through an executor (this process,
or Ray); each runs :func:`archbench.unit.run_unit`.

A run directory belongs to one process at a time: ``<run_dir>/.lock`` is
locked (``flock``) from before results.json is created or read until the
study ends, and names its owner's pid, so a second run or resume of the same
directory is refused instead of racing the first. Everything that can be
checked is checked before the directory is touched (the data's splits, every
model's input shape and output, a final training batch of one sample); a new
run that fails before any unit finished removes what it wrote, so the same
``--name`` can be used again.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import fcntl
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import torch

from archbench.config import StudyConfig, config_differences
from archbench.data import load_data, with_validation
from archbench.env import environment
from archbench.errors import DataError, Interrupted, ModelError, UsageError
from archbench.executors import check_parallel_models, run_units_locally, run_units_on_ray
from archbench.jobs import jobs_source, parse_jobs
from archbench.models import check_model_io, create_model, is_reference
from archbench.records import (
    OutputError,
    RunRecord,
    Unit,
    load_record,
    lookup,
    model_entry,
    new_record,
    save_record,
    write_error,
)
from archbench.report import write_reports
from archbench.signals import check_stop, stop_on_signals
from archbench.threads import parse_threads
from archbench.train import resolve_device, train
from archbench.unit import build_model, data_shape, measure_entry, safe_name

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


class RunDirLock:
    """An exclusive lock on a run directory: ``<run_dir>/.lock``, locked with
    ``flock`` and holding the owner's pid. The kernel drops the lock when its
    process dies (even by kill -9), so a lock file left behind never blocks
    anyone; the owner removes the file when it is done."""

    NAME = ".lock"

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / self.NAME
        self.fd: int | None = None

    def __enter__(self) -> RunDirLock:
        for _ in range(50):
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise write_error(exc, f"the lock file {self.path}", "Choose another --out.") from exc
                raise UsageError(
                    f"run directory {self.run_dir} is in use by another archbench process ({self._owner()}; "
                    f"lock file {self.path}). Wait for it to finish (or stop it), or choose another --name."
                ) from None
            # The owner before us removes the file when done: the file we locked must still be the one there.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                os.write(fd, f"{os.getpid()}\n".encode())
                self.fd = fd
                return self
            os.close(fd)
        raise UsageError(f"could not lock {self.path}: other processes keep replacing it.")

    def _open(self) -> int:
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise write_error(exc, f"run directory {self.run_dir}",
                              "The --out directory must be a writable directory (or a path where one can be "
                              "created); choose another --out.") from exc

    def _owner(self) -> str:
        for _ in range(20):  # the owner writes its pid right after locking
            try:
                pid = self.path.read_text().strip()
            except OSError:
                pid = ""
            if pid.isdigit():
                return f"pid {pid}"
            time.sleep(0.01)
        return "pid unknown"

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.path)
            os.close(self.fd)
            self.fd = None


def check_data(data: Any) -> None:
    """Both splits must hold images (an empty split is a data problem, found
    before anything is written)."""
    splits = [("training", data.train_labels), ("test", data.test_labels)]
    if getattr(data, "val_labels", None) is not None:
        splits.append(("validation", data.val_labels))
    for split, labels in splits:
        if labels.numel() == 0:
            role = "train" if split == "training" else "test"
            files = ", ".join(p for r, p in data.files.items() if r.startswith(role))
            raise DataError(f"the {split} split of {data.spec.name} is empty (0 images in {files}): there is "
                            f"nothing to {'train on' if split == 'training' else 'evaluate'}. Check the files "
                            "(their IDX headers say 0 images), or point --data-dir at the complete dataset.")


def check_models(cfg: StudyConfig, data: Any, log: Log | None = None) -> StudyConfig:
    """Every model must build for the dataset's images and classes, map a
    batch to logits, and survive the smallest training batch it will see;
    distinct models must have distinct file names. All before anything is
    written. A model the user named that cannot take the images is refused
    (its error names the layer and the fix); from the *default* models, one
    that cannot is left out, said in the log and in the run's notes. Returns
    the configuration that runs."""
    shape, classes = data_shape(data)
    if cfg.sources.get("models") == "default" and not any(is_reference(m) for m in cfg.models):
        keep, left_out = [], []
        for ref in cfg.models:
            try:
                create_model(ref, input_shape=shape, num_classes=classes)
            except ModelError as exc:
                left_out.append(f"{ref} left out of the default models: {exc}")
                continue
            keep.append(ref)
        if left_out:
            if not keep:
                raise UsageError("none of the default models can take these images: " + " ".join(left_out)
                                 + " Name models that can with --models.")
            for note in left_out:
                (log or (lambda s: None))(note)
            cfg = replace(cfg, models=tuple(keep), notes=(*cfg.notes, *left_out),
                          train={m: t for m, t in cfg.train.items() if m in keep})
    _check_models(cfg, data, shape, classes)
    return cfg


def _check_models(cfg: StudyConfig, data: Any, shape: tuple[int, ...], classes: int) -> None:
    stems: dict[str, str] = {}
    for ref in cfg.models:
        stem = safe_name(ref)
        if stem in stems:
            raise UsageError(f"models {stems[stem]!r} and {ref!r} would share the file name {stem!r}; "
                             "rename one.")
        stems[stem] = ref
    for ref in cfg.models:
        model = create_model(ref, input_shape=shape, num_classes=classes)
        check_model_io(model, ref, shape, classes)
        _check_smallest_batch(model, ref, cfg.train_config_for(ref).batch_size, len(data.train_labels), shape)


def _check_smallest_batch(model: torch.nn.Module, ref: str, batch_size: int, n: int, shape: tuple) -> None:
    """Every epoch keeps its last partial batch (the seed recipe). Where that
    batch holds a single sample, a model that cannot train on one (BatchNorm
    needs two values per channel) is refused now, saying how to avoid it.
    Nothing else changes: a run without such a batch never gets here."""
    bs = min(batch_size, n)
    smallest = n % bs or bs
    if smallest != 1:
        return
    model.train()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *shape))
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - user code: reported with the way out
        batches = (f"{n:,} = {n // bs:,} x {bs} + 1" if n > bs else f"batch size {bs}")
        raise UsageError(
            f"model {ref!r} cannot train on a batch of one sample ({type(exc).__name__}: {exc}), and its training "
            f"would end every epoch with one ({n:,} training images, {batches}). Change --train-limit (e.g. to "
            f"{n - 1 if n > bs else 2}) or --batch-size so that no batch holds a single image."
        ) from exc


def remove_leftovers(run_dir: Path, log: Log) -> None:
    """Temporary files of writes that a kill -9 cut short (results.json,
    epoch checkpoints, model files): the lock says no one else writes here."""
    removed = 0
    for sub in ("", "checkpoints", "models", "plots", "tables"):
        d = run_dir / sub
        if not d.is_dir():
            continue
        for tmp in d.glob("*.tmp"):
            if tmp.is_file():
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
    if removed:
        log(f"{run_dir}: removed {removed} temporary file(s) left by an interrupted write")


def _same_data(record: RunRecord, data: Any, run_dir: Path) -> None:
    """A resumed run must train on the data it started with: compared by
    identity (each payload's SHA-256, where the record has them; else the
    sizes and the test labels), not by where the files are."""
    stored = record.get("dataset") or {}
    now = data.describe()
    diffs = []
    a, b = stored.get("payload_sha256") or {}, now.get("payload_sha256") or {}
    if a:
        diffs += [f"{role}: SHA-256 {a.get(role)} when the run started, now {b.get(role)}"
                  + (f" ({data.files[role]})" if data.files.get(role) else "")
                  for role in sorted(set(a) | set(b)) if a.get(role) != b.get(role)]
    if stored.get("identity_sha256") and stored.get("identity_sha256") != now.get("identity_sha256"):
        diffs.append(f"identity SHA-256 {stored['identity_sha256']} when the run started, now "
                     f"{now.get('identity_sha256')}")
    for k in ("name", "train_samples", "val_samples", "test_samples"):
        if stored.get(k) is not None and stored.get(k) != now.get(k):
            diffs.append(f"{k}: {stored.get(k)!r} when the run started, now {now.get(k)!r}")
    if stored.get("test_labels") is not None and stored["test_labels"] != data.test_labels.tolist():
        diffs.append("the test labels differ")
    if diffs:
        registered = stored.get("source", "registry") == "registry"
        raise DataError(f"cannot resume {run_dir}: the data differs from the data it started with ("
                        + "; ".join(diffs) + "). Resume with the original data ("
                        + ("--data-dir DIR where its files are now" if registered else
                           f"{stored.get('name') or 'the dataset'} as it was: restore the file, or the folder's "
                           "images") + "), or start a new run.")


class _DiscardIfFailed:
    """On leaving a new run's block with an error before any unit finished,
    remove what the run wrote: a run directory holding a results.json with no
    units would only block the same --name. Kept: an interrupted run, and one
    that a full disk stopped (its error says to resume it once there is room)."""

    def __init__(self, run_dir: Path, created: bool, record: RunRecord):
        self.run_dir, self.created, self.record = run_dir, created, record

    def __enter__(self) -> _DiscardIfFailed:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None or issubclass(exc_type, (KeyboardInterrupt, Interrupted)):
            return
        if issubclass(exc_type, OutputError) and (self.run_dir / "results.json").exists():
            return
        if any(u.get("status") == "ok" for e in self.record["models"].values() for u in e.get("units", [])):
            return
        if self.created:
            shutil.rmtree(self.run_dir, ignore_errors=True)
            return
        for name in ("results.json", "report.md", "report.html"):
            with contextlib.suppress(OSError):
                (self.run_dir / name).unlink()


def _open_run(cfg: StudyConfig, opts: RunOptions, data: Any, device: torch.device, log: Log,
              stack: contextlib.ExitStack) -> tuple[RunRecord, Path]:
    """The run directory, locked for this process until ``stack`` closes, and
    its record: a new one, or the one to resume."""
    if opts.resume is not None:
        run_dir = Path(opts.resume)
        if not (run_dir / "results.json").is_file():
            load_record(run_dir)  # the named error: no run here
        stack.enter_context(RunDirLock(run_dir))
        record = load_record(run_dir)
        stored, new = dict(record["config"]), cfg.to_dict()
        moved = stored.get("data_dir") != new.get("data_dir")
        diffs = config_differences({**stored, "data_dir": None}, {**new, "data_dir": None})
        if diffs:
            raise UsageError(f"cannot resume {run_dir}: the configuration differs from the stored one ("
                             + "; ".join(diffs) + "). Resume with the stored options, or start a new run "
                             "with --name.")
        _same_data(record, data, run_dir)
        if moved:  # the same data (checked above), found somewhere else
            log(f"{run_dir}: the data is now read from {new.get('data_dir')} (same files as when the run started)")
            record["config"]["data_dir"] = new.get("data_dir")
            record["dataset"]["files"] = dict(data.files)
        remove_leftovers(run_dir, log)
        log(f"resuming {run_dir}: " + ", ".join(
            f"{m} {sum(u['status'] == 'ok' for u in e['units'])}/{len(cfg.seeds)} done"
            for m, e in record["models"].items()))
        return record, run_dir
    run_dir = Path(cfg.out) / (cfg.name or default_run_name())
    created = not run_dir.exists()
    stack.enter_context(RunDirLock(run_dir))
    if (run_dir / "results.json").exists():
        raise UsageError(f"run directory {run_dir} already holds results.json; choose another --name, "
                         f"or continue it with --resume {run_dir}.")
    remove_leftovers(run_dir, log)
    described = data.describe()
    described["test_labels"] = data.test_labels.tolist()  # paired statistics need them
    record = new_record(run_dir.name, cfg.to_dict(), environment(), described)
    record["device"] = str(device)
    stack.enter_context(_DiscardIfFailed(run_dir, created, record))
    save_record(record, run_dir)
    return record, run_dir


def run_study(cfg: StudyConfig, opts: RunOptions | None = None) -> tuple[RunRecord, Path]:
    """Run every (model, seed) unit of ``cfg``; return (record, run_dir).

    With ``opts.resume`` (a run directory), finished units are kept and the
    rest run (from their last epoch checkpoint, if any); ``cfg`` must be the
    configuration stored there. Ctrl-C saves what finished and raises
    :class:`Interrupted` with the command that resumes (also when the
    KeyboardInterrupt itself was swallowed on its way: see archbench.signals).
    """
    with stop_on_signals(sigterm=False), contextlib.ExitStack() as stack:
        return _run_study(cfg, opts or RunOptions(), stack)


def local_threads(opts: RunOptions, record: RunRecord, log: Log) -> int | str:
    """The local executor's thread policy ("auto" or a count): the one given
    (--threads, else --cpus-per-unit, else $ARCHBENCH_THREADS, else auto),
    recorded with a new run; a resumed run without one keeps its stored
    policy (units that had started keep their own count in any case)."""
    xo = opts.executor_options
    given = xo.get("threads", xo.get("cpus_per_unit"))
    stored = lookup(record, "execution", "threads")
    if opts.resume is not None and given is None and stored is not None:
        log(f"resuming with the run's thread policy: --threads {stored}")
        return stored
    spec = parse_threads(given)
    if opts.resume is None and opts.executor == "local":
        record["execution"] = {"threads": spec, "jobs": parse_jobs(xo.get("jobs"))}
        if xo.get("batch_seeds"):
            record["execution"]["batch_seeds"] = True
    return spec


def load_study_data(cfg: StudyConfig) -> Any:
    """The study's data: loaded and checked, limited to ``train_limit`` /
    ``test_limit`` images, then (with ``val_split``) its training images split
    into training and validation."""
    data = load_data(cfg.dataset, cfg.data_dir, verify=cfg.verify).subset(cfg.train_limit, cfg.test_limit)
    if cfg.val_split:
        data = with_validation(data, cfg.val_split, seed=VAL_SPLIT_SEED)
    check_data(data)
    return data


VAL_SPLIT_SEED = 0  # one validation split for every model and seed of a study: their curves compare


def _run_study(cfg: StudyConfig, opts: RunOptions, stack: contextlib.ExitStack) -> tuple[RunRecord, Path]:
    log: Log = opts.log or (lambda s: None)
    device = resolve_device(cfg.device)
    data = load_study_data(cfg)
    from archbench.report.markdown import missing_class_warnings

    for warning in missing_class_warnings(data.describe()):
        log(f"warning: {warning}")
    # Every model must build and map a batch to logits before anything is written.
    cfg = check_models(cfg, data, log)
    given_jobs = opts.executor_options.get("jobs")
    jobs = parse_jobs(given_jobs) if opts.executor == "local" else 1
    if jobs != "auto" and int(jobs) > 1:
        source = jobs_source(given_jobs)
        if opts.executor_options.get("batch_seeds"):
            raise UsageError(f"--batch-seeds trains a model's seeds as one batch in this process; it does not "
                             f"combine with {source} {jobs} (units side by side in worker processes). Give one of "
                             "them" + (f" (unset {source[1:]}, or set it to auto)" if source.startswith("$")
                                       else "") + ".")
        check_parallel_models(list(cfg.models), int(jobs), source)
    tracker = None
    if opts.mlflow_uri is not None:
        from archbench.tracking import Tracker

        tracker = Tracker(opts.mlflow_uri, opts.mlflow_experiment)
    record, run_dir = _open_run(cfg, opts, data, device, log, stack)
    threads_spec = local_threads(opts, record, log)
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
        check_stop()  # a Ctrl-C swallowed during the unit (in a __del__, say) stops the run here

    def on_jobs_decision(decision: dict[str, Any]) -> None:
        execution = record.setdefault("execution", {})
        if opts.resume is not None:
            decision["resumed"] = True
            if execution.get("jobs_decision"):  # the earlier sessions' decisions are kept, oldest first
                execution.setdefault("earlier_jobs_decisions", []).append(execution["jobs_decision"])
        execution["jobs_decision"] = decision
        save_record(record, run_dir)

    try:
        for ref in cfg.models:
            entry = model_entry(record, ref)
            if not entry.get("measurements"):
                measure_entry(entry, ref, cfg, len(data.train_labels), device, opts.timing, log,
                              *data_shape(data))
                save_record(record, run_dir)
        pending = [(ref, seed) for ref in cfg.models for seed in cfg.seeds
                   if not any(u["seed"] == seed and u["status"] == "ok" for u in record["models"][ref]["units"])]
        if opts.executor == "ray":
            run_units_on_ray(pending, cfg, data, run_dir, on_result, log, **opts.executor_options)
        else:
            run_units_locally(pending, cfg, data, run_dir, on_result, log,
                              progress_factory(opts.quiet, opts.notebook), device,
                              threads=threads_spec, jobs=jobs,
                              batch_seeds=bool(opts.executor_options.get("batch_seeds")),
                              on_jobs_decision=on_jobs_decision)
        check_stop()
        with contextlib.suppress(OSError):  # every unit is done: the epoch checkpoints' folder is empty
            (run_dir / "checkpoints").rmdir()
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
    try:
        write_reports(record, run_dir)
    except OSError as exc:
        raise write_error(exc, f"the report in {run_dir}", "The results are saved in results.json; once the "
                          f"directory is writable again, `archbench report {run_dir}` rebuilds the report.") from exc
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
            threads = lookup(u, "host", "torch_threads")
            before = torch.get_num_threads()
            if threads:  # CPU arithmetic depends on the thread count: retrain with the unit's
                torch.set_num_threads(int(threads))
            try:
                result = train(build_model(ref, u["seed"], *data_shape(data)), data.train_images, data.train_labels,
                               data.test_images, data.test_labels, cfg.train_config_for(ref), seed=u["seed"],
                               val_x=getattr(data, "val_images", None), val_y=getattr(data, "val_labels", None),
                               stream=getattr(data, "storage", "memory") == "memmap")
            finally:
                torch.set_num_threads(before)
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

