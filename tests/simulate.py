"""Simulated studies with a known truth: how often each verdict procedure
declares a difference when there is none (false-positive rate), and how
often it finds a true one (power).

Each simulated study draws a fresh test set and fresh trainings:

- every test image has a difficulty shared by both models and a
  model-specific part (some images suit one architecture better), so a
  finite test set favours one model by chance: test-set sampling;
- every training run (seed) shifts its model's log-odds of being right by a
  random amount, and then answers each image with its own coin flip, so
  seeds differ in accuracy and in which images they get right: training
  randomness.

Under the null both models have the same population accuracy; under the
alternative A's log-odds are raised until its population accuracy is
``gap`` higher. Population accuracies are computed by Gauss-Hermite
quadrature (the log-odds are normal), not simulated.

    python -m tests.simulate                 # the table quoted in docs/statistics.md
    python -m tests.simulate --seeds 2,3,5,10 --studies 4000

Everything is vectorised over studies (torch); 1,000 studies of 3 seeds on
10,000 test images take about a second per setting on one core.
"""

from __future__ import annotations

import argparse
import functools
import math
from dataclasses import dataclass, replace

import numpy as np
import torch

from archbench.stats import betainc, crossed_difference, crossed_p_values, t_two_sided_p

METHODS = {
    "crossed": "seeds and test images (archbench's verdict)",
    "pooled_mcnemar": "McNemar on discordant counts pooled over seed pairs (the old rule)",
    "seed_t": "paired t test over seeds only (ignores the shared test set)",
}


@dataclass(frozen=True)
class Scenario:
    """A population of test images and trainings (log-odds scale)."""

    n_test: int = 10_000
    accuracy: float = 0.88      # population accuracy of B
    image_sd: float = 5.0       # difficulty shared by both models
    model_image_sd: float = 1.4  # model-specific image effect: what a finite test set samples
    seed_sd: float = 0.13       # log-odds shift of one training run: seed-to-seed accuracy spread
    # The defaults reproduce the real 3-seed seed study (mlp vs cnn, 5 epochs, Fashion-MNIST): accuracy
    # about 88 %, seed-to-seed standard deviation about 0.43 pp, two seeds of one model disagree on
    # about 7.6 % of the test images, mlp and cnn on about 9.4 %.

    def population_accuracy(self, shift: float = 0.0, base: float | None = None) -> float:
        """E[sigmoid(base + shift + N(0, sd²))], sd² = image² + model-image² + seed²."""
        base = self.base_logit() if base is None else base
        sd = math.sqrt(self.image_sd**2 + self.model_image_sd**2 + self.seed_sd**2)
        x, w = _nodes()
        return float((w * (1 / (1 + np.exp(-(base + shift + sd * x))))).sum() / math.sqrt(2 * math.pi))

    def base_logit(self) -> float:
        return _solve(lambda b: self.population_accuracy(0.0, b), self.accuracy)

    def shift_for_gap(self, gap: float) -> float:
        """The log-odds shift that makes A's population accuracy ``gap`` higher than B's."""
        base = self.base_logit()
        target = self.population_accuracy(0.0, base) + gap
        return _solve(lambda s: self.population_accuracy(s, base), target)


@functools.cache
def _nodes() -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Hermite (probabilists') nodes and weights."""
    return np.polynomial.hermite_e.hermegauss(120)


def _solve(f, target: float, lo: float = -20.0, hi: float = 20.0) -> float:
    """x with f(x) = target for increasing f (bisection)."""
    for _ in range(100):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def draw(scenario: Scenario, seeds: int, studies: int, gap: float, gen: torch.Generator
         ) -> tuple[torch.Tensor, torch.Tensor]:
    """(studies, seeds, n_test) boolean correctness of A and of B."""
    s, n = studies, scenario.n_test
    base = scenario.base_logit()
    shift = scenario.shift_for_gap(gap) if gap else 0.0
    shared = torch.randn(s, 1, n, generator=gen) * scenario.image_sd
    out = []
    for extra in (shift, 0.0):
        logit = base + extra + shared + torch.randn(s, 1, n, generator=gen) * scenario.model_image_sd
        logit = logit + torch.randn(s, seeds, 1, generator=gen) * scenario.seed_sd
        out.append(torch.rand(s, seeds, n, generator=gen) < torch.sigmoid(logit))
    return out[0], out[1]


def _binom_half_two_sided(b: torch.Tensor, c: torch.Tensor) -> list[float]:
    """Exact McNemar p-values, via P(X <= k) = I_{1/2}(n - k, k + 1)."""
    out = []
    for bb, cc in zip(b.tolist(), c.tolist()):
        n, k = bb + cc, min(bb, cc)
        out.append(1.0 if n == 0 or k == n else min(1.0, 2 * betainc(n - k, k + 1, 0.5)))
    return out


def decisions(ca: torch.Tensor, cb: torch.Tensor, alpha: float = 0.05) -> dict[str, torch.Tensor]:
    """Per study, whether each method declares a difference."""
    out = {"crossed": crossed_p_values(crossed_difference(ca, cb)) < alpha}
    a, b = ca.bool(), cb.bool()
    disc_b = (a & ~b).sum((1, 2))
    disc_c = (~a & b).sum((1, 2))
    out["pooled_mcnemar"] = torch.tensor(_binom_half_two_sided(disc_b, disc_c)) < alpha
    d = ca.double().mean(2) - cb.double().mean(2)  # (S, K) per-seed differences, seeds paired by position
    k = d.shape[1]
    sd = d.std(1)
    t = d.mean(1) / (sd / math.sqrt(k)).clamp(min=1e-300)
    out["seed_t"] = torch.tensor([t_two_sided_p(x, k - 1) for x in t.tolist()]) < alpha
    return out


def rates(scenario: Scenario, seeds: int, gap: float, studies: int = 1000, alpha: float = 0.05,
          seed: int = 0, chunk: int = 100) -> dict[str, float]:
    """The fraction of ``studies`` simulated studies in which each method
    declares a difference (a false-positive rate when ``gap`` is 0, power
    otherwise)."""
    gen = torch.Generator().manual_seed(seed)
    hits = dict.fromkeys(METHODS, 0)
    done = 0
    while done < studies:
        s = min(chunk, studies - done)
        ca, cb = draw(scenario, seeds, s, gap, gen)
        for name, dec in decisions(ca, cb, alpha).items():
            hits[name] += int(dec.sum())
        done += s
    return {name: h / studies for name, h in hits.items()}


def describe(scenario: Scenario, seeds: int = 3, studies: int = 200, seed: int = 1) -> dict[str, float]:
    """What the scenario looks like as measured: accuracy, seed-to-seed
    standard deviation of one model's accuracy, fraction of images two seeds
    of one model disagree on, and of images A and B disagree on."""
    gen = torch.Generator().manual_seed(seed)
    ca, cb = draw(scenario, seeds, studies, 0.0, gen)
    acc = ca.double().mean(2)
    return {"accuracy": float(acc.mean()), "seed_sd": float(acc.std(1).mean()),
            "seed_disagreement": float((ca[:, 0] != ca[:, 1]).double().mean()),
            "model_disagreement": float((ca[:, 0] != cb[:, 0]).double().mean())}


def monte_carlo_error(rate: float, studies: int) -> float:
    """Standard error of a simulated rate."""
    return math.sqrt(max(rate * (1 - rate), 1e-12) / studies)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.simulate", description=__doc__.split("\n")[0])
    p.add_argument("--seeds", default="2,3,5", help="comma-separated seed counts (default 2,3,5)")
    p.add_argument("--studies", type=int, default=2000, help="simulated studies per setting (default 2000)")
    p.add_argument("--gap", type=float, default=0.01, help="true accuracy gap for power (default 0.01 = 1 pp)")
    p.add_argument("--seed-sd", type=float, default=Scenario.seed_sd,
                   help=f"log-odds spread of one training run (default {Scenario.seed_sd})")
    p.add_argument("--n-test", type=int, default=Scenario.n_test, help="test images (default 10000)")
    args = p.parse_args(argv)
    scenario = replace(Scenario(), seed_sd=args.seed_sd, n_test=args.n_test)
    d = describe(scenario)
    print(f"scenario: {scenario}\n  accuracy {100 * d['accuracy']:.2f} %, seed-to-seed sd {100 * d['seed_sd']:.2f} pp, "
          f"two seeds disagree on {100 * d['seed_disagreement']:.1f} % of images, A and B on "
          f"{100 * d['model_disagreement']:.1f} %")
    print(f"{args.studies} studies per setting; rate ± Monte-Carlo standard error\n")
    print(f"{'seeds':>5}  {'method':<16} {'false positives (gap 0)':>24} {f'power (gap {100 * args.gap:g} pp)':>20}")
    for k in (int(x) for x in args.seeds.split(",")):
        null = rates(scenario, k, 0.0, args.studies, seed=10 * k)
        alt = rates(scenario, k, args.gap, args.studies, seed=10 * k + 1)
        for m in METHODS:
            print(f"{k:>5}  {m:<16} {100 * null[m]:>17.1f} ± {100 * monte_carlo_error(null[m], args.studies):.1f} %"
                  f" {100 * alt[m]:>13.1f} ± {100 * monte_carlo_error(alt[m], args.studies):.1f} %")
    print("\nmethods: " + "; ".join(f"{k}: {v}" for k, v in METHODS.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
