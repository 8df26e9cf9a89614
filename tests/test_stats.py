import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from archbench.stats import (
    accuracy_summary,
    compare_pair,
    components,
    crossed_difference,
    mcnemar_exact,
    probability_of_improvement,
    t_cdf,
    t_interval,
    t_quantile,
    t_two_sided_p,
    wilson_interval,
)
from tests.simulate import Scenario, describe, monte_carlo_error, rates

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df, textbook", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantiles_match_the_textbook_table(df, textbook):
    assert t_quantile(0.975, df) == pytest.approx(textbook, abs=5e-4)
    assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)


@pytest.mark.parametrize("df", [1, 1.7, 2, 2.7, 5, 30, 1000, 9999])
@pytest.mark.parametrize("t", [0.0, 0.3, -1.2, 2.5, 6.0, -15.0, 40.0])
def test_t_distribution_against_scipy(t, df):
    assert t_cdf(t, df) == pytest.approx(scipy_stats.t.cdf(t, df), rel=1e-9, abs=1e-15)
    # two-sided p keeps its digits deep in the tail (no 1 - cdf cancellation)
    assert t_two_sided_p(t, df) == pytest.approx(2 * scipy_stats.t.sf(abs(t), df), rel=1e-8, abs=1e-300)


def test_t_interval_by_hand():
    xs = [0.88, 0.89, 0.87]
    m, s = 0.88, 0.01
    iv = t_interval(xs)
    assert iv.low == pytest.approx(m - 4.3026527 * s / math.sqrt(3))
    assert iv.high == pytest.approx(m + 4.3026527 * s / math.sqrt(3))


def test_wilson_interval_known_value():
    # 89 % of 10,000: Wilson 95 % interval [0.88372, 0.89598] (by the closed form).
    iv = wilson_interval(8900, 10000)
    assert iv.low == pytest.approx(0.88372, abs=1e-5) and iv.high == pytest.approx(0.89598, abs=1e-5)
    assert (iv.high - iv.low) / 2 == pytest.approx(0.0061, abs=2e-4)  # the ±0.6 pp of the issue


def test_accuracy_summary_switches_interval_with_n():
    assert "Wilson" in accuracy_summary([0.9], 10000)["ci"]["method"]
    s = accuracy_summary([0.9, 0.91, 0.92], 10000)
    assert "effective sample size" in s["ci"]["method"] and s["n"] == 3 and s["std"] == pytest.approx(0.01)
    # it covers the seeds' spread and the test images' sampling, inside [0, 1]
    assert 0.0 < s["ci"]["low"] < 0.91 - 2 * 0.01 / 3**0.5 and 0.91 + 2 * 0.01 / 3**0.5 < s["ci"]["high"] <= 1.0


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_mcnemar_exact_equals_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_mcnemar_by_hand():
    # b=1, c=5: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(3, 3) == 1.0


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(0.5, 1.0), min_size=1, max_size=8), st.lists(st.floats(0.5, 1.0), min_size=1, max_size=8))
def test_probability_of_improvement_is_mann_whitney_u_over_pairs(xs, ys):
    u = scipy_stats.mannwhitneyu(xs, ys).statistic  # U of the first sample, ties counted 1/2
    assert probability_of_improvement(xs, ys) == pytest.approx(u / (len(xs) * len(ys)))


def _two_way_residual_ms(c: np.ndarray) -> float:
    """Residual mean square of a seeds x images table, computed term by term."""
    k, n = c.shape
    resid = c - c.mean(1, keepdims=True) - c.mean(0, keepdims=True) + c.mean()
    return float((resid**2).sum() / ((k - 1) * (n - 1)))


def _random_correctness(gen, k, n, acc):
    hard = torch.rand(n, generator=gen)
    return (torch.rand(k, n, generator=gen) * 0.6 + hard * 0.6 < acc + 0.1).int()


def test_components_equal_the_two_way_anova_by_hand():
    gen = torch.Generator().manual_seed(3)
    c = _random_correctness(gen, 4, 500, 0.8)
    comp = components(c)
    a = c.numpy().astype(float)
    assert comp.acc[0].tolist() == pytest.approx(a.mean(1).tolist())
    assert comp.per_image[0].tolist() == pytest.approx(a.mean(0).tolist())
    assert float(comp.ms_residual[0]) == pytest.approx(_two_way_residual_ms(a), rel=1e-10)
    # The bool fast path and a float tensor agree.
    assert float(components(c.bool()).ms_residual[0]) == pytest.approx(float(comp.ms_residual[0]), rel=1e-12)


def test_crossed_variance_by_hand():
    gen = torch.Generator().manual_seed(5)
    ca, cb = _random_correctness(gen, 3, 800, 0.85), _random_correctness(gen, 4, 800, 0.8)
    st_ = {k: float(v[0]) for k, v in crossed_difference(ca, cb).items()}
    a, b = ca.numpy().astype(float), cb.numpy().astype(float)
    va, vb = a.mean(1).var(ddof=1) / 3, b.mean(1).var(ddof=1) / 4
    m = a.mean(0) - b.mean(0)
    v_img = max(0.0, m.var(ddof=1) - _two_way_residual_ms(a) / 3 - _two_way_residual_ms(b) / 4) / 800
    assert st_["difference"] == pytest.approx(a.mean() - b.mean())
    assert st_["var_train_a"] == pytest.approx(va) and st_["var_train_b"] == pytest.approx(vb)
    assert st_["var_images"] == pytest.approx(v_img)
    assert st_["se"] == pytest.approx(math.sqrt(va + vb + v_img))
    satt = (va + vb + v_img) ** 2 / (va**2 / 2 + vb**2 / 3 + v_img**2 / 799)
    assert st_["df_satterthwaite"] == pytest.approx(satt)
    # With 3 seeds on one side the rule takes the seed parts' Welch df (docs/statistics.md), never more.
    welch = (va + vb) ** 2 / (va**2 / 2 + vb**2 / 3)
    assert st_["df"] == pytest.approx(welch) and st_["df"] <= satt
    ca5 = _random_correctness(gen, 5, 800, 0.85)
    st5 = {k: float(v[0]) for k, v in crossed_difference(ca5, cb).items()}
    assert st5["df"] == st5["df_satterthwaite"]  # 4 and 5 seeds: Satterthwaite's


def test_seed_degrees_of_freedom_are_welchs():
    """The seed parts' df (used with 2 seeds) is Welch's df of the per-seed accuracies, as SciPy computes it."""
    gen = torch.Generator().manual_seed(11)
    ca, cb = _random_correctness(gen, 2, 600, 0.85), _random_correctness(gen, 5, 600, 0.8)
    got = crossed_difference(ca, cb)
    welch = scipy_stats.ttest_ind(ca.double().mean(1).numpy(), cb.double().mean(1).numpy(), equal_var=False)
    assert float(got["df_seeds"][0]) == pytest.approx(welch.df, rel=1e-9)
    assert float(got["df"][0]) == float(got["df_seeds"][0])  # 2 seeds: the conservative df
    assert float(got["df_seeds"][0]) <= float(got["df_satterthwaite"][0])


def test_one_seed_each_is_the_paired_test_over_images():
    """With one seed per model there is no training variance to estimate: the
    standard error is that of the per-image differences (SciPy's paired t),
    and the verdict is the exact McNemar test, scoped to the test set."""
    gen = torch.Generator().manual_seed(2)
    a = (torch.rand(1, 3000, generator=gen) < 0.88).int()
    b = a.clone()
    flip = torch.rand(1, 3000, generator=gen) < 0.06
    b[flip] = 1 - b[flip]
    st_ = crossed_difference(a, b)
    ref = scipy_stats.ttest_rel(a[0].numpy(), b[0].numpy())
    assert float(st_["t"][0]) == pytest.approx(ref.statistic, rel=1e-9)
    r = compare_pair("A", a, "B", b)
    bb, cc = int((a[0] & (1 - b[0])).sum()), int(((1 - a[0]) & b[0]).sum())
    assert r["p_value"] == pytest.approx(scipy_stats.binomtest(min(bb, cc), bb + cc, 0.5).pvalue, rel=1e-9)
    assert r["scope"].startswith("test images only") and r["unmeasured"] == ["A", "B"]
    assert r["winner"] is None and r["observed_winner"] == (("A" if r["difference"] > 0 else "B")
                                                            if r["significant"] else None)
    assert r["probability_of_improvement"] is None
    assert r["significant"] == (r["p_value"] < 0.05)


def test_compare_pair_verdicts():
    torch.manual_seed(0)
    n = 5000
    a = (torch.rand(3, n) < 0.90).int()
    b = a.clone()
    flip = torch.rand(3, n) < 0.05  # B wrong on 5 % more samples
    b[flip] = 0
    r = compare_pair("A", a, "B", b)
    assert r["significant"] and r["winner"] == "A" and r["verdict"] == "A more accurate"
    assert r["scope"] == "seeds and test images" and r["unmeasured"] == []
    assert all(s["c"] == 0 for s in r["mcnemar_per_seed"]) and r["difference_ci"]["low"] > 0
    assert r["probability_of_improvement"] == {"value": 1.0, "pairs": 9, "wins": 9, "p_value": pytest.approx(0.1)}
    same = compare_pair("A", a, "A2", a.clone())
    assert not same["significant"] and same["verdict"].startswith("no significant difference")
    assert same["p_value"] == 1.0 and same["difference"] == 0


def test_per_seed_mcnemar_pairs_equal_seeds():
    torch.manual_seed(4)
    a, b = (torch.rand(3, 400) < 0.9).int(), (torch.rand(2, 400) < 0.8).int()
    r = compare_pair("A", a, "B", b, seeds_a=[0, 1, 2], seeds_b=[2, 0])
    assert [s["seed"] for s in r["mcnemar_per_seed"]] == [0, 2]
    b0, c0 = int((a[0].bool() & ~b[1].bool()).sum()), int((~a[0].bool() & b[1].bool()).sum())
    assert (r["mcnemar_per_seed"][0]["b"], r["mcnemar_per_seed"][0]["c"]) == (b0, c0)
    one = compare_pair("A", a, "B", b[:1], seeds_a=[0, 1, 2], seeds_b=[2])
    assert one["scope"] == "test images and the seeds of A only" and one["unmeasured"] == ["B"]
    assert one["winner"] is None and "B: one seed" in one["test"]


def test_seed_variance_widens_the_interval():
    """The same per-image difference with seeds that disagree gives a wider
    interval than with seeds that agree: training randomness is in the verdict."""
    gen = torch.Generator().manual_seed(8)
    n = 4000
    base = (torch.rand(n, generator=gen) < 0.88).int()
    agree_a = base.repeat(3, 1)
    b = base.clone()
    b[:60] = 1 - b[:60]
    agree_b = b.repeat(3, 1)
    noisy_a = agree_a.clone()
    for k, shift in enumerate((0, 80, 160)):  # seed k of A is wrong on `shift` more images
        noisy_a[k, 1000:1000 + shift] = 0
    calm = compare_pair("A", agree_a, "B", agree_b)
    noisy = compare_pair("A", noisy_a, "B", agree_b)
    assert calm["se_training"] == 0 and noisy["se_training"] > 0
    width = lambda r: r["difference_ci"]["high"] - r["difference_ci"]["low"]  # noqa: E731
    assert width(noisy) > 2 * width(calm)


# --- the verdict procedure against a known truth ------------------------------------------

def test_simulated_scenario_looks_like_the_real_seed_study():
    d = describe(Scenario(), seeds=3, studies=40)
    assert d["accuracy"] == pytest.approx(0.88, abs=0.005)
    assert d["seed_sd"] == pytest.approx(0.0043, abs=0.0012)
    assert d["seed_disagreement"] == pytest.approx(0.076, abs=0.01)
    assert d["model_disagreement"] == pytest.approx(0.094, abs=0.01)


def test_no_true_difference_is_declared_at_most_5_percent_of_the_time():
    """1,000 simulated studies of 3 seeds on 10,000 test images, with the real
    study's seed-to-seed spread and no true difference: the verdict declares
    a difference in at most 5 % of them (+ 2.33 Monte-Carlo standard errors).
    Pooling McNemar over seeds, the old rule, does in far more."""
    studies = 1000
    r = rates(Scenario(), seeds=3, gap=0.0, studies=studies, seed=2024)
    assert r["crossed"] <= 0.05 + 2.33 * monte_carlo_error(0.05, studies), r
    assert r["pooled_mcnemar"] > 0.2, r


def test_a_true_one_point_gap_is_found_with_5_seeds():
    r = rates(Scenario(), seeds=5, gap=0.01, studies=200, seed=7)
    assert r["crossed"] > 0.5, r


@pytest.mark.filterwarnings("error")  # no "degrees of freedom <= 0" from a variance over one image
@pytest.mark.parametrize("seeds", [1, 3])
def test_one_test_image_gives_no_verdict_and_says_why(seeds):
    a = torch.ones(seeds, 1)
    b = torch.zeros(seeds, 1)
    out = compare_pair("a", a, "b", b)
    assert out["significant"] is False and out["winner"] is None
    assert out["verdict"] == "no test: 1 test image(s), too few to compare on"
    two = compare_pair("a", torch.ones(seeds, 2), "b", torch.zeros(seeds, 2))
    assert two["verdict"] != out["verdict"]  # two images are a (tiny) test
