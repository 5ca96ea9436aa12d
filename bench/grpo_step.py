"""Time of one GRPO step: plain TRL settings against the project's (rl.grpo_config).

One process, one random-initialised model with Qwen2.5-Math-1.5B's architecture (`--tiny`: toy
size, for a CPU smoke run), the same prompts and the same random reward for both settings; EOS is
impossible (see r1repro.bench), so every completion is --new-tokens long.

* plain: `GRPOConfig` defaults (TRL's `model.generate` rollouts, per-device batch 8) with only the
  workload (prompts x samples x tokens per step), dtype and device set;
* project: what `rl.grpo_config` makes of params.yaml with --profile merged (profiles/gpu.yaml:
  vLLM colocated when a GPU build is installed and the device is CUDA, else the fallback that
  `r1repro.rollout` picks), with the same workload.

    python bench/grpo_step.py                                 # GPU: 64 prompts x 8 samples x 512
    python bench/grpo_step.py --tiny --prompts 2 --samples 2 --new-tokens 8 --device cpu --dtype float32

Each setting trains --steps steps; the last step is scored (the first includes warm-up).
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
from r1repro.config import load_params, repo_root
from r1repro.modeling import resolve_device
from r1repro.rollout import announce, choose_rollout


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=64, help="prompts per step")
    parser.add_argument("--samples", type=int, default=8, help="completions per prompt (group size)")
    parser.add_argument("--new-tokens", type=int, default=512, help="tokens per completion")
    parser.add_argument("--prompt-tokens", type=int, default=128, help="tokens per prompt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(bench.DTYPE_BYTES))
    parser.add_argument("--tiny", action="store_true", help="toy-sized model (CPU smoke run)")
    parser.add_argument("--profile", default="gpu", help="profiles/<name>.yaml merged into params.yaml")
    parser.add_argument("--run", default="dr_grpo", help="a key of rl.runs")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench/grpo_step.json")
    return parser.parse_args(argv)


class StepTimer(TrainerCallback):
    """Wall time of every optimiser step (generation, scoring, forward and backward)."""

    def __init__(self, device: str):
        self.device, self.times, self._start = device, [], 0.0

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    def on_step_begin(self, args, state, control, **kwargs):
        self._sync()
        self._start = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        self._sync()
        self.times.append(time.perf_counter() - self._start)


def random_reward(completions: list[Any], **kwargs: Any) -> list[float]:
    """Random scores: only the time matters, and varied rewards keep every advantage non-zero."""
    return [random.random() for _ in completions]


def plain_config(args: argparse.Namespace, output_dir: Path, device: str) -> GRPOConfig:
    """TRL's defaults with only the workload, dtype and device set."""
    per_step = args.prompts * args.samples
    micro = min(8, per_step)  # TRL's default per-device batch
    return GRPOConfig(
        output_dir=str(output_dir), num_generations=args.samples, max_completion_length=args.new_tokens,
        per_device_train_batch_size=micro, gradient_accumulation_steps=max(1, per_step // micro),
        max_steps=args.steps, save_strategy="no", report_to="none", logging_steps=1,
        use_cpu=device == "cpu", bf16=args.dtype == "bfloat16", seed=args.seed)


def project_config(args: argparse.Namespace, output_dir: Path, device: str) -> tuple[GRPOConfig, dict]:
    """rl.grpo_config for the profile's rl section with the workload set; and the rollout choice."""
    params = load_params(repo_root(), profile=args.profile or None)
    cfg = params.rl.model_copy(update={
        "prompts_per_step": args.prompts, "num_generations": args.samples,
        "max_completion_length": args.new_tokens, "max_steps": args.steps, "eval_steps": 0})
    micro = cfg.micro_batch_size
    if micro is not None and (args.prompts * args.samples) % micro:
        cfg = cfg.model_copy(update={"micro_batch_size": None})
    choice = choose_rollout(params.common.backend, device)
    announce(choice, "bench")
    config = rl.grpo_config(cfg, args.run, output_dir=output_dir, seed=args.seed,
                            use_vllm=choice.engine == "vllm", use_cpu=device == "cpu",
                            bf16=args.dtype == "bfloat16",
                            continuous_batching=choice.engine == "transformers_continuous")
    # A benchmark keeps no checkpoints (a 1.5B one with optimiser state is ~18 GB) and scores with
    # one random reward instead of the project's weighted ones. Set after construction: re-running
    # GRPOConfig's checks on its own derived fields fails.
    config.save_strategy, config.reward_weights = SaveStrategy.NO, None
    return config, choice.record()


def time_steps(config: GRPOConfig, folder: Path, args: argparse.Namespace, device: str,
               compact_scoring: bool) -> dict[str, Any]:
    """Train config.max_steps steps on the saved random model; times, peak memory."""
    from datasets import Dataset

    random.seed(args.seed)
    arch = bench.architecture(tiny=args.tiny)
    prompts = bench.random_prompts(args.prompts * args.steps, args.prompt_tokens, arch["vocab_size"],
                                   args.seed)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, args.dtype)).to(device)
    timer = StepTimer(device)
    trainer = GRPOTrainer(model=model, reward_funcs=[random_reward], args=config,
                          train_dataset=Dataset.from_list([{"prompt": p} for p in prompts]),
                          processing_class=bench.word_tokenizer(arch["vocab_size"]), callbacks=[timer])
    bench.reset_peak_memory(device)
    with rl.compact_lm_head_scoring(enabled=compact_scoring):
        trainer.train()
    result = {"step_seconds": timer.times, "seconds": timer.times[-1], **bench.peak_memory_gb(device)}
    del trainer, model
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        folder = bench.save_random_model(Path(tmp) / "model", bench.architecture(tiny=args.tiny),
                                         dtype=args.dtype, seed=args.seed)
        plain = time_steps(plain_config(args, Path(tmp) / "plain", device), folder, args, device,
                           compact_scoring=False)
        config, rollout = project_config(args, Path(tmp) / "project", device)
        # The project trains on the CPU with TRL's compact LM-head scoring (rl.train_run does the same).
        project = time_steps(config, folder, args, device, compact_scoring=device == "cpu")
    ratio = plain["seconds"] / project["seconds"]
    payload = {"workload": {"prompts": args.prompts, "samples": args.samples, "new_tokens": args.new_tokens,
                            "prompt_tokens": args.prompt_tokens, "dtype": args.dtype, "tiny": args.tiny,
                            "steps": args.steps, "profile": args.profile, "run": args.run},
               "plain": plain, "project": {**project, "rollout": rollout},
               "speedup_project_vs_plain": ratio, "environment": bench.environment(device)}
    for name, r in (("plain TRL", plain), ("project", project)):
        memory = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.endswith("_gb"))
        steps = ", ".join(f"{t:.1f}" for t in r["step_seconds"])
        print(f"{name:10s} step {r['seconds']:8.2f} s  (steps {steps}; {memory})")
    print(f"project rollouts: {rollout['engine']}" + (f" ({rollout['reason']})" if rollout["reason"] else ""))
    print(f"project vs plain: x{ratio:.2f} faster; written to {bench.write_json(args.out, payload)}")
    return payload


if __name__ == "__main__":
    main()
