"""Checks of a run's data card that the report and the run itself warn about."""

from __future__ import annotations


def missing_class_warnings(ds: dict) -> list[str]:
    """Splits that hold no image of some class (a --train-limit/--test-limit
    takes the first images, and a folder's are ordered by class)."""
    classes = ds.get("classes") or []
    out = []
    for split, counts in (ds.get("class_counts") or {}).items():
        empty = [classes[i] if i < len(classes) else str(i) for i, n in enumerate(counts) if n == 0]
        if empty and sum(counts):
            shown = ", ".join(map(str, empty[:10])) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
            what = {"train": "the models never saw them", "val": "the validation curves leave them out",
                    "test": "the test accuracy says nothing about them"}.get(split, "")
            out.append(f"The {split} split holds no image of {len(empty)} of {len(counts)} classes ({shown}): "
                       f"{what}" + (" (a --train-limit/--test-limit keeps the first images, in the data's order)"
                                    if split != "val" else ""))
    return out
