"""Statistics for accuracy as a distribution: intervals over seeds, binomial
intervals of one run, exact McNemar tests, and the pairwise verdict, whose
uncertainty includes both training randomness (seeds) and test-set sampling
(images): see :func:`crossed_difference` and docs/statistics.md.

Pure Python plus torch; no SciPy needed at run time. The tests check these
against SciPy, textbook values and a simulation with known truth
(``tests/simulate.py``, also a script: ``python -m tests.simulate``).
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


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` degrees of freedom, computed
    as I_{df/(df+t^2)}(df/2, 1/2) so that tiny p-values keep their digits."""
    if math.isnan(t) or not df > 0:  # no degrees of freedom (one test image, say): no test
        return math.nan
    if math.isinf(t):
        return 0.0
    return min(1.0, betainc(df / 2, 0.5, df / (df + t * t)))


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


def beta_quantile(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b) (bisection on :func:`betainc`)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-15:
            break
    return (lo + hi) / 2


def clopper_pearson(k: int, n: int, level: float = 0.95) -> Interval:
    """The exact (Clopper-Pearson) interval of a binomial proportion, k of n:
    the inversion of two one-sided exact binomial tests at (1 - level) / 2 each."""
    if n <= 0:
        raise ValueError("n must be positive")
    tail = (1 - level) / 2
    low = 0.0 if k == 0 else beta_quantile(tail, k, n - k + 1)
    high = 1.0 if k == n else beta_quantile(1 - tail, k + 1, n - k)
    return Interval(low, high, f"Clopper-Pearson, {k} of {n}", level)


def mcnemar_interval(b: int, c: int, n_images: int, level: float = 0.95) -> Interval:
    """The interval of one seed pair's accuracy difference (b - c) / N that
    inverts the exact McNemar test: given the b + c discordant images, b is
    binomial with probability pi, the difference is (b + c) (2 pi - 1) / N, and
    pi's Clopper-Pearson interval maps onto it. The interval excludes 0
    exactly when :func:`mcnemar_exact`'s p is below 1 - level (both are the
    two one-sided exact tests at (1 - level) / 2)."""
    n = b + c
    if n == 0:
        return Interval(0.0, 0.0, "exact McNemar: no discordant image", level)
    cp = clopper_pearson(b, n, level)
    scale = n / n_images
    return Interval(scale * (2 * cp.low - 1), scale * (2 * cp.high - 1),
                    f"exact, inverts McNemar's test ({b} vs {c} discordant images)", level)


def effective_wilson(mean: float, var: float, n_max: float, df: float, level: float = 0.95,
                     method: str = "", n_certain: float | None = None) -> Interval:
    """A Wilson score interval whose sample size is the effective one,
    n_eff = mean (1 - mean) / var (the binomial sample size with the same
    variance of the mean: the design effect of seeds and images together),
    at most ``n_max``, and whose quantile is Student's t with ``df``. It stays
    inside [0, 1] and has positive width for any finite data, also at 0 % and
    100 % (where the sample size is ``n_certain``, the test images: seeds that
    all score 100 % on them say no more than one seed does) and when every
    seed scored the same."""
    pq = mean * (1 - mean)
    if pq <= 0:
        n_eff = n_certain or n_max
    else:
        n_eff = n_max if var <= 0 else min(n_max, pq / var)
    z = t_quantile(1 - (1 - level) / 2, max(df, 1.0)) if math.isfinite(df) else normal_quantile(1 - (1 - level) / 2)
    denom = 1 + z * z / n_eff
    centre = (mean + z * z / (2 * n_eff)) / denom
    half = z * math.sqrt(pq / n_eff + z * z / (4 * n_eff * n_eff)) / denom
    # Wilson's bounds hold the estimate; at 0 % and 100 % a rounding error must not move it outside.
    return Interval(max(0.0, min(mean, centre - half)), min(1.0, max(mean, centre + half)), method, level)


def accuracy_interval(correct: torch.Tensor, level: float = 0.95) -> Interval:
    """The interval of a model's mean accuracy over its seeds, from its
    (K seeds, N images) 0/1 correctness: the variance of the mean counts
    training randomness (the seeds' accuracies, s^2 / K) and test-set sampling
    (the images, V_img / N, estimated as in :func:`crossed_difference`), with
    Welch-Satterthwaite df; the interval is :func:`effective_wilson` (bounded
    in [0, 1]). With one seed it is Wilson's interval of that run (V_img = p(1 - p))."""
    c = correct.unsqueeze(0) if correct.dim() == 1 else correct
    k, n = c.shape
    comp = components(c)
    mean = float(comp.acc.mean())
    v_seeds = float(comp.acc.var()) / k if k >= 2 else 0.0
    v_img = max(0.0, float(comp.per_image[0].var()) - float(comp.ms_residual[0]) / k) / n if n >= 2 else 0.0
    if k == 1:  # one run: Wilson's own interval, on the images
        return effective_wilson(mean, mean * (1 - mean) / n, n, math.inf, level,
                                "Wilson score, test images only, one seed")
    return seeds_and_images(mean, v_seeds, k, v_img, n, level, float(max(n - 1, 1)),
                            f"Wilson score at the effective sample size, seeds and test images, n={k} seeds")


def seeds_and_images(mean: float, v_seeds: float, k: int, v_img: float, n: int, level: float, fallback_df: float,
                     method: str) -> Interval:
    """:func:`effective_wilson` for a mean over ``k`` seeds and ``n`` images
    whose variance is ``v_seeds`` + ``v_img``, with Welch-Satterthwaite df
    over the two parts (``fallback_df`` where both are 0)."""
    var = v_seeds + v_img
    den = (v_seeds**2 / (k - 1) if k >= 2 else 0.0) + v_img**2 / max(n - 1, 1)
    df = var**2 / den if den > 0 else fallback_df
    return effective_wilson(mean, var, n * k, df, level, method, n_certain=n)


def accuracy_summary(accuracies: list[float], n_test: int, correct_counts: list[int] | None = None,
                     level: float = 0.95, correct: torch.Tensor | None = None) -> dict:
    """mean, std, min, max, n and a CI that stays in [0, 1]: with the
    per-image ``correct`` (seeds x images) :func:`accuracy_interval` (seeds
    and test images); without it, the same interval with the test-image part
    taken as binomial, p (1 - p) / N (one seed: Wilson's interval of the run)."""
    n = len(accuracies)
    if n == 0:
        return {"n": 0}
    out: dict[str, Any] = {"mean": statistics.fmean(accuracies), "std": statistics.stdev(accuracies) if n > 1 else 0.0,
           "min": min(accuracies), "max": max(accuracies), "n": n}
    if correct is not None and correct.shape[0] == n:
        out["ci"] = accuracy_interval(correct, level).to_dict()
    elif n >= 2 and n_test > 0:
        m = out["mean"]
        out["ci"] = seeds_and_images(m, out["std"] ** 2 / n, n, m * (1 - m) / n_test, n_test, level, float(n - 1),
                                     "Wilson score at the effective sample size, seeds and test images "
                                     f"(binomial), n={n} seeds").to_dict()
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



def probability_of_improvement(acc_a: list[float], acc_b: list[float]) -> float:
    """P(A > B) over every (seed of A, seed of B) pair, ties counting one
    half: the Mann-Whitney U statistic divided by the number of pairs, the
    "probability of improvement" of rliable (Agarwal et al., 2021)."""
    if not acc_a or not acc_b:
        raise ValueError("probability_of_improvement needs at least one accuracy per model")
    wins = sum((x > y) + 0.5 * (x == y) for x in acc_a for y in acc_b)
    return wins / (len(acc_a) * len(acc_b))


def mann_whitney_p(acc_a: list[float], acc_b: list[float], max_splits: int = 200_000) -> float:
    """Two-sided p-value of the Mann-Whitney statistic of two sets of seeds'
    accuracies: the share of all ways to split the pooled values into groups
    of these sizes whose probability of improvement is at least as far from
    1/2 as the observed one (exact; by the normal approximation with the tie
    correction beyond ``max_splits`` splits). What a probability of
    improvement of 0 or 1 from few seeds is worth: with 3 seeds each it is 0.1."""
    import itertools

    ka, kb = len(acc_a), len(acc_b)
    observed = abs(probability_of_improvement(acc_a, acc_b) - 0.5)
    pooled = list(acc_a) + list(acc_b)
    if math.comb(ka + kb, ka) <= max_splits:
        hits = total = 0
        for idx in itertools.combinations(range(ka + kb), ka):
            chosen = set(idx)
            a = [pooled[i] for i in idx]
            b = [pooled[i] for i in range(ka + kb) if i not in chosen]
            total += 1
            hits += abs(probability_of_improvement(a, b) - 0.5) >= observed - 1e-12
        return hits / total
    n = ka + kb
    ranks = sorted(pooled)
    ties = sum(c**3 - c for c in (ranks.count(v) for v in set(ranks)))
    var = ka * kb / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = observed * ka * kb / math.sqrt(var)
    return min(1.0, 2 * (1 - statistics.NormalDist().cdf(z)))


# --- the verdict: training randomness and test-set sampling together -------------------

@dataclass(frozen=True)
class Components:
    """Per study (leading dimension S) moments of one model's (S, K, N) 0/1
    correctness: per-seed accuracy, per-image mean over seeds, and the
    two-way (seed x image) residual mean square."""

    acc: torch.Tensor        # (S, K) accuracy of each seed
    per_image: torch.Tensor  # (S, N) mean correctness of each image over the seeds
    ms_residual: torch.Tensor  # (S,) two-way ANOVA residual mean square (0 when K = 1)


def components(correct: torch.Tensor) -> Components:
    """Moments of a (S, K, N) (or (K, N)) 0/1 tensor. The residual mean square
    of the seed x image table, SS_res / ((K-1)(N-1)) with SS_res = SS_total -
    SS_seeds - SS_images, estimates the variance of an image's correctness
    from seed to seed beyond the seeds' overall accuracies (Searle, Casella &
    McCulloch 1992, ch. 4)."""
    c = correct.unsqueeze(0) if correct.dim() == 2 else correct
    _, k, n = c.shape
    f64 = torch.float64
    acc, per_image = c.sum(2, dtype=f64) / n, c.sum(1, dtype=f64) / k
    grand = acc.mean(1)
    if k < 2:
        return Components(acc, per_image, torch.zeros_like(grand))
    # sum of squares: for 0/1 values c² = c, so it is the sum itself.
    sum_sq = acc.sum(1) * n if c.dtype == torch.bool or not bool(((c != 0) & (c != 1)).any()) \
        else (c.double() ** 2).sum((1, 2))
    ss_total = sum_sq - k * n * grand**2
    ss_seeds = n * ((acc - grand[:, None]) ** 2).sum(1)
    ss_images = k * ((per_image - grand[:, None]) ** 2).sum(1)
    ms = (ss_total - ss_seeds - ss_images).clamp(min=0) / ((k - 1) * (n - 1))
    return Components(acc, per_image, ms)


def crossed_difference(correct_a: torch.Tensor, correct_b: torch.Tensor) -> dict[str, torch.Tensor]:
    """The mean accuracy difference of A and B and its variance over both
    sources of randomness, for each of S studies at once.

    ``correct_a`` is (S, K_A, N) or (K_A, N), ``correct_b`` (S, K_B, N) or
    (K_B, N): 0/1 per seed and test image, the same N images for both models.
    Seeds of A and of B are independent trainings (they need not pair).

    Model (crossed random effects): correctness = model mean + seed effect +
    image effect + residual. The difference D = mean(A) - mean(B) has

        Var(D) = s²_A / K_A + s²_B / K_B + V_img / N

    where s²_X is the sample variance of model X's per-seed accuracies
    (training randomness, plus its own per-seed test noise) and V_img, the
    variance over images of the per-image difference that every seed shares,
    is estimated by  var_i(mean_A_i - mean_B_i) - MS_A / K_A - MS_B / K_B
    (the residual mean squares remove the seed-to-seed part already counted
    in s²; floored at 0). A model with one seed contributes no training
    variance (it cannot be measured). Degrees of freedom: Welch-Satterthwaite
    over the three parts (K_A - 1, K_B - 1, N - 1); when the model with fewer
    seeds has 2 or 3, the seed parts' Welch df alone (conservative: simulation
    showed Satterthwaite's df too liberal with 2, and same-architecture splits
    of real trainings at 3 vs 3 reached 5.0-5.3 % with it, 2.6-4.8 % without).

    Returns tensors of shape (S,): difference, var_train_a, var_train_b,
    var_images, se, df (the one the verdict uses), df_satterthwaite,
    df_seeds, t.
    """
    ca, cb = (x.unsqueeze(0) if x.dim() == 2 else x for x in (correct_a, correct_b))
    if ca.shape[-1] != cb.shape[-1] or ca.shape[0] != cb.shape[0]:
        raise ValueError(f"correctness shapes {tuple(correct_a.shape)} and {tuple(correct_b.shape)} do not pair: "
                         "the same studies and test images are needed")
    ka, kb, n = ca.shape[1], cb.shape[1], ca.shape[2]
    A, B = components(ca), components(cb)
    diff = A.acc.mean(1) - B.acc.mean(1)
    zero = torch.zeros_like(diff)
    va = A.acc.var(1) / ka if ka >= 2 else zero
    vb = B.acc.var(1) / kb if kb >= 2 else zero
    m = A.per_image - B.per_image
    # One test image: no spread over images to estimate (NaN, and no verdict: compare_pair says why).
    v_img = ((m.var(1) - A.ms_residual / ka - B.ms_residual / kb).clamp(min=0) / n if n >= 2
             else torch.full_like(diff, math.nan))
    var = va + vb + v_img
    den_seeds = zero.clone()
    if ka >= 2:
        den_seeds = den_seeds + va**2 / (ka - 1)
    if kb >= 2:
        den_seeds = den_seeds + vb**2 / (kb - 1)
    den = den_seeds + v_img**2 / max(n - 1, 1)
    images_df = torch.full_like(var, float(n - 1))
    df_satterthwaite = torch.where(den > 0, var**2 / den.clamp(min=1e-300), images_df)
    # The seed parts' own Welch df: never more than Satterthwaite's (the image part only adds df).
    df_seeds = torch.where(den_seeds > 0, (va + vb) ** 2 / den_seeds.clamp(min=1e-300), df_satterthwaite)
    # With 2 or 3 seeds a variance has 1 or 2 df, often far too small by chance, and then Satterthwaite's df
    # shoots up exactly when the variance is underestimated (simulated false-positive rate 6.5 % at 2 seeds;
    # 5.0-5.3 % in same-architecture splits of real trainings at 3): use the seed parts' df there
    # (docs/statistics.md).
    df = df_seeds if min(ka, kb) in (2, 3) else df_satterthwaite
    se = var.sqrt()
    t = torch.where(se > 0, diff / se.clamp(min=1e-300),
                    torch.where(diff == 0, zero, torch.sign(diff) * math.inf))
    return {"difference": diff, "var_train_a": va, "var_train_b": vb, "var_images": v_img, "se": se,
            "df": df, "df_satterthwaite": df_satterthwaite, "df_seeds": df_seeds, "t": t}


def crossed_p_values(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Two-sided p-values of :func:`crossed_difference`'s t statistics."""
    return torch.tensor([t_two_sided_p(t, df) for t, df in zip(stats["t"].tolist(), stats["df"].tolist())],
                        dtype=torch.float64)


def verdict_rule(alpha: float = 0.05) -> str:
    """The accuracy verdict rule, in words (printed in every report)."""
    level = f"{100 * (1 - alpha):g} %"
    return (f"A model is called more accurate than another when the {level} interval of their mean accuracy "
            f"difference excludes 0 (two-sided p below {alpha:g}). With at least 2 seeds per model the interval's "
            "standard error adds the spread of each model's per-seed accuracies (training randomness: "
            "initialisation, data order) to the spread over test images of the per-image difference "
            "(test-set sampling), with Welch-Satterthwaite degrees of freedom (with 2 or 3 seeds, the seeds' own, "
            "which is conservative). An architecture is called more accurate only when both models have at least "
            "2 seeds: with one seed, only the test images vary (exact McNemar test, with the exact interval that "
            "inverts it), and its result is about those two trained networks, not the architectures.")


def compare_pair(name_a: str, correct_a: torch.Tensor, name_b: str, correct_b: torch.Tensor,
                 alpha: float = 0.05, seeds_a: list[int] | None = None, seeds_b: list[int] | None = None) -> dict:
    """Compare two models on the same test set. ``correct_*`` are (seeds, N)
    0/1 tensors; ``seeds_*`` name their rows (for the per-seed McNemar
    tests, which pair equal seeds, or rows by position when no seed is shared).

    Verdict rule (:func:`verdict_rule`): with >= 2 seeds for both models, the
    crossed-variance t test of :func:`crossed_difference`; otherwise the test
    covers test-set noise only (exact McNemar for one seed each), ``scope``
    says so and ``unmeasured`` names the models whose training variance is
    unknown."""
    ka, kb = correct_a.shape[0], correct_b.shape[0]
    seeds_a = list(range(ka)) if seeds_a is None else list(seeds_a)
    seeds_b = list(range(kb)) if seeds_b is None else list(seeds_b)
    st = {k: float(v[0]) for k, v in crossed_difference(correct_a, correct_b).items()}
    shared = [s for s in seeds_a if s in seeds_b]
    pairs = [(s, seeds_a.index(s), seeds_b.index(s)) for s in shared] if shared else \
        [(None, i, i) for i in range(min(ka, kb))]
    per_seed: list[dict[str, Any]] = []
    for seed, i, j in pairs:
        b, c = discordant(correct_a[i], correct_b[j])
        per_seed.append({"seed": seed if seed is not None else f"{seeds_a[i]}/{seeds_b[j]}",
                         "b": b, "c": c, "p_value": mcnemar_exact(b, c),
                         "difference": (b - c) / correct_a.shape[1]})
    unmeasured = [n for n, k in ((name_a, ka), (name_b, kb)) if k < 2]
    measured = [n for n, k in ((name_a, ka), (name_b, kb)) if k >= 2]
    level = 1 - alpha
    diff, n_images = st["difference"], correct_a.shape[-1]
    if ka == 1 and kb == 1:
        test = "exact McNemar (test images only)"
        p = per_seed[0]["p_value"]
        ci = mcnemar_interval(per_seed[0]["b"], per_seed[0]["c"], n_images, level)
        scope = "test images only: these two trained networks"
    else:
        test = ("t test, crossed seed x image variance, Welch-Satterthwaite df" if not unmeasured else
                f"t test over test images and the seed spread of {name_list(measured)} only ("
                f"{name_list(unmeasured)}: one seed, its training variance is not in the interval)")
        # No spread at all (every seed of each model scored the same and the per-image part is nil, as on a
        # handful of images): nothing to weigh a difference against, so no test (an equal pair: p = 1).
        degenerate = not st["se"] > 0 or not st["df"] > 0
        p = (1.0 if diff == 0 else math.nan) if degenerate else t_two_sided_p(st["t"], st["df"])
        half = math.inf if degenerate else t_quantile(1 - alpha / 2, st["df"]) * st["se"]
        if degenerate and diff == 0 and st["se"] == 0 and st["df"] > 0:
            half = 0.0
        # A difference of two accuracies lies in [-1, 1]: so does its interval.
        ci = Interval(max(-1.0, diff - half), min(1.0, diff + half), "Student t, Satterthwaite df", level)
        scope = ("seeds and test images" if not unmeasured else
                 f"test images and the seeds of {name_list(measured)} only")
    significant = bool(p < alpha) and diff != 0 and n_images >= 2  # (a NaN p: no test, never significant)
    observed = (name_a if diff > 0 else name_b) if significant else None
    # An architecture verdict needs each side's training randomness measured: two seeds or more each.
    winner = observed if not unmeasured else None
    acc_a, acc_b = correct_a.double().mean(1).tolist(), correct_b.double().mean(1).tolist()
    poi = None
    if ka >= 2 and kb >= 2:
        value = probability_of_improvement(acc_a, acc_b)
        wins = round(2 * value * ka * kb) / 2  # a whole or half count: the value's own rounding undone
        poi = {"value": value, "pairs": ka * kb, "wins": wins, "p_value": mann_whitney_p(acc_a, acc_b)}
    if winner:
        verdict = f"{winner} more accurate"
    elif observed:
        verdict = (f"{observed} scored higher on these trained networks (test-set noise only; training variance "
                   f"of {name_list(unmeasured)} unmeasured)")
    elif n_images < 2:
        verdict = f"no test: {n_images} test image(s), too few to compare on"
    elif math.isnan(p):
        verdict = ("no test: every seed of each model scored the same and the images show no spread, so there is "
                   "nothing to weigh the difference against (too few test images?)")
    else:
        verdict = f"no significant difference at alpha = {alpha}"
    return {
        "a": name_a, "b": name_b, "seeds_a": ka, "seeds_b": kb,
        "difference": diff, "difference_ci": ci.to_dict(), "p_value": p, "test": test,
        "se": st["se"], "df": st["df"],
        "se_training": math.sqrt(st["var_train_a"] + st["var_train_b"]),
        "se_test_images": math.sqrt(st["var_images"]),
        "scope": scope, "unmeasured": unmeasured, "architecture_verdict": not unmeasured,
        "mcnemar_per_seed": per_seed,
        "probability_of_improvement": poi,
        "alpha": alpha, "significant": significant, "winner": winner, "observed_winner": observed,
        "verdict": verdict,
    }


def name_list(names: list[str]) -> str:
    """a, b and c"""
    if not names:
        return "none"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
