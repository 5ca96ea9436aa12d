"""Exact tests for one yes/no outcome per question under two conditions: the sign test and its interval.

    from r1repro.exact_tests import PairedCounts
    PairedCounts(fixed=6, broken=0, n=64).p_value()        # 0.03125: two-sided exact sign test
    PairedCounts(fixed=6, broken=0, n=64).interval(0.95)   # exact interval for the paired difference

When each question gives one 0/1 outcome on both sides (the same questions under two templates, a
model before and after training, two models), only the discordant questions carry information: the
`fixed` ones (0 -> 1) and the `broken` ones (1 -> 0). Under "no difference" each discordant question is
fixed or broken with chance 1/2, so the exact test is a binomial test of fixed out of fixed + broken
against 1/2 (the sign test; McNemar's exact test). Its interval is conditional on the discordant count
d = fixed + broken: the Clopper-Pearson interval for p = fixed / d, mapped to the paired difference
(fixed - broken) / n = d / n * (2p - 1).

The central Clopper-Pearson interval at level 1 - a excludes p = 1/2 exactly when the two-sided
(doubled smaller tail) exact p-value is below a, so a verdict read off the interval and one read off
the p-value agree. Written with `math.comb` and bisection on the exact binomial CDF (no scipy).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_BISECTION_STEPS = 100  # halves [0, 1] far below float resolution


def binomial_cdf(x: int, n: int, p: float) -> float:
    """P(X <= x) for X ~ Binomial(n, p), summed exactly term by term (in logs, so large n stays finite).

    Args:
        x: the count (below 0 gives 0, n or more gives 1).
        n: trials (>= 0).
        p: success chance in [0, 1].
    """
    if n < 0 or not 0.0 <= p <= 1.0:
        raise ValueError(f"binomial_cdf: need n >= 0 and 0 <= p <= 1, got n={n}, p={p}")
    if x < 0:
        return 0.0
    if x >= n:
        return 1.0
    if p == 0.0:
        return 1.0
    if p == 1.0:
        return 0.0
    log_p, log_q = math.log(p), math.log1p(-p)
    total = sum(math.exp(math.log(math.comb(n, i)) + i * log_p + (n - i) * log_q) for i in range(x + 1))
    return min(1.0, total)


def sign_test_p(fixed: int, broken: int) -> float:
    """Two-sided exact sign test (McNemar exact): twice the smaller binomial tail at 1/2, capped at 1.

    Args:
        fixed: discordant questions that went 0 -> 1.
        broken: discordant questions that went 1 -> 0.

    Returns:
        The p-value; 1.0 when no question is discordant.
    """
    if fixed < 0 or broken < 0:
        raise ValueError(f"sign_test_p: counts must be >= 0, got {fixed}, {broken}")
    d = fixed + broken
    if d == 0:
        return 1.0
    return min(1.0, 2.0 * binomial_cdf(min(fixed, broken), d, 0.5))


def _bisect(increasing, target: float) -> float:
    """The p in [0, 1] where the increasing function `increasing(p)` crosses `target`."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        mid = (low + high) / 2
        if increasing(mid) < target:
            low = mid
        else:
            high = mid
    return (low + high) / 2


def clopper_pearson(x: int, n: int, confidence: float) -> tuple[float, float]:
    """The exact (Clopper-Pearson) central interval for a binomial proportion x / n.

    The lower end solves P(X >= x | p) = alpha/2, the upper end P(X <= x | p) = alpha/2, by bisection
    on the exact CDF; x = 0 gives a lower end of 0 and x = n an upper end of 1.

    Args:
        x: successes, 0 <= x <= n.
        n: trials (>= 1).
        confidence: the level, in (0, 1).

    Returns:
        (low, high).
    """
    if n < 1 or not 0 <= x <= n:
        raise ValueError(f"clopper_pearson: need 0 <= x <= n and n >= 1, got x={x}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"clopper_pearson: confidence must be in (0, 1), got {confidence!r}")
    tail = (1.0 - confidence) / 2
    # P(X >= x | p) = 1 - cdf(x - 1) rises with p; P(X <= x | p) falls with p, so its negative rises.
    low = 0.0 if x == 0 else _bisect(lambda p: 1.0 - binomial_cdf(x - 1, n, p), tail)
    high = 1.0 if x == n else _bisect(lambda p: -binomial_cdf(x, n, p), -tail)
    return low, high


@dataclass(frozen=True)
class PairedCounts:
    """One yes/no outcome per question on two sides, reduced to what the exact test needs.

    Attributes:
        fixed: questions 0 on the first side and 1 on the second.
        broken: questions 1 on the first side and 0 on the second.
        n: all paired questions (the concordant ones included).
        first_yes: questions 1 on the first side (None: not recorded). Which way the difference can
            move depends on it: from a first side right on no question nothing can break.
    """

    fixed: int
    broken: int
    n: int
    first_yes: int | None = None

    def __post_init__(self) -> None:
        if min(self.fixed, self.broken) < 0 or self.fixed + self.broken > self.n:
            raise ValueError(f"PairedCounts: need 0 <= fixed + broken <= n, got {self}")
        if self.first_yes is not None and not self.broken <= self.first_yes <= self.n - self.fixed:
            raise ValueError(f"PairedCounts: need broken <= first_yes <= n - fixed, got {self}")

    @classmethod
    def from_outcomes(cls, first: dict[str, float], second: dict[str, float]) -> PairedCounts:
        """Counts over the questions both dicts hold ({question: 0 or 1}); refuses other values."""
        common = sorted(set(first) & set(second))
        if any(v not in (0, 1) for q in common for v in (first[q], second[q])):
            raise ValueError("PairedCounts: every outcome must be 0 or 1 (one answer per question)")
        return cls(fixed=sum(first[q] == 0 and second[q] == 1 for q in common),
                   broken=sum(first[q] == 1 and second[q] == 0 for q in common), n=len(common),
                   first_yes=sum(first[q] == 1 for q in common))

    def can_go_against(self, expected: int) -> bool:
        """Whether this population could give a difference of the sign opposite to `expected` (+1 or
        -1). A rise is contradicted only by broken questions, which need a first side right somewhere;
        a fall only by fixed ones, which need it wrong somewhere. Unknown (`first_yes` None): True."""
        if self.first_yes is None:
            return True
        return self.first_yes > 0 if expected > 0 else self.first_yes < self.n

    @property
    def discordant(self) -> int:
        return self.fixed + self.broken

    @property
    def difference(self) -> float:
        """The paired difference of the two sides' shares, (fixed - broken) / n."""
        return (self.fixed - self.broken) / self.n if self.n else math.nan

    def p_value(self) -> float:
        """The two-sided exact sign test's p-value."""
        return sign_test_p(self.fixed, self.broken)

    def interval(self, confidence: float) -> tuple[float, float]:
        """The exact interval for the difference, conditional on the discordant count (a point at 0
        when no question is discordant: nothing to test)."""
        if self.n == 0:
            return math.nan, math.nan
        if self.discordant == 0:
            return 0.0, 0.0
        low, high = clopper_pearson(self.fixed, self.discordant, confidence)
        scale = self.discordant / self.n
        return scale * (2 * low - 1), scale * (2 * high - 1)

    def text(self) -> str:
        """`6 fixed, 0 broken`."""
        return f"{self.fixed} fixed, {self.broken} broken"
