"""Configuration: the typed schema and its value checks.

The frozen dataclasses a study is described by -- :class:`TrainConfig` (one
model's recipe), :class:`StudyConfig` (a resolved study) and
:class:`ExecutionConfig` (how it runs) -- and the checks of every value's type
and range, with the error that names the key and what is allowed. Constructing
one validates it; nothing here registers anything or looks anything up.

This module is a leaf: it imports nothing from archbench but the error types.
Whatever needs a registry -- whether a dataset or model name exists, the
models' recipes, experiment files, precedence, ``--resume`` -- is in
:mod:`archbench.resolve`, which every way of starting a study goes through.
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
        return self.lr_at_fraction(step / (total - 1))

    def lr_at_fraction(self, t: float) -> float:
        """The learning rate at fraction ``t`` (0 to 1) of the training (a
        time budget's schedule runs over its seconds, not a step count)."""
        if self.schedule == Schedule.CONSTANT:
            return self.lr
        t = min(1.0, max(0.0, t))
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


def _dataset_convert(v: Any) -> str:
    """The shape of a dataset value: a non-empty string (or path) without NUL,
    kept as given. Whether it names a registered dataset or an existing file
    (then made absolute) is checked by :func:`archbench.resolve.check_dataset`,
    which knows the registry."""
    if isinstance(v, os.PathLike):
        v = str(v)
    if not isinstance(v, str) or not v or "\0" in v:
        raise ValueError
    return v


def _val_split_convert(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1:
        raise ValueError
    return float(v)


MATCHES = ("epochs", "flops", "time")


def _match_convert(v: Any) -> str:
    if not isinstance(v, str) or v.strip().lower() not in MATCHES:
        raise ValueError
    return v.strip().lower()


def _budget_convert(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v < 1e30:
        raise ValueError
    return float(v)


def _target_convert(v: Any) -> float | None:
    if v is None:
        return None
    if isinstance(v, str):
        v = float(v)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        raise ValueError
    return float(v)


def _name_convert(v: Any) -> str | None:
    if v is None:
        return None
    if not isinstance(v, str) or not v or v in (".", "..") or "/" in v or "\\" in v or "\0" in v or len(v) > 200:
        raise ValueError
    return v


# --------------------------------------------------------------------------- tuning (archbench.tuning)

# Recipe keys whose value is a real number (the tunable ones).
TUNABLE = ("lr", "weight_decay", "eps", "beta1", "beta2", "warmup", "label_smoothing")
MAX_TRIALS = 100
Ranges = dict[str, tuple[float, float] | None]


def _range(key: str, text: Any) -> tuple[float, float] | None:
    if text is None:
        return None
    if isinstance(text, str):
        parts = text.split(":")
        if len(parts) != 2:
            raise ValueError(f"{key}'s range {text!r} is not LOW:HIGH")
        try:
            lo, hi = float(parts[0]), float(parts[1])
        except ValueError:
            raise ValueError(f"{key}'s range {text!r} is not LOW:HIGH with two numbers") from None
    elif isinstance(text, (list, tuple)) and len(text) == 2 and \
            all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in text):
        lo, hi = float(text[0]), float(text[1])
    else:
        raise ValueError(f"{key}'s range {text!r} is not [LOW, HIGH]")
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{key}'s range {lo:g}:{hi:g} is empty or not finite: give LOW < HIGH")
    return lo, hi


def parse_tune(value: Any) -> Ranges:
    """``--tune`` as given (``"lr"``, ``"lr,weight_decay=1e-5:1e-2"``, a list
    of such items, or a table ``{lr = [1e-4, 1e-2]}``) as {key: (low, high) or
    None (the default range)}. Raises ValueError naming what is wrong."""
    items: list[tuple[str, Any]] = []
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    if isinstance(value, Mapping):
        items = [(str(k), v) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        for v in value:
            if not isinstance(v, str):
                raise ValueError(f"{v!r} is not a recipe key")
            for part in (p for p in v.split(",") if p.strip()):  # --tune lr,eps=1e-8:1e-6 or --tune lr --tune eps
                key, _, rng = part.partition("=")
                items.append((key, rng or None))
    else:
        raise ValueError(f"{value!r} is not a list of recipe keys")
    out: Ranges = {}
    for key, rng in items:
        key = key.strip()
        if key not in TUNABLE:
            raise ValueError(f"{key!r} cannot be tuned: the tunable recipe keys are {', '.join(TUNABLE)}")
        if key in out:
            raise ValueError(f"{key} is given twice")
        out[key] = _range(key, rng.strip() if isinstance(rng, str) else rng)
    if not out:
        raise ValueError("no key to tune")
    return out




def _tune_convert(v: Any) -> Ranges | None:
    if v is None or v == {}:
        return None
    try:
        return parse_tune(v)
    except ValueError as exc:
        raise UsageError(f"tune = {v!r} is invalid: {exc} (e.g. --tune lr, or --tune lr=1e-4:1e-2,"
                         "weight_decay=0:1e-3).") from None


DEFAULT_MODELS = ("mlp", "cnn")
MAX_REPEATS = 10_000  # seeds 0..N-1 are made as a list: a larger N is a typo (and would not fit in memory)
REPEATS_CHECK = _int_check(1, MAX_REPEATS)
STUDY_CHECKS: dict[str, _Check] = {
    "models": _Check("a non-empty list of model names, module:function references or spec files", _models_convert),
    "seeds": _Check("a non-empty list of distinct integers >= 0, e.g. [0, 1, 2]", _seeds_convert),
    "dataset": _Check("a dataset name (fashion-mnist, mnist, kmnist, digits) or the path of an existing .npz "
                      "file, CIFAR-10/100 python-batch directory or .tar.gz, or image-folder tree "
                      "(train/<class>/*.png, test/<class>/...)", _dataset_convert),
    "val_split": _Check("a fraction of the training images strictly between 0 and 1, e.g. 0.1 (or leave it "
                        "out: no validation split)", _val_split_convert),
    "match": _Check("epochs (every model trains the recipe's epochs), flops (every model trains the same "
                    "training FLOPs) or time (the same seconds of training steps, --budget-seconds)", _match_convert),
    "budget_seconds": _Check("a number of seconds > 0, e.g. 60 (with match time)", _budget_convert),
    "budget_flops": _Check("a number of training FLOPs > 0, e.g. 2e12 (or leave it out: the costliest model's "
                           "--epochs epochs)", _budget_convert),
    "target": _Check("an accuracy strictly between 0 and 1, e.g. 0.85 for 85 % (or leave it out: the lowest "
                     "final mean accuracy among the models)", _target_convert),
    "tune": _Check("recipe keys to tune, each with an optional range: e.g. lr, or lr=1e-4:1e-2", _tune_convert),
    "trials": _int_check(2, MAX_TRIALS, " number of trials per model"),
    "tune_per_seed": _bool_check(),
    "data_dir": _Check("a directory path", _opt_path_convert),
    "verify": _Check("true or false", _bool_check().convert),
    "train_limit": _Check("an integer >= 1 (or leave it out for all samples)", _opt_int_convert),
    "test_limit": _Check("an integer >= 1 (or leave it out for all samples)", _opt_int_convert),
    "out": _Check("a directory path", _str_convert),
    "name": _Check("a directory name without '/' (200 characters at most)", _name_convert),
}
STUDY_DEFAULTS: dict[str, Any] = {
    "models": list(DEFAULT_MODELS), "seeds": [0, 1, 2], "dataset": "fashion-mnist", "data_dir": None, "verify": True,
    "train_limit": None, "test_limit": None, "out": "runs", "name": None, "val_split": None,
    "match": "epochs", "budget_flops": None, "budget_seconds": None, "target": None,
    "tune": None, "trials": 5, "tune_per_seed": False,
}
# Keys stored in results.json (out and name say where the run is, not what it is): every study key but those.
RECORDED_STUDY_KEYS = tuple(k for k in STUDY_DEFAULTS if k not in ("out", "name"))
# Keys recorded only away from their defaults (records made before they existed stay as they were).
RECORDED_IF_GIVEN = ("val_split", "match", "budget_flops", "budget_seconds", "target", "tune", "trials",
                     "tune_per_seed")


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
    match: str = "epochs"            # what every model gets the same of: epochs, or training FLOPs
    budget_flops: float | None = None  # with match "flops": the budget (None: the costliest model's epochs)
    budget_seconds: float | None = None  # with match "time": seconds of training steps for every model
    target: float | None = None      # the accuracy whose cost the report gives (None: the lowest final mean)
    tune: Mapping[str, tuple[float, float] | None] | None = None  # recipe keys tuned per model (archbench.tuning)
    trials: int = 5                  # with tune: trials per model (per seed with tune_per_seed)
    tune_per_seed: bool = False      # with tune: each seed tunes on its own (the choice's noise in the interval)
    # With match "flops", each model's step budget, planned once its FLOPs are measured (archbench.run.budget);
    # not part of the record's config (it follows from it and the measurements).
    budget_steps: Mapping[str, int] = field(default_factory=dict)
    budget_points: Mapping[str, tuple[int, ...]] = field(default_factory=dict)  # steps of the curve's points
    epochs_steps: Mapping[str, int] = field(default_factory=dict)  # the step at the recipe's epochs, evaluated too
    trial_run: bool = False  # runtime: units are tuning trials (validation only: no test set, no saved files)
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
        for key in RECORDED_IF_GIVEN:
            if d[key] == STUDY_DEFAULTS[key]:
                del d[key]
        d["models"], d["seeds"] = list(self.models), list(self.seeds)
        if d.get("tune"):
            d["tune"] = {k: list(v) if v else None for k, v in d["tune"].items()}
        d["specs"] = {k: dict(v) for k, v in self.specs.items()}
        d["train"] = {m: self.train[m].to_dict() for m in self.models}
        omitted = set(RECORDED_IF_GIVEN) - {"val_split"} - set(d)  # their sources too (val_split's always was)
        d["sources"] = {k: (str(v) if not isinstance(v, dict) else {m: {kk: str(s) for kk, s in vv.items()}
                                                                    for m, vv in v.items()})
                        for k, v in self.sources.items()
                        if k == "train" or (k in RECORDED_STUDY_KEYS and k not in omitted)}
        d["notes"] = list(self.notes)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], out: str = "runs", name: str | None = None) -> StudyConfig:
        """A stored configuration (a record's ``config``), checked again
        (the file may have been edited). Checking registers nothing: the
        specs are registered where models are built
        (:func:`archbench.resolve.register_specs`), and whether the dataset
        still exists is checked by :func:`archbench.resolve.resume_config`."""
        known = set(RECORDED_STUDY_KEYS) | {"specs", "train", "sources", "notes"}
        unknown = set(d) - known
        if unknown:
            raise UsageError(f"stored configuration: unknown key(s) {sorted(unknown)}; known: {sorted(known)}.")
        values = {k: check_value(k, d.get(k, STUDY_DEFAULTS[k]), STUDY_CHECKS[k], "stored configuration: ")
                  for k in RECORDED_STUDY_KEYS}
        specs = dict(d.get("specs") or {})
        train_d = d.get("train") or {}
        missing = [m for m in values["models"] if m not in train_d]
        if missing:
            raise UsageError(f"stored configuration: no training options for {missing}.")
        train = {m: TrainConfig.from_dict(train_d[m], f"stored configuration, model {m}: ")
                 for m in values["models"]}
        values.update(models=tuple(values["models"]), seeds=tuple(values["seeds"]), out=out, name=name)
        return cls(train=train, **values,
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
    jobs_given: bool = False           # --jobs or $ARCHBENCH_JOBS given (else a resumed run keeps its jobs)
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
                   jobs=parse_jobs(jobs), jobs_source=jobs_source(jobs),
                   jobs_given=jobs is not None or bool(os.environ.get(ENV_JOBS)), **common)  # type: ignore[arg-type]
