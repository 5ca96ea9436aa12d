"""The RL recipe against the Dr. GRPO paper's code (sail-sg/understand-r1-zero, train_zero_math.py and
examples/qwen2.5-math-1.5b.sh): optimiser steps per rollout, the reward of truncated completions, TRL's
vLLM importance-sampling correction, each computed from the resolved params and TRL's own config.

    pytest tests/test_rl_recipe.py -q        # about half a minute on 2 CPU cores
"""

from __future__ import annotations

from pathlib import Path

import pytest

from r1repro import rewards, rl
from r1repro.config import BenchmarkSubset, CommonParams, RlParams, load_params

pytestmark = pytest.mark.filterwarnings(  # raised inside TRL 1.16 on transformers 5, not by us
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

# examples/qwen2.5-math-1.5b.sh: rollout_batch_size 128 prompts x num_samples 8, train_batch_size 128,
# num_ppo_epochs 1: each rollout's 1,024 completions make 8 optimiser steps of 128.
PAPER_UPDATES_PER_ROLLOUT = 8
PAPER_ROLLOUT, PAPER_STEP = 1024, 128


@pytest.mark.parametrize("name", ["gpu", "gpu1"])
def test_gpu_profiles_take_the_papers_optimiser_steps_per_rollout(repo_root: Path, name: str, tmp_path) -> None:
    cfg = load_params(repo_root, profile=name).rl
    args = rl.grpo_config(cfg, "dr_grpo", output_dir=tmp_path, seed=1, use_cpu=True)
    assert rl.optimizer_steps_per_rollout(args) == PAPER_UPDATES_PER_ROLLOUT
    assert args.generation_batch_size == cfg.prompts_per_step * cfg.num_generations
    step = args.per_device_train_batch_size * args.gradient_accumulation_steps
    assert step * PAPER_UPDATES_PER_ROLLOUT == args.generation_batch_size
    assert args.num_iterations == 1
    # The paper's other knobs, as TRL holds them.
    assert args.vllm_importance_sampling_correction is False and args.mask_truncated_completions is False
    assert cfg.truncated_reward == 0.0 and args.reward_weights[-1] == 1.0  # the truncated term, weight 1
    if name == "gpu":
        assert (args.generation_batch_size, step) == (PAPER_ROLLOUT, PAPER_STEP)
        # Over 8 GPUs (the profile's commented example) each process takes 16 of every 128.
        eight = rl.rollout_batches(cfg, num_processes=8)
        assert (eight.step, eight.steps_per_generation // eight.accumulation_steps) == (16, 8)


def test_the_cpu_default_keeps_one_update_per_rollout_and_grades_truncated_completions(repo_root, tmp_path):
    cfg = load_params(repo_root).rl
    args = rl.grpo_config(cfg, "grpo", output_dir=tmp_path, seed=1, use_cpu=True)
    assert rl.optimizer_steps_per_rollout(args) == 1
    assert cfg.truncated_reward is None and len(args.reward_weights) == len(rl.monitored_weights(cfg.reward_weights))
    assert args.vllm_importance_sampling_correction is False


def test_updates_per_rollout_must_split_the_rollout_and_the_run() -> None:
    with pytest.raises(ValueError, match="rl.updates_per_rollout"):
        RlParams(prompts_per_step=2, num_generations=2, updates_per_rollout=3, max_steps=3)
    with pytest.raises(ValueError, match="rl.max_steps"):
        RlParams(prompts_per_step=4, num_generations=2, updates_per_rollout=2, max_steps=3)
    cfg = RlParams(prompts_per_step=4, num_generations=2, updates_per_rollout=2, max_steps=6)
    assert cfg.prompts_needed() == 12  # 3 rollouts of 4 prompts


ANSWERED = "<think>2 and 2</think><answer>4</answer>"


def _total(cfg: RlParams, completions: list[str], ids: list[list[int]], is_truncated) -> list[float]:
    """What TRL adds up for each completion: the weighted sum of the reward terms."""
    weights, funcs = rl.reward_terms(cfg, timeout_s=5.0, is_truncated=is_truncated)
    scores = [f(prompts=[""] * len(completions), completions=completions, completion_ids=ids,
                answer=["4"] * len(completions)) for f in funcs]
    return [sum(w * s[i] for w, s in zip(weights.values(), scores)) for i in range(len(completions))]


@pytest.mark.parametrize("value", [0.0, -0.5])
def test_a_truncated_completion_gets_the_truncated_reward(value: float) -> None:
    """The same right answer, once stopped and once cut at the cap: only the cut one scores `value`."""
    cfg = RlParams(reward_weights={"accuracy": 1.0, "format": 0.5}, truncated_reward=value,
                   max_completion_length=4)
    cut = lambda ids, text: len(ids) >= 4 and ids[-1] != 0  # noqa: E731 - token 0 stands for EOS here
    totals = _total(cfg, [ANSWERED, ANSWERED], [[5, 6, 0], [5, 6, 7, 8]], cut)
    assert totals == [1.5, value]
    graded = cfg.model_copy(update={"truncated_reward": None})
    assert _total(graded, [ANSWERED, ANSWERED], [[5, 6, 0], [5, 6, 7, 8]], cut) == [1.5, 1.5]


def test_truncated_term_is_named_for_trls_logs_and_needs_completion_ids() -> None:
    (wrapped, term) = rewards.with_truncated_reward([rewards.format_reward], 0.0, lambda ids, text: True)
    assert wrapped.__name__ == "format_reward" and term.__name__ == "truncated_reward"
    with pytest.raises(ValueError, match="completion_ids"):
        term(completions=["x"], completion_ids=None)


@pytest.fixture
def chars_registered(monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "chars", lambda completions, **kwargs: [len(c) / 100 for c in completions])


@pytest.mark.usefixtures("chars_registered")
def test_a_real_run_scores_every_cut_completion_with_the_truncated_reward(tiny_model, data_dir, tmp_path):
    """A random tiny model never stops within 8 tokens: every completion is cut, so every reward is
    the truncated reward, whatever the other terms would have given (chars varies per completion)."""
    common = CommonParams(device="cpu", data_dir=str(data_dir), seed=7)
    cfg = RlParams(init_model=str(tiny_model), output_dir=str(tmp_path / "rl"), template="r1_chat",
                   prompts=BenchmarkSubset(file="train/asdiv.jsonl", limit=4), max_steps=1, num_generations=4,
                   prompts_per_step=2, max_completion_length=8, learning_rate=1e-3, save_steps=1,
                   reward_weights={"chars": 1.0, "accuracy": 0.0, "format": 0.0}, truncated_reward=0.25)
    (row,) = rl.train_run(cfg, "dr_grpo", common).diagnostics
    assert row["truncated_share"] == 1.0
    assert [r for g in row["groups"] for r in g["rewards"]] == [0.25] * 8
    assert row["reward_chars"] == 0.0 and row["reward_truncated"] == 0.25
    assert row["trl_reward"] == pytest.approx(0.25)  # TRL summed the same terms


@pytest.mark.usefixtures("chars_registered")
def test_several_updates_per_rollout_generate_once_and_move_the_ratio(tiny_model, data_dir, tmp_path):
    """Two optimiser steps on one rollout: the second is off-policy, so TRL's clip can act there
    (with lr 1e-2 on a random tiny model it does), while the first is on-policy (clip ratio 0)."""
    common = CommonParams(device="cpu", data_dir=str(data_dir), seed=7)
    cfg = RlParams(init_model=str(tiny_model), output_dir=str(tmp_path / "rl"), template="r1_chat",
                   prompts=BenchmarkSubset(file="train/asdiv.jsonl", limit=8), max_steps=4, num_generations=4,
                   prompts_per_step=4, max_completion_length=8, learning_rate=1e-2, save_steps=4,
                   updates_per_rollout=2, reward_weights={"chars": 1.0, "accuracy": 0.0, "format": 0.0})
    rows = rl.train_run(cfg, "grpo", common).diagnostics
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    rollouts, updates = rows[0::2], rows[1::2]
    assert all("groups" in r and len(r["question_ids"]) == 4 for r in rollouts)  # whole rollouts, twice
    assert [r["rollout_step"] for r in updates] == [1, 3] and all("groups" not in r for r in updates)
    assert all(r["clip_ratio"] == 0.0 for r in rollouts)
    assert any(r["clip_ratio"] > 0.0 for r in updates), [r["clip_ratio"] for r in updates]
