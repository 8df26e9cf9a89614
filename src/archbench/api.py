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
        """One row per model: accuracy statistics and measured costs (base units)."""
        rows = []
        for name, s in self._analysis()["models"].items():
            a = s["accuracy"]
            row = {"model": name, "accuracy_mean": a.get("mean"), "accuracy_std": a.get("std"),
                   "accuracy_ci_low": (a.get("ci") or {}).get("low"),
                   "accuracy_ci_high": (a.get("ci") or {}).get("high"),
                   "n": a.get("n", 0), "failed_units": len(s["failed"])}
            row.update(s["costs"])
            rows.append(row)
        return rows

    def costs(self) -> list[dict]:
        """The cost table: one row per model, base units (counts, bytes, FLOPs, seconds)."""
        return [{"model": n, **s["costs"]} for n, s in self._analysis()["models"].items()]

    def verdicts(self) -> Verdicts:
        """Pairwise accuracy comparisons (higher mean first) as :class:`Verdict`
        objects, differences in percentage points; ``.to_dataframe()`` tabulates them."""
        return Verdicts(Verdict.from_pair(p) for p in self._analysis()["pairs"])

    def bottom_line(self) -> list[str]:
        """The report's bottom line: 2-5 sentences (Markdown)."""
        from archbench.report.conclusions import bottom_line

        return bottom_line(self._analysis(), self.record)

    def to_dataframe(self) -> Any:
        """The summary as a pandas DataFrame (pandas is optional)."""
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


def compare(models: Any, *, seeds: Any = None, dataset: str | None = None, quiet: bool = False,
            timing: bool = True, check_determinism: bool = False, threads: int | str | None = None,
            jobs: int | str | None = None, **options: Any) -> StudyResult:
    """Train and measure ``models`` over ``seeds``; write the run directory;
    return a :class:`StudyResult`.

    ``dataset``: a dataset name (fashion-mnist, mnist, kmnist, digits) or the
    path of your own data (.npz, CIFAR batches, an image-folder tree); the
    models are built for its image shape and classes. ``threads``: CPU
    threads per unit, ``"auto"`` (the default: probed at each unit's start)
    or a number; ``jobs``: units side by side in worker processes, ``"auto"``
    (the default, unless ``$ARCHBENCH_JOBS`` says otherwise: measured, see
    archbench.run.jobs; models given as Python objects train one at a time) or a
    number (models given as Python objects need ``jobs=1``).
    ``options`` are the keys of ``archbench run``: study keys (``data_dir``,
    ``verify``, ``train_limit``, ``test_limit``, ``val_split``, ``out``, ``name``,
    ``match="flops"``, ``budget_flops``, ``target``, ``tune="lr"`` or
    ``tune={"lr": (1e-4, 1e-2)}`` with ``trials`` and ``tune_per_seed``) and
    training keys (``epochs``, ``batch_size``, ``lr``, ``optimizer``, ...).
    An option given here wins over the model's recipe, as on the command line;
    one not given leaves the recipe's value (a zoo model trains with its own
    recipe). Progress bars show (in notebooks too) unless ``quiet``."""
    from archbench.config import ExecutionConfig, Source
    from archbench.resolve import resolve
    from archbench.run.study import RunOptions, run_study

    explicit = dict(options)
    if seeds is not None:
        explicit["seeds"] = [seeds] if isinstance(seeds, int) else list(seeds)
    if dataset is not None:
        explicit["dataset"] = dataset
    with _python_models(models) as names:
        explicit["models"] = names
        cfg = resolve(explicit, source=Source.API)
        execution = ExecutionConfig.build(threads=threads, jobs=jobs, timing=timing,
                                          check_determinism=check_determinism)
        record, run_dir = run_study(cfg, RunOptions(quiet=quiet, notebook=True, execution=execution))
    return StudyResult(record, run_dir)
