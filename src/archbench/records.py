"""The run record and its JSON round trip.

A run directory holds ``results.json`` (this record), ``report.md`` and
``models/``. The record is rewritten atomically (temporary file, fsync,
rename) after every finished (model, seed) unit, so it is always valid JSON
and an interrupted run loses at most the unit in progress. It is strict JSON:
a non-finite float (NaN, infinity) is written as null, never as the bare
``NaN`` that strict parsers reject.
"""

from __future__ import annotations

import errno
import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NotRequired, TypedDict

from archbench.errors import EXIT_RUNTIME, ArchbenchError, UsageError

SCHEMA = "archbench.run/2"
OLD_SCHEMAS = ("archbench.run/1",)  # read and upgraded on load


# The record's schema. Base units throughout (bytes, seconds, counts, fractions).

class EpochRow(TypedDict):
    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float | None
    test_acc: float | None
    seconds: float
    eval_seconds: float
    val_loss: NotRequired[float]  # with a validation split: the curve is on it, test_* are None
    val_acc: NotRequired[float]


class TestResult(TypedDict):
    loss: float
    accuracy: float
    predictions: list[int]   # per test image, in the dataset's order
    views: NotRequired[int]  # test-time views averaged (1 = plain); the per-epoch curve uses one


class ThreadDecision(TypedDict):
    """A unit's intra-op thread count, decided once at its start
    (archbench.run.threads.decide_threads): a function of the model, its
    recipe and the machine's usable cores, never of the load."""

    policy: str                                  # "auto" or "fixed"
    threads: int
    usable_cores: int
    step_flops: NotRequired[float | None]        # "auto": one training step's counted FLOPs (None: not counted)
    flops_per_thread: NotRequired[float]         # "auto": the rule's constant (archbench.run.threads.rule_threads)
    rule_seconds: NotRequired[float]             # "auto": the time taken to count the step
    note: NotRequired[str]                       # why the step was not counted
    reused: NotRequired[bool]                    # kept from the unit's start (resumed from its checkpoint)
    requested: NotRequired[int | str]            # what the resuming run asked for


class SideBySide(TypedDict):
    """A unit trained in a local pool."""

    jobs: int                  # the pool's size
    threads_cap: int | None    # None (older runs: each unit's share of the cores under --threads auto)
    chosen_by: str             # "--jobs auto" or "--jobs"


class JobsDecision(TypedDict, total=False):
    """``--jobs auto``'s decision (archbench.run.jobs.decide_jobs)."""

    policy: str                                       # "auto"
    jobs: int
    threads_per_unit: int | None
    free_cores: int
    usable_cores: int
    units: int
    predicted_seconds: dict[str, float] | None        # by jobs (as strings)
    probe_ms_per_step: dict[str, dict[str, float]] | None  # model -> thread count -> ms
    probe_seconds: float
    note: str                                         # why one unit at a time without predicting
    resumed: bool


class Execution(TypedDict, total=False):
    """How the local executor ran the study."""

    threads: int | str                  # the thread policy: "auto" or a count
    jobs: int | str                     # "auto" or a count
    jobs_decision: JobsDecision
    earlier_jobs_decisions: list[JobsDecision]


class Unit(TypedDict):
    """One (model, seed) unit: trained, or failed with its error."""

    seed: int
    status: str                          # "ok" or "failed"
    history: NotRequired[list[EpochRow]]
    test: NotRequired[TestResult]
    timings: NotRequired[dict[str, float]]   # train_seconds, eval_seconds, wall_seconds, steps, samples_per_second
    training: NotRequired[dict[str, Any]]    # device, formulation, cuda_graphs, resumed_from_checkpoint
    files: NotRequired[dict[str, str]]       # format -> file name under models/
    saved_size_bytes: NotRequired[dict[str, int]]
    onnx_note: NotRequired[str]              # why the unit has no .onnx file
    error: NotRequired[str]
    error_type: NotRequired[str]
    traceback: NotRequired[str]
    threads: NotRequired[ThreadDecision]
    side_by_side: NotRequired[SideBySide]    # trained in a local pool
    curve: NotRequired[list[dict[str, Any]]]  # --match flops: held-out evaluations at k/8 of the budget (step,
    #                                          samples, seconds, split, loss, accuracy, correct: packed bits, base64)
    at_epochs: NotRequired[dict[str, Any]]   # --match flops: the same, at the recipe's epochs (the equal-epochs point)
    trial: NotRequired[int]                  # a tuning trial (ModelRecord.trials): its index,
    params: NotRequired[dict[str, float]]    # the recipe values it trained with,
    validation: NotRequired[dict[str, float]]  # and its score: final validation loss and accuracy (no test)
    host: NotRequired[dict[str, Any]]        # cpu, usable_cpus, torch_threads, torch_interop_threads,
    #                                          load_start, load_end ([1, 5, 15]-minute load averages)


class ModelRecord(TypedDict):
    measurements: dict[str, Any] | None  # see archbench.measure.measure_model
    units: list[Unit]
    description: NotRequired[str]
    recipe: NotRequired[dict[str, Any]]  # the model's resolved training options
    measure_seconds: NotRequired[float]  # wall time of measuring the costs (part of the time to result)
    measurement_error: NotRequired[str]
    trials: NotRequired[list[Unit]]      # --tune: the tuning trials (archbench.run.tune), each a unit with `trial`
    tuned: NotRequired[dict[str, Any]]   # --tune: the values chosen (archbench.run.tune.choices)


class RunRecord(TypedDict):
    schema: str
    name: str
    config: dict[str, Any]       # archbench.config.StudyConfig.to_dict()
    environment: dict[str, Any]  # archbench.env.environment()
    dataset: dict[str, Any]      # archbench.data.Dataset.describe() + test_labels
    models: dict[str, ModelRecord]
    created: NotRequired[str]    # ISO 8601, UTC, when the run started
    device: NotRequired[str]
    determinism_check: NotRequired[dict[str, Any]]
    execution: NotRequired[Execution]       # the local executor's thread policy and jobs
    budget: NotRequired[dict[str, Any]]     # --match flops: budget_flops, by, models {m: steps, epochs, samples,
    #                                         train_flops, flops_per_sample} (archbench.run.budget.plan)
    merged_from: NotRequired[list[str]]
    configs: NotRequired[dict[str, dict[str, Any]]]
    environments: NotRequired[dict[str, dict[str, Any]]]


def lookup(d: Any, *path: str) -> Any:
    """``d[p0][p1]...``, or None where a key is missing: the one way to read an
    optional nested value of a record."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def source_run(record: RunRecord, model: str) -> str | None:
    """The run a merged record's model came from (None for a plain record)."""
    runs = record.get("merged_from")
    if not runs:
        return None
    if "@" in model and model.rsplit("@", 1)[1] in runs:
        return model.rsplit("@", 1)[1]
    for run in runs:
        if model in (lookup(record, "configs", run, "models") or []):
            return run
    return None


def flops_partial(entry: ModelRecord | dict[str, Any]) -> dict[str, bool]:
    """Which FLOP figures of a model miss ops that have no formula
    ({"forward": ..., "train_step": ...}); a record written before this
    was recorded derives it from its lists of uncounted ops."""
    fl = lookup(entry, "measurements", "flops") or {}
    stored = fl.get("partial") or {}
    return {"forward": bool(stored.get("forward", fl.get("forward_uncounted_ops"))),
            "train_step": bool(stored.get("train_step", fl.get("uncounted_ops")))}


def ok_units(entry: ModelRecord) -> list[Unit]:
    return [u for u in entry["units"] if u["status"] == "ok"]


class OutputError(ArchbenchError):
    """A file archbench must write cannot be written (disk full, quota, a
    file-size limit, an I/O error)."""

    exit_code = EXIT_RUNTIME


# errno values that mean "this place cannot be written to at all" (choose another):
# a usage error. Anything else (a full disk, a quota, EIO) is a runtime failure.
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST,
               errno.ENAMETOOLONG, errno.ENOENT, errno.ELOOP}


def write_error(exc: OSError, what: str, fix: str) -> ArchbenchError:
    """The named error for an OSError while writing ``what``: a UsageError
    where the place is unwritable (a read-only or immutable directory, a
    regular file where a directory belongs), an :class:`OutputError` where the
    write itself failed (no space left, a quota)."""
    reason = exc.strerror or str(exc)
    cls = UsageError if exc.errno in _UNWRITABLE else OutputError
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in what else ""
    return cls(f"cannot write {what}{where}: {reason}. {fix}")


def _umask() -> int:
    """The process umask, read without changing it where Linux shows it."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o22)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets from open(): 0o666 less the umask (mkstemp
    and some writers use 0o600 instead; chmod to this before renaming)."""
    return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[IO[Any]], Any], binary: bool = False) -> None:
    """Write ``path`` through ``write(file)`` into a temporary file in the same
    directory, fsync it and rename it over ``path``: readers see the old file
    or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8")) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text))


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested dicts as one level with dotted keys: {"train": {"lr": 1}} -> {"train.lr": 1}."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def new_record(name: str, config: dict, environment: dict, dataset: dict) -> RunRecord:
    import datetime

    return {
        "schema": SCHEMA,
        "name": name,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "config": config,
        "environment": environment,
        "dataset": dataset,
        "models": {},
    }


def model_entry(record: RunRecord, model: str) -> ModelRecord:
    return record["models"].setdefault(model, {"measurements": None, "units": []})


def finite(obj: Any) -> Any:
    """``obj`` with every non-finite float (NaN, +-infinity) replaced by None,
    so that it serialises as strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        if obj and all(type(v) is int for v in obj):  # predictions, labels: nothing to map
            return obj
        return [finite(v) for v in obj]
    return obj


def dumps_strict(obj: Any, **kwargs: Any) -> str:
    """JSON that strict parsers accept: non-finite floats become null."""
    return json.dumps(finite(obj), allow_nan=False, **kwargs)


def save_record(record: RunRecord, run_dir: str | os.PathLike) -> Path:
    """Write ``results.json`` atomically, as strict JSON. An OSError becomes
    a named error (see :func:`write_error`)."""
    path = Path(run_dir) / "results.json"
    text = dumps_strict(record, indent=1, sort_keys=False) + "\n"
    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise write_error(exc, str(path), "Make room (or make the directory writable); finished units are "
                          f"kept in the last results.json written, and `archbench run --resume {path.parent}` "
                          "continues the run.") from exc
    return path


def _finite_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _check_units(record: dict) -> None:
    """An "ok" unit must have a finite test loss and accuracy. Records written
    before that was enforced may hold NaN (an empty test split, infinite
    logits) or, after a strict rewrite, null: such a unit is read as failed,
    saying why, so that statistics never see a NaN."""
    models = record.get("models")
    if not isinstance(models, dict):
        return
    for entry in models.values():
        for u in (entry.get("units") or []) if isinstance(entry, dict) else []:
            if not isinstance(u, dict) or u.get("status") != "ok":
                continue
            test = u.get("test")
            test = test if isinstance(test, dict) else {}
            bad = {k: test.get(k) for k in ("loss", "accuracy") if not _finite_number(test.get(k))}
            if bad:
                u["status"] = "failed"
                u["error_type"] = "TrainingError"
                u["error"] = ("the recorded evaluation is not finite (" + ", ".join(f"test {k} {v}" for k, v in
                                                                                     bad.items())
                              + "); this unit cannot be compared. Retrain it in a new run.")


def load_record(run_dir_or_file: str | os.PathLike) -> RunRecord:
    path = Path(run_dir_or_file)
    if path.is_dir():
        path = path / "results.json"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist: expected a run directory made by `archbench run`.") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path} is not UTF-8 text ({exc.reason} at byte {exc.start}): it is damaged or not a "
                         "results.json written by archbench.") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}.") from exc
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}).") from exc
    except RecursionError:
        raise UsageError(f"{path} nests its values too deeply to be a results.json written by archbench.") from None
    schema = record.get("schema") if isinstance(record, dict) else None
    if schema in OLD_SCHEMAS:
        record = upgrade_record(record)
    elif schema != SCHEMA:
        raise UsageError(
            f"{path}: schema {schema!r} is not {SCHEMA!r}; this file was not written by this version of archbench."
        )
    _check_units(record)
    return record


def upgrade_config(config: dict) -> dict:
    """A ``archbench.run/1`` configuration (one ``train`` table for all models
    plus ``model_train`` options over it) in today's shape: each model's own
    resolved ``train`` table. Where the values came from was not recorded."""
    base = config.get("train") or {}
    over = config.get("model_train") or {}
    out = {k: v for k, v in config.items() if k not in ("train", "model_train")}
    out["train"] = {m: {**base, **over.get(m, {})} for m in config.get("models", [])}
    out["sources"] = {"train": {m: {k: "stored" for k in out["train"][m]} for m in out["train"]}}
    out["notes"] = ["recorded by archbench.run/1, which did not record where each value came from"]
    return out


def upgrade_record(record: dict) -> RunRecord:
    out = dict(record)
    out["schema"] = SCHEMA
    out["config"] = upgrade_config(record.get("config") or {})
    if "configs" in record:
        out["configs"] = {k: upgrade_config(v) for k, v in record["configs"].items()}
    return out  # type: ignore[return-value]


def merge_records(records: list[RunRecord], name: str) -> RunRecord:
    """One record holding every model of every run. Runs must share the
    dataset and its test set (same name, size, labels and classes), or the
    paired statistics would compare different things. A model name used by
    two runs becomes ``model@run``; each model keeps its own recipe, and the
    configuration of every source run is kept under ``configs``."""
    if not records:
        raise UsageError("compare needs at least one run directory.")
    base = records[0]
    for rec in records[1:]:
        for k in ("name", "test_samples", "classes", "test_labels"):
            a, b = base["dataset"].get(k), rec["dataset"].get(k)
            if a != b:
                shown = (f"{a!r} vs {b!r}" if k != "test_labels" else "the test labels differ")
                raise UsageError(
                    f"runs {base['name']!r} and {rec['name']!r} are incompatible: dataset {k} — {shown}. "
                    "Only runs on the same dataset and test set can be compared."
                )
    names = [r["name"] for r in records]
    if len(set(names)) != len(names):
        dup = next(n for n in names if names.count(n) > 1)
        raise UsageError(f"run name {dup!r} appears twice; compare distinct runs.")
    counts: dict[str, int] = {}
    for rec in records:
        for m in rec["models"]:
            counts[m] = counts.get(m, 0) + 1
    merged: RunRecord = {
        "schema": SCHEMA,
        "name": name,
        "merged_from": names,
        "config": _merged_config(records, counts),
        "configs": {r["name"]: r["config"] for r in records},
        "environment": base["environment"],
        "environments": {r["name"]: r["environment"] for r in records},
        "dataset": base["dataset"],
        "device": ", ".join(sorted({str(r.get("device")) for r in records})),
        "models": {},
    }
    for rec in records:
        for m, entry in rec["models"].items():
            merged["models"][m if counts[m] == 1 else f"{m}@{rec['name']}"] = entry
    return merged


def _merged_config(records: list[RunRecord], counts: dict[str, int]) -> dict:
    """The merged models' own configurations under their merged names; study
    keys only where every run agrees (else the list of values, per run)."""
    out: dict[str, Any] = {"models": [], "train": {}, "sources": {"train": {}}}
    for rec in records:
        cfg = rec["config"]
        for m in rec["models"]:
            key = m if counts[m] == 1 else f"{m}@{rec['name']}"
            out["models"].append(key)
            out["train"][key] = lookup(cfg, "train", m) or {}
            out["sources"]["train"][key] = lookup(cfg, "sources", "train", m) or {}
    for k in ("seeds", "dataset", "train_limit", "test_limit", "verify", "data_dir"):
        values = [r["config"].get(k) for r in records]
        out[k] = values[0] if all(v == values[0] for v in values) else {r["name"]: v for r, v in zip(records, values)}
    out["notes"] = [n for r in records for n in (r["config"].get("notes") or [])]
    return out
