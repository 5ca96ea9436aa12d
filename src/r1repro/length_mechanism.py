"""Dr. GRPO's length mechanism (§3.1), measured through the model: one update under each normaliser.

GRPO's loss divides each response's token sum by its own length |o_i|; Dr. GRPO's by a constant. For
a wrong answer (negative advantage) GRPO therefore pushes each token of a long answer down less than
each token of a short one; the paper argues this is how wrong answers grow long. Whether that survives
a real model is not given: Adam's per-weight normalisation, and answers that share most of their
tokens and weights, could wash the 1/|o_i| weighting out. This module measures it.

From the same start weights, on the same batch of sampled groups, it takes one optimiser update with
TRL's own `loss_type: grpo` loss and, after restoring the weights, one with `loss_type: dr_grpo`
(same advantages: one `scale_rewards` for both), and records for every answer the change of its mean
per-token log-probability (`delta_grpo`, `delta_dr_grpo`, float32 forwards before and after). The
statistic, fixed before any run: within each batch, the least-squares slope of `delta_grpo -
delta_dr_grpo` against length over the batch's wrong answers; the paper predicts it above 0 (long
wrong answers lose less log-probability under GRPO). `r1repro.claim_measures.length_mechanism`
averages the batches' slopes and bootstraps over batches.

If every answer in a batch had the same length, the two losses' gradients would differ by one constant
factor and Adam's first step, g / (|g| + eps), would be the same update: both deltas equal, slope 0.
tests/test_length_mechanism.py checks that through the model.

The groups are the prompt filter's (`r1repro.prompt_filter`: answers the starting policy really
sampled, graded): no generation is spent here. Rewards are the accuracy alone (1 right, 0 wrong), so
within a group every wrong answer has the same advantage and length is all that tells them apart.

    from r1repro import length_mechanism
    batches = length_mechanism.mixed_batches(chosen.rows, chosen.samples, spec)   # spec: rl.length_mechanism
    records = length_mechanism.measure(cfg, common, batches)                       # one dict per answer
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from r1repro.config import CommonParams, ConfigError, RlParams
from r1repro.metrics import least_squares_slope

LOSS_TYPES = ("grpo", "dr_grpo")


def mixed_batches(rows: Sequence[Mapping[str, Any]], samples: Sequence[Sequence[Mapping[str, Any]]],
                  groups_per_batch: int, batches: int) -> list[list[dict]]:
    """The first `batches` batches of `groups_per_batch` consecutive groups with a right and a wrong
    answer, skipping a batch whose wrong answers all have one length (`num_tokens`): it has no slope
    (`batch_slopes`), and the row must rest on `batches` slopes. The rule looks at lengths only,
    never at the log-probs the statistic is made of.

    Args:
        rows: question rows (`problem`, `id`), aligned with `samples`.
        samples: each row's graded answers (`prompt_filter.sample_groups`).
        groups_per_batch: groups in one update.
        batches: updates measured.

    Returns:
        `batches` lists of groups; a group is {id, problem, answers}.

    Raises:
        ConfigError: fewer mixed groups than needed, naming the keys to change.
    """
    mixed = [{"id": str(row.get("id", f"row-{i}")), "problem": row["problem"], "answers": list(group)}
             for i, (row, group) in enumerate(zip(rows, samples))
             if 0 < sum(bool(a["correct"]) for a in group) < len(group)]
    chunks = [mixed[k:k + groups_per_batch] for k in range(0, len(mixed) - groups_per_batch + 1, groups_per_batch)]
    usable = [chunk for chunk in chunks
              if len({a["num_tokens"] for g in chunk for a in g["answers"] if not a["correct"]}) >= 2]
    if len(usable) < batches:
        raise ConfigError(
            f"rl.length_mechanism needs {batches} batches of {groups_per_batch} groups with a right and a "
            f"wrong answer, and wrong answers of two lengths or more; the prompt filter's samples give "
            f"{len(usable)} ({len(mixed)} mixed groups): lower rl.length_mechanism.batches or "
            "groups_per_batch, or raise rl.prompt_filter.candidates")
    return usable[:batches]


def advantages(correct: Sequence[Sequence[bool]], scale_rewards: str) -> list[list[float]]:
    """Per group: r - mean(r), divided by (std + 1e-4) when scale_rewards is "group" (TRL 1.16's
    formula, with torch's default unbiased std), for accuracy rewards r in {0, 1}."""
    import torch

    out = []
    for group in correct:
        rewards = torch.tensor([float(c) for c in group])
        centred = rewards - rewards.mean()
        if scale_rewards == "group":
            centred = centred / (rewards.std() + 1e-4)
        elif scale_rewards != "none":
            raise ConfigError(f"rl.length_mechanism.scale_rewards: {scale_rewards!r}; expected none or group")
        out.append(centred.tolist())
    return out


def batch_inputs(groups: Sequence[Mapping[str, Any]], template: str, tokenizer: Any, scale_rewards: str,
                 device: Any = "cpu") -> dict[str, Any]:
    """The tensors TRL's loss reads for a batch of groups, laid out as TRL lays out a rollout.

    Prompts are left-padded and completions right-padded; a completion that stopped ends with the
    tokenizer's EOS (part of its mask, as in TRL's rollouts); one that ran out has none.

    Returns:
        prompt_ids, prompt_mask, completion_ids, completion_mask, advantages (TRL's names), and
        `answers`: one {id, sample, correct, length} per completion, in order.
    """
    import torch

    from r1repro.templates import render_prompt

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    prompts, completions, answers = [], [], []
    for group, adv in zip(groups, advantages([[a["correct"] for a in g["answers"]] for g in groups],
                                             scale_rewards)):
        prompt = tokenizer(render_prompt(template, group["problem"], tokenizer), add_special_tokens=False).input_ids
        for j, (answer, a) in enumerate(zip(group["answers"], adv)):
            ids = tokenizer(answer["text"], add_special_tokens=False).input_ids
            ids = ids + [tokenizer.eos_token_id] if answer["finish_reason"] == "stop" else ids
            prompts.append(prompt)
            completions.append(ids)
            answers.append({"id": group["id"], "sample": j, "correct": bool(answer["correct"]),
                            "length": len(ids), "advantage": a})
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))

    def padded(seqs: list[list[int]], width: int, left: bool) -> tuple[Any, Any]:
        ids = [[pad] * (width - len(s)) + s if left else s + [pad] * (width - len(s)) for s in seqs]
        mask = [[0] * (width - len(s)) + [1] * len(s) if left else [1] * len(s) + [0] * (width - len(s))
                for s in seqs]
        return torch.tensor(ids, device=device), torch.tensor(mask, device=device)

    prompt_ids, prompt_mask = padded(prompts, width_p, left=True)
    completion_ids, completion_mask = padded(completions, width_c, left=False)
    return {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
            "completion_mask": completion_mask,
            "advantages": torch.tensor([a["advantage"] for a in answers], device=device), "answers": answers}


def mean_token_logps(trainer: Any, model: Any, inputs: Mapping[str, Any]) -> list[float]:
    """Each completion's mean per-token log-probability, scored by TRL's own scorer in float32."""
    import torch

    input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    model.eval()
    with torch.no_grad():
        logps = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask,
                                                           inputs["completion_ids"].size(1))[0]
    mask = inputs["completion_mask"].to(logps.dtype)
    return ((logps * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).tolist()


def one_update(trainer: Any, model: Any, inputs: Mapping[str, Any], loss_type: str) -> None:
    """One AdamW step from a fresh optimiser (its first step) on TRL's loss of `loss_type`."""
    trainer.loss_type = loss_type
    trainer.current_gradient_accumulation_steps = 1  # the whole batch is one optimiser step
    trainer.optimizer = None
    optimizer = trainer.create_optimizer()  # AdamW with the run's learning rate, as TRL trains
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with trainer.accelerator.autocast():  # the run's mixed precision, as in training
        loss = trainer._compute_loss(model, {k: v for k, v in inputs.items() if k != "answers"})
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def make_scorer(cfg: RlParams, common: CommonParams, output_dir: str) -> tuple[Any, Any]:
    """A GRPOTrainer over rl.init_model with the run's LoRA, optimiser and precision, never trained:
    its loss and scorer are what `one_update` uses (`output_dir`: TRL's, nothing is saved there).
    Returns (trainer, model)."""
    from datasets import Dataset
    from transformers.trainer_utils import SaveStrategy
    from r1repro.modeling import lora_config
    from r1repro.prefix_scoring import prefix_sharing
    from r1repro.rl import AutocastRolloutsTrainer, grpo_config, load_policy

    device, tokenizer, bf16, model = load_policy(cfg, common)  # as the RL runs load it
    first = next(iter(cfg.runs))
    args = grpo_config(cfg, first, output_dir=output_dir, seed=common.seed, use_cpu=device == "cpu", bf16=bf16)
    # Nothing is saved, and no reward is computed (the advantages are built here): set after
    # construction, as bench/grpo_step.py does, since GRPOConfig's checks fail on their derived fields.
    args.save_strategy, args.reward_weights = SaveStrategy.NO, None

    def unused_reward(completions: list[Any], **kwargs: Any) -> list[float]:
        raise RuntimeError("length_mechanism builds its own advantages; no reward is computed")

    trainer = AutocastRolloutsTrainer(model=model, reward_funcs=[unused_reward], args=args,
                                      train_dataset=Dataset.from_list([{"prompt": "unused"}]),
                                      processing_class=tokenizer, peft_config=lora_config(cfg.lora))
    # scored as the runs score
    trainer.shared_prefix_scoring = prefix_sharing(trainer, cfg.shared_prefix_scoring, "rl.shared_prefix_scoring")
    return trainer, trainer.model


def measure(cfg: RlParams, common: CommonParams, batches: Sequence[Sequence[Mapping[str, Any]]],
            scale_rewards: str = "none") -> list[dict]:
    """For each batch: the mean per-token log-prob of every answer before, and after one update under
    each loss type from the same start (`LOSS_TYPES`).

    Returns:
        One record per answer: batch, id, sample, correct, length, advantage, logp_before, and
        delta_<loss_type> (after minus before) for each loss type.
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="r1repro-length-") as scratch:
        trainer, model = make_scorer(cfg, common, scratch)
        return _measure(trainer, model, cfg.template, batches, scale_rewards)


def _measure(trainer: Any, model: Any, template: str, batches: Sequence[Sequence[Mapping[str, Any]]],
             scale_rewards: str) -> list[dict]:
    from tqdm.auto import tqdm

    from r1repro.rl import compact_lm_head_scoring

    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    start = {name: p.detach().clone() for name, p in trainable.items()}
    records = []
    with compact_lm_head_scoring(enabled=trainer.args.device.type == "cpu"):
        for b, groups in enumerate(tqdm(batches, desc="length mechanism: batches")):
            inputs = batch_inputs(groups, template, trainer.processing_class, scale_rewards,
                                  device=trainer.args.device)
            before = mean_token_logps(trainer, model, inputs)
            rows = [{"batch": b, **a, "logp_before": lp} for a, lp in zip(inputs["answers"], before)]
            for loss_type in LOSS_TYPES:
                one_update(trainer, model, inputs, loss_type)
                after = mean_token_logps(trainer, model, inputs)
                for row, lp, lb in zip(rows, after, before):
                    row[f"delta_{loss_type}"] = lp - lb
                _restore(trainable, start)
            records += rows
    return records


def _restore(params: Mapping[str, Any], values: Mapping[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for name, p in params.items():
            p.copy_(values[name])


def batch_slopes(records: Sequence[Mapping[str, Any]]) -> list[float]:
    """Per batch, the slope of (delta_grpo - delta_dr_grpo) against length over its wrong answers,
    in nats per token per token of length; batches with fewer than two distinct wrong lengths give none."""
    by_batch: dict[int, list[Mapping[str, Any]]] = {}
    for r in records:
        if not r["correct"]:
            by_batch.setdefault(int(r["batch"]), []).append(r)
    slopes = []
    for b in sorted(by_batch):
        wrong = by_batch[b]
        if len({r["length"] for r in wrong}) < 2:
            continue
        slopes.append(least_squares_slope([r["length"] for r in wrong],
                                          [r["delta_grpo"] - r["delta_dr_grpo"] for r in wrong]))
    return slopes


def wrong_answer_table(records: Sequence[Mapping[str, Any]]) -> Any:
    """The wrong answers' log-prob changes, one row per answer and loss type (for the plot)."""
    import pandas as pd

    return pd.DataFrame([{"batch": r["batch"], "length": r["length"], "loss_type": loss_type,
                          "delta_logp": r[f"delta_{loss_type}"]}
                         for r in records if not r["correct"] for loss_type in LOSS_TYPES])
