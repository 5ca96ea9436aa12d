"""GRPO and Dr. GRPO steps with the paper's mini-batch structure: plain TRL settings against the project's.

The Dr. GRPO paper's 1.5B script generates a rollout of 128 prompts x 8 samples = 1,024 completions
and takes 8 optimiser steps of 128 on it (`rl.updates_per_rollout`, TRL's steps_per_generation). This
benchmark runs that structure at a size that fits (--prompts x --samples per rollout, --updates
optimiser steps each, --rollouts rollouts) in two settings:

* plain (once; --no-plain skips it): `GRPOConfig` defaults (TRL's `model.generate` rollouts,
  per-device batch 8) with only the workload, learning rate, dtype and device set;
* project, for each run (--runs): what `rl.grpo_config` makes of params.yaml with --profile merged
  (profiles/gpu.yaml: vLLM colocated when a GPU build is installed and the device is CUDA, else the
  fallback that `r1repro.rollout` picks), with the same workload.

One process, one random-initialised model with Qwen2.5-Math-1.5B's architecture (`--tiny`: toy
size, for a CPU smoke run), the same prompts and one random reward (varied, so every advantage is
non-zero); EOS is impossible (see r1repro.bench), so every completion is --new-tokens long.

    python bench/grpo_step.py --device cuda --prompts 16 --samples 8 --updates 4 --new-tokens 128
    python bench/grpo_step.py --tiny --prompts 2 --samples 4 --updates 2 --rollouts 1 --new-tokens 8 \\
        --device cpu --dtype float32

For every training it reports the time of each optimiser step (a rollout's first step includes its
generation), the optimiser steps taken per rollout as the trainer counted them (`on_optimizer_step`
calls between two calls of TRL's `_generate_and_score_completions`) beside what its config implies,
and the clip ratio TRL logs per step. With one update per rollout the clip cannot act; from a
rollout's second update on, the policy has moved, so a non-zero clip ratio shows that the
mini-batches work. The learning rate (--learning-rate, default 1e-3 rather than the paper's 1e-6)
is raised so that one update on random weights moves the ratio past the clip range; it does not
change the time. The JSON is rewritten after each training.
"""

from __future__ import annotations

import argparse
import gc
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, TrainerCallback
from transformers.trainer_utils import SaveStrategy
from trl import GRPOConfig, GRPOTrainer

from r1repro import bench, rl
from r1repro.io import atomic_write_json
from r1repro.config import RlParams, load_params, repo_root
from r1repro.modeling import resolve_device
from r1repro.roofline import DTYPE_BYTES
from r1repro.rollout import announce, choose_rollout

CLIP_KEY = "clip_ratio/region_mean"  # TRL 1.16: share of tokens whose ratio left [1 - eps, 1 + eps]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=16, help="prompts per rollout")
    parser.add_argument("--samples", type=int, default=8, help="completions per prompt (group size)")
    parser.add_argument("--updates", type=int, default=4, help="optimiser steps per rollout")
    parser.add_argument("--rollouts", type=int, default=2, help="rollouts trained on")
    parser.add_argument("--new-tokens", type=int, default=256, help="tokens per completion")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="tokens per prompt")
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPE_BYTES))
    parser.add_argument("--tiny", action="store_true", help="toy-sized model (CPU smoke run)")
    parser.add_argument("--profile", default="gpu", help="profiles/<name>.yaml merged into params.yaml")
    parser.add_argument("--runs", default="grpo,dr_grpo", help="comma-separated keys of rl.runs")
    parser.add_argument("--no-plain", action="store_true", help="time the project's settings only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench/grpo_step.json")
    return parser.parse_args(argv)


class StepProbe(TrainerCallback):
    """Wall time of every optimiser step, and the optimiser steps taken between two rollouts."""

    def __init__(self, device: str):
        self.device, self.times, self._start = device, [], 0.0
        self.optimizer_steps = 0
        self.generated_at: list[int] = []  # optimiser steps taken when each rollout was generated

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def watch(self, trainer: GRPOTrainer) -> None:
        """Count the trainer's rollouts: TRL generates in `_generate_and_score_completions`."""
        generate = trainer._generate_and_score_completions

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.generated_at.append(self.optimizer_steps)
            return generate(*args, **kwargs)

        trainer._generate_and_score_completions = counted

    def steps_per_rollout(self) -> list[int]:
        """Optimiser steps taken on each rollout, in order."""
        marks = [*self.generated_at, self.optimizer_steps]
        return [b - a for a, b in zip(marks, marks[1:])]

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.optimizer_steps += 1

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def random_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Random scores: only the time matters, and varied rewards keep every advantage non-zero."""
    return [random.random() for _ in completions]


def plain_config(args: argparse.Namespace, output_dir: Path, device: str) -> GRPOConfig:
    """TRL's defaults with only the workload (the same mini-batch structure), dtype and device set."""
    per_update = args.prompts * args.samples // args.updates
    micro = min(8, per_update)  # TRL's default per-device batch
    accumulation = max(1, per_update // micro)
    return GRPOConfig(
        output_dir=str(output_dir), num_generations=args.samples, max_completion_length=args.new_tokens,
        per_device_train_batch_size=micro, gradient_accumulation_steps=accumulation,
        steps_per_generation=accumulation * args.updates, learning_rate=args.learning_rate,
        max_steps=args.updates * args.rollouts, save_strategy="no", report_to="none", logging_steps=1,
        use_cpu=device == "cpu", bf16=args.dtype == "bfloat16", seed=args.seed)


def project_params(args: argparse.Namespace) -> tuple[RlParams, str]:
    """The profile's rl section with the workload set (validated again); and its common.backend."""
    params = load_params(repo_root(), profile=args.profile or None)
    values = {**params.rl.model_dump(), "prompts_per_step": args.prompts, "num_generations": args.samples,
              "updates_per_rollout": args.updates, "max_steps": args.updates * args.rollouts,
              "max_completion_length": args.new_tokens, "learning_rate": args.learning_rate, "eval_steps": 0}
    micro = values["micro_batch_size"]
    if micro is not None and (args.prompts * args.samples // args.updates) % micro:
        values["micro_batch_size"] = None  # the profile's micro-batch does not divide a toy step
    return RlParams.model_validate(values), params.rl.rollout_engine(params.common)


def project_config(args: argparse.Namespace, run: str, output_dir: Path,
                   device: str) -> tuple[GRPOConfig, dict]:
    """rl.grpo_config for the profile's rl section with the workload set; and the rollout choice."""
    cfg, backend = project_params(args)
    choice = choose_rollout(backend, device)
    announce(choice, "bench")
    config = rl.grpo_config(cfg, run, output_dir=output_dir, seed=args.seed,
                            use_vllm=choice.engine == "vllm", use_cpu=device == "cpu",
                            bf16=args.dtype == "bfloat16",
                            continuous_batching=choice.engine == "transformers_continuous")
    # A benchmark keeps no checkpoints (a 1.5B one with optimiser state is ~18 GB) and scores with
    # one random reward instead of the project's weighted ones. Set after construction: re-running
    # GRPOConfig's checks on its own derived fields fails.
    config.save_strategy, config.reward_weights = SaveStrategy.NO, None
    return config, choice.record()


def train(config: GRPOConfig, folder: Path, args: argparse.Namespace, device: str,
          compact_scoring: bool) -> dict[str, Any]:
    """Train config.max_steps optimiser steps on the saved random model; what `StepProbe` saw.

    Returns:
        step_seconds (each optimiser step), seconds (mean step of the last rollout, which the plain
        and project settings are compared on), the mean rollout and update step, the optimiser steps
        per rollout measured and configured, TRL's clip ratio per step, peak memory.
    """
    from datasets import Dataset

    random.seed(args.seed)
    arch = bench.architecture(tiny=args.tiny)
    prompts = bench.random_prompts(args.prompts * args.rollouts, args.prompt_tokens, arch["vocab_size"],
                                   args.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).to(device)
    probe = StepProbe(device)
    trainer = GRPOTrainer(model=model, reward_funcs=[random_reward], args=config,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                          processing_class=bench.word_tokenizer(arch["vocab_size"]), callbacks=[probe])
    probe.watch(trainer)
    bench.reset_peak_memory(device)
    with rl.compact_lm_head_scoring(enabled=compact_scoring):
        trainer.train()
    clip = [row[CLIP_KEY] for row in trainer.state.log_history if CLIP_KEY in row]
    times, starts = probe.times, rollout_starts(probe.steps_per_rollout())
    last = times[starts[-1]:] if starts else times  # the last rollout: past the first one's warm-up
    result = {"step_seconds": times, "seconds": _mean(last),
              "rollout_step_seconds": _mean([t for i, t in enumerate(times) if i in starts]),
              "update_step_seconds": _mean([t for i, t in enumerate(times) if i not in starts]),
              "optimizer_steps": probe.optimizer_steps, "global_step": trainer.state.global_step,
              "rollouts": len(probe.generated_at),
              "optimizer_steps_per_rollout": probe.steps_per_rollout(),
              "configured_steps_per_rollout": rl.optimizer_steps_per_rollout(config),
              "clip_ratio": clip, "clip_ratio_max": max(clip, default=None),
              **bench.peak_memory_gb(device)}
    del trainer, model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def rollout_starts(counts: list[int]) -> list[int]:
    """Index of each rollout's first optimiser step (the one that generates it): [4, 4] -> [0, 4]."""
    starts, total = [], 0
    for count in counts:
        starts.append(total)
        total += count
    return starts


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def report(run: str, name: str, r: dict[str, Any]) -> None:
    """One line per training: step times, steps per rollout (measured/configured), clip ratio."""
    memory = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.endswith("_gb"))
    clip = ", ".join(f"{c:.3f}" for c in r["clip_ratio"])
    update = r["update_step_seconds"]
    print(f"{run:8s} {name:8s} rollout step {r['rollout_step_seconds']:.2f} s, update step "
          f"{'-' if update is None else f'{update:.2f}'} s; optimiser steps per rollout "
          f"{r['optimizer_steps_per_rollout']} (config: {r['configured_steps_per_rollout']}); "
          f"clip ratio [{clip}]; {memory}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    payload: dict[str, Any] = {
        "workload": {"prompts_per_rollout": args.prompts, "samples": args.samples, "updates_per_rollout": args.updates,
                     "completions_per_update": args.prompts * args.samples // args.updates,
                     "rollouts": args.rollouts, "new_tokens": args.new_tokens, "prompt_tokens": args.prompt_tokens,
                     "learning_rate": args.learning_rate, "dtype": args.dtype, "tiny": args.tiny,
                     "profile": args.profile},
        "plain": None, "runs": {}, "complete": False, "environment": bench.environment(device)}
    with tempfile.TemporaryDirectory() as tmp:
        folder = bench.save_random_model(Path(tmp) / "model", bench.architecture(tiny=args.tiny),
                                         dtype=args.dtype, seed=args.seed)
        if not args.no_plain:  # TRL's defaults know no runs: one plain training serves them all
            payload["plain"] = train(plain_config(args, Path(tmp) / "plain", device), folder, args, device,
                                     compact_scoring=False)
            report("any run", "plain", payload["plain"])
            atomic_write_json(args.out, payload)
        for run in runs:
            config, rollout = project_config(args, run, Path(tmp) / "project", device)
            # The project trains on the CPU with TRL's compact LM-head scoring (rl.train_run does the same).
            entry = {**train(config, folder, args, device, compact_scoring=device == "cpu"), "rollout": rollout}
            if "plain" in payload:
                entry["speedup_vs_plain"] = payload["plain"]["seconds"] / entry["seconds"]
            payload["runs"][run] = entry
            report(run, "project", entry)
            atomic_write_json(args.out, payload)
    payload["complete"] = True
    rollout = payload["runs"][runs[-1]]["rollout"]
    print(f"project rollouts: {rollout['engine']}" + (f" ({rollout['reason']})" if rollout["reason"] else ""))
    atomic_write_json(args.out, payload)
    print(f"written to {args.out}")
    return payload


if __name__ == "__main__":
    main()
