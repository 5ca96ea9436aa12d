"""RL rollouts decoded by OpenVINO GenAI from the policy's current weights (`rl.rollout_backend: openvino`,
or `common.backend: openvino` with no rl.rollout_backend; the profile openvino).

Why: OpenVINO decoded a rollout of 4 prompts x 8 samples (the CPU default's step) in ~9 s where the
policy's own loop (`transformers_fast`) took ~20 s, float32, on a 2-core Xeon (LOG.md, 2026-12-07:
OpenVINO rollouts). That pays only if the engine gets the policy's weights cheaply each step: the
rollout engine keeps the graph of `rl.init_model`'s conversion in memory, puts the policy's current
tensors (LoRA merged, by PEFT's own `get_delta_weight`) into its constants
(`r1repro.openvino_engine.replace_constants`), writes the IR and opens a pipeline on it: ~3 s a step
instead of a ~25 s conversion.

What stays as it is: TRL's GRPO loss, its log-probs (computed by the policy in TRL's forward, as for
any transformers rollout) and its advantages. What the engine changes is only who samples the
tokens, so the sampling policy is the trained one up to the engine's kernels: each rollout, the
engine's log-probability of a few completions (`logprob_check_rows`) is compared with the policy's,
and the gap and the sequence importance ratio policy/engine go into the step's logs
(`rollout/logprob_gap_per_token`, `rollout/importance_ratio_min`, `_max`). OpenVINO's score of a
sequence is its log-probability under the distribution it sampled from: temperature applied, and
top-p's nucleus renormalised (checked against the policy at T 0.5-1.0, top-p 0.5-1.0; set
`logprobs` in its GenerationConfig and it reports untempered ones instead), so the policy is scored
through the same warpers.

    engine = OpenVinoRollouts("models/sft", dtype="float32", cache_dir=".cache/openvino")
    engine.sync(merged_weights(policy))
    rollouts = engine.generate(prompt_ids, seeds, temperature=0.7, top_p=1.0, max_new_tokens=128,
                               stop_token_ids=[2])
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1repro import openvino_engine
from r1repro.rollout import through_first_stop

# Completions a rollout scores with the policy to compare with the engine's log-probs: a forward of
# 2 sequences costs ~0.3 s on 2 CPU cores, all 32 of a step ~12 s.
LOGPROB_CHECK_ROWS = 2


@dataclass(frozen=True)
class Rollout:
    """One sampled completion: its token ids (up to and including its stop token) and the engine's
    log-probability of them under the distribution it sampled from (temperature and top-p applied)."""

    ids: list[int]
    logprob: float


class OpenVinoRollouts:
    """OpenVINO GenAI decoding with weights the caller puts in before each rollout (`sync`).

    Args:
        init_model: the policy's starting folder (`rl.init_model`): its graph is converted once
            (`openvino_engine.weights_template`) and its tokenizer is used.
        dtype: the resolved compute precision (`common.inference_dtype`).
        cache_dir: `common.openvino_cache_dir`; the IR the engine rewrites each step lives in a
            temporary folder inside it, removed by `close`.
        kv_cache_gb, max_num_seqs: as for `r1repro.generation.OpenVinoGenerator`.
    """

    def __init__(self, init_model: str, *, dtype: str, cache_dir: str | Path, kv_cache_gb: float = 2.0,
                 max_num_seqs: int = 128, trust_remote_code: bool = False):
        import openvino as ov

        template = openvino_engine.weights_template(init_model, cache_dir)
        self.graph = ov.Core().read_model(template / "openvino_model.xml")
        self.constants = openvino_engine.float_constants(self.graph)
        self.mapping = json.loads((template / openvino_engine.WEIGHT_MAP_FILE).read_text())
        # Named .rollouts-<random>-<pid>: a killed run's folder goes when the next engine starts.
        openvino_engine.remove_stale_folders(cache_dir)
        self.folder = Path(tempfile.mkdtemp(prefix=".rollouts-", suffix=f"-{os.getpid()}", dir=cache_dir))
        openvino_engine.copy_conversion_files(template, self.folder)
        self.options = {"dtype": dtype, "kv_cache_gb": kv_cache_gb, "max_num_seqs": max_num_seqs,
                        "trust_remote_code": trust_remote_code}
        self.init_model = init_model
        self.generator: Any = None

    def sync(self, weights: Mapping[str, torch.Tensor]) -> float:
        """Put `weights` (names as in the model's safetensors) into the engine; returns the seconds taken."""
        import openvino as ov

        from r1repro.generation import OpenVinoGenerator

        start = time.perf_counter()
        self._close_generator()  # its pipeline may map the weights file about to be rewritten
        tensors = {name: weights[name].detach().float().cpu().numpy() for name in set(self.mapping.values())
                   if name in weights}
        openvino_engine.replace_constants(self.constants, self.mapping, tensors)
        ov.save_model(self.graph, self.folder / "openvino_model.xml", compress_to_fp16=False)
        self.generator = OpenVinoGenerator(self.init_model, ir_folder=self.folder, **self.options)
        return time.perf_counter() - start

    def generate(self, prompt_ids: Sequence[Sequence[int]], seeds: Sequence[int], *, temperature: float,
                 top_p: float, max_new_tokens: int, stop_token_ids: Sequence[int]) -> list[Rollout]:
        """One sample per row, row i drawn from its own stream seeded by `seeds[i]`.

        Raises:
            RuntimeError: no weights were put in yet (`sync`).
        """
        if self.generator is None:
            raise RuntimeError("OpenVinoRollouts.generate before sync: the engine holds no policy weights yet")
        rows = self.generator.sample_ids(prompt_ids, seeds, temperature=temperature, top_p=top_p,
                                         max_tokens=max_new_tokens, stop_token_ids=stop_token_ids)
        return [Rollout(through_first_stop(ids, stop_token_ids), logprob) for ids, logprob in rows]

    def _close_generator(self) -> None:
        if self.generator is not None:
            self.generator.close()
            self.generator = None

    def close(self) -> None:
        """Release the pipeline and remove the engine's IR folder."""
        self._close_generator()
        shutil.rmtree(self.folder, ignore_errors=True)


def merged_weights(model: Any) -> dict[str, torch.Tensor]:
    """The policy's tensors as its saved model names them, each LoRA adapter added to its base weight.

    Works for a plain transformers model and for a PEFT model (LoRA layers not merged): the adapter's
    delta comes from PEFT's `get_delta_weight`, as `merge_and_unload` computes it.
    """
    from peft.tuners.lora import LoraLayer

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    weights = {name.replace(".base_layer.", "."): tensor for name, tensor in base.state_dict().items()
               if "lora_" not in name}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and not module.merged:
            key = f"{name}.weight"
            for adapter in module.active_adapters:
                if adapter in module.lora_A:
                    weights[key] = weights[key] + module.get_delta_weight(adapter)
    return weights


def logprob_check(policy: Any, prompt_ids: Sequence[Sequence[int]], rollouts: Sequence[Rollout], rows: int,
                  temperature: float, top_p: float) -> dict[str, float]:
    """The policy's log-probability of the first `rows` rollouts under the sampling distribution
    (temperature, then top-p, by transformers' own logits warpers) against the engine's.

    The policy is scored as TRL holds it during the step (train mode: a LoRA dropout above 0 would
    show here as a gap; the CPU default's is 0).

    Returns:
        logprob_gap_per_token: mean over rows of |policy - engine| / tokens (nats);
        importance_ratio_min, importance_ratio_max: exp(policy - engine) per sequence (0 where the
        engine drew a token outside the policy's nucleus; such rows are left out of the gap).
    """
    from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

    warpers = LogitsProcessorList([TemperatureLogitsWarper(temperature)]
                                  + ([TopPLogitsWarper(top_p)] if top_p < 1.0 else []))
    gaps, ratios = [], []
    for ids, rollout in list(zip(prompt_ids, rollouts))[:rows]:
        if not rollout.ids:
            continue
        sequence = torch.tensor([list(ids) + rollout.ids], device=policy.device)
        with torch.no_grad():
            logits = policy(sequence).logits[0, len(ids) - 1:-1].float()
        chosen = torch.log_softmax(warpers(sequence, logits), -1).gather(1, sequence[0, len(ids):, None])
        if not torch.isfinite(chosen).all():
            ratios.append(0.0)
            continue
        delta = float(chosen.sum()) - rollout.logprob
        gaps.append(abs(delta) / len(rollout.ids))
        ratios.append(math.exp(delta))
    if not ratios:
        return {}
    return {**({"logprob_gap_per_token": sum(gaps) / len(gaps)} if gaps else {}),
            "importance_ratio_min": min(ratios), "importance_ratio_max": max(ratios)}
