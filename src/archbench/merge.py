"""Merging saved runs (e.g. from different machines or days) into one record."""

from __future__ import annotations

from archbench.errors import UsageError
from archbench.records import SCHEMA


def merge_records(records: list[dict], name: str) -> dict:
    """One record holding every model of every run. Runs must share the
    dataset and its test set (same name, size, labels and classes), or the
    paired statistics would compare different things. A model name used by
    two runs becomes ``model@run``."""
    if not records:
        raise UsageError("compare needs at least one run directory.")
    base = records[0]
    keys = ("name", "test_samples", "classes", "test_labels")
    for rec in records[1:]:
        for k in keys:
            a, b = base["dataset"].get(k), rec["dataset"].get(k)
            if a != b:
                shown = (f"{a!r} vs {b!r}" if k != "test_labels" else "the test labels differ")
                raise UsageError(
                    f"runs {base['name']!r} and {rec['name']!r} are incompatible: dataset {k} — {shown}. "
                    "Only runs on the same dataset and test set can be compared."
                )
    counts: dict[str, int] = {}
    for rec in records:
        for m in rec["models"]:
            counts[m] = counts.get(m, 0) + 1
    merged = {
        "schema": SCHEMA,
        "name": name,
        "merged_from": [r["name"] for r in records],
        "config": base["config"],
        "configs": {r["name"]: r["config"] for r in records},
        "environment": base["environment"],
        "environments": {r["name"]: r["environment"] for r in records},
        "dataset": base["dataset"],
        "device": ", ".join(sorted({str(r.get("device")) for r in records})),
        "models": {},
    }
    for rec in records:
        for m, entry in rec["models"].items():
            key = m if counts[m] == 1 else f"{m}@{rec['name']}"
            if key in merged["models"]:
                raise UsageError(f"run name {rec['name']!r} appears twice; compare distinct runs.")
            merged["models"][key] = entry
    return merged
