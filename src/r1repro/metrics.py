"""Evaluation metrics over graded samples: pass@k, mean@k, cons@k, bootstrap intervals, the
seed-averaged pairing of a change, and the one bracket format intervals are written in.

Pure functions on verdicts and answers; grading happens elsewhere (r1repro.grading), and answer
equivalence is passed in as a callable, so everything here runs without math-verify:

    from r1repro.metrics import pass_at_k, summarize
    pass_at_k(n=16, c=3, k=4)                               # unbiased estimator (Chen et al., 2021)
    summarize([[True, False], [False, False]], ks=(1, 2))   # mean, CI, pass@k per question set

Conventions:
- "mean@k" is DeepSeek-R1's pass@1: each question's share of correct samples (k of them),
  averaged over questions. It equals the mean of pass_at_k(n, c, 1).
- Confidence intervals resample questions, not samples: questions are the unit a benchmark draws.
- An empty question set gives NaN means (undefined, and visibly so); `n_questions` says why.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

import numpy as np

Equivalent = Callable[[str, str], bool]

# Bootstrap resamples are drawn in blocks so that memory stays bounded for large benchmarks.
_BOOT_BLOCK_CELLS = 2_000_000


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"pass_at_k: {name} must be an integer, got {value!r}")
    if value < 0:
        raise ValueError(f"pass_at_k: {name} must be >= 0, got {value}")
    return int(value)


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k: the chance that k of the n samples, drawn without replacement, hold a correct one.

    Computes 1 - C(n-c, k) / C(n, k) as 1 - prod_{i=n-c+1}^{n} (1 - k/i), which never forms the
    huge binomials and stays accurate for n in the thousands.

    Args:
        n: samples drawn for the question.
        c: correct samples among them.
        k: the k in pass@k (1 <= k <= n).

    Returns:
        A float in [0, 1].

    Raises:
        ValueError: a non-integer or negative argument, k < 1, k > n or c > n.
    """
    n, c, k = _check_count("n", n), _check_count("c", c), _check_count("k", k)
    if k < 1:
        raise ValueError(f"pass_at_k: k must be >= 1, got k={k}")
    if k > n:
        raise ValueError(f"pass_at_k: k={k} exceeds the number of samples n={n}; draw at least k samples")
    if c > n:
        raise ValueError(f"pass_at_k: c={c} correct samples exceeds n={n} samples")
    if n - c < k:
        return 1.0  # every k-subset must contain a correct sample
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def _is_correct(verdict: Any) -> bool:
    """True and 1 are correct; anything else (False, None for ungraded, stray strings) is not."""
    if isinstance(verdict, (bool, np.bool_)):
        return bool(verdict)
    return isinstance(verdict, (int, float, np.number)) and verdict == 1


def _count(verdicts: Sequence[Any] | None) -> tuple[int, int]:
    """(n, c) for one question."""
    verdicts = list(verdicts or [])
    return len(verdicts), sum(1 for v in verdicts if _is_correct(v))


def per_question_accuracy(verdicts_per_question: Sequence[Sequence[Any]]) -> list[float]:
    """Each question's share of correct samples.

    Args:
        verdicts_per_question: one list of verdicts (True = correct) per question.

    Returns:
        One float per question; a question with no samples scores 0.0 (nothing correct was produced).
    """
    out = []
    for verdicts in verdicts_per_question or []:
        n, c = _count(verdicts)
        out.append(c / n if n else 0.0)
    return out


def mean_at_k(verdicts_per_question: Sequence[Sequence[Any]]) -> float:
    """DeepSeek-R1's pass@1 with k samples per question ("mean@k"): per-question accuracy, averaged.

    Args:
        verdicts_per_question: one list of verdicts per question.

    Returns:
        The mean, or NaN for no questions.
    """
    scores = per_question_accuracy(verdicts_per_question)
    return float(np.mean(scores)) if scores else math.nan


def mean_pass_at_k(verdicts_per_question: Sequence[Sequence[Any]], k: int) -> float:
    """pass@k averaged over questions, each with its own n and c.

    Args:
        verdicts_per_question: one list of verdicts per question; each needs at least k of them.
        k: the k in pass@k.

    Returns:
        The mean over questions, or NaN for no questions.

    Raises:
        ValueError: a question has fewer than k samples (see `pass_at_k`).
    """
    scores = [pass_at_k(*_count(v), k) for v in verdicts_per_question or []]
    return float(np.mean(scores)) if scores else math.nan


def _safe_equivalent(equivalent: Equivalent, a: str, b: str) -> bool:
    if a.strip() == b.strip():
        return True  # spares the (slow, time-bounded) checker the common case
    try:
        return bool(equivalent(a, b))
    except Exception:  # noqa: BLE001 - a checker that fails on odd input means "not shown equal"
        return False


def majority_answer(answers: Sequence[str | None], equivalent: Equivalent) -> str | None:
    """The most frequent answer, grouping answers that `equivalent` deems equal.

    Args:
        answers: extracted answers; None (no answer found) never wins over a real answer.
        equivalent: (a, b) -> bool, e.g. r1repro.grading.answers_equivalent.

    Returns:
        The first-seen member of the largest group (ties go to the group seen first), or None when
        no answer is a string.
    """
    groups: list[list[Any]] = []  # [representative, count], in order of first occurrence
    for answer in answers or []:
        if not isinstance(answer, str):
            continue
        for group in groups:
            if _safe_equivalent(equivalent, group[0], answer):
                group[1] += 1
                break
        else:
            groups.append([answer, 1])
    if not groups:
        return None
    best = max(range(len(groups)), key=lambda i: (groups[i][1], -i))
    return groups[best][0]


def cons_at_k(
    answers_per_question: Sequence[Sequence[str | None]],
    golds: Sequence[str | None],
    equivalent: Equivalent,
) -> float:
    """Majority-vote accuracy (cons@k): share of questions whose majority answer matches the gold.

    Args:
        answers_per_question: one list of extracted answers per question.
        golds: the reference answer per question.
        equivalent: (answer, gold) -> bool.

    Returns:
        The share, or NaN for no questions.

    Raises:
        ValueError: the two lists differ in length.
    """
    answers_per_question, golds = list(answers_per_question or []), list(golds or [])
    if len(answers_per_question) != len(golds):
        raise ValueError(
            f"cons_at_k: {len(answers_per_question)} questions with answers but {len(golds)} golds"
        )
    if not golds:
        return math.nan
    hits = 0
    for answers, gold in zip(answers_per_question, golds):
        winner = majority_answer(answers, equivalent)
        if winner is not None and isinstance(gold, str) and _safe_equivalent(equivalent, winner, gold):
            hits += 1
    return hits / len(golds)


def seed_averaged(before: Mapping[Hashable, float], after_by_seed: Sequence[Mapping[Hashable, float]]
                  ) -> tuple[dict[Hashable, float], dict[Hashable, float]]:
    """The two sides of a paired change against a run trained with several seeds, per question: the
    start's score and the trained score averaged over the seeds, so each question stays one paired
    unit with the seeds' noise averaged in (with one seed, the plain pair).

    Evaluate's paired change (`evaluation.paired_change_over_seeds`) and the findings' RL rows
    (`claim_measures.rl_gain`) both pair this way; each then bootstraps the differences with its own
    params (evaluate.bootstrap_samples, report.bootstrap_samples).

    Args:
        before: {question: score} of the starting model.
        after_by_seed: one {question: score} per seed of the trained model.

    Returns:
        (before, after) on the questions the start and every seed hold, in sorted order.
    """
    questions = sorted(set(before).intersection(*after_by_seed))
    return ({q: before[q] for q in questions},
            {q: float(np.mean([scores[q] for scores in after_by_seed])) for q in questions})


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def interval_text(low: Any, high: Any, number: Callable[[float], str] = _percent) -> str:
    """`[9.4, 37.5]`: an interval's ends, each written by `number` (default: a share in % with one
    decimal). The one bracket format of every table (evaluate, findings, report).

    Returns:
        The bracket, or "" when an end is missing (None, NaN or infinite): each caller decides what
        stands in its place ("n/a", or the value alone).
    """
    if any(v is None or not math.isfinite(v) for v in (low, high)):
        return ""
    return f"[{number(low)}, {number(high)}]"


def _finite_array(values: Sequence[float]) -> np.ndarray:
    array = np.asarray(list(values or []), dtype=float).ravel()
    if not np.all(np.isfinite(array)):
        raise ValueError("bootstrap_ci: values must be finite numbers (got NaN or inf)")
    return array


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval for the mean of per-question values.

    Args:
        values: one number per question (e.g. `per_question_accuracy`).
        n_boot: bootstrap resamples (>= 1).
        confidence: coverage in (0, 1).
        seed: the resampling seed; the same seed gives the same interval.

    Returns:
        (low, high); always low <= mean <= high. (NaN, NaN) for no values.

    Raises:
        ValueError: n_boot < 1, confidence outside (0, 1), or non-finite values.
    """
    if isinstance(n_boot, bool) or not isinstance(n_boot, int) or n_boot < 1:
        raise ValueError(f"bootstrap_ci: n_boot must be an integer >= 1, got {n_boot!r}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"bootstrap_ci: confidence must be in (0, 1), got {confidence!r}")
    array = _finite_array(values)
    if array.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    rows = max(1, _BOOT_BLOCK_CELLS // array.size)
    means = np.concatenate(
        [
            array[rng.integers(0, array.size, size=(min(rows, n_boot - start), array.size))].mean(axis=1)
            for start in range(0, n_boot, rows)
        ]
    )
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1.0 - alpha / 2])
    mean = float(array.mean())
    # Summation order differs between the resamples and the mean, so a constant input could land a
    # rounding error outside; the point estimate belongs inside its own interval.
    return min(float(low), mean), max(float(high), mean)


def summarize(
    per_question_verdicts: Sequence[Sequence[Any]],
    n_boot: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    ks: Sequence[int] = (),
) -> dict[str, float | int]:
    """The headline numbers for one model on one benchmark.

    Args:
        per_question_verdicts: one list of verdicts per question.
        n_boot, confidence, seed: see `bootstrap_ci`.
        ks: extra pass@k values to report, as keys "pass@{k}"; a k above a question's sample
            count raises (see `mean_pass_at_k`).

    Returns:
        {"mean": mean@k, "ci_low", "ci_high", "n_questions", "k": the smallest number of samples any
        question got (so a reader never overstates k), "pass@{k}" for each k in ks}.
    """
    scores = per_question_accuracy(per_question_verdicts)
    low, high = bootstrap_ci(scores, n_boot=n_boot, confidence=confidence, seed=seed)
    counts = [len(list(v or [])) for v in per_question_verdicts or []]
    summary: dict[str, float | int] = {
        "mean": float(np.mean(scores)) if scores else math.nan,
        "ci_low": low,
        "ci_high": high,
        "n_questions": len(scores),
        "k": min(counts) if counts else 0,
    }
    for k in ks:
        summary[f"pass@{k}"] = mean_pass_at_k(per_question_verdicts, k)
    return summary


def least_squares_slope(x: Sequence[float], y: Sequence[float]) -> float:
    """The ordinary least-squares slope of y on x (with an intercept).

    Raises:
        ValueError: fewer than two points, unequal lengths, or x all equal (no slope is defined).
    """
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if xs.shape != ys.shape or xs.size < 2:
        raise ValueError(f"a slope needs two or more (x, y) pairs of equal count, got {xs.size} and {ys.size}")
    spread = ((xs - xs.mean()) ** 2).sum()
    if spread == 0:
        raise ValueError("a slope needs x values that differ; all are equal")
    return float(((xs - xs.mean()) * (ys - ys.mean())).sum() / spread)
