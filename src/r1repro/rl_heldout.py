"""RL's periodic held-out check: the policy in memory answers held-out questions during training.

    callback = HeldoutEval(rows, "r1_chat", tokenizer, cfg.eval_sampling, cfg.eval_steps, diagnostics, seed=7,
                           stop_policy=stop_policy_for(common, "r1_chat", tokenizer))
    trainer = GRPOTrainer(..., callbacks=[diagnostics, callback])   # after the diagnostics (its step timer)

Before step 1 and every `every` steps the held-out prompts are answered with the transformers backend
(greedy by default, under the training's autocast, stopping where the rollouts stop) and graded; the
numbers land in that step's diagnostics row (`r1repro.rl_diagnostics`) as heldout_accuracy,
heldout_mean_length and heldout_truncated_share, the curve of the notebook's held-out plot. The
stage's before/after numbers are a separate, larger check on the saved models (`r1repro.evaluation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import TrainerCallback

from r1repro.config import SamplingParams
from r1repro.rl_diagnostics import Diagnostics
from r1repro import stops
from r1repro.templates import render_prompt


class HeldoutEval(TrainerCallback):
    """Answer held-out prompts with the policy every `every` steps (and before step 1).

    Uses the transformers generation backend on the model in memory; the metrics land in the
    diagnostics row of that step as heldout_accuracy, heldout_mean_length, heldout_truncated_share.

    Args:
        rows: held-out question rows (`problem`, `answer`).
        template: the prompt template.
        tokenizer: the policy's tokenizer.
        sampling: params `rl.eval_sampling` (temperature 0: greedy).
        every: evaluate when global_step % every == 0.
        diagnostics: where the metrics go.
        seed: sampling seed.
        timeout_s: grading time limit per response.
        workers: grading processes (common.grading_workers).
        batch_size: sequences per generate call.
        stop_policy: where responses end (`r1repro.stops.stop_policy_for`, as the rollouts); None:
            the template's EOS and end-of-turn marker, no stop string.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], template: str, tokenizer: Any,
                 sampling: SamplingParams, every: int, diagnostics: Diagnostics, *, seed: int,
                 timeout_s: float = 5.0, batch_size: int = 16, workers: int = 1,
                 stop_policy: stops.StopPolicy | None = None):
        self.rows = [dict(r) for r in rows]
        self.prompts = [render_prompt(template, r["problem"], tokenizer) for r in rows]
        self.stop_policy = stop_policy or stops.stop_policy(template, tokenizer, answer_close=False)
        self.template, self.tokenizer, self.sampling, self.every = template, tokenizer, sampling, every
        self.diagnostics, self.seed = diagnostics, seed
        self.timeout_s, self.batch_size, self.workers = timeout_s, batch_size, workers

    def evaluate(self, model: Any, bf16: bool = False) -> dict[str, float]:
        """Generate and grade; returns heldout_accuracy, heldout_mean_length, heldout_truncated_share
        and heldout_format_rate, scored as the stage's before/after checks are
        (`evaluation.graded_heldout_records`, `evaluation.heldout_summary`).

        bf16: decode under bfloat16 autocast (the training's `args.bf16`, as its rollouts do).
        """
        import torch

        from r1repro.evaluation import graded_heldout_records, heldout_summary
        from r1repro.generation import load_generator

        generator = load_generator("transformers", (model, self.tokenizer), batch_size=self.batch_size,
                                   progress=False)
        s = self.sampling
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            groups = generator.generate(self.prompts, n=s.n, temperature=s.temperature, top_p=s.top_p,
                                        max_tokens=s.max_new_tokens, seed=self.seed, stop_policy=self.stop_policy)
        records = graded_heldout_records("policy", self.rows, self.prompts, groups, self.template,
                                         self.workers, self.timeout_s)
        summary = heldout_summary(records, n_boot=10, seed=self.seed)  # the curve shows no interval
        return {"heldout_accuracy": summary["accuracy"], "heldout_mean_length": summary["mean_tokens"],
                "heldout_truncated_share": summary["truncated"], "heldout_format_rate": summary["format_rate"]}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # the starting policy, once; a resumed run has it already
            self.diagnostics.add_heldout(0, self.evaluate(model, bf16=args.bf16))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self.diagnostics.add_heldout(state.global_step, self.evaluate(model, bf16=args.bf16))
