"""Experiment files: a whole study in one TOML file.

    name = "zoo"                  # run directory name (default: a timestamp)
    out = "runs"
    dataset = "fashion-mnist"
    data_dir = "/data/fashion"    # optional; as --data-dir
    verify = true
    seeds = [0, 1, 2]             # or: repeats = 3
    train_limit = 10000           # optional subsets, as --train-limit/--test-limit
    test_limit = 2000

    [train]                       # training options for every model (the seed recipe by default)
    epochs = 5
    batch_size = 64

    [[models]]
    name = "mlp"                  # registry name, package.module:function, or a spec file *.toml

    [[models]]
    name = "small_cnn"
    spec = { layers = [ ... ] }   # or spec_file = "small_cnn.toml"
    train = { epochs = 3 }        # options for this model only

Precedence for each model: the defaults (the seed recipe) < the model's
registered recipe (zoo models) < ``[train]`` < the model's own ``train``.
Every key is checked: an unknown key is an error naming it and the allowed
ones. Every command-line option of ``archbench run`` has its key here.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from archbench.errors import UsageError, read_toml
from archbench.data.registry import get_dataset_spec
from archbench.models.registry import recipe_of
from archbench.models.spec import load_spec_file
from archbench.train.config import TrainConfig

TOP_KEYS = {"name", "out", "dataset", "data_dir", "verify", "seeds", "repeats", "train_limit", "test_limit",
            "train", "models"}
MODEL_KEYS = {"name", "spec", "spec_file", "train"}
TRAIN_KEYS = {f.name for f in fields(TrainConfig)}


def _check_keys(table: dict, allowed: set, where: str, path: Path) -> None:
    unknown = set(table) - allowed
    if unknown:
        raise UsageError(f"{path}: unknown key(s) {sorted(unknown)} in {where}; allowed: {', '.join(sorted(allowed))}.")


def _check_train(table, where: str, path: Path) -> dict:
    if not isinstance(table, dict):
        raise UsageError(f"{path}: {where} must be a table of training options, got {table!r}.")
    _check_keys(table, TRAIN_KEYS, where, path)
    try:
        TrainConfig.from_dict({**TrainConfig().to_dict(), **table}).validate()
    except UsageError as exc:
        raise UsageError(f"{path}: {where}: {exc}") from None
    return dict(table)


# Recipe options that assume the classes survive a mirror image (true of clothes).
FLIP_OPTIONS = ("augment_flip", "tta_flip")


def resolve_models(models: list[str], explicit_train: dict, per_model: dict | None = None,
                   dataset: str = "fashion-mnist") -> dict:
    """model -> training options over the base config: each model's registered
    recipe, minus the options set explicitly for all models, plus its own.
    The registered recipes were tuned on Fashion-MNIST: on a dataset whose
    classes change in a mirror image (digits, characters) their flips are left out."""
    per_model = per_model or {}
    drop = set(explicit_train)
    if not get_dataset_spec(dataset).mirror_symmetric:
        drop |= set(FLIP_OPTIONS)
    out = {}
    for m in models:
        opts = {k: v for k, v in recipe_of(m).items() if k not in drop}
        opts.update(per_model.get(m, {}))
        if opts:
            out[m] = opts
    return out


def load_experiment(path: str | Path, dataset: str | None = None):
    """A StudyConfig from an experiment file (see the module docstring);
    ``dataset`` (a command-line override) replaces the file's before the
    models' recipes are resolved for it."""
    from archbench.study import StudyConfig

    path = Path(path)
    data = read_toml(path, "experiment file")
    _check_keys(data, TOP_KEYS, "the top level", path)
    models_t = data.get("models")
    if not isinstance(models_t, list) or not models_t:
        raise UsageError(f"{path}: expected at least one [[models]] table with a 'name'.")
    if "seeds" in data and "repeats" in data:
        raise UsageError(f"{path}: give either 'seeds' or 'repeats', not both.")
    seeds = data.get("seeds", list(range(data["repeats"])) if "repeats" in data else [0])
    if not (isinstance(seeds, list) and seeds and all(isinstance(s, int) and s >= 0 for s in seeds)):
        raise UsageError(f"{path}: seeds = {seeds!r} is invalid: expected a list of integers >= 0, e.g. [0, 1, 2].")
    base_train = _check_train(data.get("train", {}), "[train]", path)
    names, specs, per_model = [], {}, {}
    for i, m in enumerate(models_t):
        where = f"[[models]] #{i + 1}"
        if not isinstance(m, dict) or not isinstance(m.get("name"), str):
            raise UsageError(f"{path}: {where} needs a 'name' (a registry name, module:function or spec file).")
        _check_keys(m, MODEL_KEYS, where, path)
        name = m["name"]
        if "spec" in m and "spec_file" in m:
            raise UsageError(f"{path}: {where} ({name}) gives both 'spec' and 'spec_file'; keep one.")
        if "spec" in m:
            specs[name] = m["spec"]
        elif "spec_file" in m:
            specs[name] = load_spec_file(path.parent / m["spec_file"])[1]
        elif name.endswith(".toml"):
            name = str(path.parent / name)
        if "train" in m:
            per_model[name] = _check_train(m["train"], f"{where} ({name}) train", path)
        names.append(name)
    for lim in ("train_limit", "test_limit"):
        v = data.get(lim)
        if v is not None and (not isinstance(v, int) or v < 1):
            raise UsageError(f"{path}: {lim} = {v!r} is invalid: expected an integer >= 1.")
    train = TrainConfig.from_dict({**TrainConfig().to_dict(), **base_train})
    data_dir = data.get("data_dir")
    if data_dir is not None:
        data_dir = str((path.parent / data_dir) if not Path(data_dir).is_absolute() else data_dir)
    cfg = StudyConfig(
        models=names, seeds=seeds, train=train, dataset=dataset or data.get("dataset", "fashion-mnist"),
        data_dir=data_dir,
        verify=bool(data.get("verify", True)), train_limit=data.get("train_limit"),
        test_limit=data.get("test_limit"), out=str(data.get("out", "runs")), name=data.get("name"),
        specs=specs,
    )
    for name, spec in specs.items():  # specs must be known before recipes are looked up
        from archbench.models.registry import register_spec

        register_spec(name, spec)
    cfg.model_train = resolve_models(names, base_train, per_model, cfg.dataset)
    return cfg
