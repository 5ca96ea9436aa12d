"""This machine's physical limits, measured, and how close each pipeline stage came to them.

`bench/pipeline.py` calls these: it reads each stage's `protocol.json` (wall time, tokens its
generators produced and the seconds they took), measures the machine it runs on (matmul FLOP/s in
float32 and bfloat16, memory bandwidth), and prints per stage the tokens/s and the fraction of the
compute roofline (tokens/s x FLOPs per token / peak FLOP/s) and of the bandwidth roofline (tokens/s
x bytes read per token / bandwidth) that generation reached.

    from r1repro import roofline
    machine = roofline.measure_machine()            # {"matmul_gflops": {...}, "bandwidth_gbs": ...}
    flops = roofline.flops_per_token(config, context=256)
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from r1repro.pipeline import stage as pipeline_stage


def matmul_gflops(dtype: str = "float32", size: int = 1024, seconds: float = 1.0) -> float:
    """Sustained GFLOP/s of square matmuls in `dtype` on the CPU (torch's threads), best of repeats."""
    import torch

    a = torch.randn(size, size).to(getattr(torch, dtype))
    b = torch.randn(size, size).to(getattr(torch, dtype))
    a @ b  # warm-up (thread pool, kernel choice)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size ** 3 / (time.perf_counter() - start) / 1e9)
    return best


def bandwidth_gbs(megabytes: int = 256, seconds: float = 1.0) -> float:
    """Sustained memory bandwidth (GB/s) of a large tensor copy, counting the read and the write."""
    import torch

    src = torch.ones(megabytes * 2 ** 20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        dst.copy_(src)
        best = max(best, 2 * src.numel() * 4 / (time.perf_counter() - start) / 1e9)
    return best


def measure_machine(seconds: float = 1.0) -> dict[str, Any]:
    """The probes above, with the torch thread count they ran with."""
    import torch

    return {"torch_threads": torch.get_num_threads(),
            "matmul_gflops": {d: round(matmul_gflops(d, seconds=seconds), 1) for d in ("float32", "bfloat16")},
            "bandwidth_gbs": round(bandwidth_gbs(seconds=seconds), 1)}


def parameter_count(config: dict[str, Any]) -> int:
    """Weights of a Llama/Qwen2-style decoder from its config.json (tied embeddings counted once)."""
    h, layers, inter, vocab = (config["hidden_size"], config["num_hidden_layers"], config["intermediate_size"],
                               config["vocab_size"])
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads) * (h // heads)
    attention = h * h * 2 + h * kv * 2          # q and o, k and v
    mlp = 3 * h * inter                         # gate, up, down
    embeddings = vocab * h * (1 if config.get("tie_word_embeddings", False) else 2)
    return layers * (attention + mlp + 2 * h) + embeddings + h


def flops_per_token(config: dict[str, Any], context: int) -> float:
    """Forward FLOPs to generate one token at `context` tokens of context: 2 per weight (the input
    embedding is a lookup, not a matmul) plus attention's scores and weighted sum over the context."""
    h, layers = config["hidden_size"], config["num_hidden_layers"]
    matmul_weights = parameter_count(config) - config["vocab_size"] * h * (0 if config.get("tie_word_embeddings") else 1)
    return 2 * matmul_weights + 4 * layers * h * context


# Bytes per element of the dtypes a model or its KV cache is held in.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def kv_bytes_per_token(config: dict[str, Any], dtype_bytes: int) -> int:
    """Bytes of K and V cached per token, all layers (grouped-query heads as config.json says)."""
    heads = config["num_attention_heads"]
    kv = config.get("num_key_value_heads", heads) * (config["hidden_size"] // heads)
    return 2 * config["num_hidden_layers"] * kv * dtype_bytes


def bytes_per_token(config: dict[str, Any], context: int, batch: int, dtype_bytes: int) -> float:
    """Memory read per generated token in batched decoding: the weights once per step, shared by the
    batch's rows, and the row's own KV cache."""
    return parameter_count(config) * dtype_bytes / batch + kv_bytes_per_token(config, dtype_bytes) * context


def decode_roofline(config: dict[str, Any], weights: int, dtype_bytes: int, rows: int, prompt_tokens: int,
                    new_tokens: int, bandwidth_gbs: float) -> dict[str, float]:
    """The fastest decoding memory bandwidth allows: every step reads all weights and each row's KV.

    Decode is memory-bound at these sizes: step t (0-based) of a batch of `rows` reads the weights
    once (the tied embedding as the LM head) and, per row, the K and V of its prompt_tokens + t
    earlier tokens. Prefill and everything that is not a weight or KV read (activations, logits,
    sampling) are left out, so the bound is optimistic and a fraction near 1 is out of reach.

    Args:
        config: the model's config.json values.
        weights: bytes of the weights as loaded (`bench.weight_bytes`).
        dtype_bytes: bytes per element of the KV cache (the model's dtype, `DTYPE_BYTES`).
        rows: sequences decoded together.
        prompt_tokens, new_tokens: tokens per prompt and per response.
        bandwidth_gbs: memory bandwidth in GB/s (1e9 bytes).

    Returns:
        bytes_per_step (mean), total_bytes, min_seconds, max_tokens_per_s.
    """
    kv_rows = rows * kv_bytes_per_token(config, dtype_bytes) * (
        new_tokens * prompt_tokens + new_tokens * (new_tokens - 1) / 2)
    total = new_tokens * weights + kv_rows
    seconds = total / (bandwidth_gbs * 1e9)
    return {"bytes_per_step": total / new_tokens, "total_bytes": total, "min_seconds": seconds,
            "max_tokens_per_s": rows * new_tokens / seconds}


# Issue 33's budgets for the CPU default's stage time on 2 cores, by the CPU's native bf16 path (the
# two kinds of machine these runs get), and its peak memory on either.
STAGE_TIME_BUDGETS_S = {"amx": 1800, "avx512_bf16": 2700}
PEAK_RSS_BUDGET_GB = 8.0


def stage_time_budget(cpu_flags: dict[str, bool]) -> tuple[int | None, str]:
    """The stage-time budget for a CPU with these flags (`cpu.cpu_info`'s), and what it is for:
    AMX (an Intel Xeon here) 1,800 s, avx512_bf16 without AMX (an AMD EPYC here) 2,700 s, and none for
    a CPU without native bf16, where the pipeline runs in float32 (3,131 s on a 2-core Intel Xeon Ice
    Lake with avx512f; no budget was set for it)."""
    if cpu_flags.get("amx_bf16") or cpu_flags.get("amx_tile"):
        return STAGE_TIME_BUDGETS_S["amx"], "2 cores with AMX"
    if cpu_flags.get("avx512_bf16"):
        return STAGE_TIME_BUDGETS_S["avx512_bf16"], "2 cores with avx512_bf16, no AMX"
    return None, "no budget for a CPU without native bf16"


def stage_rows(results_dir: Path, model_config: dict[str, Any], machine: dict[str, Any], *,
               context: int = 256, batch: int = 64) -> list[dict[str, Any]]:
    """One row per notebook stage from its protocol.json: wall time, generation, roofline fractions."""
    from r1repro.pipeline import timed_folders

    rows = []
    for stage, folder in timed_folders().items():
        path = results_dir / folder / "protocol.json"
        protocol = json.loads(path.read_text()) if path.is_file() else {}
        usage = protocol.get("generation") or {}
        tokens, seconds = usage.get("tokens") or 0, usage.get("seconds") or 0.0
        extra = protocol.get("training_rollouts") or {}
        tokens += extra.get("tokens") or 0
        seconds += extra.get("seconds") or 0.0
        dtype = (protocol.get("common") or {}).get("inference_dtype") or (protocol.get("common") or {}).get("dtype")
        dtype = dtype if dtype in machine["matmul_gflops"] else "float32"
        rate = tokens / seconds if seconds else None
        row = {"stage": stage, "title": pipeline_stage(stage).title, "wall_s": protocol.get("wall_s"),
               "peak_rss_gb": protocol.get("peak_rss_gb"), "tokens": tokens, "generation_s": round(seconds, 1),
               "tokens_per_s": rate, "dtype": dtype}
        if rate:
            flops = rate * flops_per_token(model_config, context)
            moved = rate * bytes_per_token(model_config, context, batch, DTYPE_BYTES[dtype])
            row["compute_fraction"] = flops / (machine["matmul_gflops"][dtype] * 1e9)
            row["bandwidth_fraction"] = moved / (machine["bandwidth_gbs"] * 1e9)
        rows.append(row)
    return rows
