"""A page for all runs: ``RUNS_DIR/index.html``.

One self-contained file (no external requests; works from ``file://``):
every run under RUNS_DIR with its date, dataset, training and test images
(a run limited by --train-limit/--test-limit is marked), models, best
accuracy per model and device, linked to its report; sortable columns;
select runs to see their models side by side (accuracy with its interval and
every cost) and on an accuracy-vs-cost scatter: one scatter per test set
(dataset and test images), with a warning when the selected runs were tested
on different data, since their accuracies do not share an axis. The page's state lives in the URL fragment
(``#sort=created:desc&select=run1,run2&cost=params``), so a view can be
bookmarked or shared.
"""

from __future__ import annotations

import json
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any

from archbench.errors import ArchbenchError
from archbench.records import RunRecord, atomic_write_text, load_record, lookup, ok_units
from archbench.report.analysis import correctness_by_seed, model_costs
from archbench.stats import accuracy_summary


def run_summary(record: RunRecord, run_dir: Path, root: Path) -> dict[str, Any]:
    n_test = lookup(record, "dataset", "test_samples") or 0
    seeds = record["config"].get("seeds") or []
    models = []
    for name, entry in record["models"].items():
        accs = [u["test"]["accuracy"] for u in ok_units(entry) if "test" in u]
        correct = correctness_by_seed(record, name)  # the report's interval: seeds and test images
        a = accuracy_summary(accs, n_test, correct=correct[0] if correct else None)
        models.append({"name": name, "acc": a.get("mean") if accs else None,
                       "low": lookup(a, "ci", "low") if accs else None,
                       "high": lookup(a, "ci", "high") if accs else None, "n": len(accs),
                       "units": len(entry["units"]), **model_costs(entry)})
    expected = len(seeds) if isinstance(seeds, list) else 0
    complete = all(m["n"] >= expected for m in models) and bool(models)
    created = record.get("created")
    if not created:
        import datetime

        mtime = (run_dir / "results.json").stat().st_mtime
        created = datetime.datetime.fromtimestamp(mtime, datetime.UTC).isoformat(timespec="seconds")
    report = run_dir / "report.html"
    cfg, dataset = record["config"], lookup(record, "dataset", "name")
    return {"name": record["name"], "dir": os.path.relpath(run_dir, root), "created": created,
            "dataset": dataset, "device": record.get("device"),
            # Accuracies share an axis only within one test set: the dataset and its test images.
            "test_set": f"{dataset or 'unknown dataset'}, {n_test:,} test images",
            "train_images": lookup(record, "dataset", "train_samples"), "test_images": n_test or None,
            "limited": bool(cfg.get("train_limit") or cfg.get("test_limit")),
            "seeds": seeds if isinstance(seeds, list) else [], "complete": complete,
            "report": os.path.relpath(report, root) if report.exists() else None, "models": models}


def collect_runs(root: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Summaries of the runs directly under ``root``, and notes on the
    directories that hold an unreadable results.json."""
    runs, skipped = [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if not (d / "results.json").is_file():
            continue
        try:
            runs.append(run_summary(load_record(d), d, root))
        except (ArchbenchError, OSError, KeyError, TypeError, ValueError) as exc:
            skipped.append(f"{d.name}: {exc}")
    return runs, skipped


def _finite(v: Any) -> Any:
    """``v`` with non-finite floats as None (JSON has no NaN)."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def page_template() -> str:
    """The page, with ``__DATA__`` where the runs' JSON goes: index_template.html,
    shipped with the package."""
    return resources.files("archbench.report").joinpath("index_template.html").read_text(encoding="utf-8")


def write_index(runs_dir: str | Path) -> tuple[Path, int, int]:
    """Write ``RUNS_DIR/index.html``; returns its path, the number of runs
    listed and the number of unreadable ones (named on the page)."""
    root = Path(runs_dir)
    runs, skipped = collect_runs(root)
    data = json.dumps(_finite({"title": f"archbench runs in {root}", "runs": runs, "skipped": skipped}),
                      allow_nan=False, default=str)
    # "<" escaped as JSON allows: no "</script>" or "<!--" can end or confuse the script element.
    page = page_template().replace("__DATA__", data.replace("<", "\\u003c"))
    path = root / "index.html"
    atomic_write_text(path, page)
    return path, len(runs), len(skipped)
