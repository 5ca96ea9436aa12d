"""Prompt filtering by pass rate (r1repro.prompt_filter), the paired held-out change, and the
fingerprints that keep stale checkpoints and caches from being reused."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from r1repro import evaluation, io, prompt_filter, resumable, rl
from r1repro.config import CommonParams, ConfigError, PromptFilterParams, RlParams, SamplingParams

ROWS = [{"id": f"q{i}", "problem": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(12)]


def _fake_model(folder, weights: bytes = b"weights-1"):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "config.json").write_text("{}")
    return folder


def _cfg(tmp_path, **filter_settings) -> RlParams:
    spec = PromptFilterParams(enabled=True, candidates=8,
                              sampling=SamplingParams(n=4, temperature=0.7, max_new_tokens=16),
                              **filter_settings)
    return RlParams(init_model=str(_fake_model(tmp_path / "sft")), output_dir=str(tmp_path / "rl"),
                    prompts_per_step=2, max_steps=2, prompt_filter=spec)


@pytest.fixture
def solved_by_id(monkeypatch):
    """sample_groups replaced by a table of solved counts per question id; records every call."""
    table = {f"q{i}": i % 5 for i in range(12)}  # 0, 1, 2, 3, 4, 0, 1, ...
    calls = []

    def fake(model, rows, template, sampling, common):
        calls.append([r["id"] for r in rows])
        return [[{"text": f"answer {j}", "num_tokens": 2, "finish_reason": "stop",
                  "correct": j < min(table[r["id"]], sampling.n)} for j in range(sampling.n)] for r in rows]

    monkeypatch.setattr(prompt_filter, "sample_groups", fake)
    return calls


def test_pass_table_keeps_rates_within_bounds():
    table = prompt_filter.pass_table(ROWS[:5], [0, 1, 2, 3, 4], 4, 0.25, 0.75)
    assert table["pass_rate"].tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert table["kept"].tolist() == [False, True, True, True, False]
    assert table["id"].tolist() == ["q0", "q1", "q2", "q3", "q4"]


def test_candidates_are_the_start_of_the_training_order():
    order = rl.prompt_order(len(ROWS), len(ROWS), 7)
    assert [r["id"] for r in prompt_filter.candidate_rows(ROWS, 5, 7)] == [f"q{i}" for i in order[:5]]
    assert len(prompt_filter.candidate_rows(ROWS, None, 7)) == len(ROWS)
    assert len(prompt_filter.candidate_rows(ROWS, 100, 7)) == len(ROWS)


def test_select_prompts_keeps_in_bounds_and_reuses_its_measurement(tmp_path, solved_by_id):
    cfg, common = _cfg(tmp_path), CommonParams(seed=7)
    first = prompt_filter.select_prompts(cfg, common, ROWS)
    assert len(solved_by_id) == 1 and len(solved_by_id[0]) == 8 and not first.reused
    assert all(1 <= int(r["id"][1:]) % 5 <= 3 for r in first.rows)  # pass rate 1/4 .. 3/4
    assert [r["id"] for r in first.rows] == first.table[first.table["kept"]]["id"].tolist()
    summary = first.summary()
    assert summary["candidates"] == 8 and summary["kept"] == len(first.rows)
    assert 0.25 <= summary["mean_pass_rate_kept"] <= 0.75

    again = prompt_filter.select_prompts(cfg, common, ROWS)
    assert again.reused and len(solved_by_id) == 1  # no second sampling
    assert [r["id"] for r in again.rows] == [r["id"] for r in first.rows]
    # The kept rows' answers come back with them, from the cache too, each group with its solved count.
    assert again.samples == first.samples and len(first.samples) == len(first.rows)
    assert [sum(a["correct"] for a in g) for g in first.samples] == [int(r["id"][1:]) % 5 for r in first.rows]


def test_a_retrained_starting_model_is_measured_again(tmp_path, solved_by_id):
    cfg, common = _cfg(tmp_path), CommonParams(seed=7)
    prompt_filter.select_prompts(cfg, common, ROWS)
    _fake_model(tmp_path / "sft", b"weights-2")  # same path, new weights
    assert not prompt_filter.select_prompts(cfg, common, ROWS).reused
    assert len(solved_by_id) == 2
    wider = cfg.model_copy(update={"prompt_filter": cfg.prompt_filter.model_copy(update={"candidates": 10})})
    assert not prompt_filter.select_prompts(wider, common, ROWS).reused


def test_too_few_kept_prompts_name_the_keys(tmp_path, solved_by_id):
    cfg = _cfg(tmp_path, min_pass=1.0, max_pass=1.0)  # only always-solved prompts
    cfg = cfg.model_copy(update={"prompts_per_step": 4})
    with pytest.raises(ConfigError, match=r"rl\.prompt_filter.*rl\.prompts_per_step"):
        prompt_filter.select_prompts(cfg, CommonParams(seed=7), ROWS)


def test_few_kept_prompts_warn_that_they_repeat(tmp_path, solved_by_id, caplog):
    cfg = _cfg(tmp_path).model_copy(update={"max_steps": 20})
    with caplog.at_level(logging.WARNING, logger="r1repro.prompt_filter"):
        prompt_filter.select_prompts(cfg, CommonParams(seed=7), ROWS)
    assert "each is trained on" in caplog.text


@pytest.mark.parametrize("settings, message", [
    ({"min_pass": 0.8, "max_pass": 0.2}, "min_pass"),
    ({"enabled": True, "sampling": SamplingParams(n=4, temperature=0.0)}, "temperature"),
])
def test_filter_settings_are_validated(settings, message):
    with pytest.raises(ValueError, match=message):
        PromptFilterParams(**settings)


def test_sample_groups_grades_each_sample_with_the_prefill(monkeypatch):
    """The sampled texts are graded with the template's prefill put back, per prompt group; the generator
    is closed before training starts."""
    from r1repro import generation, modeling
    from r1repro.generation import Completion

    answers = {"What is 1 + 1?": ["2", "3", "2"], "What is 2 + 1?": ["1", "1", "1"]}

    class Fake:
        closed = False

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.closed = True

        def generate(self, prompts, n, temperature, top_p, max_tokens, seed, stop_policy=None):
            return [[Completion(text=f"x</think><answer>{a}</answer>", num_tokens=3, finish_reason="stop",
                                prompt_index=i, sample_index=j) for j, a in enumerate(answers[p])]
                    for i, p in enumerate(prompts)]

    eos_only = SimpleNamespace(eos_token="</s>", eos_token_id=0, encode=lambda text, add_special_tokens: [0])
    monkeypatch.setattr(modeling, "load_tokenizer", lambda *a, **k: eos_only)
    fake = Fake()
    monkeypatch.setattr(generation, "generator_for", lambda common, model: fake)
    monkeypatch.setattr(prompt_filter.templates, "render_prompt", lambda template, q, tok: q)
    rows = [{"problem": "What is 1 + 1?", "answer": "2"}, {"problem": "What is 2 + 1?", "answer": "3"}]
    groups = prompt_filter.sample_groups("m", rows, "r1", SamplingParams(n=3, temperature=0.7),
                                         CommonParams(grading_workers=1))
    assert prompt_filter.solved_counts(groups) == [2, 0] and fake.closed
    assert [a["correct"] for a in groups[0]] == [True, False, True]
    assert groups[1][0] == {"text": "x</think><answer>1</answer>", "num_tokens": 3, "finish_reason": "stop",
                            "correct": False}


# --- the paired change ------------------------------------------------------------------------------

def _records(correct):
    return [{"question_id": f"q{i}", "correct": c} for i, c in enumerate(correct)]


def test_paired_change_counts_fixed_and_broken_answers():
    before = _records([0, 0, 1, 1, 0, 0, 0, 0])
    after = _records([1, 1, 1, 0, 1, 0, 0, 0])
    change = evaluation.paired_change(before, after, n_boot=500, seed=1)
    assert change["fixed"] == 3 and change["broke"] == 1 and change["n"] == 8
    assert change["change"] == pytest.approx(2 / 8)
    assert change["change_low"] <= change["change"] <= change["change_high"]
    assert change["sign_test_p"] == pytest.approx(2 * (1 + 4) / 16)  # P(<= 1 of 4 went one way), x2


@pytest.mark.parametrize("fixed, broke, p", [
    (0, 0, 1.0),                         # nothing changed: no evidence either way
    (9, 0, 2 / 2 ** 9),
    (0, 9, 2 / 2 ** 9),                  # symmetric
    (14, 6, 0.1153183),                  # the LoRA experiment in LOG.md (2026-12-01)
    (5, 5, 1.0),                         # an even split is capped at 1, not 2 x 0.62
])
def test_sign_test_p_values(fixed, broke, p):
    assert evaluation.sign_test_p(fixed, broke) == pytest.approx(p, rel=1e-6)


def test_sign_test_refuses_negative_counts():
    with pytest.raises(ValueError, match="fixed=-1"):
        evaluation.sign_test_p(-1, 3)


def test_paired_interval_excludes_zero_for_a_consistent_gain():
    before = _records([0] * 40 + [1] * 10)
    after = _records([1] * 12 + [0] * 28 + [1] * 10)  # 12 fixed, none broken
    change = evaluation.paired_change(before, after, n_boot=1000, seed=1)
    assert change["change_low"] > 0


def test_paired_change_refuses_different_questions():
    with pytest.raises(ValueError, match="different questions"):
        evaluation.paired_change(_records([1, 0]), _records([1, 0, 1]))


# --- fingerprints -----------------------------------------------------------------------------------

def test_weights_digest_follows_the_bytes_not_the_path(tmp_path):
    model = _fake_model(tmp_path / "m", b"a")
    first = io.weights_digest(model)
    assert first == io.weights_digest(str(model)) and first.startswith("md5:")
    _fake_model(model, b"b")
    assert io.weights_digest(model) != first
    assert io.weights_digest("Qwen/Qwen2.5-Math-1.5B") == "Qwen/Qwen2.5-Math-1.5B"  # hub id: as is


def test_source_digest_depends_on_the_named_modules():
    assert io.source_digest("rl", "rewards") == io.source_digest("rewards", "rl")
    assert io.source_digest("rl") != io.source_digest("rewards")


def test_rl_checkpoints_of_other_prompts_or_another_starting_model_are_not_resumed(fake_checkpoint, tmp_path,
                                                                                  caplog):
    cfg = RlParams(init_model=str(_fake_model(tmp_path / "sft")))
    common = CommonParams()
    files = rl.run_files(tmp_path / "grpo")
    checkpoint = files.checkpoint_dir / "checkpoint-2"

    def start(rows):
        resumable.resume_point(files, rl.run_fingerprint(cfg, "grpo", common, rows), "rl grpo")

    start(ROWS)
    fake_checkpoint(files.checkpoint_dir, 2, 2)
    start(ROWS)  # same: kept
    assert checkpoint.exists()
    start(ROWS[:6])  # other prompts
    assert not checkpoint.exists()
    fake_checkpoint(files.checkpoint_dir, 2, 2)
    _fake_model(tmp_path / "sft", b"retrained")
    with caplog.at_level(logging.WARNING, logger="r1repro.resumable"):
        start(ROWS[:6])
    assert "init_weights" in caplog.text and not checkpoint.exists()
