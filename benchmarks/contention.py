"""Training under contention: the seed study quiet and with one core kept busy.

Trains the seed study (models mlp and cnn, one seed, the exact recipe: 5
epochs, batch 64, Adam) through archbench's local executor
(``archbench.run.study.run_units_locally``, as ``archbench run`` does; no cost
measurement) under each condition:

  load     quiet, or one core kept busy by a ``while True`` process that this
           script starts itself (pinned to the last usable core where the OS
           allows it) and stops after the condition
  threads  1, all usable cores (``--threads N``), and ``auto`` (the policy:
           free cores, then a probe of each unit's own step); with
           ``--keras-python PY``, also the notebook's Keras fit() run by PY
           (benchmarks/keras_reference.py: "train" is fit()'s wall time)

All conditions are measured side by side in ONE run, interleaved over
``--repeats`` (the order of thread settings rotates every repeat; quiet and
busy alternate; one untimed warm-up run first), since a shared host's load
moves every number together.
Printed: medians of the training seconds (steps only, summed over the
models), the wall time of the whole executor call (thread decision, training,
evaluation, saving), the loaded/quiet ratio, and the thread count each unit
got. Recorded with it: CPU model, usable cores, torch version, free cores
and load average before and after. The JSON goes to ``benchmarks/results/``.

A full run takes minutes and needs an otherwise quiet machine. For a quick
check of the script itself: ``--train-limit 640 --test-limit 200 --epochs 1
--repeats 1``.

Usage:  python benchmarks/contention.py [--repeats 3] [--epochs 5]
        [--train-limit N] [--test-limit N] [--models mlp,cnn]
        [--threads 1,all,auto] [--data-dir DIR] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from archbench.config import Source
from archbench.data import load_dataset
from archbench.env import affinity_cpus, cpu_model, load_average, usable_cpus
from archbench.resolve import resolve
from archbench.run.study import run_units_locally
from archbench.run.threads import sample_load


@contextlib.contextmanager
def busy_core(enabled: bool) -> Iterator[dict[str, Any]]:
    """A ``while True`` process on one core for the block (nothing when not ``enabled``)."""
    info: dict[str, Any] = {"busy": enabled}
    if not enabled:
        yield info
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        cpus = sorted(affinity_cpus() or [])
        if cpus:
            with contextlib.suppress(OSError, AttributeError):
                os.sched_setaffinity(proc.pid, {cpus[-1]})
                info["pinned_to_cpu"] = cpus[-1]
        info["pid"] = proc.pid
        time.sleep(0.5)  # running flat out before anything is timed
        yield info
    finally:
        proc.kill()
        proc.wait()


def run_condition(cfg: Any, data: Any, threads: int | str, run_dir: Path) -> dict[str, Any]:
    units: dict[str, Any] = {}
    pending = [(m, s) for m in cfg.models for s in cfg.seeds]
    load = sample_load()
    t0 = time.perf_counter()
    run_units_locally(pending, cfg, data, run_dir, lambda ref, seed, unit: units.__setitem__(ref, unit),
                      lambda s: None, None, torch.device("cpu"), threads=threads)
    wall = time.perf_counter() - t0
    failed = {m: u.get("error") for m, u in units.items() if u.get("status") != "ok"}
    if failed:
        raise SystemExit(f"units failed: {failed}")
    return {
        "wall_seconds": wall,
        "train_seconds": {m: u["timings"]["train_seconds"] for m, u in units.items()},
        "threads": {m: u["threads"]["threads"] for m, u in units.items()},
        "decisions": {m: u["threads"] for m, u in units.items()},
        "test_accuracy": {m: u["test"]["accuracy"] for m, u in units.items()},
        "free_cores_before": load["free_cores"], "busy_cores_before": load["busy_cores"],
    }


def run_keras(python: str, epochs: int, train_limit: int | None, models: list[str], data_dir: str | None
              ) -> dict[str, Any]:
    """The seed notebook's Keras fit() (benchmarks/keras_reference.py) in ``python``'s environment."""
    cmd = [python, str(Path(__file__).parent / "keras_reference.py"), "--epochs", str(epochs),
           "--models", ",".join(models)]
    if train_limit:
        cmd += ["--train-limit", str(train_limit)]
    if data_dir:
        cmd += ["--data-dir", data_dir]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--threads", default="1,all,auto", help="thread settings: counts, 'all' (usable cores), 'auto'")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--keras-python", default=None,
                   help="a Python with TensorFlow/Keras: also time the notebook's Keras fit() under each load "
                        "(benchmarks/keras_reference.py), interleaved with the rest")
    args = p.parse_args()

    usable = usable_cpus()
    settings: list[int | str] = []
    for s in args.threads.split(","):
        v: int | str = usable if s == "all" else ("auto" if s == "auto" else int(s))
        if v not in settings:
            settings.append(v)
    if args.keras_python:
        settings.append("keras")
    models = [m for m in args.models.split(",") if m]
    cfg = resolve({"models": models, "seeds": [0], "epochs": args.epochs, "device": "cpu"}, source=Source.API)
    data = load_dataset("fashion-mnist", args.data_dir).subset(args.train_limit, args.test_limit)
    env = {"cpu": cpu_model(), "usable_cpus": usable, "cpu_count": os.cpu_count(), "torch": torch.__version__,
           "load_average_before": load_average(), "load_before": sample_load(),
           "recipe": {m: cfg.train_config_for(m).to_dict() for m in models},
           "train_samples": len(data.train_labels), "test_samples": len(data.test_labels),
           "started": _dt.datetime.now().isoformat(timespec="seconds")}
    print(f"{env['cpu']}, {usable} usable cores, torch {torch.__version__}; load average {load_average()}; "
          f"{len(data.train_labels):,} training images, {args.epochs} epochs, models {', '.join(models)}",
          flush=True)

    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="contention-") as tmp:
        # Untimed: lazy initialisation (oneDNN kernels, allocator, first imports) is no condition's cost.
        run_condition(cfg, data, "auto", Path(tmp) / "warm-up")
        for r in range(args.repeats):
            loads = ("quiet", "busy") if r % 2 == 0 else ("busy", "quiet")
            order = settings[r % len(settings):] + settings[:r % len(settings)]
            for load in loads:
                with busy_core(load == "busy") as info:
                    for threads in order:
                        if threads == "keras":
                            k = run_keras(args.keras_python, args.epochs, args.train_limit, models, args.data_dir)
                            out = {"train_seconds": k["seconds"], "wall_seconds": sum(k["seconds"].values()),
                                   "threads": {m: f"tf{k['intra_op_threads']}" for m in models},
                                   "test_accuracy": k["test_accuracy"], "keras": k}
                        else:
                            out = run_condition(cfg, data, threads, Path(tmp) / f"r{r}-{load}-{threads}")
                        out.update(repeat=r, load=load, setting=str(threads), busy_process=info)
                        runs.append(out)
                        print(f"  repeat {r + 1}/{args.repeats} {load:5} threads={str(threads):4}: train "
                              f"{sum(out['train_seconds'].values()):7.2f} s, wall {out['wall_seconds']:7.2f} s, "
                              f"threads per unit {out['threads']}", flush=True)
    env["load_average_after"] = load_average()
    env["load_after"] = sample_load()

    def pick(load: str, setting: int | str) -> list[dict[str, Any]]:
        return [x for x in runs if x["load"] == load and x["setting"] == str(setting)]

    summary: dict[str, Any] = {}
    for setting in settings:
        row: dict[str, Any] = {}
        for load in ("quiet", "busy"):
            xs = pick(load, setting)
            row[load] = {"train_seconds": median([sum(x["train_seconds"].values()) for x in xs]),
                         "wall_seconds": median([x["wall_seconds"] for x in xs]),
                         "per_model_train_seconds": {m: median([x["train_seconds"][m] for x in xs]) for m in models},
                         "threads": [x["threads"] for x in xs]}
        row["busy_over_quiet"] = row["busy"]["train_seconds"] / row["quiet"]["train_seconds"]
        summary[str(setting)] = row
    fixed = [s for s in settings if s not in ("auto", "keras")]
    best_busy = min((summary[str(s)]["busy"]["train_seconds"] for s in fixed), default=float("nan"))
    for row in summary.values():
        row["busy_over_best_fixed_busy"] = row["busy"]["train_seconds"] / best_busy

    def threads_seen(rows: list[dict[str, Any]]) -> str:
        return " ".join("/".join(str(t[m]) for m in models) for t in rows)

    print(f"\nmedians of {args.repeats} (seconds; train = training steps summed over {', '.join(models)}; "
          "wall = the executor call; threads per unit as " + "/".join(models) + ", one group per repeat)")
    head = ["threads", "quiet train s", "quiet wall s", "busy train s", "busy wall s", "busy/quiet",
            "busy/best fixed busy", "threads quiet", "threads busy"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for setting, row in summary.items():
        q, b = row["quiet"], row["busy"]
        lines.append(f"| {setting} | {q['train_seconds']:.2f} | {q['wall_seconds']:.2f} | {b['train_seconds']:.2f} "
                     f"| {b['wall_seconds']:.2f} | x{row['busy_over_quiet']:.2f} | "
                     f"x{row['busy_over_best_fixed_busy']:.2f} | {threads_seen(q['threads'])} | "
                     f"{threads_seen(b['threads'])} |")
    print("\n".join(lines))

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = out_dir / f"contention-cpu{usable}-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "environment": env, "summary": summary, "table": lines,
                                "runs": runs}, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
