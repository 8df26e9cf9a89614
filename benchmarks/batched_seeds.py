"""Seeds trained as one batched model vs separately: the seed study's models.

For each model (the seed MLP and CNN, measured separately) and each k (3 and
10 seeds by default), trains seeds 0..k-1 with the seed study's recipe (5
epochs, batch 64, Adam; per-epoch test evaluation as ``archbench run`` does)
two ways, side by side in ONE process and interleaved over ``--repeats`` (the
order alternates every repeat; one untimed warm-up of each way first), since a
shared host's load moves every number together:

  separate  k calls of ``archbench.train.train``, one per seed (what a run
            does today, one unit after the other)
  batched   one call of ``archbench.train.batched.train_seeds`` for the k seeds
            (on CUDA eagerly: its step is not captured as a CUDA graph, while
            the separate runs are)

Printed per model and k: medians of the training seconds (steps only, summed
over the seeds; for the batch, its wall-clock training time), of the wall time
of the whole call (building the models, training, per-epoch and final
evaluation), the speed-ups, and whether every seed's test loss and predictions
were bit-identical between the two ways (they are meant to be). Recorded with
it: CPU model, usable cores, torch version, intra-op threads
(``torch.get_num_threads()``, ``--threads`` sets it), the 1-minute load
average before and after every measurement. The JSON goes to
``benchmarks/results/``.

A full run takes many minutes and needs an otherwise quiet machine. For a
quick check of the script itself: ``--train-limit 2000 --test-limit 500
--epochs 1 --repeats 1``.

Usage:  python benchmarks/batched_seeds.py [--models mlp,cnn] [--k 3,10]
        [--epochs 5] [--batch-size 64] [--repeats 3] [--threads N]
        [--train-limit N] [--test-limit N] [--device cpu] [--data-dir DIR]
        [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch

from archbench.data import load_dataset
from archbench.env import cpu_model, load_average, usable_cpus
from archbench.train import TrainConfig, resolve_device, train
from archbench.train.batched import train_seeds
from archbench.unit import build_model, data_shape


def one_minute_load() -> float | None:
    la = load_average()
    return la[0] if la else None


def run_separate(name: str, seeds: list[int], data: Any, cfg: TrainConfig) -> dict[str, Any]:
    shape, classes = data_shape(data)
    t0 = time.perf_counter()
    results = []
    for s in seeds:
        model = build_model(name, s, shape, classes)
        results.append(train(model, data.train_images, data.train_labels, data.test_images, data.test_labels,
                             cfg, seed=s))
    wall = time.perf_counter() - t0
    return {"wall_seconds": wall, "train_seconds": sum(r.train_seconds for r in results),
            "test_accuracy": [r.test.accuracy for r in results], "test_loss": [r.test.loss for r in results],
            "predictions": [r.test.predictions for r in results]}


def run_batched(name: str, seeds: list[int], data: Any, cfg: TrainConfig) -> dict[str, Any]:
    shape, classes = data_shape(data)
    if cfg.device.startswith("cuda"):  # the batched step is not captured as a CUDA graph (train_seeds refuses that)
        cfg = dataclasses.replace(cfg, cuda_graphs=False)
    t0 = time.perf_counter()
    results = train_seeds(name, seeds, data.train_images, data.train_labels, data.test_images, data.test_labels,
                          cfg, input_shape=shape, num_classes=classes)
    wall = time.perf_counter() - t0
    return {"wall_seconds": wall, "train_seconds": results[0].extra["batched"]["batch_train_seconds"],
            "test_accuracy": [r.test.accuracy for r in results], "test_loss": [r.test.loss for r in results],
            "predictions": [r.test.predictions for r in results]}


RUNNERS = {"separate": run_separate, "batched": run_batched}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="mlp,cnn")
    p.add_argument("--k", default="3,10", help="seed counts, e.g. 3,10")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="intra-op threads (default: torch's)")
    p.add_argument("--train-limit", type=int, default=None)
    p.add_argument("--test-limit", type=int, default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    models = [m for m in args.models.split(",") if m]
    ks = [int(k) for k in args.k.split(",") if k]
    cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, device=str(device))
    data = load_dataset("fashion-mnist", args.data_dir).subset(args.train_limit, args.test_limit)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    env = {"cpu": cpu_model(), "gpu": gpu, "usable_cpus": usable_cpus(), "cpu_count": os.cpu_count(),
           "torch": torch.__version__, "threads": torch.get_num_threads(), "device": str(device),
           "load_average_before": load_average(), "recipe": cfg.to_dict(),
           "train_samples": len(data.train_labels), "test_samples": len(data.test_labels),
           "started": _dt.datetime.now().isoformat(timespec="seconds")}
    print(f"{env['cpu']}{f', {gpu}' if gpu else ''}, {env['usable_cpus']} usable cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; load average {load_average()}; {len(data.train_labels):,} training "
          f"images, {args.epochs} epochs, batch {args.batch_size}; models {', '.join(models)}; k {ks}", flush=True)

    runs: list[dict[str, Any]] = []
    warm = TrainConfig(epochs=1, batch_size=args.batch_size, device=str(device))
    warm_data = data.subset(min(len(data.train_labels), 512), min(len(data.test_labels), 256))
    for name in models:  # untimed: lazy initialisation (oneDNN kernels, allocator) is neither way's cost
        for runner in RUNNERS.values():
            runner(name, [0, 1], warm_data, warm)
    for r in range(args.repeats):
        for name in models:
            for k in ks:
                ways = list(RUNNERS) if r % 2 == 0 else list(reversed(RUNNERS))
                pair: dict[str, dict[str, Any]] = {}
                for way in ways:
                    load_before = one_minute_load()
                    out = RUNNERS[way](name, list(range(k)), data, cfg)
                    out.update(repeat=r, model=name, k=k, way=way, load_1min_before=load_before,
                               load_1min_after=one_minute_load())
                    pair[way] = out
                    print(f"  repeat {r + 1}/{args.repeats} {name:4} k={k:<3} {way:8}: train "
                          f"{out['train_seconds']:7.2f} s, wall {out['wall_seconds']:7.2f} s "
                          f"(1-min load {load_before} -> {out['load_1min_after']})", flush=True)
                sep, bat = pair["separate"], pair["batched"]
                identical = (sep["test_loss"] == bat["test_loss"]
                             and all(torch.equal(a, b) for a, b in zip(sep["predictions"], bat["predictions"])))
                for out in pair.values():
                    out["bit_identical_to_separate"] = identical
                    out.pop("predictions")
                    runs.append(out)
    env["load_average_after"] = load_average()

    def pick(name: str, k: int, way: str) -> list[dict[str, Any]]:
        return [x for x in runs if x["model"] == name and x["k"] == k and x["way"] == way]

    summary: dict[str, Any] = {}
    head = ["model", "k", "separate train s", "batched train s", "train speed-up", "separate wall s",
            "batched wall s", "wall speed-up", "test acc (mean over seeds)", "bit-identical", "1-min load"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in models:
        for k in ks:
            row: dict[str, Any] = {}
            for way in RUNNERS:
                xs = pick(name, k, way)
                row[way] = {"train_seconds": median([x["train_seconds"] for x in xs]),
                            "wall_seconds": median([x["wall_seconds"] for x in xs]),
                            "test_accuracy": xs[-1]["test_accuracy"] if xs else None}
            row["train_speedup"] = row["separate"]["train_seconds"] / row["batched"]["train_seconds"]
            row["wall_speedup"] = row["separate"]["wall_seconds"] / row["batched"]["wall_seconds"]
            row["bit_identical"] = all(x["bit_identical_to_separate"] for x in pick(name, k, "batched"))
            loads = [x["load_1min_before"] for x in pick(name, k, "separate") + pick(name, k, "batched")
                     if x["load_1min_before"] is not None]
            row["load_1min"] = [min(loads), max(loads)] if loads else None
            summary[f"{name}/k={k}"] = row
            acc = row["batched"]["test_accuracy"]
            load = f"{row['load_1min'][0]:.2f}-{row['load_1min'][1]:.2f}" if row["load_1min"] else "?"
            lines.append(
                f"| {name} | {k} | {row['separate']['train_seconds']:.2f} | {row['batched']['train_seconds']:.2f} | "
                f"x{row['train_speedup']:.2f} | {row['separate']['wall_seconds']:.2f} | "
                f"{row['batched']['wall_seconds']:.2f} | x{row['wall_speedup']:.2f} | "
                f"{100 * sum(acc) / len(acc):.2f} % | {'yes' if row['bit_identical'] else 'NO'} | {load} |")
    print(f"\nmedians of {args.repeats} (train = training steps, summed over the k seeds for separate runs; wall = "
          "the whole call incl. per-epoch evaluation)")
    print("\n".join(lines))

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y-%m-%d-%H%M%S")
    path = out_dir / f"batched-seeds-{device.type}-t{torch.get_num_threads()}-{stamp}.json"
    path.write_text(json.dumps({"args": vars(args), "environment": env, "summary": summary, "table": lines,
                                "runs": runs}, indent=1, default=str))
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
