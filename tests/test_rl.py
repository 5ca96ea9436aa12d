"""Tests of r1repro.rl: the GRPO / Dr. GRPO config, data order, diagnostics, checkpoints, and real
TRL training steps on a tiny random-weight Llama (2 layers, hidden 32) with the embedded tokenizer.

The loss and advantage tests drive TRL's own code (`GRPOTrainer._compute_loss` and
`_generate_and_score_completions`) on hand-made inputs; nothing of TRL's maths is re-derived here
beyond the expected numbers.

    pytest tests/test_rl.py -q              # everything (about a minute on 2 CPU cores)
    pytest tests/test_rl.py -q -m "not slow"
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from r1repro import resumable, rl
from r1repro.config import BenchmarkSubset, CommonParams, ConfigError, RlParams, SamplingParams
from r1repro.data import load_subset
from r1repro.rl_diagnostics import COMPLETIONS_FILE, DIAGNOSTICS_FILE, Diagnostics, load_diagnostics, read_rows
from r1repro.rl_heldout import HeldoutEval

pytestmark = pytest.mark.filterwarnings(  # raised inside TRL 1.16 on transformers 5, not by us
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

ALGORITHMS = {"grpo": ("grpo", "group"), "dr_grpo": ("dr_grpo", "none")}
# Random-weight completions are never correct and rarely leave ASCII, so accuracy, format and
# language rewards are constant within a group: every advantage would be 0 and nothing would train.
# The tiny runs therefore add a test-only reward with variance (characters / 100), registered under
# a name of its own; accuracy and format are still computed, at weight 0, for the diagnostics.
TINY_WEIGHTS = {"chars": 1.0, "accuracy": 0.0, "format": 0.0}


def chars_reward(completions, **kwargs):
    return [len(c) / 100 for c in completions]


@pytest.fixture
def chars_registered(monkeypatch):
    from r1repro import rewards

    monkeypatch.setitem(rewards.REWARDS, "chars", chars_reward)


@pytest.fixture(scope="module")
def common(data_dir: Path) -> CommonParams:
    return CommonParams(device="cpu", data_dir=str(data_dir), seed=7, generation_batch_size=8)


def tiny_params(model: Path, out: Path, **overrides) -> RlParams:
    settings = dict(
        init_model=str(model), output_dir=str(out), template="r1_chat",
        prompts=BenchmarkSubset(file="train/asdiv.jsonl", limit=4), max_steps=2, num_generations=4,
        prompts_per_step=2, max_completion_length=8, learning_rate=1e-3, save_steps=1,
        reward_weights=TINY_WEIGHTS,
    )
    return RlParams(**{**settings, **overrides})


# --- config ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("run", ["grpo", "dr_grpo"])
def test_grpo_config_sets_both_dr_grpo_knobs_per_run(run, tmp_path):
    cfg = RlParams(prompts_per_step=2, num_generations=8, max_completion_length=64, beta=0.04,
                   epsilon=0.3, learning_rate=2e-6, save_steps=3, max_steps=11, temperature=0.9,
                   reward_weights={"accuracy": 1.0, "format": 0.5, "language": 0.1})
    args = rl.grpo_config(cfg, run, output_dir=tmp_path, seed=5, use_cpu=True)
    assert (args.loss_type, args.scale_rewards) == ALGORITHMS[run]
    assert (args.beta, args.epsilon, args.num_generations, args.max_completion_length) == (0.04, 0.3, 8, 64)
    assert (args.temperature, args.learning_rate, args.seed, args.save_steps, args.max_steps) == \
        (0.9, 2e-6, 5, 3, 11)
    # One step: 2 prompts x 8 completions, generated once (steps_per_generation 1), not shuffled by TRL.
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16
    assert (args.generation_batch_size, args.steps_per_generation, args.num_iterations) == (16, 1, 1)
    assert args.shuffle_dataset is False and args.use_vllm is False and args.push_to_hub is False
    assert args.report_to in ([], "none", ["none"])
    assert args.reward_weights == [1.0, 0.5, 0.1]  # params order; accuracy and format present already
    assert args.lr_scheduler_type == "constant" and args.save_only_model is False


def test_grpo_config_micro_batches_vllm_and_unknown_run(tmp_path):
    cfg = RlParams(prompts_per_step=4, num_generations=8, micro_batch_size=8)
    args = rl.grpo_config(cfg, "grpo", output_dir=tmp_path, seed=0, use_vllm=True, use_cpu=True)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (8, 4)
    assert args.generation_batch_size == 32 and args.steps_per_generation == 4
    assert args.use_vllm is True and args.vllm_mode == "colocate"
    with pytest.raises(ConfigError, match="no run 'ppo'"):
        rl.grpo_config(cfg, "ppo", output_dir=tmp_path, seed=0)


def test_rl_params_validates_new_fields():
    with pytest.raises(ValueError, match="micro_batch_size"):
        RlParams(prompts_per_step=2, num_generations=8, micro_batch_size=3)
    with pytest.raises(ValueError, match="heldout"):
        RlParams(eval_steps=2)
    assert RlParams(eval_steps=2, heldout=BenchmarkSubset(file="train/asdiv.jsonl", limit=2)).eval_steps == 2


@pytest.mark.parametrize("limit, answered", [(None, 5), (3, 3), (9, 5)])
def test_periodic_heldout_answers_the_first_eval_limit_questions(limit, answered, base_model_dir, common,
                                                               data_dir, tmp_path):
    from transformers import AutoTokenizer

    subset = BenchmarkSubset(file="train/asdiv.jsonl", limit=5, offset=1500)
    rows = load_subset(data_dir, subset)
    cfg = RlParams(eval_steps=2, heldout=subset, eval_limit=limit)
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    diagnostics = Diagnostics("grpo", tmp_path, {"accuracy": 1.0}, 8, [0])
    callbacks = rl._callbacks(cfg, common, tokenizer, diagnostics, rows)
    assert [type(c) for c in callbacks] == [Diagnostics, HeldoutEval]
    assert [r["answer"] for r in callbacks[1].rows] == [r["answer"] for r in rows[:answered]]
    with pytest.raises(ValueError, match="eval_limit"):
        RlParams(eval_limit=0)


def test_monitored_weights_adds_accuracy_and_format_at_zero():
    assert rl.monitored_weights({"language": 1.0}) == {"language": 1.0, "accuracy": 0.0, "format": 0.0}
    assert rl.monitored_weights({"format": 2.0, "accuracy": 1.0}) == {"format": 2.0, "accuracy": 1.0}


# --- data -----------------------------------------------------------------------------------------


def test_prompt_order_is_seeded_per_pass_and_extends_as_a_prefix():
    order = rl.prompt_order(5, 12, seed=3)
    assert order == rl.prompt_order(5, 12, seed=3)
    assert order != rl.prompt_order(5, 12, seed=4)
    assert sorted(order[:5]) == sorted(order[5:10]) == list(range(5))  # each pass a permutation
    assert order[:5] != order[5:10]  # and a fresh one
    assert rl.prompt_order(5, 7, seed=3) == order[:7]  # more steps extend, never reorder
    with pytest.raises(ValueError, match="no training prompts"):
        rl.prompt_order(0, 3, seed=0)


def test_build_dataset_renders_prompts_in_the_seeded_order(base_model_dir):
    from r1repro.modeling import load_tokenizer
    from r1repro.templates import render_prompt

    tokenizer = load_tokenizer(str(base_model_dir))
    rows = [{"id": f"q{i}", "problem": f"What is {i}+{i}?", "answer": 2 * i} for i in range(3)]
    data = rl.build_dataset(rows, "r1_chat", tokenizer, seed=1, num_prompts=4)
    order = rl.prompt_order(3, 4, seed=1)
    assert data.column_names == ["prompt", "answer", "id"]
    assert data["id"] == [f"q{i}" for i in order] and data["answer"] == [str(2 * i) for i in order]
    assert data["prompt"][0] == render_prompt("r1_chat", rows[order[0]]["problem"], tokenizer)
    assert data["prompt"][0].endswith("<think>")


# --- which checkpoints a run resumes ------------------------------------------------------------


def test_checkpoints_of_other_settings_are_discarded_with_their_logs(fake_checkpoint, tmp_path, caplog):
    cfg, common = RlParams(), CommonParams()
    run_dir = tmp_path / "grpo"
    files = rl.run_files(run_dir)
    resumable.resume_point(files, rl.run_fingerprint(cfg, "grpo", common), "rl grpo")
    fake_checkpoint(files.checkpoint_dir, 2, 2)
    (run_dir / DIAGNOSTICS_FILE).write_text('{"step": 1}\n')
    longer = cfg.model_copy(update={"max_steps": 50, "save_steps": 10})
    resume = resumable.resume_point(files, rl.run_fingerprint(longer, "grpo", common), "rl grpo")
    assert resume == files.checkpoint_dir / "checkpoint-2"  # more steps: the same run, continued
    other = cfg.model_copy(update={"learning_rate": 1e-5})
    with caplog.at_level(logging.WARNING, logger="r1repro.resumable"):
        assert resumable.resume_point(files, rl.run_fingerprint(other, "grpo", common), "rl grpo") is None
    assert "learning_rate" in caplog.text
    assert not list(files.checkpoint_dir.glob("checkpoint-*")) and not (run_dir / DIAGNOSTICS_FILE).exists()


# --- TRL's loss and advantages on hand-made inputs ------------------------------------------------

PLANTED = [1.0, 0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 3.0]  # group 1 mixed, group 2 all equal


def planted_reward(completions, **kwargs):
    """The rewards above, by position in the batch (TRL keeps each group contiguous)."""
    return PLANTED[: len(completions)]


def trl_trainer(tiny_model: Path, out: Path, run: str):
    """GRPOTrainer built from our config for `run`, with the planted reward as its only reward."""
    from trl import GRPOTrainer

    from r1repro.modeling import load_model, load_tokenizer

    cfg = tiny_params(tiny_model, out, max_completion_length=8)
    args = rl.grpo_config(cfg, run, output_dir=out, seed=0, use_cpu=True)
    args.reward_weights = [1.0]  # one planted reward instead of the registry's
    trainer = GRPOTrainer(model=load_model(str(tiny_model), device="cpu"),
                          processing_class=load_tokenizer(str(tiny_model)), reward_funcs=[planted_reward],
                          args=args, train_dataset=rl.build_dataset(
                              [{"problem": "1+1?", "answer": "2"}], "r1_chat",
                              load_tokenizer(str(tiny_model)), seed=0, num_prompts=2))
    trainer.model.train()
    return trainer


@pytest.mark.parametrize("run", ["grpo", "dr_grpo"])
def test_trl_loss_weights_tokens_as_the_paper_says(run, tiny_model, tmp_path, monkeypatch):
    """d loss / d log p(token) from TRL's `_compute_loss`, with crafted advantages and masks.

    The model's per-token log-probs are replaced by a leaf tensor, so its gradient is exactly the
    weight TRL's loss gives each token. Responses have lengths 2, 4 and 6 (padded to 6);
    max_completion_length is 8. GRPO: -A_i / (|o_i| x B), so shorter responses weigh more per
    token; Dr. GRPO: -A_i / (B x 8) for every token, whatever the response length. Padding gets 0.
    """
    trainer = trl_trainer(tiny_model, tmp_path, run)
    lengths, advantages = torch.tensor([2, 4, 6]), torch.tensor([1.0, -0.5, 2.0])
    mask = (torch.arange(6).unsqueeze(0) < lengths.unsqueeze(1)).long()
    logps = torch.full((3, 6), -1.0, requires_grad=True)
    monkeypatch.setattr(trainer, "_get_per_token_logps_and_entropies",
                        lambda *a, **k: (logps, torch.zeros(3, 6), None))
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop otherwise
    ones = torch.ones(3, 2, dtype=torch.long)
    inputs = {"prompt_ids": ones, "prompt_mask": ones,
              "completion_ids": torch.ones(3, 6, dtype=torch.long), "completion_mask": mask,
              "advantages": advantages, "num_items_in_batch": mask.sum()}
    trainer._compute_loss(trainer.model, inputs).backward()
    normaliser = lengths.float().unsqueeze(1) * 3 if run == "grpo" else torch.full((3, 1), 3.0 * 8)
    expected = (-advantages.unsqueeze(1) / normaliser) * mask
    torch.testing.assert_close(logps.grad, expected)


@pytest.mark.parametrize("run", ["grpo", "dr_grpo"])
def test_trl_advantages_divide_by_group_std_only_for_grpo(run, tiny_model, tmp_path):
    """Advantages from TRL's `_generate_and_score_completions` (real generation, planted rewards).

    Group 1 rewards (1, 0, 0, 0): mean 0.25, sample std 0.5. Dr. GRPO: r - mean; GRPO:
    (r - mean) / (std + 1e-4). Group 2 rewards are all equal: advantage 0 in both, and TRL's
    frac_reward_zero_std counts it.
    """
    trainer = trl_trainer(tiny_model, tmp_path, run)
    rows = [{"prompt": p, "answer": "2", "id": q} for p, q in zip(trainer.train_dataset["prompt"], "ab")]
    out = trainer._generate_and_score_completions([rows[0]] * 4 + [rows[1]] * 4)
    centred = torch.tensor([0.75, -0.25, -0.25, -0.25, 0.0, 0.0, 0.0, 0.0])
    scale = torch.tensor([0.5 + 1e-4] * 4 + [1e-4] * 4) if run == "grpo" else torch.ones(8)
    torch.testing.assert_close(out["advantages"], centred / scale)
    assert trainer._metrics["train"]["frac_reward_zero_std"] == [0.5]


def test_compact_lm_head_scoring_leaves_logps_entropies_and_gradients_unchanged(tiny_model, tmp_path):
    """TRL's fused LM head with and without our CPU switch, on left-padded prompts + completions."""
    import trl.trainer.utils as trl_utils

    trainer = trl_trainer(tiny_model, tmp_path, "grpo")
    torch.manual_seed(1)
    ids, mask = torch.randint(3, 5000, (4, 20)), torch.ones(4, 20, dtype=torch.long)
    mask[0, :5] = mask[1, :2] = 0  # padding, as TRL lays prompts out

    def scored(enabled: bool):
        with rl.compact_lm_head_scoring(enabled):
            logps, entropy, _ = trainer._get_per_token_logps_and_entropies(
                trainer.model, ids, mask, logits_to_keep=8, compute_entropy=True)
            (logps * torch.linspace(-1, 1, 8)).sum().add(entropy.sum()).backward()
        grads = [p.grad.clone() for p in trainer.model.parameters()]
        trainer.model.zero_grad()
        return logps.detach(), entropy.detach(), grads

    original = trl_utils._use_triton
    full, compact = scored(False), scored(True)
    assert trl_utils._use_triton is original  # restored on exit
    torch.testing.assert_close(compact[0], full[0])
    torch.testing.assert_close(compact[1], full[1])
    for a, b in zip(compact[2], full[2]):
        torch.testing.assert_close(a, b)


# --- real training runs on the tiny model ---------------------------------------------------------


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(folder / "model.safetensors")


@pytest.mark.usefixtures("chars_registered")
def test_two_steps_each_algorithm_train_and_record_paired_diagnostics(tiny_model, common, tmp_path, data_dir):
    heldout = load_subset(data_dir, BenchmarkSubset(file="train/asdiv.jsonl", limit=2, offset=1500))
    cfg = tiny_params(tiny_model, tmp_path / "rl", eval_steps=2,
                      heldout=BenchmarkSubset(file="train/asdiv.jsonl", limit=2, offset=1500),
                      eval_sampling=SamplingParams(max_new_tokens=8))
    before = _weights(tiny_model)
    results = {run: rl.train_run(cfg, run, common, heldout_rows=heldout) for run in ALGORITHMS}
    for run, result in results.items():
        after = _weights(result.final_dir)
        unchanged = [name for name, tensor in before.items() if torch.equal(tensor, after[name])]
        assert not unchanged, f"{run}: parameters not updated: {unchanged}"
        assert (result.global_step, result.resumed_from) == (2, None)
        meta = json.loads((result.final_dir / resumable.FINAL_RECORD).read_text())
        assert (meta["loss_type"], meta["scale_rewards"]) == ALGORITHMS[run]
        assert (result.final_dir / "tokenizer.json").is_file()
        rows = result.diagnostics
        assert [r["step"] for r in rows] == [0, 1, 2]
        assert load_diagnostics(result.run_dir) == rows
        assert {"heldout_accuracy", "heldout_truncated_share"} <= rows[0].keys() <= {
            "step", "heldout_accuracy", "heldout_mean_length", "heldout_truncated_share", "heldout_format_rate"}
        assert "heldout_accuracy" in rows[2] and "heldout_accuracy" not in rows[1]
        for row in rows[1:]:
            # Our numbers agree with TRL's own logs of the same step.
            assert row["reward"] == pytest.approx(row["trl_reward"], abs=1e-5)
            assert row["zero_std_share"] == pytest.approx(row["trl_frac_reward_zero_std"])
            assert row["mean_length"] == pytest.approx(row["trl_mean_length"])
            assert row["truncated_share"] == pytest.approx(row["trl_clipped_ratio"])
            assert row["clip_ratio"] == 0.0 and row["kl"] is None  # on-policy; beta 0 (module doc)
            assert row["step_time_s"] > 0 and row["loss"] is not None
            assert (row["grad_norm"] > 0) == (row["zero_std_share"] < 1)  # no signal, no gradient
            assert {"reward_chars", "reward_accuracy", "reward_format", "accuracy"} <= row.keys()
        completions = read_rows(result.run_dir / COMPLETIONS_FILE)
        assert [c["step"] for c in completions] == [1] * 4 + [2] * 4
        live = result.live_dir / "plots" / "metrics"
        assert len((live / "reward.tsv").read_text().splitlines()) == 3  # header + 2 steps
        assert (live / "heldout_accuracy.tsv").is_file()
    # Paired: both algorithms saw the same prompts at every step.
    ids = {run: [r["question_ids"] for r in result.diagnostics[1:]] for run, result in results.items()}
    assert ids["grpo"] == ids["dr_grpo"] and all(len(step) == 2 for step in ids["grpo"])


@pytest.mark.usefixtures("chars_registered")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_lora_run_trains_adapters_only_and_saves_a_merged_plain_model(dtype, tiny_model, common, tmp_path):
    from r1repro.config import LoraParams

    cfg = tiny_params(tiny_model, tmp_path / "rl", lora=LoraParams(enabled=True, r=4, alpha=8, dropout=0.0,
                                                                   target_modules=["q_proj", "v_proj"]))
    before = _weights(tiny_model)
    if dtype == "bfloat16":  # the frozen base trains in bf16: what was trained against is the rounded base
        before = {name: tensor.to(torch.bfloat16).float() for name, tensor in before.items()}
    result = rl.train_run(cfg, "dr_grpo", common.model_copy(update={"dtype": dtype}))
    assert not (result.final_dir / "adapter_config.json").exists()  # merged: later stages need no PEFT
    after = _weights(result.final_dir)
    assert set(after) == set(before)
    assert {tensor.dtype for tensor in after.values()} == {torch.float32}  # merged in float32
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    # Only the adapted projections move (LoRA's update B @ A merged into them); nothing else does.
    assert changed and all(name.endswith(("q_proj.weight", "v_proj.weight")) for name in changed), changed
    assert {n for n in before if n.endswith("q_proj.weight")} <= changed
    checkpoint = resumable.last_complete_checkpoint(result.run_dir / rl.CHECKPOINTS)
    assert (checkpoint / "adapter_model.safetensors").is_file()  # resumable: adapters and optimizer


class _ForwardModes:
    """Record, for every forward pass of a model, whether gradients and CPU bf16 autocast were on."""

    def __init__(self):
        self.modes: list[tuple[bool, bool]] = []

    def __call__(self, module, args):
        self.modes.append((torch.is_grad_enabled(), torch.is_autocast_enabled("cpu")))


@pytest.mark.usefixtures("chars_registered")
@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_bf16_trains_float32_weights_and_decodes_rollouts_and_heldout_under_autocast(
        dtype, tiny_model, common, tmp_path, data_dir):
    heldout = load_subset(data_dir, BenchmarkSubset(file="train/asdiv.jsonl", limit=2, offset=1500))
    cfg = tiny_params(tiny_model, tmp_path / "rl", max_steps=1, eval_steps=1,
                      heldout=BenchmarkSubset(file="train/asdiv.jsonl", limit=2, offset=1500),
                      eval_sampling=SamplingParams(max_new_tokens=4), **QUICK)
    trainer, _ = rl.make_trainer(cfg, "dr_grpo", common.model_copy(update={"dtype": dtype}), heldout_rows=heldout)
    modes = _ForwardModes()
    trainer.model.register_forward_pre_hook(modes)
    trainer.train()
    bf16 = dtype == "bfloat16"
    assert trainer.args.bf16 is bf16
    # Weights and optimizer state stay float32: pure bf16 weights would round small updates away.
    assert {p.dtype for p in trainer.model.parameters()} == {torch.float32}
    decoding = [autocast for grad, autocast in modes.modes if not grad]  # rollouts and held-out answers
    scoring = [autocast for grad, autocast in modes.modes if grad]
    assert len(decoding) > 2 * 4 and scoring  # two evaluations and one rollout batch, token by token
    assert set(decoding) == set(scoring) == {bf16}


# Resumption and crash tests check mechanics, not the template: bare questions (~30 tokens instead
# of r1_chat's ~110) and groups of 2 make their steps several times cheaper.
QUICK = {"template": "none", "num_generations": 2}


class _StopAt(TrainerCallback):
    """Raise at a given step, as a crash would."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError(f"crash at step {self.step}")


@pytest.mark.usefixtures("chars_registered")
def test_rerun_resumes_at_step_3_with_optimizer_state(tiny_model, common, tmp_path):
    cfg = tiny_params(tiny_model, tmp_path / "rl", max_steps=2, save_steps=1, **QUICK)
    first = rl.train_run(cfg, "dr_grpo", common)
    checkpoints = first.run_dir / rl.CHECKPOINTS
    assert sorted(p.name for p in checkpoints.glob("checkpoint-*")) == ["checkpoint-2"]  # 1 rotated away
    second = rl.train_run(cfg.model_copy(update={"max_steps": 3}), "dr_grpo", common)
    assert (second.resumed_from, second.global_step) == (2, 3)
    assert [r["step"] for r in second.diagnostics] == [1, 2, 3]
    # Adam's step count went on from the checkpoint's 2: its state was loaded, not rebuilt.
    optimizer = torch.load(checkpoints / "checkpoint-3" / "optimizer.pt", weights_only=False)
    assert {int(s["step"]) for s in optimizer["state"].values()} == {3}
    # Step 3 trained on the prompts an uninterrupted 3-step run would have used.
    rows = load_subset(common.data_dir, cfg.prompts)
    order = rl.prompt_order(len(rows), 6, seed=common.seed)
    assert second.diagnostics[2]["question_ids"] == [rows[i]["id"] for i in order[4:6]]
    assert len((second.live_dir / "plots" / "metrics" / "reward.tsv").read_text().splitlines()) == 4


@pytest.mark.usefixtures("chars_registered")
def test_a_checkpoint_missing_its_optimizer_state_is_refused(tiny_model, common, tmp_path, caplog):
    cfg = tiny_params(tiny_model, tmp_path / "rl", max_steps=1, **QUICK)
    first = rl.train_run(cfg, "dr_grpo", common)
    checkpoint = first.run_dir / rl.CHECKPOINTS / "checkpoint-1"
    (checkpoint / "optimizer.pt").unlink()  # as a kill between two files of the save leaves it
    with caplog.at_level(logging.WARNING, logger="r1repro.resumable"):
        second = rl.train_run(cfg.model_copy(update={"max_steps": 2}), "dr_grpo", common)
    assert (second.resumed_from, second.global_step) == (None, 2)  # from step 0, not the torn checkpoint
    assert "removing incomplete checkpoint" in caplog.text
    assert [r["step"] for r in second.diagnostics] == [1, 2]  # the discarded run's rows went with it
    assert resumable.is_complete_checkpoint(first.run_dir / rl.CHECKPOINTS / "checkpoint-2")


@pytest.mark.usefixtures("chars_registered")
def test_a_crashed_run_keeps_the_last_good_final_model(tiny_model, common, tmp_path):
    cfg = tiny_params(tiny_model, tmp_path / "rl", max_steps=1, **QUICK)
    good = rl.train_run(cfg, "grpo", common)
    saved = _weights(good.final_dir)
    with pytest.raises(RuntimeError, match="crash at step 2"):
        rl.train_run(cfg.model_copy(update={"max_steps": 3}), "grpo", common, callbacks=[_StopAt(2)])
    assert json.loads((good.final_dir / resumable.FINAL_RECORD).read_text())["global_step"] == 1
    assert all(torch.equal(t, _weights(good.final_dir)[n]) for n, t in saved.items())
    assert not list(good.final_dir.parent.glob(".final.*"))  # no staging folder left behind
    # The crash came before checkpoint 2 was written; checkpoint 1 is still the one to resume from.
    assert resumable.last_complete_checkpoint(good.run_dir / rl.CHECKPOINTS).name == "checkpoint-1"
