"""r1repro.rl_exploration: RL's pass@k gain minus its pass@1 gain, per question, on hand-built samples
(it comes out below, above and at 0), and the probe's greedy samples decoded once."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1repro import modeling, probe, rl_exploration
from r1repro.generation import Completion


def _records(model: str, right: dict[str, int], k: int = 8) -> list[dict]:
    return [{"model": model, "question_id": q, "sample_index": j, "correct": j < c}
            for q, c in right.items() for j in range(k)]


def _shrink(start: dict[str, int], after: dict[str, int], k: int = 8) -> dict[str, float]:
    return rl_exploration.gain_shrink(rl_exploration.correct_counts(_records("s", start)),
                                      rl_exploration.correct_counts(_records("a", after)), k)


def test_sharpening_shrinks_the_gain() -> None:
    # 2 of 8 -> 8 of 8: pass@1 +0.75, pass@8 +0 (already reached): -0.75, as Yue et al. predict.
    assert _shrink({"q": 2}, {"q": 8}) == {"q": pytest.approx(-0.75)}


def test_widening_grows_the_gain() -> None:
    # 0 of 8 -> 2 of 8: pass@1 +0.25, pass@8 +1: +0.75, the outcome that goes against the claim.
    assert _shrink({"q": 0}, {"q": 2}) == {"q": pytest.approx(0.75)}


def test_no_change_and_unreachable_questions_are_zero() -> None:
    assert _shrink({"a": 3, "b": 0, "c": 8}, {"a": 3, "b": 0, "c": 8}) == {"a": 0.0, "b": 0.0, "c": 0.0}


def test_k_below_the_samples_uses_the_unbiased_estimator() -> None:
    # 1 of 4 -> 2 of 4 at k=2: pass@2 goes 1/2 -> 5/6, pass@1 1/4 -> 1/2: 1/3 - 1/4.
    start, after = {"q": [True, False, False, False]}, {"q": [True, True, False, False]}
    assert rl_exploration.gain_shrink(start, after, 2)["q"] == pytest.approx(1 / 3 - 1 / 4)
    with pytest.raises(ValueError, match="needs 8 samples"):
        rl_exploration.gain_shrink(start, after, 8)


def test_pass_at_k_curve_per_model() -> None:
    records = _records("start", {"a": 2, "b": 0}) + _records("grpo", {"a": 8, "b": 0})
    curve = rl_exploration.pass_at_k_curve(records, [1, 8])
    got = {(r.model, r.k): r.pass_at_k for r in curve.itertuples()}
    assert got == pytest.approx({("start", 1): 0.125, ("start", 8): 0.5, ("grpo", 1): 0.5, ("grpo", 8): 0.5})


class _CountingGenerator:
    def __init__(self) -> None:
        self.asked: list[tuple[float, int]] = []

    def generate(self, prompts, n, temperature, **_):
        self.asked.append((temperature, n))
        return [[Completion(f"{i}-{j}", 3, "stop", i, j) for j in range(n)] for i in range(len(prompts))]


def test_probe_decodes_greedy_once_and_counts_it_k_times() -> None:
    generator = _CountingGenerator()
    rows = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"}]
    base = Path(__file__).resolve().parents[1] / "models" / "base"
    if not (base / "tokenizer.json").is_file():
        pytest.skip("models/base not imported (make model)")
    tokenizer = modeling.load_tokenizer(str(base))
    records = probe.exploration_records(generator, tokenizer, "m", rows, "r1", [0.0, 1.0], k=4, top_p=1.0,
                                        max_new_tokens=8, seed=0)
    assert generator.asked == [(0.0, 1), (1.0, 4)]
    greedy = [r for r in records if r["temperature"] == 0.0]
    assert [r["sample_index"] for r in greedy] == [0, 1, 2, 3] * 2
    assert {r["response"] for r in greedy if r["question_id"] == "a"} == {"0-0"}
    assert len([r for r in records if r["temperature"] == 1.0]) == 8


def test_probe_takes_greedy_answers_from_the_template_records() -> None:
    rows = [{"id": "a", "problem": "1+1?", "answer": "2"}, {"id": "b", "problem": "2+2?", "answer": "4"}]
    base = Path(__file__).resolve().parents[1] / "models" / "base"
    if not (base / "tokenizer.json").is_file():
        pytest.skip("models/base not imported (make model)")
    tokenizer = modeling.load_tokenizer(str(base))
    asked_first = _CountingGenerator()
    template_recs = probe.template_records(asked_first, tokenizer, "m", rows, ["none", "r1"], 8, seed=0)
    generator = _CountingGenerator()
    records = probe.exploration_records(generator, tokenizer, "m", rows, "r1", [0.0, 1.0], k=4, top_p=1.0,
                                        max_new_tokens=8, seed=0, greedy_records=template_recs)
    assert generator.asked == [(1.0, 4)]  # T=0 was the template call's request: not decoded again
    r1_answers = {r["question_id"]: r["response"] for r in template_recs if r["template"] == "r1"}
    greedy = [r for r in records if r["temperature"] == 0.0]
    assert {(r["question_id"], r["response"]) for r in greedy} == set(r1_answers.items())
    assert [r["sample_index"] for r in greedy] == [0, 1, 2, 3] * 2
    # Another model's records, or records missing a prompt, are not this request: it is decoded.
    missing_one = [r for r in template_recs if (r["template"], r["question_id"]) != ("r1", "a")]
    for others in ([{**r, "model": "other"} for r in template_recs], missing_one):
        generator = _CountingGenerator()
        probe.exploration_records(generator, tokenizer, "m", rows, "r1", [0.0], k=4, top_p=1.0,
                                  max_new_tokens=8, seed=0, greedy_records=others)
        assert generator.asked == [(0.0, 1)]
