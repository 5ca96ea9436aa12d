"""Tests of r1repro.prefix_scoring and the trainer scorer built on it: the prompts' shared prefix
run once gives TRL's own log-probs, entropies and gradients (float32, a tiny random-weight Llama,
LoRA as RL trains it), on left-padded prompts of different lengths and right-padded completions.

    pytest tests/test_prefix_scoring.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from r1repro import prefix_scoring, rl
from r1repro.config import BenchmarkSubset, LoraParams, RlParams
from r1repro.cpu_decode import left_padded

pytestmark = pytest.mark.filterwarnings(  # raised inside TRL 1.16 on transformers 5, not by us
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

COMPLETION = 6


def params(model: Path, out: Path, **overrides) -> RlParams:
    settings = dict(init_model=str(model), output_dir=str(out), template="r1_chat",
                    prompts=BenchmarkSubset(file="train/asdiv.jsonl", limit=4), max_steps=1, num_generations=2,
                    prompts_per_step=2, max_completion_length=COMPLETION, save_steps=1,
                    reward_weights={"accuracy": 1.0, "format": 0.0},
                    lora=LoraParams(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "up_proj"]))
    return RlParams(**{**settings, **overrides})


def trainer_for(tiny_model: Path, out: Path, *, shared: bool) -> rl.AutocastRolloutsTrainer:
    """Our trainer over the tiny model with LoRA (float32, CPU), its scorer switched by `shared`."""
    from r1repro.modeling import load_model, load_tokenizer, lora_config

    cfg = params(tiny_model, out)
    tokenizer = load_tokenizer(str(tiny_model))
    args = rl.grpo_config(cfg, "grpo", output_dir=out, seed=0, use_cpu=True)
    args.reward_weights = [1.0]  # one constant reward: nothing here is rewarded
    trainer = rl.AutocastRolloutsTrainer(
        model=load_model(str(tiny_model), device="cpu"), processing_class=tokenizer,
        reward_funcs=[lambda completions, **kw: [0.0] * len(completions)],
        args=args,
        train_dataset=rl.build_dataset([{"problem": "1+1?", "answer": "2"}], "r1_chat", tokenizer, seed=0,
                                       num_prompts=2),
        peft_config=lora_config(cfg.lora))
    torch.manual_seed(3)  # LoRA's B starts at 0: give it weights, so its gradient paths are all live
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    trainer.shared_prefix_scoring = shared
    trainer.model.train()
    return trainer


def batch(prompts: list[list[int]], completions: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """TRL's layout: prompts left-padded, completions right-padded to COMPLETION."""
    prompt_ids, prompt_mask = left_padded(prompts, 0, torch.device("cpu"))
    ids = torch.tensor([c + [0] * (COMPLETION - len(c)) for c in completions])
    mask = torch.tensor([[1] * len(c) + [0] * (COMPLETION - len(c)) for c in completions])
    return torch.cat([prompt_ids, ids], 1), torch.cat([prompt_mask, mask], 1)


SYSTEM = [11, 12, 13, 14, 15, 16, 17]
PROMPTS = [SYSTEM + [21, 22, 23], SYSTEM + [31], SYSTEM + [41, 42, 43, 44, 45], SYSTEM + [21, 22, 23]]
COMPLETIONS = [[51, 52, 53, 54, 55, 56], [61, 62], [71, 72, 73, 74], [81]]


def scored(trainer, ids, mask, batch_size=None):
    """TRL's scorer as the loss calls it: log-probs and entropies, and the LoRA gradients of a loss
    that weighs every position differently."""
    logps, entropy, _ = trainer._get_per_token_logps_and_entropies(
        trainer.model, ids, mask, COMPLETION, batch_size=batch_size, compute_entropy=True)
    weights = torch.linspace(-1, 2, logps.numel()).view_as(logps)
    ((logps * weights).sum() + entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    trainer.model.zero_grad()
    return logps.detach(), entropy.detach(), grads


@pytest.mark.parametrize("batch_size", [None, 3])  # 3: chunks of 3 rows and of 1 (TRL's forward)
def test_shared_prefix_scorer_equals_trls(tiny_model, tmp_path, batch_size):
    ids, mask = batch(PROMPTS, COMPLETIONS)
    theirs = scored(trainer_for(tiny_model, tmp_path / "trl", shared=False), ids, mask, batch_size)
    ours = scored(trainer_for(tiny_model, tmp_path / "ours", shared=True), ids, mask, batch_size)
    valid = mask[:, -COMPLETION:].bool()
    torch.testing.assert_close(ours[0][valid], theirs[0][valid], atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(ours[1][valid], theirs[1][valid], atol=2e-5, rtol=1e-5)
    assert theirs[2] and set(ours[2]) == set(theirs[2])
    for name, grad in theirs[2].items():
        assert grad.abs().sum() > 0, f"{name}: no gradient, the comparison would be empty"
        torch.testing.assert_close(ours[2][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_prefix_runs_once_and_rows_carry_the_rest(tiny_model, tmp_path):
    """The forward sees the shared prefix at batch 1, then every row without it."""
    trainer = trainer_for(tiny_model, tmp_path, shared=True)
    ids, mask = batch(PROMPTS, COMPLETIONS)
    shapes = []
    embeddings = trainer.model.get_input_embeddings()
    embeddings.register_forward_hook(lambda module, args, output: shapes.append(tuple(args[0].shape)))
    with torch.no_grad():
        trainer._get_per_token_logps_and_entropies(trainer.model, ids, mask, COMPLETION)
    assert shapes == [(1, len(SYSTEM)), (4, 5 + COMPLETION)]  # the longest rest: 5 question tokens


def test_rows_sharing_a_whole_prompt_keep_one_token_of_their_own():
    """A question's completions share its whole prompt; the last prompt token still runs per row,
    since its output scores the first completion token."""
    ids, mask = batch([PROMPTS[0], PROMPTS[0]], COMPLETIONS[:2])
    rows = prefix_scoring.prompt_rows(ids, mask, COMPLETION)
    assert rows == [PROMPTS[0], PROMPTS[0]]
    from r1repro.cpu_decode import shared_prefix_length

    assert shared_prefix_length(rows) == len(PROMPTS[0]) - 1


def test_gradient_checkpointing_refuses_shared_prefix_scoring():
    with pytest.raises(ValueError, match="rl.shared_prefix_scoring.*rl.gradient_checkpointing"):
        RlParams(gradient_checkpointing=True)
    assert not RlParams(gradient_checkpointing=True, shared_prefix_scoring=False).shared_prefix_scoring


def test_several_processes_fall_back_to_trls_scorer(tiny_model, tmp_path, monkeypatch, capsys):
    trainer = trainer_for(tiny_model, tmp_path, shared=False)
    setting = "rl.shared_prefix_scoring"
    assert prefix_scoring.prefix_sharing(trainer, True, setting)
    assert not prefix_scoring.prefix_sharing(trainer, False, setting)
    assert capsys.readouterr().out == ""
    monkeypatch.setattr(type(trainer.accelerator), "num_processes", property(lambda self: 2))
    assert not prefix_scoring.prefix_sharing(trainer, True, setting)
    assert "rl.shared_prefix_scoring: off" in capsys.readouterr().out


# --- SFT: the cold start and the distilled students ------------------------------------------------


def test_unscored_shared_columns_stop_at_a_difference_padding_or_a_scored_token():
    ids = torch.tensor([[5, 6, 7, 8, 9, 1], [5, 6, 7, 3, 9, 1]])
    ones, unscored = torch.ones_like(ids), torch.full_like(ids, -100)
    assert prefix_scoring.unscored_shared_columns(ids, ones, unscored) == 3       # rows differ at column 3
    scored = unscored.clone()
    scored[:, 3] = ids[:, 3]  # column 3 is predicted from column 2's output: column 2 must run per row
    assert prefix_scoring.unscored_shared_columns(ids, ones, scored) == 2
    padded = ones.clone()
    padded[1, 1] = 0
    assert prefix_scoring.unscored_shared_columns(ids, padded, unscored) == 1
    assert prefix_scoring.unscored_shared_columns(ids, ones, ids) == 0             # every token scored


SFT_ROWS = [{"prompt": "<|im_start|>system\nSolve it.<|im_end|>\n<|im_start|>user\n" + question,
             "completion": completion}
            for question, completion in [("What is 2 + 3?<|im_end|>\n", "<think>2 + 3 = 5</think> <answer>5</answer>"),
                                         ("Sam has 4 pens and buys 9 more.<|im_end|>\n", "<think>13</think><answer>13</answer>"),
                                         ("7 x 6?<|im_end|>\n", "<think>7 x 6 = 42, checked.</think> <answer>42</answer>")]]


def sft_loss_and_grads(tiny_model: Path, out: Path, shared: bool, lora: LoraParams | None = None):
    """TRL's SFT loss on one collated batch of SFT_ROWS and the gradients of every trained weight."""
    from r1repro import sft

    settings = sft.TrainSettings(max_steps=1, batch_size=3, seed=0, shared_prefix=shared, lora=lora)
    trainer = sft.build_trainer(SFT_ROWS, str(tiny_model), out, settings, device="cpu", progress=False)
    assert trainer.shared_prefix is shared
    if lora is not None:  # LoRA's B starts at 0: give it weights, so its gradient paths are all live
        torch.manual_seed(3)
        with torch.no_grad():
            for name, p in trainer.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.2)
    inputs = trainer.data_collator([trainer.train_dataset[i] for i in range(3)])
    shapes = []
    trainer.model.get_input_embeddings().register_forward_hook(
        lambda module, args, output: shapes.append(tuple(args[0].shape)))
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, dict(inputs))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
    return loss.detach(), grads, shapes, inputs, trainer._metrics["train"]


@pytest.mark.parametrize("lora", [None, LoraParams(enabled=True, r=4, alpha=8, dropout=0.0,
                                                   target_modules=["q_proj", "v_proj"])], ids=["full", "lora"])
def test_sft_loss_with_the_prefix_once_equals_trls(tiny_model, tmp_path, lora):
    theirs = sft_loss_and_grads(tiny_model, tmp_path / "trl", False, lora)
    ours = sft_loss_and_grads(tiny_model, tmp_path / "ours", True, lora)
    inputs = theirs[3]
    width = prefix_scoring.unscored_shared_columns(inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
    assert width > 5  # the rows share the system turn
    assert theirs[2] == [tuple(inputs["input_ids"].shape)]
    assert ours[2] == [(1, width), (3, inputs["input_ids"].size(1) - width)]
    torch.testing.assert_close(ours[0], theirs[0], atol=1e-5, rtol=1e-5)
    for key in ("entropy", "mean_token_accuracy", "num_tokens"):  # TRL's metrics see the same tokens
        assert ours[4][key] == pytest.approx(theirs[4][key], rel=1e-4), key
    assert theirs[1] and set(ours[1]) == set(theirs[1])
    for name, grad in theirs[1].items():
        torch.testing.assert_close(ours[1][name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_sft_params_refuse_shared_prefix_with_gradient_checkpointing():
    from r1repro.config import SftParams

    with pytest.raises(ValueError, match="sft.shared_prefix_loss.*sft.gradient_checkpointing"):
        SftParams(gradient_checkpointing=True)
    assert SftParams(gradient_checkpointing=True, shared_prefix_loss=False).gradient_checkpointing
