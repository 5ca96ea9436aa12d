"""Adversarial responses against the grader (extraction, judging) and the TRL reward functions.

Hypothesis generates over 10,000 strings in all (deep nesting, towers of exponents, unbalanced
braces, Python and shell payloads, NUL bytes, lone surrogates and other odd unicode), plus a few 1 MB
responses. Every call must return (no exception), every reward must be a finite float, every judged
call must come back within the grader's time bound plus slack, and no payload may run: the sentinel
files the payloads would create must never appear.

Run: python -m pytest tests/test_fuzz_grading.py -q     (derandomized: the same strings every run)
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1repro import grading, rewards
from r1repro.grading import answers_equivalent, extract_answer, grade_many, is_correct

pytestmark = pytest.mark.slow  # about 2-3 min on 2 busy cores

TIMEOUT_S = 1.0  # the grader's bound per call, small so a hang would show quickly
SLACK_S = 5.0  # beyond TIMEOUT_S for any single call (as in test_grading.py), for a loaded machine
COUNTED = {"strings": 0}  # strings fed to the grader or the rewards, checked by the last test

SENTINEL_DIR = Path(tempfile.gettempdir()) / f"r1repro-fuzz-sentinel-{os.getpid()}"
SENTINEL = SENTINEL_DIR / "PWNED"
PAYLOADS = [
    f"__import__('os').system('touch {SENTINEL}')",
    f"$(touch {SENTINEL})",
    f"`touch {SENTINEL}`",
    f"; touch {SENTINEL} #",
    f"exec(\"open('{SENTINEL}', 'w')\")",
    f"eval(\"__import__('os').system('touch {SENTINEL}')\")",
    f"(lambda: open('{SENTINEL}', 'w'))()",
    f"open('{SENTINEL}','w').write('x')",
    "().__class__.__bases__[0].__subclasses__()",
    "{{7*7}}${7*7}<%= 7*7 %>",
    "import os; os.system('touch PWNED')",
]
# Pieces a hostile or broken response is made of; joined at random by the strategies below.
PIECES = [
    "\\boxed{", "\\fbox{", "\\boxed {", "{", "}", "\\{", "\\}", "\\\\", "\\", "<answer>", "</answer>",
    "<think>", "</think>", "$", "$$", "\\(", "\\)", "\\[", "\\]", "^{", "_{", "\\frac{", "\\sqrt{",
    "10^{10^{10^{10}}}", "9^{9^{9^{9^{9}}}}", "((100!)!)!", "(10^{8})!", "2^{2^{2^{2^{2^{2}}}}}",
    "\\infty", "-\\infty", "1e999999", "1e-999999", "nan", "\\text{", "\\left(", "\\right)", "%",
    "\\%", "\\circ", "x=", "\\le", "\\cup", "\\emptyset", "[", "]", "(", ")", ",", "0", "1", "-",
    "\x00", "\ud800", "\udfff", "\u202e", "\u2028", "\ufeff", "\U0001f600", "ß", "数学", "ا", "\r\n",
    "\\begin{pmatrix}", "\\end{pmatrix}", "&", "\\\\[2pt]", "\\mathbb{R}", "\\log_{", "\\sin",
    *PAYLOADS,
]
ODD_CHARS = st.characters(exclude_categories=())  # every code point, lone surrogates included
FRAGMENTS = st.one_of(st.sampled_from(PIECES), st.text(ODD_CHARS, max_size=12))
RESPONSES = st.one_of(
    st.lists(FRAGMENTS, max_size=40).map("".join),
    st.tuples(st.sampled_from(["(", "{", "[", "\\boxed{", "\\frac{1}{", "^{"]),
              st.integers(1, 3000)).map(lambda t: t[0] * t[1] + "1" + "}" * (t[1] // 2)),
    st.lists(FRAGMENTS, max_size=20).map(lambda parts: "<answer>\\boxed{" + "".join(parts) + "}</answer>"),
)
# What reaches the judge: the boxed content of a response (the common case is a short formula).
ANSWERS = st.one_of(st.lists(FRAGMENTS, min_size=1, max_size=12).map("".join), st.sampled_from(PIECES))
GOLDS = st.sampled_from(["5", "\\frac{1}{2}", "-3", "0.5", "x^2+1", "(-\\infty, 3]", "['9.6\\n', '9.60']",
                         "10\\%", "\\{1,2\\}", "2\\sqrt{3}"])

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                       HealthCheck.data_too_large])


@pytest.fixture(scope="module", autouse=True)
def _sentinel_never_appears():
    """Warm the worker (its start is not counted against the bound) and check the sentinel after all."""
    SENTINEL_DIR.mkdir(exist_ok=True)
    relative = Path.cwd() / "PWNED"
    relative_before = relative.exists()
    assert is_correct("\\boxed{1}", "1") is True
    yield
    assert not SENTINEL.exists(), "a payload in a response was executed"
    assert relative_before or not relative.exists(), "a payload in a response was executed"
    SENTINEL_DIR.rmdir()


def _timed(call, *args, **kwargs):
    started = time.perf_counter()
    result = call(*args, **kwargs)
    elapsed = time.perf_counter() - started
    assert elapsed < TIMEOUT_S + SLACK_S, f"{call.__name__} took {elapsed:.1f} s on {args!r:.300}"
    return result


def _assert_rewards(values: list, count: int) -> None:
    assert len(values) == count
    for value in values:
        assert isinstance(value, float) and math.isfinite(value), values


@settings(FUZZ, max_examples=7000)
@given(response=RESPONSES)
def test_extraction_and_text_rewards_never_fail(response: str) -> None:
    COUNTED["strings"] += 1
    answer = extract_answer(response)
    assert answer is None or (isinstance(answer, str) and answer and answer == answer.strip())
    assert grading._unsafe_reason(response) in (None, "too long", "NUL byte", "looks like code",
                                                "nested too deeply")
    for score in (rewards.format_score(response), rewards.language_score(response),
                  rewards.language_score(response, "zh")):
        assert isinstance(score, float) and 0.0 <= score <= 1.0
    _assert_rewards(rewards.format_reward([response], prompts=["<think>"]), 1)
    _assert_rewards(rewards.language_reward([[{"role": "assistant", "content": response}]]), 1)


@settings(FUZZ, max_examples=1500)
@given(answer=ANSWERS, gold=GOLDS)
def test_judging_is_bounded_and_never_fails(answer: str, gold: str) -> None:
    COUNTED["strings"] += 1
    verdict = _timed(is_correct, "<answer>\\boxed{" + answer + "}</answer>", gold, timeout_s=TIMEOUT_S)
    assert verdict in (True, False)
    assert _timed(answers_equivalent, answer, gold, timeout_s=TIMEOUT_S) in (True, False)


@settings(FUZZ, max_examples=1500)
@given(completions=st.lists(RESPONSES, min_size=1, max_size=3), gold=GOLDS,
       conversational=st.booleans())
def test_reward_functions_give_finite_floats(completions: list[str], gold: str, conversational: bool) -> None:
    COUNTED["strings"] += len(completions)
    shaped = ([[{"role": "assistant", "content": c}] for c in completions] if conversational
              else completions)
    prompts = ["<think>"] * len(completions)
    accuracy = rewards.make_accuracy_reward(TIMEOUT_S)
    started = time.perf_counter()
    _assert_rewards(accuracy(completions=shaped, answer=[gold] * len(completions), prompts=prompts),
                    len(completions))
    assert time.perf_counter() - started < len(completions) * (TIMEOUT_S + SLACK_S)
    _assert_rewards(rewards.format_reward(shaped, prompts=prompts), len(completions))
    _assert_rewards(rewards.language_reward(shaped, prompts=prompts), len(completions))
    combined = rewards.combined_reward({"accuracy": 1.0, "format": 0.5, "language": 0.25}, TIMEOUT_S)
    _assert_rewards([float(v) for v in combined(completions=shaped, answer=gold, prompts=prompts)],
                    len(completions))


@settings(FUZZ, max_examples=150)
@given(answers=st.lists(ANSWERS, min_size=1, max_size=8))
def test_grade_many_is_bounded(answers: list[str]) -> None:
    COUNTED["strings"] += len(answers)
    responses = ["\\boxed{" + a + "}" for a in answers]
    started = time.perf_counter()
    verdicts = grade_many(responses, ["5"] * len(responses), workers=2, timeout_s=TIMEOUT_S, progress=False)
    assert all(v in (True, False) for v in verdicts) and len(verdicts) == len(responses)
    assert time.perf_counter() - started < len(responses) * (TIMEOUT_S + SLACK_S)


MEGABYTE = 1 << 20


@pytest.mark.parametrize("response", [
    ("x" * 1023 + "\n") * 1024,
    "\\boxed{" * (MEGABYTE // 7),
    "{" * MEGABYTE,
    "<think>" + "数学 and words " * (MEGABYTE // 13) + "</think><answer>\\boxed{5}</answer>",
    "\x00" * MEGABYTE + "\\boxed{5}",
    "<answer>\\boxed{" + "9^{" * (MEGABYTE // 3) + "}</answer>",
    "$(touch PWNED)" * (MEGABYTE // 14),
], ids=["lines", "open-boxes", "open-braces", "long-think", "nul-then-answer", "exponent-tower",
        "shell-repeated"])
def test_megabyte_responses(response: str) -> None:
    COUNTED["strings"] += 1
    assert len(response) >= MEGABYTE - 16
    _timed(extract_answer, response)
    assert _timed(is_correct, response, "5", timeout_s=TIMEOUT_S) in (True, False)
    for func in (rewards.make_accuracy_reward(TIMEOUT_S), rewards.format_reward, rewards.language_reward):
        values = _timed(func, completions=[response], answer=["5"], prompts=["<think>"])
        _assert_rewards(values, 1)


def test_at_least_ten_thousand_strings_were_fuzzed() -> None:
    if COUNTED["strings"] == 0:
        pytest.skip("run the whole module: the count covers every test above")
    assert COUNTED["strings"] >= 10_000, COUNTED
