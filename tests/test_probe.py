"""Stage 1 judges and tables on literal responses and hand-made records."""

from __future__ import annotations

import pandas as pd
import pytest

from r1repro import probe


@pytest.mark.parametrize(
    ("response", "attempted"),
    [
        ("2 + 2 = 4, so the answer is 4.", True),
        ("We add them. \\boxed{4}", True),
        ("<think>add</think><answer>4</answer>", True),
        ("Final answer: 12", True),
        ("What is 2+2? What is 3+3? What is 4+4?", False),
        ("Question 2: A train leaves the station at", False),
        ("", False),
    ],
)
def test_attempts_answer(response: str, attempted: bool) -> None:
    assert probe.attempts_answer(response) is attempted


def _recs():
    rows = []
    for template, correct in (("r1", [True, False]), ("none", [False, False])):
        for q, ok in enumerate(correct):
            rows.append({"model": "m", "template": template, "question_id": f"q{q}", "correct": ok,
                         "attempted": ok or template == "r1", "finish_reason": "stop", "num_tokens": 5,
                         "response": "let me recheck this" if ok else "no"})
    return rows


def test_answer_rate_table_and_best_template() -> None:
    table = probe.answer_rate_table(_recs())
    r1 = table[table["template"] == "r1"].iloc[0]
    assert r1["answer_rate"] == 1.0 and r1["accuracy"] == 0.5 and r1["n_questions"] == 2
    assert probe.best_template(table, "m") == "r1"


def test_pass_at_k_table_uses_unbiased_estimator() -> None:
    recs = [{"model": "m", "temperature": 0.6, "question_id": "q0", "correct": c}
            for c in (True, False, False, False)]
    table = probe.pass_at_k_table(recs, ks=[1, 2, 4])
    values = dict(zip(table["k"], table["pass_at_k"]))
    assert values[1] == pytest.approx(0.25)
    assert values[2] == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert values[4] == pytest.approx(1.0)


def test_reflection_table_counts_keywords() -> None:
    table = probe.reflection_table(_recs())
    recheck = table[(table["template"] == "r1") & (table["keyword"] == "recheck")].iloc[0]
    assert recheck["count"] == 1 and recheck["question_rate"] == 0.5


def test_probe_metrics_keep_every_k() -> None:
    rates = pd.DataFrame([{"model": "m", "template": "r1", "answer_rate": 0.5, "accuracy": 0.25}])
    pass_k = pd.DataFrame([{"model": "m", "temperature": t, "k": k, "pass_at_k": t + k / 10}
                           for t in (0.0, 0.6) for k in (1, 2)])
    metrics = probe.probe_metrics(rates, pass_k, 8)
    assert metrics["pass_at_k"]["m"]["T0.6"] == {"k1": pytest.approx(0.7), "k2": pytest.approx(0.8)}
    assert metrics["answer_rate"] == {"m": {"r1": 0.5}} and metrics["n_questions"] == 8
