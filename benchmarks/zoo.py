"""Time-to-accuracy of zoo models with their recipes (the #5 targets).

For each model and seed: trains with the model's registered recipe (options
given here override it), and prints the time/accuracy curve — cumulative
training seconds (evaluation excluded) and test accuracy after every epoch —
then the mean final accuracy and time over seeds.

Usage: python benchmarks/zoo.py --models resnet_small [--seeds 0,1,2] [--device cpu]
       [--set epochs=8 --set batch_size=256 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics

import torch

from archbench.data import load_dataset
from archbench.models import create_model, recipe_of
from archbench.train import TrainConfig, resolve_device, train


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet_small")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a recipe option")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    data = load_dataset("fashion-mnist", args.data_dir)
    overrides = {}
    for kv in args.set:
        k, _, v = kv.partition("=")
        try:
            overrides[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            overrides[k] = v
    out = {}
    name_dev = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device {device} ({name_dev}), torch {torch.__version__}, {torch.get_num_threads()} threads")
    for name in args.models.split(","):
        recipe = {**recipe_of(name), **overrides, "device": str(device)}
        cfg = TrainConfig.from_dict(recipe)
        print(f"\n{name}: {recipe}")
        finals, times = [], []
        for seed in (int(s) for s in args.seeds.split(",")):
            torch.manual_seed(seed)
            curve = []
            elapsed = [0.0]

            def on_epoch(h, curve=curve, elapsed=elapsed, seed=seed):
                elapsed[0] += h.seconds
                curve.append((h.epoch, elapsed[0], h.test_acc))
                print(f"  seed {seed} epoch {h.epoch:2d}  {elapsed[0]:7.1f} s  test acc {100 * h.test_acc:.2f} %",
                      flush=True)

            r = train(create_model(name), data.train_images, data.train_labels, data.test_images,
                      data.test_labels, cfg, seed=seed, on_epoch=on_epoch)
            finals.append(r.test.accuracy)
            times.append(r.train_seconds)
            out.setdefault(name, []).append({"seed": seed, "curve": curve, "accuracy": r.test.accuracy,
                                             "train_seconds": r.train_seconds})
        print(f"{name}: mean test accuracy {100 * statistics.fmean(finals):.2f} % over {len(finals)} seed(s) "
              f"(min {100 * min(finals):.2f}, max {100 * max(finals):.2f}); mean train time "
              f"{statistics.fmean(times):.1f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "device_name": name_dev, "results": out}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
