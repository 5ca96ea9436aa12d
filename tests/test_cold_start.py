"""Tests of stage 2's data: the worked-solution solver on literal questions (r1repro.worked_solutions),
the rejection filter with a fake teacher (r1repro.rejection_sampling), the overlap check on the real
data (r1repro.cold_start), and the TRL dataset with the real tokenizer (r1repro.sft_examples).

    pytest tests/test_cold_start.py -q
"""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import pytest

from r1repro import cold_start as cs
from r1repro import grading, rewards, templates
from r1repro import rejection_sampling as rs
from r1repro import worked_solutions as ws
from r1repro.data import DataError, load_jsonl
from r1repro.generation import Completion
from r1repro.sft_examples import ColdStartExample, to_sft_dataset

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
needs_base = pytest.mark.skipif(not (BASE / "config.json").is_file(), reason="models/base missing")

TRAIN_58 = {"id": "t1", "answer": "13", "problem": (
    "There were fifty-eight people on the train. At the next stop forty-five people got off. "
    "How many people are there on the train now?")}
FAYE = {"id": "t2", "answer": "5", "problem": (
    "Faye's team won their baseball game and scored sixty-eight points total. If Faye scored "
    "twenty-eight of the points and everyone else scored eight points each, how many players were on her team?")}
TONY = {"id": "t3", "answer": "9", "problem": (
    "Tony had $20. He paid $8 for a ticket to a baseball game. At the game, he bought a hot dog for $3. "
    "What amount of money did Tony have then?")}


def equations(text: str) -> list[tuple[str, str, str, str]]:
    return re.findall(r"(\d+(?:\.\d+)?) ([-+*/]) (\d+(?:\.\d+)?) = (\d+(?:\.\d+)?)", text)


def holds(left: str, op: str, right: str, result: str) -> bool:
    a, b, c = Fraction(left), Fraction(right), Fraction(result)
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op] == c


# ---------------------------------------------------------------------------------------------------
# Numbers and the solver
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,values", [
    ("There were fifty-eight people and forty-five left.", [58, 45]),
    ("He has 1,200 coins and 2.5 kg of gold.", [1200, Fraction(5, 2)]),
    ("nine hundred twenty-seven uniforms for two employees", [927, 2]),
    ("three and four apples; one of them is red", [3, 4]),
    ("twice as many as a dozen", [2, 12]),
    ("No numbers here at all.", []),
])
def test_find_numbers(text, values):
    assert [m.value for m in ws.find_numbers(text)] == values


def test_format_number_is_exact_or_none():
    assert ws.format_number(Fraction(13)) == "13"
    assert ws.format_number(Fraction(5, 2)) == "2.5"
    assert ws.format_number(Fraction(1, 8)) == "0.125"
    assert ws.format_number(Fraction(10, 3)) is None


def test_solve_one_step_from_number_words():
    solution = ws.solve(TRAIN_58["problem"], Fraction(13))
    assert solution is not None
    assert [(s.left, s.op, s.right, s.result) for s in solution.steps] == [(58, "-", 45, 13)]
    assert solution.formula == "58 - 45"


def test_solve_two_steps_writes_needed_parentheses():
    solution = ws.solve(FAYE["problem"], Fraction(5))
    assert solution is not None and len(solution.steps) == 2
    assert solution.formula == "(68 - 28) / 8"
    assert [s.result for s in solution.steps] == [40, 5]


def test_solve_returns_none_when_nothing_fits():
    assert ws.solve("Ann has 4 apples and 6 pears. How many fruits?", Fraction(1000)) is None


@pytest.mark.parametrize("row,steps", [(TRAIN_58, 1), (FAYE, 2), (TONY, 2)])
def test_worked_example_is_formatted_correct_and_checked(row, steps):
    import random

    example = ws.worked_example(row, random.Random(0))
    assert example is not None and example.source == "worked"
    text = example.response
    assert rewards.format_score(text) == 1.0
    assert rewards.language_score(text) == 1.0
    assert grading.is_correct(text, row["answer"])
    found = equations(rewards.reasoning_text(text))
    assert len(found) == 2 * steps  # each step, then its check
    assert all(holds(*eq) for eq in found)
    checks = [line for line in text.splitlines() if line.startswith("Let me")]
    assert len(checks) == 1 and all(" ".join(eq[:3]) in checks[0] for eq in found[steps:])


def test_verification_catches_a_wrong_step_or_answer():
    import random

    text = ws.worked_example(FAYE, random.Random(0)).response
    assert ws.verify_worked_response(text, Fraction(5), steps=2)
    assert not ws.verify_worked_response(text.replace("68 - 28 = 40.", "68 - 28 = 41."), Fraction(5), steps=2)
    assert not ws.verify_worked_response(text.replace("\\boxed{5}", "\\boxed{6}"), Fraction(5), steps=2)
    assert not ws.verify_worked_response(text, Fraction(6), steps=2)
    assert not ws.verify_worked_response(text.replace("</think>", ""), Fraction(5), steps=2)


def test_worked_example_counts_why_questions_are_dropped():
    import random

    stats = ws.WorkedStats()
    rows = [{"id": "a", "problem": "Ann has 4 apples and 6 pears.", "answer": "1000"},
            {"id": "b", "problem": "How many apples?", "answer": "3"},
            {"id": "c", "problem": "Ann has 4 apples.", "answer": "many"}]
    assert all(ws.worked_example(r, random.Random(0), stats=stats) is None for r in rows)
    assert (stats.no_expression, stats.too_few_numbers, stats.no_gold) == (1, 1, 1)


def test_build_is_deterministic_and_reports_yield(data_dir):
    rows = load_jsonl(data_dir / "train" / "asdiv.jsonl", limit=120)
    first, stats = ws.build_worked_examples(rows, count=40, seed=7)
    again, _ = ws.build_worked_examples(rows, count=40, seed=7)
    other, _ = ws.build_worked_examples(rows, count=40, seed=8)
    assert first == again and len(first) == 40
    assert [e.id for e in first] != [e.id for e in other]
    assert stats.solved == 40 and stats.questions >= 40
    assert stats.yield_rate == pytest.approx(40 / stats.questions)
    assert stats.yield_rate > 0.5  # measured ~0.8 on ASDiv
    assert len({e.id for e in first}) == 40


@needs_base
def test_build_respects_a_token_budget(data_dir):
    from r1repro.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(BASE))
    rows = load_jsonl(data_dir / "train" / "asdiv.jsonl", limit=80)
    examples, stats = ws.build_worked_examples(rows, seed=0, tokenizer=tokenizer, max_tokens=80)
    assert stats.too_long > 0 and examples
    assert all(len(tokenizer(e.response, add_special_tokens=False)["input_ids"]) < 80 for e in examples)


# ---------------------------------------------------------------------------------------------------
# Rejection sampling
# ---------------------------------------------------------------------------------------------------

GOOD = ("\nAnn has 2 and gets 3 more.\n2 + 3 = 5.\nLet me double-check: 5 - 3 = 2.\n</think>\n"
        "<answer>\\boxed{5}</answer>")


class FakeTeacher:
    """Returns fixed completions per prompt and records how it was called."""

    def __init__(self, texts: list[tuple[str, str]]):
        self.texts = texts
        self.calls: list[dict] = []

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed, stop=None, stop_policy=None):
        self.calls.append(dict(prompts=prompts, n=n, temperature=temperature, top_p=top_p,
                               max_tokens=max_tokens, seed=seed))
        return [[Completion(text, 10, finish, i, j) for j, (text, finish) in enumerate(self.texts[:n])]
                for i in range(len(prompts))]


def test_rejection_sampling_keeps_only_good_new_responses():
    texts = [
        (GOOD, "stop"),                                              # kept
        (GOOD.replace("\n", "  \n "), "stop"),                       # same text, other spacing
        (GOOD.replace("boxed{5}", "boxed{6}"), "stop"),              # wrong answer
        ("\n2 + 3 = 5</think> the answer is \\boxed{5}", "stop"),   # no answer tags
        (GOOD[:40], "length"),                                       # cut at max_tokens
        ("\n安妮有两个苹果又得到三个 so 2 + 3 = 5\n</think>\n<answer>\\boxed{5}</answer>", "stop"),
        (GOOD.replace("Ann has", "Annie holds"), "stop"),             # correct and new, over the quota
    ]
    teacher = FakeTeacher(texts)
    rows = [{"id": "q1", "problem": "Ann has 2 apples and gets 3 more. How many?", "answer": "5"}]
    demo = ColdStartExample("d", "Bob has 1 pen and buys 1 more.", "2", "<think>\n1 + 1 = 2.\n</think>\n"
                            "<answer>\\boxed{2}</answer>", "worked")
    kept, stats = rs.rejection_sample(teacher, rows, "r1", demos=[demo], n=len(texts), temperature=0.7,
                                      top_p=0.9, max_tokens=64, seed=3, per_question=1)
    assert [e.response for e in kept] == ["<think>" + GOOD]
    assert kept[0].problem == rows[0]["problem"] and kept[0].source == "teacher"
    assert stats.as_dict() == dict(sampled=7, truncated=1, bad_format=1, mixed_language=1, incorrect=1,
                                   duplicate=1, surplus=1, kept=1, questions_kept=1)
    call = teacher.calls[0]
    assert (call["n"], call["temperature"], call["top_p"], call["max_tokens"], call["seed"]) == (7, 0.7, 0.9, 64, 3)
    prompt = call["prompts"][0]
    assert demo.problem in prompt and demo.response in prompt
    assert prompt.index(demo.problem) < prompt.rindex(rows[0]["problem"])
    assert prompt.endswith("<think>")  # the r1 template's prefill


def test_rejection_sampling_keeps_several_per_question_when_asked():
    texts = [(GOOD, "stop"), (GOOD.replace("Ann has", "Annie holds"), "stop")]
    rows = [{"id": "q1", "problem": "Ann has 2 apples and gets 3 more.", "answer": "5"},
            {"id": "q2", "problem": "What is 4 + 4?", "answer": "8"}]
    kept, stats = rs.rejection_sample(FakeTeacher(texts), rows, "r1", n=2, per_question=2)
    assert [e.id for e in kept] == ["q1", "q1"]
    assert (stats.kept, stats.incorrect, stats.questions_kept) == (2, 2, 1)


def test_few_shot_question_leaves_out_a_demo_of_the_same_question():
    demo = ColdStartExample("d", "What is 1 + 1?", "2", "<think>1 + 1 = 2</think><answer>2</answer>", "worked")
    text = rs.few_shot_question("What is 1 + 1?", [demo])
    assert demo.response not in text and text.endswith("Problem: What is 1 + 1?")
    assert demo.response in rs.few_shot_question("What is 2 + 2?", [demo])


# ---------------------------------------------------------------------------------------------------
# Never from evaluation questions
# ---------------------------------------------------------------------------------------------------


def test_normalize_question_ignores_case_spacing_and_punctuation():
    assert cs.normalize_question("What is  2+2?\n") == cs.normalize_question("what is 2 + 2")
    assert cs.normalize_question("What is 2+3?") != cs.normalize_question("What is 2+2?")


def test_overlap_check_on_the_real_data(data_dir):
    train = load_jsonl(data_dir / "train" / "asdiv.jsonl", limit=1500)
    heldout = load_jsonl(data_dir / "train" / "asdiv.jsonl", limit=32, offset=1500)
    compared = cs.check_no_overlap(train, data_dir, heldout_rows=heldout)
    assert compared >= 30 + 83 + 500 + 272 + 675 + 32

    leaked = dict(load_jsonl(data_dir / "eval" / "math500.jsonl", limit=1)[0], id="leak-1")
    leaked["problem"] = "  " + leaked["problem"].upper() + "  "  # normalization still finds it
    with pytest.raises(cs.ContaminationError, match=r"math500\.jsonl: 1 shared, e\.g\. leak-1"):
        cs.check_no_overlap(train + [leaked], data_dir, heldout_rows=heldout)
    with pytest.raises(cs.ContaminationError, match="held-out rows"):
        cs.check_no_overlap(train + heldout[:1], data_dir, heldout_rows=heldout)


def test_overlap_check_refuses_an_empty_benchmark_folder(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(DataError, match="no benchmark files"):
        cs.check_no_overlap([TRAIN_58], tmp_path)


# ---------------------------------------------------------------------------------------------------
# TRL dataset
# ---------------------------------------------------------------------------------------------------


@needs_base
def test_sft_dataset_uses_the_generation_prompt_and_ends_the_turn():
    import random

    from r1repro.modeling import load_tokenizer

    tokenizer = load_tokenizer(str(BASE))
    example = ws.worked_example(TRAIN_58, random.Random(0))
    dataset = to_sft_dataset([example], "r1_chat", tokenizer)
    assert dataset.column_names == ["prompt", "completion"]
    row = dataset[0]
    assert row["prompt"] == templates.render_prompt("r1_chat", TRAIN_58["problem"], tokenizer)
    assert row["prompt"].endswith("<think>") and not row["completion"].startswith("<think>")
    assert row["completion"].endswith("</answer><|im_end|>")
    assert rewards.format_score("<think>" + row["completion"].removesuffix("<|im_end|>")) == 1.0
    with pytest.raises(ValueError, match="no cold-start examples"):
        to_sft_dataset([], "r1_chat", tokenizer)
