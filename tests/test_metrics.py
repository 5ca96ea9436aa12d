"""Tests for r1repro.metrics: pass@k against exact combinatorics, properties, bootstrap intervals.

Run: python -m pytest tests/test_metrics.py -q
"""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from r1repro.metrics import (
    bootstrap_ci,
    cons_at_k,
    interval_text,
    majority_answer,
    mean_at_k,
    mean_pass_at_k,
    pass_at_k,
    per_question_accuracy,
    seed_averaged,
    summarize,
)


def exact_pass_at_k(n: int, c: int, k: int) -> float:
    return float(1 - Fraction(math.comb(n - c, k), math.comb(n, k)))


def same_text(a: str, b: str) -> bool:
    return a.replace(" ", "") == b.replace(" ", "")


GRID = [
    (n, c, k)
    for n in (1, 2, 5, 16, 64)
    for c in range(0, n + 1, max(1, n // 8))
    for k in (1, 2, 4, 8, 16)
    if k <= n
]
GRID += [(1000, c, k) for c in (0, 1, 7, 100, 500, 999, 1000) for k in (1, 10, 100, 500, 1000)]


@pytest.mark.parametrize("n,c,k", GRID)
def test_pass_at_k_matches_exact_binomials(n, c, k):
    assert pass_at_k(n, c, k) == pytest.approx(exact_pass_at_k(n, c, k), abs=1e-9)


def test_pass_at_k_known_values():
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0
    assert pass_at_k(4, 2, 2) == pytest.approx(5 / 6)
    assert pass_at_k(10, 1, 10) == 1.0


@pytest.mark.parametrize(
    "n,c,k,message",
    [
        (4, 1, 5, "k=5 exceeds the number of samples n=4"),
        (4, 5, 1, "c=5 correct samples exceeds n=4"),
        (-1, 0, 1, "n must be >= 0"),
        (4, -1, 1, "c must be >= 0"),
        (4, 1, 0, "k must be >= 1"),
        (4.0, 1, 1, "n must be an integer"),
        (4, True, 1, "c must be an integer"),
    ],
)
def test_pass_at_k_rejects_bad_arguments(n, c, k, message):
    with pytest.raises(ValueError, match=message):
        pass_at_k(n, c, k)


@st.composite
def nck(draw):
    n = draw(st.integers(1, 300))
    return n, draw(st.integers(0, n)), draw(st.integers(1, n))


@settings(max_examples=200, deadline=None)
@given(nck())
def test_pass_at_k_properties(args):
    n, c, k = args
    value = pass_at_k(n, c, k)
    assert 0.0 <= value <= 1.0
    if k < n:
        assert pass_at_k(n, c, k + 1) >= value - 1e-12  # more tries never hurt
    if c < n:
        assert pass_at_k(n, c + 1, k) >= value - 1e-12  # more correct samples never hurt
    assert pass_at_k(n, c, 1) == pytest.approx(c / n, abs=1e-12)


def test_mean_at_k_is_r1_pass_at_1():
    verdicts = [[True, False, False, False], [True, True, True, True], [False] * 4]
    assert mean_at_k(verdicts) == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert mean_at_k(verdicts) == pytest.approx(mean_pass_at_k(verdicts, 1))


def test_mean_at_k_odd_inputs():
    assert math.isnan(mean_at_k([]))
    assert per_question_accuracy([[], [None, True], ["True", 1]]) == [0.0, 0.5, 0.5]


def test_mean_pass_at_k_needs_k_samples():
    with pytest.raises(ValueError, match="exceeds the number of samples"):
        mean_pass_at_k([[True, False]], 4)


def test_majority_groups_equivalent_answers():
    answers = ["1/2", "0.5", None, "1 / 2", "3", "3"]
    assert majority_answer(answers, same_text) == "1/2"  # "1/2" and "1 / 2" form the largest group


def test_majority_none_never_wins_and_ties_go_first():
    assert majority_answer([None, None, None, "7"], same_text) == "7"
    assert majority_answer(["a", "b", "b", "a"], same_text) == "a"
    assert majority_answer([None, None], same_text) is None
    assert majority_answer([], same_text) is None


def test_majority_survives_a_failing_checker():
    def broken(a, b):
        raise RuntimeError("parser crashed")

    assert majority_answer(["x", "y", "y"], broken) == "y"


def test_cons_at_k():
    answers = [["4", "4", "5"], ["1", "2", "2"], [None, None, None]]
    assert cons_at_k(answers, ["4", "1", "0"], same_text) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="2 golds"):
        cons_at_k(answers, ["4", "1"], same_text)
    assert math.isnan(cons_at_k([], [], same_text))


def test_bootstrap_ci_contains_mean_and_is_deterministic():
    values = [0.13, 0.91, 0.42, 0.77, 0.05, 0.64, 0.38, 0.99, 0.21, 0.56]
    low, high = bootstrap_ci(values, n_boot=2000, seed=3)
    assert low <= sum(values) / len(values) <= high
    assert (low, high) == bootstrap_ci(values, n_boot=2000, seed=3)
    assert (low, high) != bootstrap_ci(values, n_boot=2000, seed=4)
    narrow = bootstrap_ci(values, n_boot=2000, confidence=0.5, seed=3)
    assert low <= narrow[0] <= narrow[1] <= high


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(0.0, 1.0), min_size=1, max_size=40), st.integers(0, 2**32 - 1))
def test_bootstrap_ci_contains_mean_property(values, seed):
    low, high = bootstrap_ci(values, n_boot=200, seed=seed)
    mean = sum(values) / len(values)
    assert low <= high
    assert low - 1e-12 <= mean <= high + 1e-12


def test_bootstrap_ci_edge_cases():
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([0.1] * 7) == (pytest.approx(0.1), pytest.approx(0.1))
    with pytest.raises(ValueError, match="confidence"):
        bootstrap_ci([1.0], confidence=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        bootstrap_ci([1.0], n_boot=0)
    with pytest.raises(ValueError, match="finite"):
        bootstrap_ci([1.0, float("nan")])


def test_bootstrap_ci_large_benchmark_is_bounded():
    values = [float(i % 2) for i in range(50_000)]
    low, high = bootstrap_ci(values, n_boot=100, seed=0)
    assert low < 0.5 < high and high - low < 0.02


def test_summarize():
    verdicts = [[True, False, True, True], [False] * 4, [True] * 4, [True, False, False]]
    summary = summarize(verdicts, n_boot=500, seed=1, ks=(1, 2))
    assert summary["n_questions"] == 4
    assert summary["k"] == 3
    assert summary["mean"] == pytest.approx((0.75 + 0 + 1 + 1 / 3) / 4)
    assert summary["ci_low"] <= summary["mean"] <= summary["ci_high"]
    assert summary["pass@1"] == pytest.approx(summary["mean"])
    assert summary["pass@2"] >= summary["pass@1"]
    headline = ("mean", "ci_low", "ci_high", "n_questions", "k")
    assert summarize(verdicts, n_boot=500, seed=1) == {key: summary[key] for key in headline}


def test_summarize_empty():
    summary = summarize([])
    assert summary["n_questions"] == 0 and summary["k"] == 0 and math.isnan(summary["mean"])


def test_seed_averaged_pairs_the_questions_every_side_holds():
    seeds = [{"a": 1.0, "b": 1.0}, {"a": 0.0, "b": 1.0, "c": 0.0}]
    before, after = seed_averaged({"b": 0.0, "a": 1.0, "c": 1.0}, seeds)
    assert before == {"a": 1.0, "b": 0.0} and after == {"a": 0.5, "b": 1.0}
    assert list(after) == ["a", "b"]  # sorted: the bootstrap resamples the same order everywhere


def test_interval_text_is_one_bracket_or_nothing():
    assert interval_text(0.094, 0.375) == "[9.4, 37.5]"
    assert interval_text(-0.031, 0.156, lambda v: f"{100 * v:+.1f}") == "[-3.1, +15.6]"
    assert interval_text(None, 0.5) == interval_text(0.1, float("nan")) == ""
