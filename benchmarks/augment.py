"""Random crop + flip of training batches: archbench's one-gather
formulation against the textbook one (advanced indexing for the crop, then
``torch.where`` over a flipped copy), side by side.

Both use the same draws and give bit-identical batches (checked here); the
time is one epoch's worth of batches (60,000 images, batch 256), median over
rounds.

Usage: python benchmarks/augment.py [--rounds 5] [--batch 256] [--pad 2]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from archbench.train.step import augment


def textbook(xb, pad, flip, gen):
    b, c, h, w = xb.shape
    out = xb
    if pad:
        xp = F.pad(xb, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=gen)
        rows = (torch.arange(h)[None, :] + dy[:, None])[:, None, :, None]
        cols = (torch.arange(w)[None, :] + dx[:, None])[:, None, None, :]
        out = xp[torch.arange(b)[:, None, None, None], torch.arange(c)[None, :, None, None], rows, cols]
    if flip:
        mask = torch.rand(b, generator=gen) < 0.5
        out = torch.where(mask[:, None, None, None], out.flip(3), out)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--pad", type=int, default=2)
    args = ap.parse_args(argv)
    X = torch.rand(60000, 1, 28, 28)
    perm = torch.randperm(60000, generator=torch.Generator().manual_seed(0))
    a = textbook(X[:512], args.pad, True, torch.Generator().manual_seed(1))
    b = augment(X[:512], args.pad, True, torch.Generator().manual_seed(1))
    assert torch.equal(a, b), "the two formulations disagree"
    times = {"textbook": [], "archbench": []}
    for _ in range(args.rounds):
        for name, fn in (("textbook", textbook), ("archbench", augment)):
            gen = torch.Generator().manual_seed(0)
            t0 = time.perf_counter()
            for i in range(0, 60000, args.batch):
                fn(X.index_select(0, perm[i:i + args.batch]), args.pad, True, gen)
            times[name].append(time.perf_counter() - t0)
    t, o = statistics.median(times["textbook"]), statistics.median(times["archbench"])
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; one epoch of batches of {args.batch}, "
          f"pad {args.pad} + flip, median of {args.rounds}")
    print(f"  textbook (indexing + where): {t:6.3f} s/epoch")
    print(f"  archbench (one gather):      {o:6.3f} s/epoch   x{t / o:.1f} faster; batches bit-identical")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
