"""The main job end to end: ``archbench run`` as ``make run`` runs it, timed
from the command's start to its exit, under several option sets side by side.

Each variant is one ``archbench run`` command line (default: the seed study
over seeds 0,1,2 with ``--jobs 1`` and with ``--jobs auto``); all variants run
in ONE benchmark, interleaved over ``--repeats`` (their order rotates every
repeat), since a shared host's load moves every number together. Printed per
variant: the median wall seconds and range, and where the time went (start-up
until the first unit's costs are measured is not separable from outside, so:
cost measurement, training steps summed over units, the units' wall time, the
rest = start-up + scheduling + report), plus the --jobs decision. Recorded with
it: CPU model, usable cores, torch version, load before and after. JSON goes
to ``benchmarks/results/``.

Usage:  python benchmarks/end_to_end.py [--repeats 3]
        [--variant "--seeds 0,1,2 --jobs 1"] [--variant "..."] [--out benchmarks/results]
A quick check of the script: --variant "--seeds 0 --models mlp --epochs 1 --train-limit 2000" --repeats 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from archbench.env import cpu_model, load_average, usable_cpus
from archbench.run.threads import sample_load

DEFAULT_VARIANTS = ["--seeds 0,1,2 --jobs 1", "--seeds 0,1,2 --jobs auto"]


def run_once(args: str, parent: Path) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(dir=parent))
    cmd = [sys.executable, "-m", "archbench", "run", *shlex.split(args), "--out", str(out), "--quiet"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    record = json.loads(next(out.glob("*/results.json")).read_text())
    units = [u for e in record["models"].values() for u in e["units"]]
    measure = sum(e.get("measure_seconds") or 0 for e in record["models"].values())
    return {
        "wall_seconds": wall,
        "measure_seconds": measure,
        "train_seconds_sum": sum(u["timings"]["train_seconds"] for u in units),
        "unit_wall_seconds_sum": sum(u["timings"]["wall_seconds"] for u in units),
        "threads": {f"{n} seed {u['seed']}": u["threads"]["threads"]
                    for n, e in record["models"].items() for u in e["units"]},
        "jobs_decision": (record.get("execution") or {}).get("jobs_decision"),
        "accuracy": {n: [u["test"]["accuracy"] for u in e["units"]] for n, e in record["models"].items()},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--variant", action="append", default=None,
                    help="archbench run options (repeatable); default: " + " | ".join(DEFAULT_VARIANTS))
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    variants = a.variant or DEFAULT_VARIANTS
    env = {"cpu": cpu_model(), "usable_cores": usable_cpus(), "torch": torch.__version__,
           "load_before": load_average(), "free_cores_before": sample_load()["free_cores"],
           "date": _dt.datetime.now().isoformat(timespec="seconds")}
    print(f"{env['cpu']}, {env['usable_cores']} usable cores, torch {env['torch']}; "
          f"load {env['load_before']}, {env['free_cores_before']} core(s) free", flush=True)
    results: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(a.repeats):
            order = variants[rep % len(variants):] + variants[:rep % len(variants)]
            for v in order:
                r = run_once(v, Path(tmp))
                results[v].append(r)
                d = r["jobs_decision"] or {}
                print(f"  rep {rep} [{v}] {r['wall_seconds']:.1f} s (measure {r['measure_seconds']:.1f}, "
                      f"train {r['train_seconds_sum']:.1f}, jobs {d.get('jobs', '-')})", flush=True)
    env["load_after"] = load_average()
    print(f"\nmedians of {a.repeats} (wall seconds of the whole command):")
    summary = {}
    for v, rs in results.items():
        walls = [r["wall_seconds"] for r in rs]
        med = {k: statistics.median(r[k] for r in rs)
               for k in ("wall_seconds", "measure_seconds", "train_seconds_sum", "unit_wall_seconds_sum")}
        summary[v] = {**med, "min": min(walls), "max": max(walls)}
        print(f"  [{v}] {med['wall_seconds']:.1f} s ({min(walls):.1f}-{max(walls):.1f}); measure "
              f"{med['measure_seconds']:.1f}, training steps {med['train_seconds_sum']:.1f} (summed over units), "
              f"units' wall {med['unit_wall_seconds_sum']:.1f} (summed)")
    base = summary[variants[0]]["wall_seconds"]
    for v in variants[1:]:
        print(f"  [{v}] / [{variants[0]}] = x{summary[v]['wall_seconds'] / base:.2f}")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    path = Path(a.out) / f"end-to-end-cpu{env['usable_cores']}-{_dt.datetime.now():%Y-%m-%d-%H%M%S}.json"
    path.write_text(json.dumps({"environment": env, "variants": variants, "runs": results, "summary": summary},
                               indent=1))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
