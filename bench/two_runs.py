"""Two RL runs in sequence, each in a process of its own: does the starting process get its GPU back?

`common.isolate_training` makes `rl.train_run` train each run in a subprocess (r1repro.distributed),
so that the run's weights, optimiser state and any colocated vLLM engine are gone when it returns;
the stage-3 notebook trains grpo, then dr_grpo, from one process. This script does the same with
`rl.train_run` on a random-weight Llama-shaped model (or --model) and synthetic question rows, and
records per run the wall time and, on CUDA, this process's `torch.cuda.memory_allocated` and the
device's free memory (`torch.cuda.mem_get_info`) before and after. The free memory must come back to
where it started, within --tolerance-mib (the CUDA context of this process is taken before the
first reading); the exit status is 1 when it does not.

    python bench/two_runs.py --device cuda --dtype bfloat16            # GPU: a ~90M-parameter model
    python bench/two_runs.py --tiny --device cpu --dtype float32       # CPU smoke run

The model is random and the rows are strings of words its tokenizer knows (`r1repro.bench`), so
every reward is 0 and the runs learn nothing: only time and memory are measured. A Llama config,
not Qwen2's: AutoTokenizer (which `rl.train_run` loads the tokenizer with) replaces the word-level
tokenizer beside a qwen2 config with Qwen2Tokenizer. The result goes to --out as JSON after each run.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from r1repro import bench, rl
from r1repro.io import atomic_write_json
from r1repro.config import CommonParams, RlParams
from r1repro.modeling import resolve_device

MIB = 1024 * 1024
VOCAB = 512  # words of `bench.word_tokenizer`; its EOS is one more id
# ~90M parameters: big enough that a run's weights and Adam state (~1.4 GB) show if they stay behind.
SMALL = {"hidden_size": 1024, "intermediate_size": 2816, "num_hidden_layers": 8, "num_attention_heads": 8,
         "num_key_value_heads": 2}
TINY = {k: bench.TINY[k] for k in SMALL}  # bench's toy shape


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="a local model folder instead of a random model")
    parser.add_argument("--tiny", action="store_true", help="toy-sized random model (CPU smoke run)")
    parser.add_argument("--runs", default="grpo,dr_grpo", help="comma-separated keys of rl.runs, in order")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per rollout")
    parser.add_argument("--samples", type=int, default=4, help="completions per prompt")
    parser.add_argument("--updates", type=int, default=2, help="optimiser steps per rollout")
    parser.add_argument("--steps", type=int, default=4, help="optimiser steps per run")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--tolerance-mib", type=float, default=256.0,
                        help="free GPU memory may end this much below where it started")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/bench/two_runs.json")
    return parser.parse_args(argv)


def save_random_llama(folder: Path, tiny: bool, seed: int) -> Path:
    """A random Llama model (float32 weights) with `bench.word_tokenizer`; EOS inside its vocabulary."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = bench.word_tokenizer(VOCAB)
    config = LlamaConfig(**(TINY if tiny else SMALL), vocab_size=VOCAB + 1, pad_token_id=tokenizer.pad_token_id,
                         eos_token_id=tokenizer.eos_token_id, bos_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def question_rows(count: int, seed: int) -> list[dict[str, str]]:
    """`count` rows of random words for `rl.train_run(rows=...)`; the answers are never produced."""
    problems = bench.random_prompts(count, 16, VOCAB, seed)
    return [{"id": f"q{i}", "problem": p, "answer": "1"} for i, p in enumerate(problems)]


def gpu_memory(device: str) -> dict[str, float]:
    """This process's allocated CUDA memory and the device's free memory, in MiB; {} off CUDA."""
    if not device.startswith("cuda"):
        return {}
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return {"allocated_mib": torch.cuda.memory_allocated() / MIB, "free_mib": free / MIB, "total_mib": total / MIB}


def run_settings(args: argparse.Namespace, model: str, out: Path, device: str) -> tuple[RlParams, CommonParams]:
    """RlParams for short runs of `model` (template r1: plain text), and CommonParams with
    isolate_training on, the way profiles/gpu.yaml sets it."""
    cfg = RlParams(init_model=model, output_dir=str(out), template="r1", prompts_per_step=args.prompts,
                   num_generations=args.samples, updates_per_rollout=args.updates, max_steps=args.steps,
                   save_steps=args.steps, max_completion_length=args.new_tokens, eval_steps=0)
    common = CommonParams(device=device, dtype=args.dtype, seed=args.seed, isolate_training=True,
                          backend="transformers", grading_workers=1)
    return cfg, common


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # `timeout` (bench/device_check.sh) sends TERM: exit through Python, so that the training process's
    # group is stopped too (r1repro.distributed) instead of living on with the GPU.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    device = resolve_device(args.device)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    payload: dict[str, Any] = {
        "workload": {"runs": runs, "model": args.model or ("random tiny" if args.tiny else "random small"),
                     "prompts_per_rollout": args.prompts, "samples": args.samples, "updates_per_rollout": args.updates,
                     "steps": args.steps, "new_tokens": args.new_tokens, "dtype": args.dtype,
                     "isolate_training": True, "tolerance_mib": args.tolerance_mib},
        "runs": [], "memory_returned": None, "environment": bench.environment(device)}
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(save_random_llama(Path(tmp) / "model", args.tiny, args.seed))
        cfg, common = run_settings(args, model, Path(tmp) / "rl", device)
        rows = question_rows(cfg.prompts_needed(), args.seed)
        start = gpu_memory(device)  # after the CUDA context exists: it is this process's, for good
        for run in runs:
            before = gpu_memory(device)
            began = time.perf_counter()
            result = rl.train_run(cfg, run, common, rows=rows)
            seconds = time.perf_counter() - began
            after = gpu_memory(device)
            returned = (after["free_mib"] >= start["free_mib"] - args.tolerance_mib
                        and after["allocated_mib"] <= start["allocated_mib"]) if after else None
            payload["runs"].append({"run": run, "seconds": seconds, "global_step": result.global_step,
                                    "rollout": result.rollout, "memory_before": before,
                                    "memory_after": after, "memory_returned": returned})
            print(f"{run}: {seconds:.1f} s, {result.global_step} steps; " + (
                f"free {before['free_mib']:.0f} -> {after['free_mib']:.0f} MiB (start {start['free_mib']:.0f}), "
                f"allocated here {after['allocated_mib']:.0f} MiB: {'returned' if returned else 'NOT RETURNED'}"
                if after else "memory: not measured off CUDA"))
            atomic_write_json(args.out, payload)
    checks = [r["memory_returned"] for r in payload["runs"] if r["memory_returned"] is not None]
    payload["memory_returned"] = all(checks) if checks else None
    atomic_write_json(args.out, payload)
    print(f"written to {args.out}")
    return payload


if __name__ == "__main__":
    sys.exit(1 if main()["memory_returned"] is False else 0)
