"""Are two runs' numbers the same to the bit? For refactors: every unit's
test loss, accuracy and predictions, every epoch's losses and accuracies, and
every measured cost except times (timings, probes, peak RSS and other
process-dependent figures are listed, not compared).

    python benchmarks/same_numbers.py runs/before runs/after

Exit 0 when identical, 1 otherwise (each difference printed)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Keys whose values depend on the clock or the process, not on the arithmetic.
VOLATILE = {"speed", "process_peak_rss_bytes", "measure_seconds", "timings", "host", "threads", "seconds",
            "eval_seconds", "created", "environment", "name", "jobs_decision", "execution", "side_by_side",
            "files", "data_dir", "files_dir", "storage_detail"}


def diff(a: Any, b: Any, path: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for k in sorted(set(a) | set(b)):
            if k in VOLATILE:
                continue
            if k not in a or k not in b:
                out.append(f"{path}.{k}: only in {'after' if k in b else 'before'}")
                continue
            out += diff(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {len(a)} items before, {len(b)} after"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} before, {b!r} after"]


def main(before: str, after: str) -> int:
    a = json.loads((Path(before) / "results.json").read_text())
    b = json.loads((Path(after) / "results.json").read_text())
    found = diff({k: a.get(k) for k in ("config", "dataset", "models")},
                 {k: b.get(k) for k in ("config", "dataset", "models")})
    for line in found[:50]:
        print(line)
    units = sum(len(e["units"]) for e in b["models"].values())
    print(f"{'identical' if not found else f'{len(found)} differences'}: {len(b['models'])} models, {units} units "
          "(test loss, accuracy, predictions, every epoch's losses and accuracies, every measured cost but times)")
    for m, e in b["models"].items():
        for u in e["units"]:
            if u.get("status") == "ok":
                print(f"  {m} seed {u['seed']}: test accuracy {u['test']['accuracy']!r}, loss {u['test']['loss']!r}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
