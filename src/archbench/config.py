"""Configuration: one home, one ``resolve``.

Every way of starting a study -- the command line, an experiment file,
``--resume`` and the Python API -- ends in :func:`resolve` (or, for a stored
run, :func:`resume_config`), which returns one validated, immutable
:class:`StudyConfig`. Nothing downstream re-validates or re-resolves.

Precedence, for every key, highest first:

1. an explicit option: given on the command line or as an API argument,
   whatever its value (``--epochs 5`` wins even where 5 is the default);
2. the experiment file's per-model ``train`` table;
3. the experiment file's ``[train]`` table (or its top-level study keys);
4. the model's registered recipe (zoo models);
5. the defaults (the seed notebook's recipe).

The resolved configuration records, per model and key, where each value came
from (:class:`Source`); results.json and the report show it.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from archbench.errors import UsageError


class Formulation(StrEnum):
    """How the CPU training step is laid out: the same maths either way."""

    FAST = "fast"
    PLAIN = "plain"


class Optimizer(StrEnum):
    ADAM = "adam"     # L2 weight decay, as torch.optim.Adam and Keras
    ADAMW = "adamw"   # decoupled weight decay


class Schedule(StrEnum):
    CONSTANT = "constant"
    ONECYCLE = "onecycle"  # linear warm-up, linear decay to 0
    COSINE = "cosine"      # linear warm-up, cosine decay to 0


class Precision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"  # autocast; weights and optimizer state stay fp32


class Source(StrEnum):
    """Where a resolved value came from."""

    DEFAULT = "default"
    RECIPE = "recipe"
    FILE = "file"              # the experiment file's [train] or top-level key
    FILE_MODEL = "file:model"  # the experiment file's per-model train table
    CLI = "cli"
    API = "api"
    STORED = "stored"          # a run record written before sources were recorded


# --------------------------------------------------------------------------- value checks

@dataclass(frozen=True)
class _Check:
    """A field's type and range: ``convert`` returns the normalised value or
    raises ValueError; ``expect`` says what is allowed, for the error."""

    expect: str
    convert: Callable[[Any], Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_check(lo: int, hi: int | None = None, what: str = "") -> _Check:
    expect = (f"an integer{what} from {lo} to {hi}" if hi is not None else f"an integer{what} >= {lo}")

    def convert(v: Any) -> int:
        if not _is_int(v) or v < lo or (hi is not None and v > hi):
            raise ValueError
        return int(v)

    return _Check(expect, convert)


def _float_check(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = True,
                 expect: str = "") -> _Check:
    def convert(v: Any) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ValueError
        v = float(v)
        if not math.isfinite(v) or v < lo or (lo_open and v == lo):
            raise ValueError
        if hi is not None and (v > hi or (hi_open and v == hi)):
            raise ValueError
        return v

    return _Check(expect, convert)


def _bool_check() -> _Check:
    def convert(v: Any) -> bool:
        if not isinstance(v, bool):
            raise ValueError
        return v

    return _Check("true or false", convert)


def _enum_check(enum: type[StrEnum]) -> _Check:
    allowed = [e.value for e in enum]

    def convert(v: Any) -> StrEnum:
        if not isinstance(v, str) or v not in allowed:
            raise ValueError
        return enum(v)

    return _Check("one of " + ", ".join(allowed), convert)


def _device_check() -> _Check:
    def convert(v: Any) -> str:
        if isinstance(v, str) and (v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit())):
            return v
        raise ValueError

    return _Check("auto, cpu, cuda or cuda:N", convert)


def _opt(check: _Check, default: Any, doc: str) -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


def check_value(key: str, value: Any, check: _Check, where: str = "") -> Any:
    try:
        return check.convert(value)
    except UsageError as exc:  # a converter's own message, more precise than the expectation
        raise UsageError(f"{where}{exc}") from None
    except (ValueError, TypeError):
        raise UsageError(f"{where}{key} = {value!r} is invalid: expected {check.expect}.") from None


# --------------------------------------------------------------------------- training options

@dataclass(frozen=True)
class TrainConfig:
    """One model's training recipe. The defaults are the seed notebook's:
    Adam(lr 1e-3, betas 0.9/0.999, eps 1e-7 as Keras), cross-entropy on
    logits, batch 64, 5 epochs, reshuffled every epoch, last partial batch kept.

    Constructing one validates it (types, ranges, enumerations): a TrainConfig
    that exists is valid."""

    epochs: int = _opt(_int_check(1), 5, "training epochs")
    batch_size: int = _opt(_int_check(1), 64, "training batch size")
    lr: float = _opt(_float_check(0, lo_open=True, expect="a finite number > 0"), 1e-3, "peak learning rate")
    beta1: float = _opt(_float_check(0, 1, expect="a number in [0, 1)"), 0.9, "Adam beta1")
    beta2: float = _opt(_float_check(0, 1, expect="a number in [0, 1)"), 0.999, "Adam beta2")
    eps: float = _opt(_float_check(0, lo_open=True, expect="a finite number > 0"), 1e-7, "Adam epsilon")
    device: str = _opt(_device_check(), "auto", "auto, cpu, cuda or cuda:N")
    formulation: Formulation = _opt(_enum_check(Formulation), Formulation.FAST,
                                    "CPU step layout: fast (channels-last, same maths) or plain eager")
    cuda_graphs: bool = _opt(_bool_check(), True, "on CUDA, capture the training step as CUDA graphs")
    eval_batch_size: int = _opt(_int_check(1), 1000, "evaluation batch size")
    optimizer: Optimizer = _opt(_enum_check(Optimizer), Optimizer.ADAM,
                                "adam (L2 weight decay) or adamw (decoupled)")
    weight_decay: float = _opt(_float_check(0, expect="a finite number >= 0"), 0.0, "weight decay")
    schedule: Schedule = _opt(_enum_check(Schedule), Schedule.CONSTANT, "learning-rate schedule")
    warmup: float = _opt(_float_check(0, 1, expect="a fraction in [0, 1)"), 0.2,
                         "fraction of the steps spent warming up (onecycle, cosine)")
    label_smoothing: float = _opt(_float_check(0, 1, expect="a number in [0, 1)"), 0.0, "label smoothing")
    augment_crop: int = _opt(_int_check(0, 8, " number of pixels"), 0,
                             "random crop after zero padding by this many pixels (0 = off)")
    augment_flip: bool = _opt(_bool_check(), False, "random horizontal flips")
    precision: Precision = _opt(_enum_check(Precision), Precision.FP32,
                                "fp32, or bf16 autocast (weights and optimizer state stay fp32)")
    tta_flip: bool = _opt(_bool_check(), False, "test-time augmentation: average over the mirror image")
    tta_shift: int = _opt(_int_check(0, 4, " number of pixels"), 0,
                          "test-time augmentation: also average over shifts by this many pixels")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = check_value(f.name, getattr(self, f.name), f.metadata["check"])
            object.__setattr__(self, f.name, value)

    def lr_at(self, step: int, total: int) -> float:
        """The learning rate for 0-based ``step`` of ``total`` steps."""
        if self.schedule == Schedule.CONSTANT or total <= 1:
            return self.lr
        t = step / (total - 1)
        w = self.warmup
        if w > 0 and t < w:
            return self.lr * (0.04 + 0.96 * t / w)
        u = (t - w) / (1 - w) if w < 1 else 1.0
        if self.schedule == Schedule.ONECYCLE:
            return self.lr * max(0.0, 1.0 - u)
        return self.lr * 0.5 * (1 + math.cos(math.pi * u))

    def to_dict(self) -> dict[str, Any]:
        return {k: (str(v) if isinstance(v, StrEnum) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "") -> TrainConfig:
        unknown = set(d) - set(TRAIN_KEYS)
        if unknown:
            raise UsageError(f"{where}unknown training option(s) {sorted(unknown)}; known: "
                             f"{', '.join(TRAIN_KEYS)}.")
        try:
            return cls(**d)
        except UsageError as exc:
            raise UsageError(f"{where}{exc}") from None


TRAIN_KEYS: tuple[str, ...] = tuple(f.name for f in fields(TrainConfig))
TRAIN_DEFAULTS: dict[str, Any] = TrainConfig().to_dict()
TRAIN_DOCS: dict[str, str] = {f.name: f.metadata["doc"] for f in fields(TrainConfig)}
TRAIN_CHECKS: dict[str, _Check] = {f.name: f.metadata["check"] for f in fields(TrainConfig)}
# Options that assume the classes survive a mirror image (true of clothes, not of digits).
FLIP_OPTIONS = ("augment_flip", "tta_flip")
# Options that hold for the whole study, not per model.
STUDY_WIDE_TRAIN_KEYS = ("device",)


# --------------------------------------------------------------------------- study options

def _seeds_convert(v: Any) -> list[int]:
    if not isinstance(v, (list, tuple)) or not v or not all(_is_int(s) and 0 <= s < 2**63 for s in v):
        raise ValueError
    if len(set(v)) != len(v):
        raise ValueError
    return [int(s) for s in v]


def _models_convert(v: Any) -> list[Any]:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)) or not v:
        raise ValueError
    return list(v)


def _opt_int_convert(v: Any) -> int | None:
    if v is None:
        return None
    if not _is_int(v) or v < 1:
        raise ValueError
    return int(v)


def _str_convert(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError
    return v


def _opt_path_convert(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, (str, os.PathLike)) or not str(v):
        raise ValueError
    return str(Path(v).expanduser().resolve())


DATASET_NAMES = ("fashion-mnist", "mnist", "kmnist", "digits")  # the names that are not paths


def _dataset_convert(v: Any) -> str:
    """A dataset name (kept as given) or a path to the user's data (made
    absolute, so a run resumed from elsewhere finds it). A registered
    dataset name wins over a file of that name in the working directory."""
    if isinstance(v, os.PathLike):
        v = str(v)
    if not isinstance(v, str) or not v or "\0" in v:
        raise ValueError
    from archbench.data.registry import list_datasets

    if v in list_datasets() or v in DATASET_NAMES:
        return v
    path = Path(v).expanduser()
    if not path.exists():
        known = ", ".join(sorted({*list_datasets(), *DATASET_NAMES}))
        raise UsageError(f"unknown dataset {v!r}: not a dataset name ({known}) and no file or directory of that "
                         "name exists. Give a name, or the path of an .npz file (x_train, y_train, x_test, "
                         "y_test), a CIFAR-10/100 python-batch directory or .tar.gz, or an image-folder tree "
                         "(train/<class>/*.png, test/<class>/...).")
    return str(path.resolve())


def _val_split_convert(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
        raise ValueError
    return float(v)


def _name_convert(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v or v in (".", "..") or "/" in v or "\\" in v or "\0" in v or len(v) > 200:
        raise ValueError
    return v


DEFAULT_MODELS = ("mlp", "cnn")
MAX_REPEATS = 10_000  # seeds 0..N-1 are made as a list: a larger N is a typo (and would not fit in memory)
STUDY_CHECKS: dict[str, _Check] = {
    "models": _Check("a non-empty list of model names, module:function references or spec files", _models_convert),
    "seeds": _Check("a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]", _seeds_convert),
    "dataset": _Check("a dataset name (fashion-mnist, mnist, kmnist, digits) or the path of an existing .npz "
                      "file, CIFAR-10/100 python-batch directory or .tar.gz, or image-folder tree "
                      "(train/<class>/*.png, test/<class>/...)", _dataset_convert),
    "val_split": _Check("a fraction of the training images strictly between 0 and 1, e.g. 0.1 (or leave it "
                        "out: no validation split)", _val_split_convert),
    "data_dir": _Check("a directory path", _opt_path_convert),
    "verify": _Check("true or false", _bool_check().convert),
    "train_limit": _Check("an integer >= 1 (or leave it out for all samples)", _opt_int_convert),
    "test_limit": _Check("an integer >= 1 (or leave it out for all samples)", _opt_int_convert),
    "out": _Check("a directory path", _str_convert),
    "name": _Check("a directory name without '/' (200 characters at most)", _name_convert),
}
STUDY_DEFAULTS: dict[str, Any] = {
    "models": list(DEFAULT_MODELS), "seeds": [0], "dataset": "fashion-mnist", "data_dir": None, "verify": True,
    "train_limit": None, "test_limit": None, "out": "runs", "name": None, "val_split": None,
}
# Keys stored in results.json (out and name say where the run is, not what it is).
RECORDED_STUDY_KEYS = ("models", "seeds", "dataset", "data_dir", "verify", "train_limit", "test_limit", "val_split")


@dataclass(frozen=True)
class StudyConfig:
    """A resolved study: which models, seeds and data, and each model's own
    training recipe (``train[model]``) with each value's source."""

    models: tuple[str, ...]
    seeds: tuple[int, ...]
    train: Mapping[str, TrainConfig]
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    verify: bool = True
    train_limit: int | None = None
    test_limit: int | None = None
    out: str = "runs"
    name: str | None = None
    val_split: float | None = None   # fraction of the training images held out for the curves
    specs: Mapping[str, dict] = field(default_factory=dict)     # model name -> declarative spec
    sources: Mapping[str, Any] = field(default_factory=dict)    # key -> Source; "train": model -> key -> Source
    notes: tuple[str, ...] = ()                                 # what resolution changed and why

    def train_config_for(self, model: str) -> TrainConfig:
        return self.train[model]

    @property
    def device(self) -> str:
        return self.train[self.models[0]].device

    def to_dict(self) -> dict[str, Any]:
        """The record's ``config``: values, then sources and notes."""
        d: dict[str, Any] = {k: getattr(self, k) for k in RECORDED_STUDY_KEYS}
        if d["val_split"] is None:  # records of runs without a validation split keep their keys
            del d["val_split"]
        d["models"], d["seeds"] = list(self.models), list(self.seeds)
        d["specs"] = {k: dict(v) for k, v in self.specs.items()}
        d["train"] = {m: self.train[m].to_dict() for m in self.models}
        d["sources"] = {k: (str(v) if not isinstance(v, dict) else {m: {kk: str(s) for kk, s in vv.items()}
                                                                    for m, vv in v.items()})
                        for k, v in self.sources.items() if k in RECORDED_STUDY_KEYS or k == "train"}
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], out: str = "runs", name: str | None = None) -> StudyConfig:
        """A stored configuration (a record's ``config``), checked again
        (the file may have been edited) and with its specs registered."""
        known = set(RECORDED_STUDY_KEYS) | {"specs", "train", "sources", "notes"}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"stored configuration: unknown key(s) {sorted(unknown)}; known: {sorted(known)}.")
        values = {k: check_value(k, d.get(k, STUDY_DEFAULTS[k]), STUDY_CHECKS[k], "stored configuration: ")
                  for k in RECORDED_STUDY_KEYS}
        specs = dict(d.get("specs") or {})
        _register_specs(specs)
        train_d = d.get("train") or {}
        missing = [m for m in values["models"] if m not in train_d]
        if missing:
            raise UsageError(f"stored configuration: no training options for {missing}.")
        train = {m: TrainConfig.from_dict(train_d[m], f"stored configuration, model {m}: ")
                 for m in values["models"]}
        return cls(models=tuple(values["models"]), seeds=tuple(values["seeds"]), train=train,
                   dataset=values["dataset"], data_dir=values["data_dir"], verify=values["verify"],
                   train_limit=values["train_limit"], test_limit=values["test_limit"], out=out, name=name,
                   val_split=values["val_split"],
                   specs=specs, sources=dict(d.get("sources") or {}), notes=tuple(d.get("notes") or ()))


# --------------------------------------------------------------------------- how a study runs

ENV_THREADS = "ARCHBENCH_THREADS"  # the default of --threads where it is not given (a CI runner may pin it)
ENV_JOBS = "ARCHBENCH_JOBS"        # the default of --jobs where it is not given (tests pin it to 1)
MAX_THREADS = 4096                 # more threads per unit is a typo, not a machine
MAX_JOBS = 4096                    # more units side by side is a typo, not a machine
EXECUTORS = ("local", "ray")


def auto_or_count(value: Any, maximum: int | None = None) -> int | str | None:
    """``"auto"`` (any case), a whole number from 1 to ``maximum`` (an int,
    or a string of ASCII digits), or None when ``value`` is neither: the
    parsing shared by ``--threads`` and ``--jobs`` (each names its own error)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 1 or (maximum and value > maximum):
        return None
    return value


def parse_threads(value: Any, what: str = "--threads") -> int | str:
    """``"auto"`` or a thread count from 1 to :data:`MAX_THREADS`; None means
    ``$ARCHBENCH_THREADS`` where it is set, else ``"auto"``."""
    if value is None:
        value, what = os.environ.get(ENV_THREADS) or "auto", f"${ENV_THREADS}"
    parsed = auto_or_count(value, MAX_THREADS)
    if parsed is None:
        if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
            value = int(value.strip())  # as the message has always shown a number: 0, not '0'
        raise UsageError(f"{what} {value!r} is invalid: expected 'auto' or a whole number of threads from 1 to "
                         f"{MAX_THREADS} (e.g. --threads 1).")
    return parsed


def jobs_source(given: Any) -> str:
    """Where the jobs setting comes from, for messages: ``--jobs`` when
    given, else ``$ARCHBENCH_JOBS`` when set."""
    return "--jobs" if given is not None or not os.environ.get(ENV_JOBS) else f"${ENV_JOBS}"


def parse_jobs(value: Any, what: str = "--jobs") -> int | str:
    """``"auto"`` or a number of units side by side from 1 to
    :data:`MAX_JOBS`; None means ``$ARCHBENCH_JOBS`` where it is set, else
    ``"auto"``."""
    fix = "(e.g. --jobs 2)"
    if value is None:
        value, what = os.environ.get(ENV_JOBS) or "auto", f"${ENV_JOBS}"
        fix = f"(e.g. {ENV_JOBS}=2), or unset {ENV_JOBS}"
    parsed = auto_or_count(value, MAX_JOBS)
    if parsed is None:
        raise UsageError(f"{what} {str(value)!r} is invalid: expected 'auto' or a whole number of units to run side "
                         f"by side from 1 to {MAX_JOBS} {fix}.")
    return parsed


@dataclass(frozen=True)
class ExecutionConfig:
    """How a study runs (not what it is: that is the :class:`StudyConfig`),
    validated once by :meth:`build`, which the CLI and the API both call.

    ``threads`` is the thread policy (``"auto"`` or a count; ``threads_given``
    says whether it was asked for, or came from ``$ARCHBENCH_THREADS`` or the
    default: a resumed run keeps its stored policy unless one is asked for);
    ``jobs`` the units side by side (``"auto"`` or a count; ``jobs_source``
    names where it came from, for messages). With ``executor="ray"`` each unit
    is a Ray task of ``cpus_per_unit`` CPUs and ``gpus_per_unit`` GPUs."""

    executor: str = "local"
    threads: int | str = "auto"
    threads_given: bool = False
    jobs: int | str = "auto"
    jobs_source: str = "--jobs"
    address: str | None = None
    cpus_per_unit: int = 1
    gpus_per_unit: float = 0.0
    max_retries: int = 2
    mlflow_uri: str | None = None
    mlflow_experiment: str = "archbench"
    timing: bool = True
    check_determinism: bool = False

    @classmethod
    def build(cls, *, executor: str = "local", threads: Any = None, jobs: Any = None,
              cpus_per_unit: int | None = None, address: str | None = None, gpus_per_unit: float = 0.0,
              max_retries: int = 2, mlflow_uri: str | None = None, mlflow_experiment: str = "archbench",
              timing: bool = True, check_determinism: bool = False) -> ExecutionConfig:
        """Check every value and fill in the environment's defaults
        (``$ARCHBENCH_THREADS``, ``$ARCHBENCH_JOBS``); a bad value is a
        UsageError naming it and the fix."""
        if executor not in EXECUTORS:
            raise UsageError(f"executor {executor!r} is invalid: expected one of {', '.join(EXECUTORS)}.")
        if cpus_per_unit is not None and auto_or_count(cpus_per_unit, MAX_THREADS) in (None, "auto"):
            raise UsageError(f"--cpus-per-unit {cpus_per_unit!r} is invalid: expected a whole number from 1 to "
                             f"{MAX_THREADS}.")
        common = dict(mlflow_uri=mlflow_uri, mlflow_experiment=mlflow_experiment, timing=bool(timing),
                      check_determinism=bool(check_determinism))
        if executor == "ray":
            if jobs is not None or threads is not None:
                raise UsageError("--jobs and --threads are for the local executor; with Ray, --cpus-per-unit "
                                 "sets each unit's CPUs (and threads).")
            if not 0 <= gpus_per_unit <= MAX_THREADS or not 0 <= max_retries <= 1000:
                raise UsageError(f"--gpus-per-unit {gpus_per_unit!r} / --max-retries {max_retries!r}: expected a "
                                 "number >= 0 and a count from 0 to 1000.")
            return cls(executor="ray", threads=cpus_per_unit or 1, threads_given=True, jobs=1,
                       address=address, cpus_per_unit=cpus_per_unit or 1, gpus_per_unit=float(gpus_per_unit),
                       max_retries=int(max_retries), **common)  # type: ignore[arg-type]
        given = threads if threads is not None else cpus_per_unit
        return cls(executor="local", threads=parse_threads(given), threads_given=given is not None,
                   jobs=parse_jobs(jobs), jobs_source=jobs_source(jobs), **common)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- experiment files

TOP_KEYS = set(STUDY_DEFAULTS) | {"repeats", "train"}
MODEL_KEYS = {"name", "spec", "spec_file", "train"}


@dataclass(frozen=True)
class ExperimentFile:
    """An experiment file, checked but not yet resolved (see
    :func:`load_experiment` for the format)."""

    path: Path
    study: dict[str, Any]                # top-level study keys given in the file
    train: dict[str, Any]                # [train]
    per_model: dict[str, dict[str, Any]]  # model name -> its train table
    specs: dict[str, dict]               # model name -> inline spec or spec_file contents


def _check_keys(table: Mapping, allowed: set, where: str) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {sorted(unknown)}; allowed: {', '.join(sorted(allowed))}.")


def _check_train_table(table: Any, where: str) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise UsageError(f"{where} must be a table of training options, got {table!r}.")
    _check_keys(table, set(TRAIN_KEYS), where)
    return {k: check_value(k, v, TRAIN_CHECKS[k], f"{where}: ") for k, v in table.items()}


def load_experiment(path: str | os.PathLike) -> ExperimentFile:
    """Read and check an experiment file::

        name = "zoo"                  # run directory name (default: a timestamp)
        out = "runs"
        dataset = "fashion-mnist"
        data_dir = "/data/fashion"    # optional; relative to the file
        verify = true
        seeds = [0, 1, 2]             # or: repeats = 3
        train_limit = 10000           # optional subsets
        test_limit = 2000
        models = ["mlp", "cnn"]       # a list of references, or [[models]] tables:

        [train]                       # training options for every model
        epochs = 5

        [[models]]
        name = "small_cnn"            # registry name, module:function, or a spec file *.toml
        spec = { layers = [ ... ] }   # or spec_file = "small_cnn.toml"
        train = { epochs = 3 }        # options for this model only

    Every key and every value is checked here, with the file and the table
    named in the error; precedence is applied by :func:`resolve`.
    """
    from archbench.data.registry import list_datasets
    from archbench.errors import read_toml
    from archbench.models.spec import load_spec_file

    path = Path(path)
    data = read_toml(path, "experiment file")
    where = f"{path}"
    _check_keys(data, TOP_KEYS, f"{where}: the top level")
    if "seeds" in data and "repeats" in data:
        raise UsageError(f"{where}: give either 'seeds' or 'repeats', not both.")
    study: dict[str, Any] = {}
    if "repeats" in data:
        n = check_value("repeats", data["repeats"], _int_check(1, MAX_REPEATS), f"{where}: ")
        study["seeds"] = list(range(n))
    for k in STUDY_DEFAULTS:
        if k in data and k != "models":
            v = data[k]
            relative = (k in ("data_dir", "dataset") and isinstance(v, str) and v
                        and not Path(v).expanduser().is_absolute())
            named = k == "dataset" and (v in DATASET_NAMES or v in list_datasets())
            if relative and not named:
                v = str(path.parent / v)  # a path in the file is relative to the file, never to the working dir
            study[k] = check_value(k, v, STUDY_CHECKS[k], f"{where}: ")
    train = _check_train_table(data.get("train", {}), f"{where}: [train]")
    models_t = data.get("models")
    if not isinstance(models_t, list) or not models_t:
        raise UsageError(f"{where}: expected models = [\"mlp\", ...] or at least one [[models]] table with a 'name'.")
    names: list[str] = []
    specs: dict[str, dict] = {}
    per_model: dict[str, dict[str, Any]] = {}
    for i, m in enumerate(models_t):
        at = f"{where}: models #{i + 1}"
        if isinstance(m, str):
            m = {"name": m}
        if not isinstance(m, dict) or not isinstance(m.get("name"), str) or not m["name"]:
            raise UsageError(f"{at} needs a 'name' (a registry name, module:function or spec file), got {m!r}.")
        _check_keys(m, MODEL_KEYS, at)
        name = m["name"]
        if "spec" in m and "spec_file" in m:
            raise UsageError(f"{at} ({name}) gives both 'spec' and 'spec_file'; keep one.")
        if "spec" in m:
            if not isinstance(m["spec"], dict):
                raise UsageError(f"{at} ({name}): spec must be a table with 'layers', got {m['spec']!r}.")
            specs[name] = m["spec"]
        elif "spec_file" in m:
            specs[name] = load_spec_file(path.parent / str(m["spec_file"]))[1]
        elif name.endswith(".toml"):  # a spec file is known by its own name
            name, specs_from_file = load_spec_file(path.parent / name)
            specs[name] = specs_from_file
        if "train" in m:
            per_model[name] = _check_train_table(m["train"], f"{at} ({name}) train")
        names.append(name)
    study["models"] = names
    return ExperimentFile(path=path, study=study, train=train, per_model=per_model, specs=specs)


# --------------------------------------------------------------------------- resolution

def _register_specs(specs: Mapping[str, dict]) -> None:
    from archbench.models.registry import register_spec

    for name, spec in specs.items():
        register_spec(name, spec)


def _name_models(refs: list[Any], specs: dict[str, dict], where: str) -> list[str]:
    """Model references -> model names. A spec file is known by its own
    ``name`` (else the file's stem); its spec is kept in ``specs``."""
    from archbench.models.registry import get_entry, is_reference, list_models
    from archbench.models.spec import load_spec_file

    names: list[str] = []
    for ref in refs:
        if not isinstance(ref, str) or not ref:
            raise UsageError(f"{where}models: {ref!r} is not a model name; give registry names, "
                             "module:function references or spec files (*.toml).")
        name = ref
        if ref.endswith(".toml") and ref not in specs:
            own, spec = load_spec_file(ref)
            name = own
            if name in list_models():
                raise UsageError(f"{where}spec file {ref!r} is named {name!r}, which is a registered model; "
                                 "rename it (the 'name' key in its [model] table).")
            if name in specs and specs[name] != spec:
                raise UsageError(f"{where}two different specs are both named {name!r}; rename one.")
            specs[name] = spec
        elif not is_reference(ref) and ref not in specs:
            get_entry(ref)  # raises with the list of known models
        if name in names:
            raise UsageError(f"{where}models name {name!r} twice; each model is trained once per seed.")
        names.append(name)
    return names


def resolve(explicit: Mapping[str, Any] | None = None, *, experiment: ExperimentFile | None = None,
            source: Source = Source.CLI) -> StudyConfig:
    """The one way to a :class:`StudyConfig`.

    ``explicit``: the options given on the command line or as API arguments
    (study keys such as ``models``/``seeds``/``dataset`` and training keys such
    as ``epochs``/``lr``), exactly those given, whatever their values.
    ``experiment``: a loaded experiment file. Precedence as in the module
    docstring; every value is checked, every error names the key and the
    allowed values.
    """
    from archbench.models.registry import recipe_of

    explicit = dict(explicit or {})
    unknown = set(explicit) - set(STUDY_DEFAULTS) - set(TRAIN_KEYS)
    if unknown:
        raise UsageError(f"unknown option(s) {sorted(unknown)}; known: "
                         f"{', '.join(sorted(set(STUDY_DEFAULTS) | set(TRAIN_KEYS)))}.")
    file_study = experiment.study if experiment else {}
    study: dict[str, Any] = {}
    sources: dict[str, Any] = {}
    for k in STUDY_DEFAULTS:
        if k in explicit:
            study[k], sources[k] = check_value(k, explicit[k], STUDY_CHECKS[k]), source
        elif k in file_study:
            study[k], sources[k] = file_study[k], Source.FILE
        else:
            study[k], sources[k] = STUDY_DEFAULTS[k], Source.DEFAULT
    given_train = {k: check_value(k, v, TRAIN_CHECKS[k]) for k, v in explicit.items() if k in TRAIN_KEYS}
    file_train = experiment.train if experiment else {}
    per_model_file = experiment.per_model if experiment else {}
    specs = dict(experiment.specs) if experiment else {}
    models = _name_models(study["models"], specs, "")  # adds the specs of spec files named on the CLI
    _register_specs(specs)
    ds_name, mirror = dataset_symmetry(study["dataset"])
    for m, table in per_model_file.items():
        for k in STUDY_WIDE_TRAIN_KEYS:
            if k in table:
                raise UsageError(f"{experiment.path if experiment else ''}: model {m}: {k} is set for the whole "
                                 "study; move it to [train] or the command line.")
    train: dict[str, TrainConfig] = {}
    train_sources: dict[str, dict[str, Source]] = {}
    notes: list[str] = []
    for m in models:
        recipe = recipe_of(m)
        own = per_model_file.get(m, {})
        values: dict[str, Any] = {}
        srcs: dict[str, Source] = {}
        for k in TRAIN_KEYS:
            if k in given_train:
                values[k], srcs[k] = given_train[k], source
            elif k in own:
                values[k], srcs[k] = own[k], Source.FILE_MODEL
            elif k in file_train:
                values[k], srcs[k] = file_train[k], Source.FILE
            elif k in recipe and not (k in FLIP_OPTIONS and mirror is not True):
                values[k], srcs[k] = recipe[k], Source.RECIPE
            else:
                values[k], srcs[k] = TRAIN_DEFAULTS[k], Source.DEFAULT
        dropped = [k for k in FLIP_OPTIONS if recipe.get(k) and srcs[k] == Source.DEFAULT]
        if dropped:
            notes.append(f"{m}: the recipe's {', '.join(dropped)} left out: " + (
                f"{ds_name}'s classes change in a mirror image." if mirror is False else
                f"whether {ds_name}'s classes survive a mirror image is not known; give "
                + " ".join(f"--{k.replace('_', '-')}" for k in dropped) + " if they do."))
        flips = [k for k in FLIP_OPTIONS if values[k]]
        if flips and mirror is False:
            raise UsageError(
                f"model {m}: horizontal flips ({', '.join(f'{k} from {srcs[k]}' for k in flips)}) are on, but "
                f"{ds_name}'s classes change in a mirror image; set augment_flip = false and "
                "tta_flip = false for it.")
        train[m] = TrainConfig.from_dict(values, f"model {m}: ")
        train_sources[m] = srcs
    sources["train"] = train_sources
    return StudyConfig(models=tuple(models), seeds=tuple(study["seeds"]), train=train, dataset=study["dataset"],
                       data_dir=study["data_dir"], verify=study["verify"], train_limit=study["train_limit"],
                       test_limit=study["test_limit"], out=study["out"], name=study["name"],
                       val_split=study["val_split"], specs=specs,
                       sources=sources, notes=tuple(notes))


def dataset_symmetry(dataset: str) -> tuple[str, bool | None]:
    """(a short name, do its classes keep their identity in a mirror image?)
    for a checked ``dataset`` value: the registry's answer for a registered
    dataset; False for digits; True for CIFAR batches (objects, photographed
    either way round); None (not known) for the user's own arrays and folders."""
    from archbench.data.registry import get_dataset_spec, list_datasets

    if dataset in list_datasets():
        return dataset, get_dataset_spec(dataset).mirror_symmetric
    if dataset == "digits":
        return dataset, False
    # The same dispatch as archbench.data.sources.load_data: a tar archive is CIFAR's; a directory with
    # train/ or test/ is an image folder (symmetry unknown), else a CIFAR batch directory.
    path = Path(dataset)
    if path.is_file() and path.name.lower().endswith((".tar.gz", ".tgz", ".tar")):
        return path.name, True
    if path.is_dir() and not ((path / "train").is_dir() or (path / "test").is_dir()):
        from archbench.data.sources import _cifar_dir_kind

        if _cifar_dir_kind(path):
            return path.name, True
    return path.name, None


def resume_config(stored: Mapping[str, Any], explicit: Mapping[str, Any] | None = None,
                  where: str = "") -> StudyConfig:
    """The stored configuration of a run to resume. An explicit option whose
    value differs from the stored one is refused, naming it: a resumed run
    finishes the study it started."""
    cfg = StudyConfig.from_dict(stored)
    explicit = dict(explicit or {})
    for k in ("out", "name"):
        if k in explicit:
            raise UsageError(f"--{k} does not apply with --resume: the run directory is given by --resume.")
    diffs = []
    for k, v in explicit.items():
        if k in STUDY_CHECKS:
            given = check_value(k, v, STUDY_CHECKS[k])
            if k == "models":
                given = _name_models(given, dict(cfg.specs), "")
            have = getattr(cfg, k)
            have = list(have) if isinstance(have, tuple) else have
            if given != have:
                diffs.append(f"{k}: stored {have!r}, given {given!r}")
        elif k in TRAIN_CHECKS:
            given = check_value(k, v, TRAIN_CHECKS[k])
            for m in cfg.models:
                have = getattr(cfg.train[m], k)
                if given != have:
                    diffs.append(f"{k} (model {m}): stored {have!r}, given {given!r}")
        else:
            raise UsageError(f"unknown option {k!r}.")
    if diffs:
        raise UsageError(f"cannot resume {where}: " + "; ".join(diffs) + ". A resumed run finishes the study it "
                         "started: leave these options out, or start a new run with another --name.")
    return cfg


def config_differences(stored: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """The values (not their sources) that differ between two recorded
    configurations, as 'key: old -> new'."""
    from archbench.records import flatten

    a = flatten({k: v for k, v in stored.items() if k not in ("sources", "notes")})
    b = flatten({k: v for k, v in new.items() if k not in ("sources", "notes")})
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
