"""Training on completions whose prompts share a prefix, with that prefix run once per batch.

GRPO scores every completion of a rollout under the policy, and backpropagates through it, over
prompt and completion together. Within a micro-batch the prompts share most of their tokens: the
template's system text for every question (95 of ~126 tokens for r1_chat on word_ops; TRL shuffles
a rollout's completions before cutting it into micro-batches), or the whole prompt where all rows
answer one question. So the shared prefix runs once at batch 1; its keys and values are broadcast to
the rows, each row's remaining prompt tokens (left-padded) and completion run after it, and the
log-probabilities come from TRL's own fused LM head, as in TRL's scorer.

Nothing changes in what is computed: the broadcast cache sends each row's gradient back through the
one prefix forward, so the gradients are the sum TRL's per-row forward gives; positions count each
row's real tokens as in an unpadded forward (rotary attention depends on position differences only,
so TRL's positions, shifted by each row's left padding, give the same scores). Float32 log-probs and
LoRA gradients match TRL's scorer to rounding (tests/test_prefix_scoring.py).

SFT (the cold start and the distilled students) gets the same through `PrefixOnceSFTTrainer`:
TRL's `SFTTrainer` whose one model call in `compute_loss` runs the rows' shared, unscored leading
columns once (TRL pads SFT rows on the right, so a prefix is the same columns in every row).

Both need one process without gradient checkpointing (`prefix_sharing`): checkpointed layers drop a
passed KV cache, and DDP, FSDP and DeepSpeed expect one forward per backward.

Measured (SmolLM2-135M cold-start policy with LoRA, bf16 autocast, 2-core AMD EPYC): a micro-batch
of 8 completions (~126 + ~85 tokens) forward and backward, 5.4 s -> 4.1 s (different questions) and
5.3 s -> 3.7 s (one question); a whole RL step (rollout included) 39.2 s -> 30.4 s.
"""

from __future__ import annotations

from typing import Any

import torch
from trl import SFTTrainer

from r1repro.cpu_decode import left_padded


def prompt_rows(input_ids: torch.Tensor, attention_mask: torch.Tensor, logits_to_keep: int) -> list[list[int]]:
    """Each row's real prompt tokens: the columns before the last `logits_to_keep`, padding dropped."""
    prompt_ids, prompt_mask = input_ids[:, :-logits_to_keep], attention_mask[:, :-logits_to_keep]
    return [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids, prompt_mask)]


def plain_cache(model: Any) -> Any:
    """An empty `DynamicCache` for `model`, or None where a layer keeps anything but all its keys
    and values (sliding windows, recurrent state): those cannot simply be broadcast."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=model.config)
    return cache if all(type(layer) is DynamicLayer for layer in cache.layers) else None


def prefix_sharing(trainer: Any, wanted: bool, setting: str) -> bool:
    """`wanted` (params `setting`) where a trainer's forward may be split in two (one process, no
    gradient checkpointing); said when it may not, and the trainer then runs TRL's own forward."""
    if wanted and (trainer.accelerator.num_processes > 1 or trainer.is_deepspeed_enabled
                   or trainer.is_fsdp_enabled or trainer.args.gradient_checkpointing):
        print(f"{setting}: off in this run (several processes, DeepSpeed, FSDP or gradient checkpointing); "
              "TRL's own forward")
        return False
    return wanted


def _prefix_cache(model: Any, cache: Any, prefix: torch.Tensor, batch: int) -> None:
    """Run `prefix` (1, width) into `cache`, then view its keys and values as `batch` rows (no copy;
    autograd sums each row's gradient back into the one prefix forward)."""
    # logits_to_keep=1: the prefix's logits are not needed, its keys and values are
    model(input_ids=prefix, attention_mask=torch.ones_like(prefix), past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    for layer in cache.layers:
        layer.keys = layer.keys.expand(batch, -1, -1, -1)
        layer.values = layer.values.expand(batch, -1, -1, -1)


def shared_prefix_forward(model: Any, cache: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                          logits_to_keep: int, prefix: list[int], prompts: list[list[int]]) -> Any:
    """TRL's fused-LM-head forward over (prompt, completion) rows, the prompts' common `prefix` run once.

    Args:
        model: a model patched by TRL's `add_fused_lm_head` (GRPOTrainer does this), PEFT-wrapped or not.
        cache: `plain_cache(model)`, empty.
        input_ids, attention_mask: TRL's layout, left-padded prompts then right-padded completions.
        logits_to_keep: the completion width (the last columns).
        prefix: tokens every prompt starts with (`shared_prefix_length` leaves each prompt one token of its own:
            the last prompt token's output predicts the first completion token).
        prompts: each row's real prompt tokens (`prompt_rows`).

    Returns:
        The fused forward's output; `log_probs[:, -logits_to_keep:]` (and `entropy`) are the
        completions', in the same layout as TRL's scorer returns them.
    """
    batch, device, width = input_ids.size(0), input_ids.device, len(prefix)
    _prefix_cache(model, cache, torch.tensor([prefix], device=device), batch)

    rest_ids, rest_mask = left_padded([p[width:] for p in prompts], 0, device)
    completion_ids, completion_mask = input_ids[:, -logits_to_keep:], attention_mask[:, -logits_to_keep:]
    ids = torch.cat([rest_ids, completion_ids], dim=1)
    mask = torch.cat([rest_mask.to(completion_mask.dtype), completion_mask], dim=1)
    full_mask = torch.cat([torch.ones(batch, width, dtype=mask.dtype, device=device), mask], dim=1)
    positions = (full_mask.cumsum(-1) - 1).clamp(min=0)[:, width:]
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :-logits_to_keep] = -100  # only the completion tokens are scored, as in TRL
    return model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache,
                 labels=labels, fused_lm_head=True)


def unscored_shared_columns(input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor) -> int:
    """Leading columns every row shares as real, unscored tokens, the column after them unscored too
    (it is predicted from the prefix's last position, which the rows' forward does not output)."""
    shared = ((input_ids == input_ids[:1]).all(0) & (attention_mask == 1).all(0) & (labels == -100).all(0))[:-1]
    return int((shared & (labels[:, 1:] == -100).all(0)).int().cumprod(0).sum())


class _PrefixOnce:
    """Stands in for the model in `SFTTrainer.compute_loss`'s fused-LM-head call."""

    def __init__(self, model: Any):
        self.model = model

    def __call__(self, *, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
                 fused_lm_head: bool = False, **kwargs: Any) -> Any:
        width = unscored_shared_columns(input_ids, attention_mask, labels) if fused_lm_head else 0
        cache = plain_cache(self.model) if width and input_ids.size(0) > 1 else None
        if cache is None:  # nothing shared (or one row): the model's own call
            return self.model(input_ids=input_ids, attention_mask=attention_mask, labels=labels,
                              fused_lm_head=fused_lm_head, **kwargs)
        _prefix_cache(self.model, cache, input_ids[:1, :width], input_ids.size(0))
        # right padding: positions follow from the cache's length, as in the full forward
        return self.model(input_ids=input_ids[:, width:], attention_mask=attention_mask,
                          labels=labels[:, width:], past_key_values=cache, fused_lm_head=True, **kwargs)


class PrefixOnceSFTTrainer(SFTTrainer):
    """TRL's `SFTTrainer`; with `shared_prefix` set, its training loss runs the batch's shared prompt
    columns once (the loss, entropy and token accuracy are sums over scored tokens, which all lie
    after them)."""

    shared_prefix: bool = False

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        plain = set(inputs) <= {"input_ids", "attention_mask", "labels"}  # no padding-free or images
        if self.shared_prefix and self.model.training and plain and not return_outputs:
            model = _PrefixOnce(model)
        return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                    num_items_in_batch=num_items_in_batch)
