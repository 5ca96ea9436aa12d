"""The exact sign test and Clopper-Pearson bounds against known values, and their agreement."""

from __future__ import annotations

import pytest

from r1repro.exact_tests import PairedCounts, binomial_cdf, clopper_pearson, sign_test_p


def test_binomial_cdf_matches_hand_sums() -> None:
    assert binomial_cdf(2, 12, 0.5) == pytest.approx((1 + 12 + 66) / 4096)
    assert binomial_cdf(0, 3, 0.2) == pytest.approx(0.8 ** 3)
    assert binomial_cdf(-1, 5, 0.3) == 0.0 and binomial_cdf(5, 5, 0.3) == 1.0
    assert binomial_cdf(1000, 2000, 0.5) == pytest.approx(0.5 + 0.5 * 0.017838, abs=1e-5)  # large n stays finite


@pytest.mark.parametrize(("fixed", "broken", "p"), [
    (6, 0, 0.03125),              # 2 / 2**6
    (0, 6, 0.03125),
    (10, 2, 2 * 79 / 4096),       # 2 P(X <= 2 | 12, 1/2)
    (5, 6, 1.0),                  # capped at 1
    (0, 0, 1.0),                  # nothing discordant: nothing to test
    (1, 0, 1.0),
])
def test_sign_test_p_values(fixed: int, broken: int, p: float) -> None:
    assert sign_test_p(fixed, broken) == pytest.approx(p)


@pytest.mark.parametrize(("x", "n", "low", "high"), [
    (0, 10, 0.0, 0.3085),
    (5, 10, 0.1871, 0.8129),
    (10, 10, 0.6915, 1.0),
    (1, 2, 0.0126, 0.9874),
])
def test_clopper_pearson_95_matches_tables(x: int, n: int, low: float, high: float) -> None:
    got = clopper_pearson(x, n, 0.95)
    assert got == pytest.approx((low, high), abs=1e-4)


def test_clopper_pearson_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        clopper_pearson(11, 10, 0.95)
    with pytest.raises(ValueError):
        clopper_pearson(1, 10, 1.0)


def test_paired_interval_is_the_proportion_interval_mapped_to_the_difference() -> None:
    counts = PairedCounts(fixed=6, broken=0, n=64)
    low, high = clopper_pearson(6, 6, 0.95)
    assert counts.difference == pytest.approx(6 / 64)
    assert counts.interval(0.95) == pytest.approx((6 / 64 * (2 * low - 1), 6 / 64 * (2 * high - 1)))
    assert PairedCounts(0, 0, 16).interval(0.95) == (0.0, 0.0)   # no discordant question: one point
    assert PairedCounts.from_outcomes({"a": 0, "b": 1, "c": 1}, {"a": 1, "b": 0, "c": 1, "d": 0}) == \
        PairedCounts(fixed=1, broken=1, n=3, first_yes=2)
    with pytest.raises(ValueError, match="0 or 1"):
        PairedCounts.from_outcomes({"a": 0.5}, {"a": 1})


@pytest.mark.parametrize("alpha", [0.05, 0.01, 0.05 / 7, 0.05 / 13])
def test_interval_excludes_zero_exactly_when_p_is_below_alpha(alpha: float) -> None:
    """The verdict rule read off the interval and the one read off the p-value never disagree."""
    for fixed in range(0, 25):
        for broken in range(0, 25):
            counts = PairedCounts(fixed, broken, 60)
            low, high = counts.interval(1 - alpha)
            excludes = low > 0 or high < 0
            assert excludes == (counts.p_value() < alpha), (fixed, broken, alpha)
