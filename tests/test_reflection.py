"""Tests for r1repro.reflection: keyword matching rules and rates on strings.

Run: python -m pytest tests/test_reflection.py -q
"""

from __future__ import annotations

import math
import time

import pytest

from r1repro.reflection import (
    KEYWORDS,
    count_keywords,
    has_reflection,
    keyword_totals,
    question_reflection_rate,
)


def nonzero(text):
    return {k: v for k, v in count_keywords(text).items() if v}


def test_pool_is_the_papers():
    assert len(KEYWORDS) == 15 and len(set(KEYWORDS)) == 15
    assert KEYWORDS[0] == "recheck" and KEYWORDS[-1] == "go over the steps"


@pytest.mark.parametrize("keyword", KEYWORDS)
def test_every_keyword_matches_itself_in_any_case(keyword):
    assert nonzero(f"So, {keyword.upper()} it.") == {keyword: 1}


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Let me recheck. Rechecking: fine. I rechecked it.", {"recheck": 3}),
        ("I will reconsider; on reconsideration, yes.", {"reconsider": 2}),
        ("We double-checked and re-examined it.", {"double-check": 1, "re-examine": 1}),
        ("Wait, let me check   again\nand think\tagain.", {"check again": 1, "think again": 1}),
        (
            "Reevaluate, then a reevaluation, then re-evaluate.",
            {"reevaluate": 1, "reevaluation": 1, "re-evaluate": 1},
        ),
        ("Let me go over the steps once more.", {"go over the steps": 1}),
    ],
)
def test_word_forms_and_phrases(text, expected):
    assert nonzero(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "The claim went unreconsidered.",  # keyword inside an unrelated word
        "Compare this value to check against the table.",  # "check against" is not "check again"
        "We verify against the bound.",
        "prerecheck_value = 3",
        "_rethink() is a function name",
        "Recheque is not English.",
        "",
    ],
)
def test_non_matches(text):
    assert nonzero(text) == {}
    assert not has_reflection(text)


def test_double_check_again_counts_once():
    assert nonzero("Let me double-check again.") == {"double-check": 1}


def test_count_keywords_returns_every_key_in_order():
    assert list(count_keywords("nothing here")) == list(KEYWORDS)


@pytest.mark.parametrize(
    "text,reflective",
    [
        (None, False),
        (42, False),
        (b"recheck", False),
        ("\x00recheck\x00", True),
        ("ß∑ 数学 rethink", True),
    ],
)
def test_odd_inputs(text, reflective):
    assert set(count_keywords(text)) == set(KEYWORDS)
    assert has_reflection(text) is reflective


def test_one_megabyte_is_fast():
    text = ("x = 1 + 1; check agains " * 45_000) + "recheck"
    start = time.perf_counter()
    assert nonzero(text) == {"recheck": 1}
    assert time.perf_counter() - start < 5.0


def test_keyword_totals():
    totals = keyword_totals(["recheck recheck", None, "Rethink; recheck."])
    assert totals["recheck"] == 3 and totals["rethink"] == 1 and sum(totals.values()) == 4


def test_question_reflection_rate():
    groups = [["plain", "let me recheck"], ["plain", "plain"], [], ["Think again."]]
    assert question_reflection_rate(groups) == pytest.approx(2 / 4)
    assert math.isnan(question_reflection_rate([]))
