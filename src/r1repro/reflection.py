"""Self-reflection detection: the Dr. GRPO paper's keyword pool, plus an optional LLM-judge hook.

The paper (Liu et al., 2025, Sec. 2.3, "Aha moment already appears in base models") flags a
response as self-reflective when it contains a keyword from a fixed pool AND an LLM judge
(gpt-4o-mini) places it in the self-reflection category; it reports the share of questions with at
least one such response. Here the keyword half runs by default and the judge is opt-in:

    from r1repro.reflection import count_keywords, question_reflection_rate
    count_keywords("Let me recheck that. Rechecking again...")   # {"recheck": 2, ...}
    question_reflection_rate([[resp_a, resp_b], [resp_c]])        # keywords only

Matching rule (ours; the paper's script tests plain substrings of the lowercased text):
- case-insensitive, whitespace-tolerant inside phrases ("check   again" counts);
- the keyword must start a word: not preceded by a letter, digit, underscore or hyphen, so
  "unreconsidered" and the "check again" inside "double-check again" do not count;
- one-word keywords also match longer word forms that start with them ("rechecked",
  "rechecking", "reconsideration", "double-checked"); multi-word phrases must end at a word end,
  so "check against" is not "check again" (a false positive of substring matching).
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Protocol

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


class ReflectionCategory(enum.IntEnum):
    """The paper's four LLM-judge categories (its detection script numbers them 0-3)."""

    OFF_TOPIC = 0  # does not try to answer: unrelated, incoherent, degenerate repetition
    NO_REFLECTION = 1  # tries to answer, never revisits its work
    REFLECTION = 2  # revisits, questions or verifies its own reasoning, keywords or not
    CODE_ONLY = 3  # only code that computes the answer, without reflection


class ReflectionJudge(Protocol):
    """An LLM judge: (question, response) -> category, or None when it gave no usable verdict."""

    def __call__(self, question: str, response: str) -> ReflectionCategory | None: ...


def judge_prompt(question: str, response: str) -> str:
    """The instruction sent to a judge model for one response.

    Args:
        question: the math problem.
        response: the model's response to it.

    Returns:
        A prompt asking for a short justification followed by one category number (0-3).
    """
    return (
        "You will read a math problem and a response written by a language model. Classify the "
        "response into exactly one category:\n"
        "0 - it does not genuinely attempt the problem: off-topic, nonsensical, incoherent, or "
        "stuck repeating itself.\n"
        "1 - it attempts the problem but never reflects on its own work: no re-checking, no "
        "second look at a step, no alternative approach.\n"
        "2 - it reflects on its own work anywhere: it re-checks or verifies a result, questions an "
        "earlier step or assumption, or tries another approach, whether or not it uses words such "
        "as 'recheck' or 'double-check', and whether or not its final answer is right.\n"
        "3 - it consists only of program code that computes the answer, with no reflection.\n"
        "Explain your choice in one or two sentences, then end your reply with the category "
        "number alone, for example: 'The response verifies its result by substitution. 2'\n\n"
        f"Problem:\n{_as_text(question)}\n\nResponse:\n{_as_text(response)}\n"
    )


# A lone digit: not part of a longer number or a decimal such as 0.5.
_VERDICT_RE = re.compile(r"(?<![\d.])([0-3])(?!\d|\.\d)")


def parse_judge_verdict(text: str) -> ReflectionCategory | None:
    """The category a judge ended its reply with.

    The last standalone digit 0-3 wins, since the reply explains first and names the category
    last ("... not category 1 ... 2.").

    Args:
        text: the judge's reply.

    Returns:
        The category, or None when the reply holds no standalone 0-3 digit.
    """
    matches = _VERDICT_RE.findall(_as_text(text)[-2000:])
    return ReflectionCategory(int(matches[-1])) if matches else None


def make_llm_judge(complete: Callable[[str], str]) -> ReflectionJudge:
    """Wrap a text-completion function (prompt -> reply) as a `ReflectionJudge`.

    Args:
        complete: calls the judge model; an exception from it yields no verdict (None).

    Returns:
        A judge for `is_self_reflective` and `question_reflection_rate`.
    """

    def judge(question: str, response: str) -> ReflectionCategory | None:
        try:
            return parse_judge_verdict(complete(judge_prompt(question, response)))
        except Exception:  # noqa: BLE001 - an unreachable judge must not stop an analysis run
            return None

    return judge


def is_self_reflective(
    response: str, question: str = "", judge: ReflectionJudge | None = None
) -> bool:
    """The paper's cross-check: keywords, confirmed by the judge when one is given.

    Args:
        response: the response.
        question: its question (only the judge reads it).
        judge: optional; when given, a keyword hit counts only if the judge says REFLECTION.

    Returns:
        True if the response is self-reflective under the chosen test.
    """
    if not has_reflection(response):
        return False
    return judge is None or judge(_as_text(question), _as_text(response)) == ReflectionCategory.REFLECTION


def question_reflection_rate(
    responses_per_question: Sequence[Sequence[str]],
    questions: Sequence[str] | None = None,
    judge: ReflectionJudge | None = None,
) -> float:
    """Share of questions with at least one self-reflective response (the paper's question level).

    Args:
        responses_per_question: one list of responses per question.
        questions: the question texts; required when a judge is given.
        judge: optional LLM judge (off by default: keywords only).

    Returns:
        The share in [0, 1], or NaN for no questions.

    Raises:
        ValueError: a judge without matching questions.
    """
    groups = list(responses_per_question or [])
    if judge is not None and (questions is None or len(questions) != len(groups)):
        raise ValueError("question_reflection_rate: a judge needs one question text per response group")
    if not groups:
        return math.nan
    texts = list(questions) if questions is not None else [""] * len(groups)
    hits = sum(
        any(is_self_reflective(r, q, judge) for r in responses or []) for responses, q in zip(groups, texts)
    )
    return hits / len(groups)
