"""OpenVINO GenAI as a generation backend for fixed weights on the CPU (`common.backend: openvino`).

Why: on the 2-core CPUs this project runs on, OpenVINO's continuous-batching pipeline (paged KV
cache, its own CPU kernels) decoded the pipeline's workloads about twice as fast as the project's
own `transformers_fast` loop, and float32 greedy answers came out token for token the same
(LOG.md, 2026-12-07: OpenVINO GenAI). It serves generation whose weights do not change (probing,
held-out checks, the prompt filter, teachers, evaluation); RL's policy keeps decoding its own
rollouts in transformers, on-policy.

Two parts:

* **Conversion.** A model folder becomes OpenVINO IR once, through optimum-intel's exporter, and is
  kept under `common.openvino_cache_dir/<weights digest>/` (`r1repro.io.weights_digest`, as the answer
  cache keys a model): a retrained model at the same path converts again, an unchanged one never.
  optimum-intel 2.2.0 needs transformers < 5.6 while the main stack has 5.23, so the exporter runs in
  a venv of its own (`make venv-openvino`, requirements-openvino.lock; `R1REPRO_OPENVINO_EXPORT_PYTHON`
  names another interpreter). Weights are exported in float32; the precision the pipeline computes
  in is chosen when it loads (`INFERENCE_PRECISION_HINT`). A failed conversion leaves nothing in the
  cache: it writes into a temporary folder that is renamed only when complete.
* **Generation.** `r1repro.generation.OpenVinoGenerator` tokenizes with the model's own transformers tokenizer (as every
  backend does), hands token ids to `openvino_genai.ContinuousBatchingPipeline`, and turns the ids it
  returns into `Completion`s with the same stop and token-count rules as the transformers backends
  (`r1repro.generation.completion_from_ids`).

What it keeps of the project's conventions, and where it differs:

* precision: the KV cache is kept in the compute precision (`KV_CACHE_PRECISION`), not in OpenVINO's
  CPU default of u8, which rounds every cached key and value;
* stops: the policy's token ids go to `stop_token_ids`, its kept strings and `stop=` strings to
  `stop_strings` (included in the output; `stop=` strings are then cut, as elsewhere). Like vLLM,
  OpenVINO also always stops at the tokenizer's EOS, which every `StopPolicy` holds anyway;
* sampling: each sample is a request of its own seeded by `derived_seed(seed, prompt, sample)`, so
  what sample j of prompt i draws depends on neither n nor the other prompts of the call (tested).
  The random streams are OpenVINO's own, so samples differ from the transformers backends' (as
  vLLM's do);
* shared prompt text: the pipeline's prefix cache is on, and the call's longest common token prefix
  (and, when sampling several answers, each distinct prompt) is decoded once on its own first, so
  that every row's prefill finds it cached (without this, a batch of 64 distinct prompts scheduled
  together computed the template 64 times: 26.2 s against 12.8 s).

    gen = load_generator("openvino", "models/sft", dtype="float32", cache_dir=".cache/openvino")
    rows = gen.generate(prompts, n=4, temperature=0.6, top_p=0.95, max_tokens=256, seed=1234,
                        stop_policy=stops)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from r1repro.config import ConfigError
from r1repro.io import atomic_write_json, weights_digest

EXPORT_PYTHON_ENV = "R1REPRO_OPENVINO_EXPORT_PYTHON"
# The venv `make venv-openvino` builds, beside the package's repository.
DEFAULT_EXPORT_VENV = Path(__file__).resolve().parents[2] / ".venv-openvino"
DONE_FILE = "r1repro_conversion.json"  # written last: a folder without it is not a conversion
# OpenVINO's names for the precisions `common.inference_dtype` takes.
PRECISIONS = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}
# The exporter's own task name for a causal LM with a KV cache.
EXPORT_TASK = "text-generation-with-past"
# Prompts put in the prefix cache ahead of a call are cut to whole KV-cache blocks (32 tokens on the
# CPU): a cached partial block was matched by prompts that continue it differently, and their answers
# came out wrong (64 greedy answers: 833 tokens against 2,326; LOG.md, 2026-12-07: OpenVINO GenAI).
BLOCK_TOKENS = 32


def export_python() -> str:
    """The interpreter that runs optimum-intel's exporter; a clear error when it is missing."""
    chosen = os.environ.get(EXPORT_PYTHON_ENV) or str(DEFAULT_EXPORT_VENV / "bin" / "python")
    if not Path(chosen).is_file():
        raise ConfigError(
            f"common.backend: openvino converts models with optimum-intel in its own venv, but {chosen} "
            f"does not exist: run `make venv-openvino`, or set {EXPORT_PYTHON_ENV} to a Python with "
            f"requirements-openvino.lock installed")
    return chosen


def converted_model(model: str | Path, cache_dir: str | Path) -> Path:
    """The OpenVINO IR of a local model folder, converted on first use and cached by its weights digest.

    Args:
        model: a local model folder (transformers' save_pretrained layout, tokenizer included).
        cache_dir: `common.openvino_cache_dir`.

    Returns:
        The folder holding openvino_model.xml and the converted tokenizer.

    Raises:
        ConfigError: `model` is not a local folder, or the exporter's venv is missing.
        RuntimeError: the exporter failed (its output's end is in the message).
    """
    source = Path(model)
    if not source.is_dir():
        raise ConfigError(f"common.backend: openvino converts a local model folder; {model!r} is not one "
                          f"(this machine reaches no hub: pass the folder the model was saved to)")
    digest = weights_digest(source).split(":", 1)[1]
    target = Path(cache_dir) / digest
    if (target / DONE_FILE).is_file():
        return target
    python = export_python()
    staging = Path(cache_dir) / f".converting-{digest}-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    command = [python, "-c", "from optimum.commands.optimum_cli import main; main()", "export", "openvino",
               "--model", str(source.resolve()), "--task", EXPORT_TASK, "--weight-format", "fp32", str(staging)]
    # The exporter's venv has its own transformers: nothing of this process's path may leak into it.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(command, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True)
    if done.returncode != 0 or not (staging / "openvino_model.xml").is_file():
        shutil.rmtree(staging, ignore_errors=True)
        raise RuntimeError(f"converting {source} to OpenVINO IR failed (exit {done.returncode}); the exporter "
                           f"said:\n{(done.stdout + done.stderr)[-3000:]}")
    atomic_write_json(staging / DONE_FILE, {"source": str(source), "weights": f"md5:{digest}",
                                            "seconds": round(time.perf_counter() - start, 1),
                                            "exporter": export_versions(python)})
    if target.exists():  # another process finished the same conversion first
        shutil.rmtree(staging, ignore_errors=True)
    else:
        staging.rename(target)
    return target


def export_versions(python: str) -> dict[str, str]:
    """The exporter venv's versions of what decides the IR (recorded beside each conversion)."""
    probe = ("import json, importlib.metadata as m; print(json.dumps({p: m.version(p) for p in "
             "('optimum-intel', 'optimum', 'transformers', 'torch', 'openvino')}))")
    done = subprocess.run([python, "-c", probe], capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"error": done.stderr[-300:]}


def conversion_seconds(folder: Path) -> float:
    """How long a cached conversion took (0 for one made elsewhere without the record)."""
    record = folder / DONE_FILE
    return float(json.loads(record.read_text()).get("seconds", 0.0)) if record.is_file() else 0.0


def shared_prefix(token_lists: Sequence[Sequence[int]]) -> list[int]:
    """The longest token prefix every list starts with."""
    if not token_lists:
        return []
    first = token_lists[0]
    length = len(first)
    for ids in token_lists[1:]:
        length = min(length, len(ids))
        length = next((k for k in range(length) if ids[k] != first[k]), length)
    return list(first[:length])


def whole_blocks(ids: Sequence[int]) -> tuple[int, ...]:
    """The leading tokens of `ids` that fill whole KV-cache blocks (see BLOCK_TOKENS)."""
    return tuple(ids[: len(ids) // BLOCK_TOKENS * BLOCK_TOKENS])


def openvino_precision(dtype: str) -> str:
    """OpenVINO's name for a resolved `common.inference_dtype`."""
    from r1repro.modeling import resolved_dtype

    dtype = resolved_dtype(dtype, "cpu")
    if dtype not in PRECISIONS:
        raise ConfigError(f"common.inference_dtype: {dtype!r} has no OpenVINO precision; "
                          f"expected one of {sorted(PRECISIONS)}")
    return PRECISIONS[dtype]


def library_versions() -> dict[str, str]:
    """The installed OpenVINO packages that decide generated tokens (answer cache, protocols)."""
    from importlib import metadata

    return {name: metadata.version(name) for name in ("openvino", "openvino-genai")}


def token_tensor(ids: Sequence[int]) -> Any:
    """One request's prompt ids as the [1, length] int64 tensor OpenVINO takes."""
    import numpy as np
    import openvino as ov

    return ov.Tensor(np.asarray([list(ids)], dtype=np.int64))
