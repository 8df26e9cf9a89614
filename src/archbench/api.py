"""The Python API, equal to the CLI: ``archbench.compare([...])`` resolves its
arguments through the same :func:`archbench.resolve.resolve` as ``archbench
run`` (so recipes apply exactly as there), runs the study, and returns a
result that tabulates itself (and renders inline in Jupyter);
``archbench.load_run(path)`` returns the same result for a saved run.

    >>> import archbench
    >>> r = archbench.compare(["mlp", "cnn", "dct_cnn"], seeds=[0, 1, 2], epochs=3)
    >>> r.to_dataframe()        # accuracy with intervals and every cost, one row per model
    >>> r.verdicts()            # the pairwise comparisons the report draws its conclusions from

Models may be registry names, ``module:callable`` strings, spec files,
zero-argument callables (a function or a class), or ``nn.Module`` instances;
a dict ``{name: model}`` names them. An instance is a template: each unit
trains a deep copy whose parameters were re-initialised from the unit's seed
by calling every submodule's ``reset_parameters()`` (so seeds differ as they
would for a freshly built model). An instance with parameters that no
``reset_parameters()`` covers, or with frozen parameters (which re-initialising
would overwrite), is refused: pass a callable that builds the model instead.

The call leaves no global state behind: torch's thread count and ``sys.path``
are restored, plots are drawn without pyplot, and models given as Python
objects are known to the registry only while the call runs.
"""

from __future__ import annotations

import copy
import html
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from archbench.errors import ModelError, UsageError
from archbench.records import RunRecord


@dataclass(frozen=True)
class Verdict:
    """One pairwise accuracy comparison, ``a`` the model with the higher mean.
    Differences in percentage points; ``winner`` is the architecture called
    more accurate (None unless both have 2 or more seeds and the interval
    excludes 0); ``observed_winner`` the one ahead under the test used, whatever
    its scope (with one seed: about the two trained networks only)."""

    a: str
    b: str
    difference_pp: float
    ci_low_pp: float
    ci_high_pp: float
    p_value: float
    test: str
    scope: str
    seeds_a: int
    seeds_b: int
    winner: str | None
    observed_winner: str | None
    architecture_verdict: bool
    probability_of_improvement: float | None
    seed_pairs: int | None
    text: str

    @classmethod
    def from_pair(cls, p: dict[str, Any]) -> Verdict:
        ci, poi = p["difference_ci"], p.get("probability_of_improvement") or {}
        return cls(p["a"], p["b"], 100 * p["difference"], 100 * ci["low"], 100 * ci["high"], p["p_value"],
                   p["test"], p["scope"], p["seeds_a"], p["seeds_b"], p["winner"], p.get("observed_winner"),
                   bool(p.get("architecture_verdict")), poi.get("value"), poi.get("pairs"), p["verdict"])


class Verdicts(list):
    """The pairwise verdicts (a list of :class:`Verdict`), also as a DataFrame."""

    def to_dataframe(self) -> Any:
        import dataclasses

        return _frame([dataclasses.asdict(v) for v in self]).set_index(["a", "b"])


def _frame(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError("to_dataframe() needs pandas: pip install pandas "
                          "(or use the list of rows itself)") from exc
    return pd.DataFrame(rows)


@dataclass
class StudyResult:
    record: RunRecord
    run_dir: Path

    def _analysis(self) -> dict:
        from archbench.report import analyze

        if not hasattr(self, "_an"):
            self._an = analyze(self.record)
        return self._an

    def summary(self) -> list[dict]:
        """One row per model, the columns of ``tables/comparison.csv`` (the unit in
        each name: ``_frac`` a fraction, ``_bytes``, ``_flops``, ``_s``, ``_count``),
        and ``errors``: why its failed units failed (empty when none did)."""
        from archbench.report.exports import comparison_table

        cols, rows = comparison_table(self.record, self._analysis())
        failed = self.failures()
        return [{**dict(zip(cols, r)), "errors": "; ".join(f"seed {f['seed']}: {f['error']}" for f in failed
                                                            if f["model"] == r[0])} for r in rows]

    def failures(self) -> list[dict]:
        """The units that failed: model, seed and the error (as the report's 'Failed units')."""
        return [{"model": name, "seed": u["seed"], "error": u.get("error") or "unknown error"}
                for name, entry in self.record["models"].items() for u in entry["units"] if u["status"] != "ok"]

    def costs(self) -> list[dict]:
        """Every measured cost, one row per model: the columns of ``tables/costs.csv`` (base units)."""
        from archbench.report.exports import costs_table

        cols, rows = costs_table(self.record)
        return [dict(zip(cols, r)) for r in rows]

    def verdicts(self) -> Verdicts:
        """Pairwise accuracy comparisons (higher mean first) as :class:`Verdict`
        objects, differences in percentage points; ``.to_dataframe()`` tabulates them."""
        return Verdicts(Verdict.from_pair(p) for p in self._analysis()["pairs"])

    def bottom_line(self) -> list[str]:
        """The report's bottom line: 2-5 sentences (Markdown)."""
        from archbench.report.conclusions import bottom_line

        return bottom_line(self._analysis(), self.record)

    def to_dataframe(self) -> Any:
        """The summary as a pandas DataFrame, indexed by model (pandas is optional)."""
        return _frame(self.summary()).set_index("model")

    def _report_link(self) -> str:
        """report.html relative to the working directory where it can be (a notebook serves files from there)."""
        import os

        path = self.run_dir / "report.html"
        try:
            return os.path.relpath(path)
        except ValueError:
            return str(path)

    def _repr_html_(self) -> str:
        import re

        from archbench.report import TABLE_HEAD, comparison_rows

        def para(s: str) -> str:
            return "<p>" + re.sub(r"[*][*](.+?)[*][*]", r"<b>\1</b>", html.escape(s)).replace("`", "") + "</p>"

        lines = "".join(para(s) for s in self.bottom_line())
        head = "".join(f"<th>{html.escape(h)}</th>" for h in TABLE_HEAD)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in comparison_rows(self.record, self._analysis()))
        link = html.escape(self._report_link())
        return (f"<div><div>{lines}</div><p><strong>archbench run {html.escape(self.record['name'])}</strong>: "
                f"<a href=\"{link}\" target=\"_blank\">the full report</a> ({link})</p>"
                f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")

    def __repr__(self) -> str:
        from archbench.report.terminal import terminal_summary

        return terminal_summary(self.record, self.run_dir, analysis=self._analysis())


def load_run(path: str | Path) -> StudyResult:
    """The result of a saved run (a run directory or its results.json)."""
    from archbench.records import load_record

    p = Path(path)
    return StudyResult(load_record(p), p if p.is_dir() else p.parent)


def _reinitialised(template: nn.Module, name: str) -> Callable[[], nn.Module]:
    """A factory of deep copies of ``template`` with every parameter
    re-initialised by its module's reset_parameters() (from torch's global
    RNG, which the unit seeds)."""
    frozen = [n for n, p in template.named_parameters() if not p.requires_grad]
    if frozen:
        raise ModelError(f"model {name!r} (an nn.Module instance) has frozen parameters ({', '.join(frozen[:4])}"
                         f"{', ...' if len(frozen) > 4 else ''}) that re-initialising per seed would overwrite; "
                         "pass a zero-argument callable that builds the model instead (e.g. its class).")

    def reset(m: nn.Module) -> set[int]:
        covered: set[int] = set()
        for sub in m.modules():
            fn = getattr(sub, "reset_parameters", None) or getattr(sub, "_reset_parameters", None)
            if callable(fn):
                fn()
                covered |= {id(p) for p in sub.parameters(recurse=False)}
        return covered

    probe = copy.deepcopy(template)
    covered = reset(probe)
    missing = [n for n, p in probe.named_parameters() if id(p) not in covered]
    if missing:
        raise ModelError(f"model {name!r} (an nn.Module instance): no reset_parameters() re-initialises "
                         f"{', '.join(missing[:4])}{', ...' if len(missing) > 4 else ''}, so every seed would "
                         "start from the same weights; pass a zero-argument callable that builds the model "
                         "instead (e.g. its class), or give that module a reset_parameters().")

    def build() -> nn.Module:
        m = copy.deepcopy(template)
        reset(m)
        return m

    return build


@contextmanager
def _python_models(models: Any) -> Iterator[list[str]]:
    """Model names for ``models``; callables and instances are registered
    for the duration of the block."""
    from archbench.models.registry import list_models, register_object, unregister_object

    items: list[tuple[str | None, Any]]
    if isinstance(models, Mapping):
        items = list(models.items())
    elif isinstance(models, (str, nn.Module)) or callable(models):
        items = [(None, models)]
    else:
        try:
            items = [(None, m) for m in models]
        except TypeError:
            raise UsageError(f"models must be a list of models or a dict {{name: model}}, got {models!r}.") from None
    names: list[str] = []
    registered: list[str] = []
    try:
        for given, obj in items:
            if isinstance(obj, str) and given is None:
                names.append(obj)
                continue
            if isinstance(obj, nn.Module):
                name = given or type(obj).__name__
                factory = _reinitialised(obj, name)
            elif callable(obj):
                name = given or getattr(obj, "__name__", None) or type(obj).__name__
                factory = obj
            else:
                raise UsageError(f"model {obj!r}: expected a registry name, 'module:callable', a spec file, "
                                 "a zero-argument callable or an nn.Module instance.")
            if not isinstance(name, str) or not name or name in list_models() or name in registered:
                raise UsageError(f"model name {name!r} is taken (by a registered model or another model in this "
                                 "call); name them: compare({'my_net': MyNet, ...}).")
            register_object(name, factory)
            registered.append(name)
            names.append(name)
        yield names
    finally:
        for name in registered:
            unregister_object(name)


class UnitsFailedWarning(UserWarning):
    """Some (model, seed) units failed; the result holds the rest. As the
    command line's exit status 4: the run finished, not every unit did."""


def _experiment_file(models: Any) -> Any:
    """The loaded experiment file when ``models`` names one (a .toml file
    that is not a model spec: a spec has a [model] table), else None."""
    import os

    if not isinstance(models, (str, os.PathLike)) or not str(models).endswith(".toml"):
        return None
    path = Path(models)
    if not path.is_file():
        return None
    from archbench.errors import read_toml
    from archbench.resolve import load_experiment

    return None if "model" in read_toml(path, "experiment file") else load_experiment(path)


def _mlflow_uri(mlflow: str | bool | None, out: Path) -> str | None:
    """The tracking URI for ``mlflow=`` (True: the default store in ``out``;
    a directory: a SQLite store in it), checked now, as ``--mlflow``."""
    if mlflow is None or mlflow is False:
        return None
    from archbench.run.tracking import probe, store_uri

    uri, note = store_uri("default" if mlflow is True else str(mlflow), out)
    if mlflow is True:
        out.mkdir(parents=True, exist_ok=True)
    if note:
        import warnings

        warnings.warn(note, stacklevel=3)
    probe(uri)
    return uri


def _warn_failures(result: StudyResult) -> None:
    import warnings

    failed = result.failures()
    if failed:
        lines = "\n".join(f"  {f['model']} seed {f['seed']}: {f['error']}" for f in failed)
        warnings.warn(UnitsFailedWarning(
            f"{len(failed)} unit(s) failed; the result holds the others (result.failures(), the 'errors' column of "
            f"result.to_dataframe(), and the report's 'Failed units'):\n{lines}"), stacklevel=3)


def compare(models: Any = None, *, seeds: Any = None, dataset: str | None = None, quiet: bool = False,
            timing: bool = True, check_determinism: bool = False, threads: int | str | None = None,
            jobs: int | str | None = None, executor: str = "local", address: str | None = None,
            cpus_per_unit: int | None = None, gpus_per_unit: float = 0.0, max_retries: int = 2,
            mlflow: str | bool | None = None, mlflow_experiment: str | None = None,
            resume: str | Path | None = None, **options: Any) -> StudyResult:
    """Train and measure ``models`` over ``seeds``; write the run directory;
    return a :class:`StudyResult`. As ``archbench run``, with its meaning
    and its errors.

    ``models``: a list of models (see the module docstring), or the path of
    an experiment file (``compare("exp.toml")``: the arguments given here win
    over it, as options on the command line). ``dataset``: a dataset name
    (fashion-mnist, mnist, kmnist, digits) or the path of your own data (.npz,
    CIFAR batches, an image-folder tree); the models are built for its image
    shape and classes. ``threads``: CPU threads per unit, ``"auto"`` (the
    default: probed at each unit's start) or a number; ``jobs``: units side by
    side in worker processes, ``"auto"`` (the default, unless
    ``$ARCHBENCH_JOBS`` says otherwise: measured, see archbench.run.jobs;
    models given as Python objects train one at a time) or a number (models
    given as Python objects need ``jobs=1``). ``executor="ray"`` (with
    ``address``, ``cpus_per_unit``, ``gpus_per_unit``, ``max_retries``) runs
    each unit as a Ray task. ``mlflow``: True (a SQLite store in ``out``), a
    tracking URI, or a directory (a SQLite store in it); ``mlflow_experiment``
    its experiment (default: the experiment file's name, else archbench).
    ``resume``: a run directory to continue (its stored configuration is used;
    give no models). ``options`` are the keys of ``archbench run``: study keys
    (``data_dir``, ``verify``, ``train_limit``, ``test_limit``, ``val_split``,
    ``out``, ``name``, ``match="flops"``, ``budget_flops``, ``target``,
    ``tune="lr"`` or ``tune={"lr": (1e-4, 1e-2)}`` with ``trials`` and
    ``tune_per_seed``) and training keys (``epochs``, ``batch_size``, ``lr``,
    ``optimizer``, ...). An option given here wins over the model's recipe, as
    on the command line; one not given leaves the recipe's value (a zoo model
    trains with its own recipe). Progress shows (in notebooks too: one line per
    unit-epoch without ipywidgets) unless ``quiet``. Units that fail are
    recorded and raise a :class:`UnitsFailedWarning` naming each with its error."""
    from archbench.config import ExecutionConfig, Source
    from archbench.resolve import resolve, resume_config
    from archbench.run.study import RunOptions, run_study

    explicit = dict(options)
    if seeds is not None:
        explicit["seeds"] = [seeds] if isinstance(seeds, int) else list(seeds)
    if dataset is not None:
        explicit["dataset"] = dataset
    experiment = _experiment_file(models)
    if resume is not None and models is not None:
        raise UsageError("give models or resume=RUN_DIR, not both (a run stores its configuration).")
    if resume is None and models is None:
        raise UsageError("compare() needs models (a list, a dict {name: model}, or an experiment file), or "
                         "resume=RUN_DIR.")
    if executor == "ray":
        from archbench.run.executors import require_ray

        require_ray()
    with _python_models([] if experiment is not None or models is None else models) as names:
        if resume is not None:
            from archbench.records import load_record

            cfg = resume_config(load_record(resume)["config"], explicit, where=str(resume))
        else:
            if experiment is None:
                explicit["models"] = names
            cfg = resolve(explicit, experiment=experiment, source=Source.API)
        out = Path(resume).parent if resume is not None else Path(cfg.out)
        execution = ExecutionConfig.build(
            executor=executor, threads=threads, jobs=jobs, cpus_per_unit=cpus_per_unit, address=address,
            gpus_per_unit=gpus_per_unit, max_retries=max_retries, mlflow_uri=_mlflow_uri(mlflow, out),
            mlflow_experiment=mlflow_experiment or (experiment.path.stem if experiment is not None else "archbench"),
            timing=timing, check_determinism=check_determinism)
        record, run_dir = run_study(cfg, RunOptions(quiet=quiet, notebook=True, resume=resume,
                                                    execution=execution))
    result = StudyResult(record, run_dir)
    _warn_failures(result)
    return result


class Profile:
    """One model's costs without training, as ``archbench profile`` prints
    them (the same record): ``layers`` (the per-layer table), ``measurements``
    (parameters, FLOPs per phase, memory, saved sizes, speed), ``record``."""

    def __init__(self, record: dict[str, Any]):
        self.record = record
        self.layers: list[dict[str, Any]] = record.get("layers") or []  # empty if they could not be counted
        self.layers_error: str | None = record.get("layers_error")
        self.measurements: dict[str, Any] = record["measurements"]

    def __repr__(self) -> str:
        from archbench.report.profile import render_profile

        return render_profile(self.record)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(repr(self))}</pre>"

    def to_dataframe(self) -> Any:
        """The per-layer table (layer, type, output shape, params, MACs, FLOPs) as a DataFrame."""
        frame = _frame(self.layers)
        return frame.set_index("layer") if self.layers else frame


def profile(model: Any, input_size: tuple[int, ...] | None = None, *, num_classes: int | None = None,
            batch_size: int | None = None, epochs: int | None = None, dataset: str | None = None,
            data_dir: str | None = None, device: str = "auto", train_samples: int | None = None,
            timing: bool = True) -> Profile:
    """The costs of ``model`` without training it -- torchinfo's ``summary``
    and more: per-layer output shapes, parameters, MACs and FLOPs; FLOPs per
    inference and per training step by phase; measured peak training memory;
    saved sizes; latency, throughput and step time (``timing``). The same
    numbers as ``archbench profile``.

    ``model``: a registry name, ``module:callable``, a spec file, a
    zero-argument callable or an ``nn.Module`` (profiled as given: a copy is
    measured). ``input_size``: one sample's shape (C, H, W), e.g. (1, 28, 28);
    default: the model's own. ``num_classes``: default the model's output
    width for a Python model, else 10. ``dataset``: build it for that
    dataset's images instead. The training step is the model's recipe's
    (``batch_size``, ``epochs`` override it)."""
    from archbench.profiling import profile_record

    shape = tuple(input_size) if input_size is not None else None
    if shape is not None and (not shape or not all(isinstance(d, int) and d > 0 for d in shape)):
        raise UsageError(f"input_size {input_size!r} is invalid: expected one sample's shape, e.g. (1, 28, 28) "
                         "(channels, height, width; no batch dimension).")
    given: Any = model
    if isinstance(model, nn.Module):
        template = model
        given = {type(model).__name__: lambda: copy.deepcopy(template)}
    elif callable(model) and not isinstance(model, str):
        given = {getattr(model, "__name__", type(model).__name__): model}
    with _python_models(given if isinstance(given, Mapping) else [given]) as names:
        python_model = not isinstance(model, str) and (isinstance(model, nn.Module) or callable(model))
        if num_classes is None and python_model and shape is not None and dataset is None:
            num_classes = _output_width(model, shape)
        record = profile_record(names[0], device=device, batch_size=batch_size, epochs=epochs, dataset=dataset,
                                data_dir=data_dir, input_shape=shape, num_classes=num_classes,
                                train_samples=train_samples, timing=timing)
    return Profile(record)


def _output_width(model: Any, shape: tuple[int, ...]) -> int | None:
    """The last dimension of a Python model's output for one zero sample (None if it does not run)."""
    import torch

    try:
        m = copy.deepcopy(model) if isinstance(model, nn.Module) else model()
        m.eval()
        with torch.no_grad():
            out = m(torch.zeros(2, *shape))
        return int(out.shape[-1])
    except Exception:  # noqa: BLE001 - profile_record's own check names what is wrong
        return None
