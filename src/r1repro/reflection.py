"""Self-reflection detection: the Dr. GRPO paper's keyword pool.

The paper (Liu et al., 2025, Sec. 2.3, "Aha moment already appears in base models") flags a
response as self-reflective when it contains a keyword from a fixed pool AND an LLM judge
(gpt-4o-mini) places it in the self-reflection category; it reports the share of questions with at
least one such response. Here only the keyword half runs: no param reaches a judge, so the findings
say "keywords, not an LLM judge".

    from r1repro.reflection import count_keywords, question_reflection_rate
    count_keywords("Let me recheck that. Rechecking again...")   # {"recheck": 2, ...}
    question_reflection_rate([[resp_a, resp_b], [resp_c]])        # share of questions

Matching rule (ours; the paper's script tests plain substrings of the lowercased text):
- case-insensitive, whitespace-tolerant inside phrases ("check   again" counts);
- the keyword must start a word: not preceded by a letter, digit, underscore or hyphen, so
  "unreconsidered" and the "check again" inside "double-check again" do not count;
- one-word keywords also match longer word forms that start with them ("rechecked",
  "rechecking", "reconsideration", "double-checked"); multi-word phrases must end at a word end,
  so "check against" is not "check again" (a false positive of substring matching).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

# The paper's pool, in its order (sail-sg/understand-r1-zero, analysis/keyword_count.py).
KEYWORDS: tuple[str, ...] = (
    "recheck",
    "rethink",
    "reassess",
    "reevaluate",
    "re-evaluate",
    "reevaluation",
    "re-examine",
    "reexamine",
    "reconsider",
    "reanalyze",
    "double-check",
    "check again",
    "think again",
    "verify again",
    "go over the steps",
)


def _keyword_pattern(keyword: str) -> str:
    body = r"\s+".join(re.escape(word) for word in keyword.split())
    tail = r"[^\W\d_]*" if " " not in keyword else r"(?![\w-])"
    return r"(?<![\w-])" + body + tail


# One alternation with a named group per keyword: a single linear pass over the text, and matches
# never overlap, so a span is credited to one keyword only.
_GROUPS = {f"k{i}": keyword for i, keyword in enumerate(KEYWORDS)}
_KEYWORD_RE = re.compile(
    "|".join(f"(?P<{group}>{_keyword_pattern(kw)})" for group, kw in _GROUPS.items()),
    re.IGNORECASE,
)


def _as_text(text: Any) -> str:
    """Responses that are not strings (None from a failed generation) read as empty."""
    return text if isinstance(text, str) else ""


def count_keywords(text: str) -> dict[str, int]:
    """Occurrences of each pool keyword in one response.

    Args:
        text: a response; non-strings count as empty.

    Returns:
        {keyword: count} for every keyword in `KEYWORDS`, zeros included, in pool order.
    """
    counts = dict.fromkeys(KEYWORDS, 0)
    for match in _KEYWORD_RE.finditer(_as_text(text)):
        counts[_GROUPS[match.lastgroup]] += 1
    return counts


def has_reflection(text: str) -> bool:
    """Whether a response contains any pool keyword (the paper's keyword test).

    Args:
        text: a response; non-strings count as empty.

    Returns:
        True if at least one keyword matches.
    """
    return _KEYWORD_RE.search(_as_text(text)) is not None


def keyword_totals(responses: Sequence[str]) -> dict[str, int]:
    """Keyword counts summed over many responses.

    Args:
        responses: responses of any number of questions, flattened.

    Returns:
        {keyword: total count}, in pool order.
    """
    totals = dict.fromkeys(KEYWORDS, 0)
    for response in responses or []:
        for keyword, count in count_keywords(response).items():
            totals[keyword] += count
    return totals


def question_reflection_rate(responses_per_question: Sequence[Sequence[str]]) -> float:
    """Share of questions, given one list of responses each, with at least one response holding a
    pool keyword (the paper's question level); NaN for no questions."""
    groups = list(responses_per_question or [])
    if not groups:
        return math.nan
    return sum(any(has_reflection(r) for r in responses or []) for responses in groups) / len(groups)
