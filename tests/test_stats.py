import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from archbench.stats import (
    accuracy_summary,
    bootstrap_diff_interval,
    compare_pair,
    mcnemar_exact,
    t_interval,
    t_quantile,
    wilson_interval,
)

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize("df, textbook", [(1, 12.706), (2, 4.303), (4, 2.776), (9, 2.262), (29, 2.045)])
def test_t_quantiles_match_the_textbook_table(df, textbook):
    assert t_quantile(0.975, df) == pytest.approx(textbook, abs=5e-4)
    assert t_quantile(0.975, df) == pytest.approx(scipy_stats.t.ppf(0.975, df), rel=1e-9)


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
    assert "Student t" in s["ci"]["method"] and s["n"] == 3 and s["std"] == pytest.approx(0.01)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 300), st.integers(0, 300))
def test_mcnemar_exact_equals_scipy_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(min(b, c), b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_mcnemar_by_hand():
    # b=1, c=5: p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14/64.
    assert mcnemar_exact(1, 5) == pytest.approx(14 / 64)
    assert mcnemar_exact(3, 3) == 1.0


def test_compare_pair_verdicts():
    torch.manual_seed(0)
    n = 5000
    a = (torch.rand(3, n) < 0.90).int()
    b = a.clone()
    flip = torch.rand(3, n) < 0.05  # B wrong on 5 % more samples
    b[flip] = 0
    r = compare_pair("A", a, "B", b)
    assert r["significant"] and r["winner"] == "A" and r["verdict"] == "A more accurate"
    assert r["mcnemar_pooled"]["c"] == 0 and r["difference_ci"]["low"] > 0
    same = compare_pair("A", a, "A2", a.clone())
    assert not same["significant"] and same["verdict"].startswith("no significant difference")
    assert same["mcnemar_pooled"]["p_value"] == 1.0


def test_bootstrap_interval_covers_the_difference_and_shrinks_with_n():
    torch.manual_seed(1)
    a = (torch.rand(1, 20000) < 0.9).int()
    b = (torch.rand(1, 20000) < 0.9).int()
    wide = bootstrap_diff_interval(a[:, :2000], b[:, :2000])
    narrow = bootstrap_diff_interval(a, b)
    d = (a.double().mean() - b.double().mean()).item()
    assert narrow.low <= d <= narrow.high
    assert (narrow.high - narrow.low) < (wide.high - wide.low)
