"""How far are RL's rollout engines from the policy TRL trains? (issue 32, item 4; a script, not a test)

RL samples its rollouts from one computation and trains on another: TRL's loss scores each
completion with a full forward of the policy, while the samples come from the policy's own decode
loop (`transformers_fast`: KV cache, grouped decode attention) or from OpenVINO with the policy's
weights put in. Any numerical difference between the two makes the samples slightly off-policy.
This script loads `rl.init_model` as RL does (`r1repro.rl.load_policy`: bf16 autocast where the CPU
has it, a frozen base in bf16 under LoRA), samples a step's worth of rollouts (`rl.prompts`, the
template, `rl.num_generations` per prompt, `rl.temperature`) from each engine with the same per-row
seeds, and scores every completion with the policy's full forward in the same autocast. It reports
what `r1repro.openvino_rollouts.logprob_check` logs each step, over every row: the gap per token and
the sequence importance ratio policy/engine, both under the sampling distribution.

    python bench/rollout_gap.py --prompts 8 --out results/bench/rollout_logprob_gap.json
"""

from __future__ import annotations

import argparse
import math
import statistics
from pathlib import Path
from typing import Any

import torch
from transformers import LogitsProcessorList, TemperatureLogitsWarper

from r1repro import config, data, modeling, templates
from r1repro import rl as rl_stage
from r1repro.bench import environment
from r1repro.cpu_decode import decode_dropping_finished
from r1repro.generation import RowSampler, derived_seed
from r1repro.io import atomic_write_json
from r1repro.openvino_rollouts import OpenVinoRollouts, Rollout, logprob_check, merged_weights
from r1repro.rollout import through_first_stop
from r1repro.stops import stop_policy_for


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="the policy's starting folder (default: rl.init_model)")
    parser.add_argument("--prompts", type=int, default=8, help="first N of rl.prompts")
    parser.add_argument("--openvino-dtypes", default="bfloat16,float32")
    parser.add_argument("--out", type=Path, default=Path("results/bench/rollout_logprob_gap.json"))
    return parser.parse_args(argv)


class RecordingSampler:
    """The rollout's own `RowSampler`, also keeping each row's log-prob of the token it chose under the
    sampling distribution (RL samples without top-p, so temperature alone)."""

    def __init__(self, sampler: RowSampler, rows: int, temperature: float):
        self.sampler, self.alive = sampler, list(range(rows))
        self.logprobs: list[list[float]] = [[] for _ in range(rows)]
        self.warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)])

    def choose(self, scores: torch.Tensor) -> torch.Tensor:
        tokens = self.sampler.choose(scores)
        logprobs = torch.log_softmax(self.warpers(None, scores.float()), -1)
        for batch_row, row in enumerate(self.alive):
            self.logprobs[row].append(float(logprobs[batch_row, tokens[batch_row]]))
        return tokens

    def select_rows(self, rows: list[int]) -> None:
        self.sampler.select_rows(rows)
        self.alive = [self.alive[k] for k in rows]


def gap_summary(policy: Any, prompt_ids: list[list[int]], rollouts: list[Rollout], temperature: float,
                bf16: bool) -> dict:
    """`logprob_check` on every row, as mean/max gap per token and the spread of the sequence ratio; the
    policy scores in the precision RL trains in (bf16 autocast where the CPU has it)."""
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        checks = [logprob_check(policy, [ids], [rollout], 1, temperature, 1.0)
                  for ids, rollout in zip(prompt_ids, rollouts)]
    gaps = [c["logprob_gap_per_token"] for c in checks if "logprob_gap_per_token" in c]
    ratios = [c["importance_ratio_min"] for c in checks]
    log_ratios = sorted(abs(math.log(r)) for r in ratios if r > 0)
    return {"rows": len(checks), "gap_per_token_mean": statistics.mean(gaps), "gap_per_token_max": max(gaps),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "abs_log_ratio_median": statistics.median(log_ratios),
            "abs_log_ratio_p90": log_ratios[int(0.9 * len(log_ratios))],
            "mean_tokens": statistics.mean(len(r.ids) for r in rollouts)}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    params = config.load_params()
    cfg, common = params.rl, modeling.resolve_dtypes(params.common)
    if args.model:
        cfg = cfg.model_copy(update={"init_model": args.model})
    _, tokenizer, bf16, policy = rl_stage.load_policy(cfg, common)
    if not bf16:
        print("note: no native bf16 here: the policy trains and scores in float32")
    rows = data.load_subset(common.data_dir, cfg.prompts, key="rl.prompts")[:args.prompts]
    prompt_ids = []
    for row in rows:
        text = templates.render_prompt(cfg.template, row["problem"], tokenizer)
        prompt_ids += [tokenizer.encode(text, add_special_tokens=False)] * cfg.num_generations
    seeds = [derived_seed(common.seed, 0, 0, row) for row in range(len(prompt_ids))]
    stops = list(stop_policy_for(common, cfg.template, tokenizer).token_ids)  # where RL's rollouts end
    budget, temperature = cfg.max_completion_length, cfg.temperature
    report: dict[str, Any] = {"model": cfg.init_model, "rows": len(prompt_ids), "temperature": temperature,
                              "max_new_tokens": budget, "policy_weights": str(next(policy.parameters()).dtype),
                              "bf16_autocast": bf16, "environment": environment("cpu"), "engines": {}}
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        recorder = RecordingSampler(RowSampler(seeds, temperature, 1.0), len(prompt_ids), temperature)
        decoded = decode_dropping_finished(policy, prompt_ids, max_new_tokens=budget, stop_token_ids=stops,
                                           pad_token_id=tokenizer.pad_token_id or stops[0], processor=recorder)
    own = []
    for row, ids in enumerate(decoded):
        ids = through_first_stop(ids, stops)
        own.append(Rollout(ids, sum(recorder.logprobs[row][:len(ids)])))
    report["engines"]["transformers_fast"] = gap_summary(policy, prompt_ids, own, temperature, bf16)
    for dtype in [d for d in args.openvino_dtypes.split(",") if d]:
        engine = OpenVinoRollouts(cfg.init_model, dtype=dtype, cache_dir=common.openvino_cache_dir)
        try:
            engine.sync(merged_weights(policy))
            rollouts = engine.generate(prompt_ids, seeds, temperature=temperature, top_p=1.0,
                                       max_new_tokens=budget, stop_token_ids=stops)
        finally:
            engine.close()
        report["engines"][f"openvino_{dtype}"] = gap_summary(policy, prompt_ids, rollouts, temperature, bf16)
    for name, summary in report["engines"].items():
        print(f"{name:22s} gap {summary['gap_per_token_mean']:.4f} nats/token (max {summary['gap_per_token_max']:.4f}); "
              f"sequence ratio [{summary['ratio_min']:.2f}, {summary['ratio_max']:.2f}], "
              f"median |log ratio| {summary['abs_log_ratio_median']:.3f}")
    atomic_write_json(args.out, report)
    print(f"written to {args.out}")
    return report


if __name__ == "__main__":
    main()
