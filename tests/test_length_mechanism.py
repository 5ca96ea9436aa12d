"""The length mechanism row (r1repro.length_mechanism, claim_measures.length_mechanism): batches from
the prompt filter's groups, TRL's tensors, the slope statistic on hand-built records, and one update
of each loss type through the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1repro import findings, length_mechanism as lm
from r1repro.claim_measures import SLOPE_SCALE, Records
from r1repro.config import CommonParams, ConfigError, LoraParams, RlParams

BASE = Path(__file__).resolve().parents[1] / "models" / "base"


def _answer(text: str, correct: bool, finish: str = "stop", num_tokens: int | None = None) -> dict:
    tokens = num_tokens if num_tokens is not None else 3 + len(text)
    return {"text": text, "num_tokens": tokens, "finish_reason": finish, "correct": correct}


def _records(slope: float, batches: int = 4, seed: int = 0) -> list[dict]:
    """Wrong answers whose delta difference rises by `slope` per token (plus a batch offset), and a
    right answer per batch that the statistic must ignore."""
    rows = []
    for b in range(batches):
        for j, length in enumerate((40, 60, 80, 100)):
            base = -0.05 + 0.01 * b
            rows.append({"batch": b, "id": f"q{b}", "sample": j, "correct": False, "length": length,
                         "delta_dr_grpo": base, "delta_grpo": base + slope * length + 0.002 * b})
        rows.append({"batch": b, "id": f"q{b}", "sample": 4, "correct": True, "length": 10,
                     "delta_dr_grpo": 0.0, "delta_grpo": 5.0})
    return rows


@pytest.mark.parametrize("slope", [2e-4, -3e-4, 0.0])
def test_the_statistic_comes_out_positive_negative_and_near_zero(tmp_path, slope):
    records = _records(slope)
    assert lm.batch_slopes(records) == pytest.approx([slope] * 4, abs=1e-12)
    (tmp_path / "rl").mkdir()
    (tmp_path / "rl" / "records_length_mechanism.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    row = next(r for r in findings.build_findings(tmp_path, n_boot=500) if r.id == "length_mechanism")
    assert row.value == pytest.approx(slope * SLOPE_SCALE, abs=1e-9) and row.n == 4 and row.unit == "batch"
    if slope:
        assert row.kind == findings.CLAIM
        assert row.verdict == (findings.REPRODUCED if slope > 0 else findings.CONTRADICTED)
    else:  # every batch's slope is 0: no variation, not a test
        assert row.kind == findings.OBSERVATION


def test_batches_without_two_wrong_lengths_give_no_slope():
    records = _records(1e-4, batches=2)
    records = [r for r in records if not (r["batch"] == 1 and r["length"] != 40)]  # one wrong answer left
    assert len(lm.batch_slopes(records)) == 1


def test_mixed_batches_take_only_groups_with_a_right_and_a_wrong_answer():
    rows = [{"id": f"q{i}", "problem": f"p{i}"} for i in range(6)]
    samples = [[_answer("a" * (i + 1), c) for c in pattern] for i, pattern in
               enumerate(([1, 1], [0, 1], [0, 0], [1, 0], [0, 1], [1, 0]))]
    batches = lm.mixed_batches(rows, samples, groups_per_batch=2, batches=2)
    assert [[g["id"] for g in b] for b in batches] == [["q1", "q3"], ["q4", "q5"]]
    with pytest.raises(ConfigError, match=r"rl\.length_mechanism.*rl\.prompt_filter\.candidates"):
        lm.mixed_batches(rows, samples, groups_per_batch=2, batches=3)


def test_mixed_batches_skip_a_batch_whose_wrong_answers_share_one_length():
    rows = [{"id": f"q{i}", "problem": f"p{i}"} for i in range(6)]
    lengths = [5, 5, 5, 6, 7, 8]  # the first batch's two wrong answers have one length: no slope
    samples = [[_answer("a", True), _answer("b", False, num_tokens=n)] for n in lengths]
    batches = lm.mixed_batches(rows, samples, groups_per_batch=2, batches=2)
    assert [[g["id"] for g in b] for b in batches] == [["q2", "q3"], ["q4", "q5"]]
    with pytest.raises(ConfigError, match="give 2"):
        lm.mixed_batches(rows, samples, groups_per_batch=2, batches=3)


def test_advantages_centre_and_optionally_scale_each_group():
    assert lm.advantages([[True, False, False, False]], "none") == [pytest.approx([0.75, -0.25, -0.25, -0.25])]
    scaled = lm.advantages([[True, False]], "group")[0]  # std of (1, 0) is sqrt(0.5) (unbiased)
    assert scaled == pytest.approx([0.5 / (0.5 ** 0.5 + 1e-4), -0.5 / (0.5 ** 0.5 + 1e-4)])
    with pytest.raises(ConfigError, match="scale_rewards"):
        lm.advantages([[True, False]], "batch")


def _tokenizer():
    if not (BASE / "config.json").is_file():
        pytest.fail("models/base missing: run `make model` (dvc repro import_model)")
    from r1repro.modeling import load_tokenizer
    return load_tokenizer(str(BASE))


def test_batch_inputs_lay_out_a_rollout_as_trl_does():
    tokenizer = _tokenizer()
    groups = [{"id": "q0", "problem": "What is 2 + 3?",
               "answers": [_answer("</think><answer>5</answer>", True), _answer("</think><answer>6", False, "length")]},
              {"id": "q1", "problem": "Ana has 7 pens and gives away 2. How many are left?",
               "answers": [_answer("</think><answer>4</answer>", False), _answer("</think><answer>5</answer>", True)]}]
    inputs = lm.batch_inputs(groups, "r1_chat", tokenizer, "none")
    eos = tokenizer.eos_token_id
    completion, mask = inputs["completion_ids"].tolist(), inputs["completion_mask"].tolist()
    first = tokenizer("</think><answer>5</answer>", add_special_tokens=False).input_ids
    assert completion[0][:len(first) + 1] == first + [eos]  # a stopped answer ends with EOS, in its mask
    cut = tokenizer("</think><answer>6", add_special_tokens=False).input_ids
    assert sum(mask[1]) == len(cut) and eos not in completion[1][:len(cut)]  # a cut one has none
    assert [a["length"] for a in inputs["answers"]] == [sum(m) for m in mask]
    prompt_mask = inputs["prompt_mask"].tolist()
    assert prompt_mask[0][0] == 0 and prompt_mask[2][-1] == 1  # the shorter prompt is padded on the left
    assert inputs["advantages"].tolist() == pytest.approx([0.5, -0.5, -0.5, 0.5])


def test_one_update_each_from_the_same_weights_through_the_model():
    """Equal lengths: the two losses' gradients differ by one factor and Adam's first step is the same
    update, so both changes agree; the same batch twice gives the same records (weights restored)."""
    tokenizer = _tokenizer()
    texts = ["</think><answer>5</answer>", "</think><answer>6</answer>", "</think><answer>7</answer>",
             "</think><answer>8</answer>"]
    lengths = {len(tokenizer(t, add_special_tokens=False).input_ids) for t in texts}
    assert len(lengths) == 1, "the test needs answers of one length"
    group = {"id": "q0", "problem": "What is 2 + 3?",
             "answers": [_answer(texts[0], True), *(_answer(t, False) for t in texts[1:])]}
    cfg = RlParams(init_model=str(BASE), template="r1_chat", learning_rate=1e-3,
                   lora=LoraParams(enabled=True, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"]))
    records = lm.measure(cfg, CommonParams(seed=0), [[group], [group]], "none")
    assert len(records) == 8 and {r["batch"] for r in records} == {0, 1}
    for r in records:
        assert abs(r["delta_grpo"]) > 1e-4  # the update moved the model
        # Not exact: Adam's eps (1e-8) weighs against gradients 14x smaller under dr_grpo (1/128 against
        # 1/9 per token here); measured 0.14% apart. Updates that did not start from the same weights
        # would differ by ~100%, a length effect in the pipeline's batches by 3-10%.
        assert r["delta_grpo"] == pytest.approx(r["delta_dr_grpo"], rel=1e-2)
    right = [r["delta_grpo"] for r in records if r["correct"]]
    wrong = [r["delta_grpo"] for r in records if not r["correct"]]
    assert min(right) > max(wrong)  # the right answer rises most (wrong ones share its tokens, so may rise too)
    first, second = records[:4], records[4:]
    for a, b in zip(first, second):
        assert a["logp_before"] == pytest.approx(b["logp_before"], abs=1e-6)
        assert a["delta_grpo"] == pytest.approx(b["delta_grpo"], rel=1e-4, abs=1e-7)
