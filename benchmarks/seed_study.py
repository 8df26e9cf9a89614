"""Speed of the seed study: 5-epoch training of the seed MLP and CNN at batch 64.

Prints, per model and variant: seconds of training (steps only, evaluation
excluded), samples/s, and achieved matmul/conv GFLOP/s against this machine's
fp32 matmul peak measured in the same run (a large square sgemm). Variants,
measured side by side in one process and interleaved over repeats (medians
quoted, since shared machines are noisy):

  archbench   archbench.train.train as `archbench run` uses it
  plain       the same loop with --formulation plain (NCHW, ReLU before pool)
  textbook    a plain PyTorch eager loop: torch.optim.Adam (default settings),
              zero_grad, forward, cross-entropy, backward, step; NCHW
  eager-cuda  (CUDA only) archbench's loop without CUDA graphs

Usage:  python benchmarks/seed_study.py [--device cpu|cuda] [--epochs 5]
        [--repeats 1] [--variants archbench,textbook] [--models mlp,cnn]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F

from archbench.data import load_dataset
from archbench.measure import count_train_step
from archbench.models import create_model
from archbench.train import TrainConfig, resolve_device, to_input, train


def matmul_peak_gflops(device: torch.device, n: int = 2048, reps: int = 10) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def textbook(name, data, epochs, batch_size, seed, device) -> float:
    """A plain eager PyTorch loop, for reference; returns training seconds."""
    torch.manual_seed(seed)
    model = create_model(name).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
    x = to_input(data.train_images, device)
    y = data.train_labels.to(device)
    n = x.shape[0]
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen).to(device)
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = F.cross_entropy(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        total += time.perf_counter() - t
    return total


def run_variant(variant, name, data, epochs, batch_size, seed, device) -> tuple[float, float | None]:
    if variant == "textbook":
        return textbook(name, data, epochs, batch_size, seed, device), None
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, device=str(device),
                      formulation="plain" if variant == "plain" else "fast",
                      cuda_graphs=variant != "eager-cuda")
    torch.manual_seed(seed)
    r = train(create_model(name), data.train_images, data.train_labels, data.test_images,
              data.test_labels, cfg, seed=seed)
    return r.train_seconds, r.test.accuracy


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--models", default="mlp,cnn")
    ap.add_argument("--variants", default=None, help="default: archbench,textbook (+eager-cuda on CUDA)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--json", default=None, help="also write the raw results to this file")
    args = ap.parse_args(argv)
    device = resolve_device(args.device)
    variants = (args.variants.split(",") if args.variants else
                ["archbench", "eager-cuda", "textbook"] if device.type == "cuda" else ["archbench", "textbook"])
    models = args.models.split(",")
    data = load_dataset("fashion-mnist", args.data_dir)
    peak = matmul_peak_gflops(device)
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s")
    samples = args.epochs * len(data.train_labels)
    results: dict[tuple[str, str], list[float]] = {}
    accs: dict[tuple[str, str], list[float]] = {}
    for rep in range(args.repeats):
        for name in models:
            for v in variants:
                secs, acc = run_variant(v, name, data, args.epochs, args.batch_size, rep, device)
                results.setdefault((name, v), []).append(secs)
                if acc is not None:
                    accs.setdefault((name, v), []).append(acc)
                print(f"  rep {rep} {name:4s} {v:10s} {secs:7.2f} s", flush=True)
    flops_per_sample = {
        n: count_train_step(create_model(n), batch_size=args.batch_size)["total"].matmul_conv / args.batch_size
        for n in models}
    print(f"\n{args.epochs} epochs x {len(data.train_labels):,} images, batch {args.batch_size}, "
          f"median of {args.repeats}:")
    print(f"{'model':5s} {'variant':10s} {'seconds':>8s} {'samples/s':>10s} {'GFLOP/s':>8s} {'% peak':>7s} "
          f"{'vs textbook':>11s} {'test acc':>8s}")
    for name in models:
        base = statistics.median(results[(name, "textbook")]) if (name, "textbook") in results else None
        for v in variants:
            s = statistics.median(results[(name, v)])
            gf = flops_per_sample[name] * samples / s / 1e9
            ratio = f"{base / s:10.2f}x" if base else f"{'':>11s}"
            acc = f"{100 * statistics.median(accs[(name, v)]):7.2f}%" if (name, v) in accs else ""
            print(f"{name:5s} {v:10s} {s:8.2f} {samples / s:10,.0f} {gf:8.1f} {100 * gf / peak:6.1f}% "
                  f"{ratio} {acc:>8s}")
    for v in variants:
        if all((n, v) in results for n in models):
            total = sum(statistics.median(results[(n, v)]) for n in models)
            print(f"all models, {v}: {total:.2f} s")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": str(device), "peak_gflops": peak,
                       "results": {f"{k[0]}/{k[1]}": v for k, v in results.items()},
                       "accuracy": {f"{k[0]}/{k[1]}": v for k, v in accs.items()}}, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
