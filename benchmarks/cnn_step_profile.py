"""Where the seed CNN's CPU training step spends its time, per aten op.

Profiles N training steps (batch 64) of the plain eager formulation and of
archbench's fast formulation side by side, with torch.profiler, and prints
the ops that take the most self time per step. This is the evidence behind
docs/performance.md.

Usage: python benchmarks/cnn_step_profile.py [--steps 100] [--model cnn] [--rows 12]
"""

from __future__ import annotations

import argparse

import torch
from torch.profiler import ProfilerActivity, profile

from archbench.data import load_dataset
from archbench.models import create_model
from archbench.train import TrainConfig, train


def profile_steps(model_name: str, formulation: str, data, steps: int, rows: int) -> None:
    n = steps * 64
    torch.manual_seed(0)
    model = create_model(model_name)
    cfg = TrainConfig(epochs=1, formulation=formulation, device="cpu")
    train(model, data.train_images[:n], data.train_labels[:n], None, None, cfg, seed=0)  # warm-up
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        r = train(model, data.train_images[:n], data.train_labels[:n], None, None, cfg, seed=0)
    print(f"\n== {model_name}, formulation {formulation}: {1e3 * r.train_seconds / steps:.2f} ms/step "
          f"(under the profiler); self time per step by op ==")
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    for e in events[:rows]:
        print(f"  {e.key:45s} {e.self_cpu_time_total / steps:8.1f} us  {e.count / steps:5.1f} calls  "
              f"{100 * e.self_cpu_time_total / total:5.1f} %")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--model", default="cnn")
    ap.add_argument("--rows", type=int, default=12)
    args = ap.parse_args(argv)
    data = load_dataset()
    for formulation in ("plain", "fast"):
        profile_steps(args.model, formulation, data, args.steps, args.rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
