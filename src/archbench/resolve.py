"""Resolution: from what was given to one :class:`~archbench.config.StudyConfig`.

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
from (:class:`~archbench.config.Source`); results.json and the report show it.

This module knows the registries (datasets, models): whether a dataset or
model name exists, a model's recipe, a spec file's model. The dataclasses and
their value checks are in :mod:`archbench.config`, which knows none of them.
Registering a study's specs is done where models are built
(:func:`register_specs`); :func:`resolve` registers them too, as the step
that names the models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from archbench.config import (
    FLIP_OPTIONS,
    REPEATS_CHECK,
    STUDY_CHECKS,
    STUDY_DEFAULTS,
    STUDY_WIDE_TRAIN_KEYS,
    TRAIN_CHECKS,
    TRAIN_DEFAULTS,
    TRAIN_KEYS,
    Source,
    StudyConfig,
    TrainConfig,
    check_value,
)
from archbench.errors import UsageError, path_exists

# --------------------------------------------------------------------------- datasets

DATASET_NAMES = ("fashion-mnist", "mnist", "kmnist", "digits")  # the names that are not paths


def check_dataset(value: Any, where: str = "") -> str:
    """A dataset name (kept as given) or a path to the user's data (made
    absolute, so a run resumed from elsewhere finds it). A registered
    dataset name wins over a file of that name in the working directory.
    The value's shape is checked as :data:`archbench.config.STUDY_CHECKS`
    checks it; an unknown name is a UsageError listing the known ones."""
    from archbench.data.registry import list_datasets

    v = check_value("dataset", value, STUDY_CHECKS["dataset"], where)
    if v in list_datasets() or v in DATASET_NAMES:
        return v
    path = Path(v).expanduser()
    if not path_exists(path, f"{where}dataset"):
        known = ", ".join(sorted({*list_datasets(), *DATASET_NAMES}))
        raise UsageError(f"{where}unknown dataset {v!r}: not a dataset name ({known}) and no file or directory of "
                         "that name exists. Give a name, or the path of an .npz file (x_train, y_train, x_test, "
                         "y_test), a CIFAR-10/100 python-batch directory or .tar.gz, or an image-folder tree "
                         "(train/<class>/*.png, test/<class>/...).")
    return str(path.resolve())


def check_study_value(key: str, value: Any, where: str = "") -> Any:
    """One study key's value, checked: its type and range (archbench.config),
    and for ``dataset`` that the name or path exists."""
    if key == "dataset":
        return check_dataset(value, where)
    return check_value(key, value, STUDY_CHECKS[key], where)


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
        n = check_value("repeats", data["repeats"], REPEATS_CHECK, f"{where}: ")
        study["seeds"] = list(range(n))
    for k in STUDY_DEFAULTS:
        if k in data and k != "models":
            v = data[k]
            relative = (k in ("data_dir", "dataset") and isinstance(v, str) and v
                        and not Path(v).expanduser().is_absolute())
            named = k == "dataset" and (v in DATASET_NAMES or v in list_datasets())
            if relative and not named:
                v = str(path.parent / v)  # a path in the file is relative to the file, never to the working dir
            study[k] = check_study_value(k, v, f"{where}: ")
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


def register_specs(cfg: StudyConfig) -> None:
    """Register the declarative specs of ``cfg``'s models, so that they can be
    built by name. Call it where a configuration that was not just resolved
    in this process (one read from a record, or sent to a worker) is about to
    build models; validating one (:meth:`StudyConfig.from_dict`) registers nothing."""
    _register_specs(cfg.specs)


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

    Resolving names the models, so it also registers the specs they are
    defined by (inline in the experiment file, or spec files): the models'
    recipes are read from the registry, and the returned configuration builds
    its models in this process without :func:`register_specs`.
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
            study[k], sources[k] = check_study_value(k, explicit[k]), source
        elif k in file_study:
            study[k], sources[k] = file_study[k], Source.FILE
        else:
            study[k], sources[k] = STUDY_DEFAULTS[k], Source.DEFAULT
    if study["match"] == "time" and study["budget_seconds"] is None:
        raise UsageError("--match time gives every model the same seconds of training steps: say how many with "
                         "--budget-seconds S (e.g. --budget-seconds 60), or budget_seconds in the experiment file.")
    if study["budget_seconds"] is not None and study["match"] != "time":
        raise UsageError(f"a time budget ({study['budget_seconds']:g} s) is for equal-time comparisons: give "
                         "--match time with --budget-seconds (or match = \"time\" in the experiment file), or leave "
                         "the budget out.")
    if study["budget_flops"] is not None and study["match"] != "flops":
        raise UsageError(f"a FLOP budget ({study['budget_flops']:g}) is for equal-compute comparisons: give "
                         "--match flops with --budget-flops (or match = \"flops\" in the experiment file), or leave "
                         "the budget out.")
    notes: list[str] = _tuning_defaults(study, sources)
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
    if study["tune"]:
        from archbench.tuning import trial_values

        for m in models:  # every model's trial values exist and are valid, before anything runs
            trial_values(train[m], study["tune"], study["trials"], m)
    study.update(models=tuple(models), seeds=tuple(study["seeds"]))
    return StudyConfig(train=train, **study,
                       specs=specs,
                       sources=sources, notes=tuple(notes))


def _tuning_defaults(study: dict[str, Any], sources: dict[str, Any]) -> list[str]:
    """Tuning's options checked together: --trials and --tune-per-seed need
    --tune; tuning needs a validation split (0.1 unless given). The notes
    that say what was defaulted."""
    if not study["tune"]:
        given = [k for k in ("trials", "tune_per_seed") if sources[k] != Source.DEFAULT]
        if given:
            raise UsageError(f"{' and '.join('--' + k.replace('_', '-') for k in given)} "
                             f"{'is' if len(given) == 1 else 'are'} for tuning: give --tune KEY too (e.g. --tune lr), "
                             "or leave it out.")
        return []
    if study["val_split"] is None:
        study["val_split"] = 0.1
        return ["tuning: 10 % of the training images are held out as the validation split the trials are scored "
                "on (--val-split sets another fraction)"]
    return []


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
        from archbench.data.cifar import _cifar_dir_kind

        if _cifar_dir_kind(path):
            return path.name, True
    return path.name, None


def resume_config(stored: Mapping[str, Any], explicit: Mapping[str, Any] | None = None,
                  where: str = "") -> StudyConfig:
    """The stored configuration of a run to resume. An explicit option whose
    value differs from the stored one is refused, naming it: a resumed run
    finishes the study it started. The stored dataset must still exist (a
    path is checked again); the specs are not registered here: running the
    study registers them (:func:`register_specs`)."""
    try:
        cfg = StudyConfig.from_dict(stored)
    except UsageError as exc:  # the record was edited: bad input data, named by its file
        from archbench.records import RecordError

        raise RecordError(f"{Path(where) / 'results.json' if Path(where).is_dir() else where}: {exc}") from None
    cfg = replace(cfg, dataset=check_dataset(cfg.dataset, "stored configuration: "))
    explicit = dict(explicit or {})
    for k in ("out", "name"):
        if k in explicit:
            raise UsageError(f"--{k} does not apply with --resume: the run directory is given by --resume.")
    diffs = []
    for k, v in explicit.items():
        if k in STUDY_CHECKS:
            given = check_study_value(k, v)
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
