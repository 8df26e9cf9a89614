"""Statistics for accuracy as a distribution: intervals over seeds, binomial
intervals of one run, exact McNemar tests and paired bootstrap intervals.

Pure Python (plus torch for the bootstrap); no SciPy needed at run time. The
tests check these against SciPy and textbook values.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Any

import torch

# --- Student t -----------------------------------------------------------------

def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the regularised incomplete beta (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 400):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + aa / c
        c = c if abs(c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta function I_x(a, b)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    lbeta = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    front = math.exp(lbeta)
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    x = df / (df + t * t)
    tail = 0.5 * betainc(df / 2, 0.5, x)
    return 1 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t with ``df`` degrees of freedom (bisection)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p == 0.5:
        return 0.0
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12 * max(1.0, abs(mid)):
            break
    return (lo + hi) / 2


def normal_quantile(p: float) -> float:
    return statistics.NormalDist().inv_cdf(p)


# --- intervals -------------------------------------------------------------------

@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    method: str
    level: float = 0.95

    def to_dict(self) -> dict:
        return {"low": self.low, "high": self.high, "method": self.method, "level": self.level}


def t_interval(xs: list[float], level: float = 0.95) -> Interval:
    """Mean ± t(n-1) · s/√n over seeds; needs n >= 2."""
    n = len(xs)
    if n < 2:
        raise ValueError("a t interval needs at least 2 values")
    m, s = statistics.fmean(xs), statistics.stdev(xs)
    half = t_quantile(1 - (1 - level) / 2, n - 1) * s / math.sqrt(n)
    return Interval(m - half, m + half, f"Student t, n={n}", level)


def wilson_interval(successes: int, n: int, level: float = 0.95) -> Interval:
    """Wilson score interval of a binomial proportion (one run's accuracy on
    n test samples)."""
    if n <= 0:
        raise ValueError("n must be positive")
    z = normal_quantile(1 - (1 - level) / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return Interval(max(0.0, centre - half), min(1.0, centre + half), f"Wilson score, n={n}", level)


def accuracy_summary(accuracies: list[float], n_test: int, correct_counts: list[int] | None = None,
                     level: float = 0.95) -> dict:
    """mean, std, min, max, n and a CI: Student t over seeds for n >= 2, the
    Wilson binomial interval of the single run for n = 1."""
    n = len(accuracies)
    if n == 0:
        return {"n": 0}
    out: dict[str, Any] = {"mean": statistics.fmean(accuracies), "std": statistics.stdev(accuracies) if n > 1 else 0.0,
           "min": min(accuracies), "max": max(accuracies), "n": n}
    if n >= 2:
        out["ci"] = t_interval(accuracies, level).to_dict()
    else:
        k = correct_counts[0] if correct_counts else round(accuracies[0] * n_test)
        out["ci"] = wilson_interval(k, n_test, level).to_dict()
    return out


# --- paired comparison ---------------------------------------------------------------

def binom_cdf_half(k: int, n: int) -> float:
    """P(X <= k) for X ~ Binomial(n, 1/2), exactly (integer arithmetic)."""
    if k < 0:
        return 0.0
    if k >= n:
        return 1.0
    total = sum(math.comb(n, i) for i in range(k + 1))
    return total / (1 << n) if n < 1000 else math.exp(math.log(total) - n * math.log(2))


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value from the discordant counts: b = A right
    and B wrong, c = A wrong and B right. p = min(1, 2 · P(X <= min(b, c)))
    with X ~ Binomial(b + c, 1/2)."""
    n = b + c
    if n == 0:
        return 1.0
    return min(1.0, 2 * binom_cdf_half(min(b, c), n))


def discordant(correct_a: torch.Tensor, correct_b: torch.Tensor) -> tuple[int, int]:
    a, b = correct_a.bool(), correct_b.bool()
    return int((a & ~b).sum()), int((~a & b).sum())


def bootstrap_diff_interval(correct_a: torch.Tensor, correct_b: torch.Tensor, resamples: int = 2000,
                            level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap interval of accuracy(A) − accuracy(B), resampling
    test samples (paired). ``correct_*`` are (seeds, N) 0/1 tensors, seeds
    paired by position; the statistic is the mean difference over seeds."""
    d = (correct_a.double() - correct_b.double()).mean(0)  # per test sample
    n = d.numel()
    gen = torch.Generator().manual_seed(seed)
    stats = []
    for start in range(0, resamples, 250):
        k = min(250, resamples - start)
        idx = torch.randint(0, n, (k, n), generator=gen)
        stats.append(d[idx].mean(1))
    s = torch.cat(stats).sort().values
    lo = s[int(math.floor((1 - level) / 2 * (resamples - 1)))].item()
    hi = s[int(math.ceil((1 - (1 - level) / 2) * (resamples - 1)))].item()
    return Interval(lo, hi, f"paired bootstrap over test samples, {resamples} resamples", level)


def compare_pair(name_a: str, correct_a: torch.Tensor, name_b: str, correct_b: torch.Tensor,
                 alpha: float = 0.05, resamples: int = 2000) -> dict:
    """Paired comparison of two models on the same test set. ``correct_*`` are
    (seeds, N) 0/1 tensors; seed k of A is paired with seed k of B.

    Verdict rule: A (or B) is more accurate when the exact McNemar test on the
    pooled discordant counts gives p < alpha *and* the bootstrap interval of
    the difference excludes 0; otherwise "no significant difference"."""
    k = min(correct_a.shape[0], correct_b.shape[0])
    ca, cb = correct_a[:k], correct_b[:k]
    per_seed: list[dict[str, Any]] = []
    for i in range(k):
        b, c = discordant(ca[i], cb[i])
        per_seed.append({"b": b, "c": c, "p_value": mcnemar_exact(b, c)})
    B, C = sum(s["b"] for s in per_seed), sum(s["c"] for s in per_seed)
    p = mcnemar_exact(B, C)
    diff = (ca.double().mean() - cb.double().mean()).item()
    ci = bootstrap_diff_interval(ca, cb, resamples)
    significant = p < alpha and (ci.low > 0 or ci.high < 0)
    verdict = (f"{name_a} more accurate" if diff > 0 else f"{name_b} more accurate") if significant \
        else f"no significant difference at alpha = {alpha}"
    return {
        "a": name_a, "b": name_b, "pairs": k, "difference": diff, "difference_ci": ci.to_dict(),
        "mcnemar_pooled": {"b": B, "c": C, "p_value": p}, "mcnemar_per_seed": per_seed,
        "alpha": alpha, "significant": significant, "verdict": verdict,
        "winner": (name_a if diff > 0 else name_b) if significant else None,
    }
