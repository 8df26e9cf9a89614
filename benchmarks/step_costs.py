"""Training-step time of zoo models on this machine, side by side (the
evidence behind dct_cnn's design in docs/zoo.md).

Interleaves the models over several rounds and prints each one's median
step time (batch 256, bf16 autocast, channels-last: the zoo recipe's step)
and its ratio to the first. ``dct_cnn+trainable-stem`` is dct_cnn with its
DCT stem made trainable, which isolates what freezing the stem saves.

Usage: python benchmarks/step_costs.py [--models dct_cnn,dct_cnn+trainable-stem,resnet_small]
       [--rounds 5] [--steps 10] [--batch 256]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from archbench.models import create_model
from archbench.train.formulation import fast_cpu_view
from archbench.train.optim import LeanAdam
from archbench.train.step import Step as _Step


def make(name: str):
    base, _, variant = name.partition("+")
    torch.manual_seed(0)
    model = create_model(base)
    if variant == "trainable-stem":
        for p in model.parameters():
            p.requires_grad_(True)
    elif variant:
        raise SystemExit(f"unknown variant {variant!r}; known: trainable-stem")
    view, _ = fast_cpu_view(model)
    opt = LeanAdam([p for p in model.parameters() if p.requires_grad], lr=1e-3, decoupled=True, weight_decay=5e-4)
    return _Step(view, opt, label_smoothing=0.1, autocast_dtype=torch.bfloat16)  # the training loop's own step


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="dct_cnn,dct_cnn+trainable-stem,resnet_small")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args(argv)
    names = args.models.split(",")
    built = {n: make(n) for n in names}
    x = torch.rand(args.batch, 1, 28, 28).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.batch,))
    loss, pred = torch.zeros(()), torch.zeros(args.batch, dtype=torch.long)

    for step in built.values():  # warm-up
        for _ in range(3):
            step(x, y, loss, pred)
    times = {n: [] for n in names}
    for _ in range(args.rounds):
        for n in names:
            t0 = time.perf_counter()
            for _ in range(args.steps):
                built[n](x, y, loss, pred)
            times[n].append((time.perf_counter() - t0) / args.steps)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, "
          f"{args.rounds} rounds x {args.steps} steps (medians)")
    ref = statistics.median(times[names[0]])
    for n in names:
        med = statistics.median(times[n])
        print(f"  {n:28s} {1e3 * med:7.1f} ms/step  {60000 / args.batch * med:6.1f} s/epoch  "
              f"x{med / ref:.2f} of {names[0]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
