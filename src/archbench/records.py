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
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal, NotRequired, TypedDict

from archbench.errors import EXIT_RUNTIME, ArchbenchError, DataError, UsageError

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


class CurvePoint(TypedDict):
    """A held-out evaluation at k/8 of a --match flops budget."""

    step: int
    samples: NotRequired[int]
    seconds: NotRequired[float]
    split: str
    loss: NotRequired[float | None]
    accuracy: float
    correct: NotRequired[str]  # packed bits, base64


# Measurements (archbench.measure.measure_model): numbers may be null where a figure was not taken;
# the keys not listed here are kept as they are.

class PhaseFlops(TypedDict, total=False):
    matmul_conv: float
    other: dict[str, float]
    other_total: float
    total: float


class RunFlops(TypedDict):
    steps: int
    matmul_conv: float
    other: float
    total: NotRequired[float]


class FlopsRecord(TypedDict):
    convention: NotRequired[str]
    inference_views: NotRequired[int]
    forward_per_sample: float
    forward_macs_per_sample: float
    forward_other_per_sample: NotRequired[float]
    forward_one_view_per_sample: NotRequired[float | None]
    forward_by_op: NotRequired[dict[str, float]]
    forward_other_by_category: NotRequired[dict[str, float]]
    train_step_batch_size: int
    train_step: float
    train_step_forward: float
    train_step_backward: float
    train_step_other: NotRequired[float]
    train_step_phases: NotRequired[dict[str, PhaseFlops]]
    train_per_sample: NotRequired[float | None]
    uncounted_ops: NotRequired[dict[str, int] | None]
    forward_uncounted_ops: NotRequired[dict[str, int] | None]
    data_movement_ops: NotRequired[dict[str, int]]
    partial: NotRequired[dict[str, bool]]
    per_epoch: NotRequired[RunFlops]
    per_run: NotRequired[RunFlops]


class ReferenceFlops(TypedDict):
    train_step_batch_size: int
    train_step: float
    train_step_other: float
    train_per_sample: NotRequired[float | None]
    train_step_phases: NotRequired[dict[str, PhaseFlops]]
    uncounted_ops: NotRequired[dict[str, int] | None]
    partial: NotRequired[dict[str, bool]]


class StepMemory(TypedDict):
    peak_bytes: int
    breakdown: dict[str, int]
    before_step_bytes: NotRequired[int | None]
    after_forward_bytes: NotRequired[int | None]
    activations_saved_bytes: NotRequired[int | None]
    tracked_peak_bytes: NotRequired[int | None]
    measured_by: NotRequired[str]
    cuda_allocator_peak_bytes: NotRequired[int | None]
    cuda_allocator_before_bytes: NotRequired[int | None]


class PeakMemory(TypedDict):
    """A step's peak (first_step: the breakdown is optional)."""

    peak_bytes: int
    breakdown: NotRequired[dict[str, int]]


class PerSampleMemory(TypedDict):
    batch_sizes: list[int]  # two or more
    peak_bytes: list[int]
    per_sample_bytes: float
    fixed_bytes: float
    note: NotRequired[str]


class InferenceMemory(TypedDict):
    batch_size: int
    views: NotRequired[int]
    peak_bytes: int
    weights_and_input_bytes: NotRequired[int | None]
    activations_peak_bytes: NotRequired[int | None]


class MemoryEstimate(TypedDict):
    params_grads_adam_bytes: int
    total_bytes: NotRequired[int]


class MemoryRecord(TypedDict):
    convention: NotRequired[str]
    train_step: StepMemory
    first_step: NotRequired[PeakMemory]
    per_sample: NotRequired[PerSampleMemory | None]
    inference_batch1: NotRequired[InferenceMemory | None]
    inference_eval_batch: NotRequired[InferenceMemory | None]
    estimate: MemoryEstimate
    estimate_activation_bytes: NotRequired[int | None]
    process_peak_rss_bytes: NotRequired[int | None]


class ReferenceMemory(TypedDict):
    train_step: StepMemory
    first_step: NotRequired[PeakMemory]


class Timing(TypedDict):
    """archbench.measure.timing.Timing.to_dict()."""

    calls: NotRequired[int]
    p50_seconds: float
    p90_seconds: NotRequired[float | None]
    p99_seconds: NotRequired[float | None]
    mean_seconds: NotRequired[float]
    min_seconds: NotRequired[float]
    max_seconds: NotRequired[float]
    items_per_call: NotRequired[int]
    items_per_second: NotRequired[float]
    views: NotRequired[int]


class Throughput(TypedDict):
    items_per_second: float
    p50_seconds: NotRequired[float]


class Speed(TypedDict):
    inference_latency_batch1: Timing
    inference_throughput_batch1024: Throughput
    train_step: NotRequired[Timing]


class ReferenceStep(TypedDict):
    step: NotRequired[dict[str, Any]]
    flops: ReferenceFlops
    memory: ReferenceMemory
    speed: NotRequired[dict[str, Timing]]


class SavedSizes(TypedDict, total=False):
    """Bytes of each saved format (null: not saved); why there is no .onnx."""

    safetensors: int | None
    state_dict: int | None
    onnx: int | None
    onnx_note: str


class Params(TypedDict):
    trainable: int
    non_trainable: int
    raw_weight_bytes: int
    total: NotRequired[int]
    buffers: NotRequired[int]
    param_bytes: NotRequired[int]
    buffer_bytes: NotRequired[int]


class Measurements(TypedDict):
    # Each cost is measured on its own: one that failed is absent, its reason in ``errors``.
    params: NotRequired[Params]
    step: NotRequired[dict[str, Any]]
    inference: NotRequired[dict[str, Any]]
    flops: NotRequired[FlopsRecord]
    memory: NotRequired[MemoryRecord]
    speed: NotRequired[Speed]
    saved_size_bytes: NotRequired[SavedSizes]
    errors: NotRequired[dict[str, str]]
    reference: NotRequired[ReferenceStep | None]


class UnitTimings(TypedDict, total=False):
    train_seconds: float
    eval_seconds: float | None
    wall_seconds: float
    steps: int
    samples_per_second: float


class UnitHost(TypedDict):
    cpu: str
    usable_cpus: int
    torch_threads: int
    torch_interop_threads: NotRequired[int]
    load_start: NotRequired[list[float] | None]
    load_end: NotRequired[list[float] | None]


class UnitTraining(TypedDict):
    device: str
    formulation: str
    cuda_graphs: NotRequired[bool]
    resumed_from_checkpoint: NotRequired[bool]
    batched_with: NotRequired[list[int] | None]


class DatasetSplit(TypedDict, total=False):
    """How the dataset's splits were made (archbench.data.split)."""

    test: dict[str, Any] | None
    val: dict[str, Any] | None
    operations: list[dict[str, Any]]


class Normalization(TypedDict, total=False):
    mean: list[float] | None
    std: list[float] | None
    applied: str


class Environment(TypedDict, total=False):
    """archbench.env.environment(): the keys the report reads; the rest are kept as they are."""

    cpu: str
    cpu_count: int | None
    usable_cpus: int | None
    load_average: list[float] | None
    torch_threads: int
    torch_interop_threads: int


class DatasetCard(TypedDict):
    """The dataset a run used (archbench.data.Dataset.describe()); the keys
    not listed are kept as they are."""

    name: str
    test_samples: NotRequired[int]
    train_samples: NotRequired[int]
    val_samples: NotRequired[int]
    num_classes: NotRequired[int]
    classes: NotRequired[list[str]]
    image_shape: NotRequired[list[int]]
    files: NotRequired[dict[str, str | None]]
    payload_sha256: NotRequired[dict[str, str | None]]
    identity_sha256: NotRequired[str | None]
    class_counts: NotRequired[dict[str, list[int]]]
    balance: NotRequired[dict[str, float | None]]
    normalization: NotRequired[Normalization]
    split: NotRequired[DatasetSplit | None]
    source: NotRequired[str]
    notes: NotRequired[list[str]]
    test_labels: list[int]  # paired statistics need them (the report compares models image by image)


class RecordedConfig(TypedDict):
    """The study's configuration (archbench.config.StudyConfig.to_dict(); a
    merged record's study keys may be {run: value} where its runs differ).
    Each value is checked again where a run is resumed (StudyConfig.from_dict)."""

    models: list[str]
    seeds: NotRequired[list[int] | dict[str, Any]]
    train: NotRequired[dict[str, dict[str, Any]]]
    sources: NotRequired[dict[str, str | dict[str, dict[str, str]]]]  # where each value came from: cli, default, ...
    specs: NotRequired[dict[str, Any]]
    notes: NotRequired[list[str]]


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


# What a record is checked against where it is read (validate_record): the static schema above, with the
# parts it leaves as "any object" given the types their readers need.
REFINED: dict[tuple[type, str], Any] = {
    (RunRecord, "config"): RecordedConfig,
    (RunRecord, "dataset"): DatasetCard,
    (RunRecord, "configs"): NotRequired[dict[str, RecordedConfig]],
    (RunRecord, "environment"): Environment,
    (RunRecord, "environments"): NotRequired[dict[str, Environment]],
    (ModelRecord, "measurements"): Measurements | None,
    (Unit, "status"): Literal["ok", "failed"],
    (Unit, "timings"): NotRequired[UnitTimings],
    (Unit, "training"): NotRequired[UnitTraining],
    (Unit, "host"): NotRequired[UnitHost],
    (Unit, "saved_size_bytes"): NotRequired[SavedSizes],
    (Unit, "curve"): NotRequired[list[CurvePoint]],
    (Execution, "threads"): Literal["auto"] | int,
    (Execution, "jobs"): Literal["auto"] | int,
    (TestResult, "loss"): float | None,  # null: NaN written by an older version (the unit is read as failed)
    (TestResult, "accuracy"): float | None,
}


def lookup(d: Any, *path: str) -> Any:
    """``d[p0][p1]...``, or None where a key is missing: the one way to read an
    optional nested value of a record."""
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def unit_samples(unit: Unit) -> float:
    """The training images a unit went through, from its timings (0 without them; a failed unit has none)."""
    t = unit.get("timings") or {}
    return float(t.get("samples_per_second") or 0.0) * float(t.get("train_seconds") or 0.0)


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


class RecordError(DataError):
    """A ``results.json`` that cannot be read as a run record: damaged,
    truncated, edited by hand, or not a record at all (exit 3, bad input data).
    Its message names the file, the field (``models.mlp.units[3].seed``) and
    what was expected there; nothing is written."""


MAX_RECORDED_COUNT = 4096  # threads or jobs: archbench.config.MAX_THREADS, MAX_JOBS (records may not import config)
MAX_RECORD_BYTES = 256 << 20  # a results.json of 1,000 units on a 10,000-image test set is about 30 MB
_FIX = ("The file is damaged or was edited by hand: restore it from a copy (archbench rewrites it whole after every "
        "unit, so a copy taken at any time is whole), or correct that field.")


class _NonFinite:
    """A NaN or Infinity token where the record was parsed (strict JSON has none)."""

    def __init__(self, token: str) -> None:
        self.token = token


def _read_bounded(path: Path) -> bytes:
    """The bytes of ``path``, read only if it is a regular file of at most
    :data:`MAX_RECORD_BYTES` (a FIFO, a device such as /dev/zero or a huge
    file is refused without reading it or waiting on it)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist: expected a run directory made by `archbench run`.") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}. Give a run directory made by "
                         "`archbench run` (or its results.json) that you can read.") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = ("a directory" if stat.S_ISDIR(st.st_mode) else "a FIFO" if stat.S_ISFIFO(st.st_mode) else
                    "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else
                    "a socket" if stat.S_ISSOCK(st.st_mode) else "a special file")
            raise RecordError(f"{path}: {kind}, not a results.json file: give a run directory made by "
                              "`archbench run`, or its results.json.")
        chunks, size = [], 0
        while size <= MAX_RECORD_BYTES:
            chunk = os.read(fd, min(1 << 22, MAX_RECORD_BYTES + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        if size > MAX_RECORD_BYTES:
            raise RecordError(f"{path}: more than {MAX_RECORD_BYTES:,} bytes, more than any results.json "
                              "archbench writes: it is not a run record.")
        return b"".join(chunks)
    except OSError as exc:
        raise RecordError(f"{path}: cannot be read: {exc.strerror or exc}.") from None
    finally:
        os.close(fd)


def _parse(path: Path, data: bytes) -> Any:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RecordError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}): it is damaged or not a "
                          "results.json written by archbench.") from None
    try:
        return json.loads(text, parse_constant=_NonFinite)
    except json.JSONDecodeError as exc:
        raise RecordError(f"{path}: not valid JSON ({exc}): the file is truncated or damaged. Restore it from a "
                          "copy (archbench rewrites it whole after every unit, so a copy taken at any time is "
                          "whole).") from None
    except RecursionError:
        raise RecordError(f"{path}: nests its values too deeply to be a results.json written by archbench.") from None


def _non_finite_at(obj: Any, path: str = "") -> tuple[str, str] | None:
    """Where the first NaN or Infinity token is, and which."""
    from archbench.typecheck import child

    if isinstance(obj, _NonFinite):
        return path, obj.token
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        if isinstance(value, (dict, list, _NonFinite)):
            found = _non_finite_at(value, child(path, key))
            if found:
                return found
    return None


class _V1Config(TypedDict):
    """What upgrading an ``archbench.run/1`` configuration reads."""

    models: NotRequired[list[str]]
    train: NotRequired[dict[str, Any] | None]
    model_train: NotRequired[dict[str, dict[str, Any]] | None]


class _V1Record(TypedDict):
    config: NotRequired[_V1Config | None]
    configs: NotRequired[dict[str, _V1Config]]


def validate_record(record: Any, where: str | os.PathLike = "results.json") -> RunRecord:
    """``record`` (parsed JSON) as a run record: an old schema upgraded, its
    types checked against :class:`RunRecord` and its parts against each other
    (:func:`_consistency`); else a :class:`RecordError` naming ``where``, the
    field and what was expected. Unknown keys are kept."""
    from archbench.typecheck import Mismatch, check

    try:
        found = _non_finite_at(record)
        if found:
            raise RecordError(f"{where}: {found[0] or 'the top level'}: expected a finite number or null, found the "
                              f"non-JSON token {found[1]} (strict JSON has no NaN or infinity). Replace it with "
                              "null: a unit whose test loss or accuracy is null is read as failed.")
        schema = record.get("schema") if isinstance(record, dict) else None
        if schema in OLD_SCHEMAS:
            check(record, _V1Record)
            record = upgrade_record(record)
        elif schema != SCHEMA:
            raise RecordError(f"{where}: schema {schema!r} is not {SCHEMA!r}; this file was not written by this "
                              "version of archbench (or is not a run record).")
        check(record, RunRecord, refine=REFINED)
        _consistency(record)
    except Mismatch as exc:
        raise RecordError(f"{where}: {exc}. {_FIX}") from None
    _check_units(record)
    return record


def _consistency(record: RunRecord) -> None:
    """What the types cannot say: the test set's size, labels and classes
    agree; each unit's predictions cover that test set with valid classes;
    accuracies lie in [0, 1]; a model's units are distinct (seed, and trial
    where units carry one); an "ok" unit has its evaluation and timings."""
    from archbench.typecheck import Mismatch, child

    for count in ("threads", "jobs"):  # a resumed run uses them again (torch.set_num_threads, the pool's size)
        v = lookup(record, "execution", count)
        if isinstance(v, int) and not 1 <= v <= MAX_RECORDED_COUNT:
            raise Mismatch(f"execution.{count}", f"'auto' or a count from 1 to {MAX_RECORDED_COUNT}", v)
    ds = record["dataset"]
    classes, k = ds.get("classes"), ds.get("num_classes")
    if classes is not None and k is not None and len(classes) != k:
        raise Mismatch("dataset.classes", f"{k} class names (dataset.num_classes)", classes)
    k = k if k is not None else len(classes) if classes is not None else None
    labels = ds.get("test_labels")
    n = ds.get("test_samples")
    if labels is not None:
        if n is not None and len(labels) != n:
            raise Mismatch("dataset.test_labels", f"{n} labels (dataset.test_samples)", labels)
        n = len(labels)
        _classes_in_range(labels, k, "dataset.test_labels")
    for model, entry in record["models"].items():
        per_sample = lookup(entry, "measurements", "memory", "per_sample")
        if per_sample and len(per_sample["batch_sizes"]) < 2:
            raise Mismatch(child(child("models", model), "measurements.memory.per_sample.batch_sizes"),
                           "two or more batch sizes", per_sample["batch_sizes"])
        for part in ("units", "trials"):
            seen: dict[tuple[int, Any], int] = {}
            units: list[Unit] = entry.get(part) or []  # type: ignore[assignment]
            for i, u in enumerate(units):
                where = child(child(child("models", model), part), i)
                key = (u["seed"], u.get("trial"))  # a unit with a trial key is (model, seed, trial)
                if key in seen:
                    what = f"seed {key[0]}" + (f", trial {key[1]}" if key[1] is not None else "")
                    raise Mismatch(child(where, "seed"), f"a unit distinct from {part}[{seen[key]}] (the same "
                                   f"{what})", u["seed"])
                seen[key] = i
                if part == "units":
                    _check_unit(u, where, n, k)


def _classes_in_range(values: list[int], k: int | None, where: str) -> None:
    from archbench.typecheck import Mismatch, child

    for j, v in enumerate(values):
        if v < 0 or (k is not None and v >= k):
            raise Mismatch(child(where, j), f"a class index from 0 to {k - 1}" if k else "a class index >= 0", v)


def _check_unit(u: Unit, where: str, n: int | None, k: int | None) -> None:
    from archbench.typecheck import MISSING, Mismatch, child

    if u["status"] == "ok":
        for key in ("test", "history", "timings"):
            if key not in u:
                raise Mismatch(child(where, key), f"the {key} of a unit whose status is 'ok'", MISSING)
        for key in ("train_seconds", "samples_per_second") + (("wall_seconds",) if "eval_seconds" in u["timings"]
                                                              else ()):
            if key not in u["timings"]:
                raise Mismatch(child(child(where, "timings"), key), "a finite number (an 'ok' unit)", MISSING)
    test = u.get("test")
    if test is not None:
        preds = test["predictions"]
        if n is not None and len(preds) != n:
            raise Mismatch(child(child(where, "test"), "predictions"), f"{n} predictions (one per test image)",
                           preds)
        _classes_in_range(preds, k, child(child(where, "test"), "predictions"))
        _fraction(test.get("accuracy"), child(child(where, "test"), "accuracy"))
    for j, row in enumerate(u.get("history") or []):
        for key in ("train_acc", "test_acc", "val_acc"):
            _fraction(row.get(key), child(child(child(where, "history"), j), key))  # type: ignore[arg-type]
    for j, point in enumerate(u.get("curve") or []):
        _fraction(point.get("accuracy"), child(child(child(where, "curve"), j), "accuracy"))


def _fraction(v: float | None, where: str) -> None:
    from archbench.typecheck import Mismatch

    if v is not None and not 0 <= v <= 1:
        raise Mismatch(where, "an accuracy from 0 to 1", v)


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
    """The run record in a run directory (or the results.json given): read
    only if it is a regular file of bounded size, parsed as strict JSON,
    upgraded from an old schema and checked (:func:`validate_record`). A
    missing or unreadable path is a UsageError (exit 2); a file that is not a
    valid record is a :class:`RecordError` (exit 3) naming the file, the
    field and what was expected. Nothing is written."""
    path = Path(run_dir_or_file)
    try:
        if path.is_dir():
            path = path / "results.json"
    except OSError as exc:  # a name too long for the OS, a loop of links
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}. Give a run directory made by "
                         "`archbench run`.") from None
    return validate_record(_parse(path, _read_bounded(path)), path)


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


def _comparison(record: RunRecord) -> str:
    """What a run's verdicts compare at: equal epochs, a FLOP or time budget, after tuning (for compare's check)."""
    cfg = record.get("config") or {}
    match = cfg.get("match") or "epochs"
    text = {"flops": f"equal training FLOPs ({cfg.get('budget_flops') or 'the costliest model'!s})",
            "time": f"equal training time ({cfg.get('budget_seconds')!s} s)"}.get(str(match), "equal epochs")
    if cfg.get("tune"):
        text += (f", tuned ({', '.join(cfg['tune'])}, {cfg.get('trials', 5)} trials"
                 + (" per seed" if cfg.get("tune_per_seed") else "") + ")")
    return text


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
    for rec in records[1:]:
        a, b = _comparison(base), _comparison(rec)
        if a != b:
            raise UsageError(f"runs {base['name']!r} and {rec['name']!r} answer different questions: {a} vs {b}. A "
                             "merged verdict would mix them; compare runs made with the same --match, budget and "
                             "--tune.")
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
