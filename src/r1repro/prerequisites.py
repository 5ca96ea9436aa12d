"""What a run needs before it starts, checked in its first seconds, each failure with its fix.

A GPU profile that cannot run (no driver, an old driver, a hub id that cannot be fetched, a gated model
without a token) should stop here, not an hour into `dvc repro`:

    python -m r1repro.prerequisites                                  # params.yaml + the active profile
    python -m r1repro.prerequisites --profile gpu1                   # params.yaml + profiles/gpu1.yaml
    python -m r1repro.prerequisites --profile results/params.yaml    # a resolved params file

`make repro` runs it after `python -m r1repro.config check` and before `dvc repro`. It prints one line
per check (`ok`, `skip` or `fail`) and exits 1 listing every failure. The checks, each a small function
returning `Result`s so that tests can run it on fakes:

- python: the version `requires-python` in pyproject.toml names (the lock files are built for 3.11);
- torch: a CUDA build of torch when common.device is cuda;
- nvidia driver (common.device cuda, or auto on a machine with a GPU): at least the driver that the CUDA
  build of the installed torch needs, or where torch has no CUDA build, the one requirements-gpu.lock's
  torch was built for;
- openvino exporter (common.backend or rl.rollout_backend openvino): the Python of `make venv-openvino`, which converts models;
- models and datasets: every model id and `hub:` dataset id the params name is a local folder, a folder
  the pipeline makes (a stage's output_dir), or a hub id that is reachable or already in the local cache;
  a gated id also needs a token (HF_TOKEN or a stored login) unless it is cached.

On the CPU default (SmolLM2 from a GGUF package, data/ on disk) every check passes offline in about a
second: it asks no hub and starts no GPU query.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

from r1repro.config import (ConfigError, Params, active_profile, load_params, read_yaml, repo_root,
                            validate)
from r1repro.modeling import check_source, looks_local

GPU_LOCK = "requirements-gpu.lock"
# Minimum Linux x86_64 driver of each CUDA toolkit release (its GA), from NVIDIA's CUDA Toolkit Release
# Notes, table "CUDA Toolkit and Corresponding Driver Versions"
# (https://docs.nvidia.com/cuda/cuda-toolkit-release-notes/). A driver this new runs everything the
# toolkit builds, PTX JIT included (Triton and vLLM kernels compile PTX at run time).
TOOLKIT_DRIVER = {
    "11.8": "520.61.05", "12.0": "525.60.13", "12.1": "530.30.02", "12.2": "535.54.03",
    "12.3": "545.23.06", "12.4": "550.54.14", "12.5": "555.42.02", "12.6": "560.28.03",
    "12.8": "570.26", "12.9": "575.51.03", "13.0": "580.65.06",
}
# The oldest driver of each CUDA major that runs any of its minor versions (CUDA minor version
# compatibility; same notes, "Minimum Required Driver Version for CUDA Minor Version Compatibility").
# Below it the CUDA runtime refuses to start; between it and TOOLKIT_DRIVER most work runs, PTX JIT may not.
MINOR_COMPAT_DRIVER = {"11": "450.80.02", "12": "525.60.13", "13": "580"}
# Organisations whose models are all gated (a licence to accept on the model's page). Used only when
# the hub cannot be asked (offline), to add the token advice to the failure; online, the hub's own
# `gated` flag decides.
GATED_ORGS = ("meta-llama",)
HUB_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Result:
    """One check's outcome: `detail` says what was found, or for a failure the problem and its fix."""

    check: str
    status: Literal["ok", "skip", "fail"]
    detail: str

    def line(self) -> str:
        """`ok python: 3.11.7 ...`, `skip nvidia driver: ...`, `fail model ...: ...`."""
        return f"{self.status} {self.check}: {self.detail}"


def _version(text: str) -> tuple[int, ...]:
    """'570.26' -> (570, 26): driver versions compare number by number."""
    return tuple(int(part) for part in re.findall(r"\d+", text))


# ---------------------------------------------------------------------------------------------------
# Python
# ---------------------------------------------------------------------------------------------------


def requires_python(root: Path) -> str:
    """`requires-python` of pyproject.toml, e.g. '>=3.11,<3.12'."""
    import tomllib

    return tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["requires-python"]


def check_python(spec: str, version: tuple[int, int, int] | None = None) -> Result:
    """Whether this interpreter (or `version`) satisfies `spec`, pyproject.toml's requires-python."""
    from packaging.specifiers import SpecifierSet

    text = ".".join(map(str, version or sys.version_info[:3]))
    if SpecifierSet(spec).contains(text):
        return Result("python", "ok", f"{text} (requires-python {spec})")
    return Result("python", "fail", f"Python {text} runs this, but pyproject.toml requires-python is "
                  f"{spec!r}: the lock files are built for Python 3.11. Fix: install Python 3.11 and "
                  "recreate the venv with it (`make clean-venv`, then `make venv PYTHON=/path/to/python3.11`)")


# ---------------------------------------------------------------------------------------------------
# torch and the NVIDIA driver
# ---------------------------------------------------------------------------------------------------


class DriverQueryError(RuntimeError):
    """nvidia-smi is missing or could not report a driver version."""


def nvidia_smi_driver(timeout_s: float = 20.0) -> str:
    """The installed NVIDIA driver's version, from nvidia-smi (the oldest, should GPUs differ)."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise DriverQueryError("nvidia-smi not found: no NVIDIA driver is installed, or it is not on PATH")
    try:
        out = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=timeout_s, check=True).stdout
    except subprocess.CalledProcessError as err:  # e.g. "couldn't communicate with the NVIDIA driver"
        raise DriverQueryError(f"nvidia-smi failed: {(err.stderr or err.stdout or str(err)).strip()}") from err
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DriverQueryError(f"nvidia-smi failed: {err}") from err
    versions = [line.strip() for line in out.splitlines() if line.strip()]
    if not versions:
        raise DriverQueryError("nvidia-smi lists no GPU")
    return min(versions, key=_version)


def torch_build() -> tuple[str | None, str | None]:
    """(torch's version, the CUDA version it was built for); (None, None) without torch, CUDA None on
    a CPU build. Imported only here: on a CPU machine the checks never load torch."""
    try:
        import torch
    except ImportError:
        return None, None
    return torch.__version__, torch.version.cuda


def lock_cuda_version(text: str) -> str | None:
    """The CUDA version (major.minor) that a lock file's torch is built for, or None.

    A `+cu128` suffix on the torch pin, or a PyTorch index (`--extra-index-url .../whl/cu128`), names
    it; PyPI's own torch wheels carry no suffix and run on the CUDA runtime wheel they pin
    (`nvidia-cuda-runtime==13.0.96`, or `nvidia-cuda-runtime-cu12==12.8.90` before CUDA 13).
    """
    lines = [line.split("#", 1)[0].strip() for line in text.splitlines()]
    for pattern in (r"^torch==[^+\s]+\+cu(\d+)\b", r"^--(?:extra-)?index-url\s*=?\s*\S*/cu(\d+)/?$"):
        for line in lines:
            match = re.match(pattern, line)
            if match:
                tag = match.group(1)
                return f"{tag[:-1]}.{tag[-1]}"
    for line in lines:
        match = re.match(r"^nvidia-cuda-runtime(?:-cu\d+)?==(\d+)\.(\d+)", line)
        if match:
            return f"{match.group(1)}.{match.group(2)}"
    return None


def min_driver(cuda: str) -> tuple[str, str]:
    """(the minimum driver for CUDA `cuda`, the row of the table it comes from).

    A minor version the table lacks takes its major's newest listed minor below it (a lower bound),
    else the major's minor-version-compatibility floor.
    """
    if cuda in TOOLKIT_DRIVER:
        return TOOLKIT_DRIVER[cuda], f"CUDA {cuda}"
    major = cuda.split(".")[0]
    older = [v for v in TOOLKIT_DRIVER if v.split(".")[0] == major and _version(v) < _version(cuda)]
    if older:
        nearest = max(older, key=_version)
        return TOOLKIT_DRIVER[nearest], f"CUDA {nearest}, the newest {major}.x in the table"
    if major in MINOR_COMPAT_DRIVER:
        return MINOR_COMPAT_DRIVER[major], f"CUDA {major}.x minor version compatibility"
    raise ValueError(f"CUDA {cuda}: not in r1repro.prerequisites.TOOLKIT_DRIVER; add its driver from "
                     "NVIDIA's CUDA Toolkit Release Notes")


def check_torch_build(version: str | None, cuda: str | None) -> Result:
    """With common.device cuda: torch must be installed, as a CUDA build."""
    if version is not None and cuda is not None:
        return Result("torch", "ok", f"{version} (CUDA {cuda})")
    found = "torch is not installed" if version is None else f"torch {version} is a CPU build"
    return Result("torch", "fail", f"{found}, but common.device is cuda. Fix: run in the GPU venv "
                  f"(`make venv-gpu`, then `make repro-gpu`: {GPU_LOCK} pins a CUDA build of torch), "
                  "or set common.device: cpu")


def check_driver(cuda: str, source: str, query: Callable[[], str] | None = None) -> Result:
    """Whether the installed NVIDIA driver runs CUDA `cuda`, the build `source` names.

    Args:
        cuda: major.minor, e.g. "13.0".
        source: what is built for it, for the message ("torch 2.13.0", "requirements-gpu.lock's torch").
        query: returns the installed driver's version (default: nvidia-smi); raises DriverQueryError.
    """
    try:
        needed, row = min_driver(cuda)
    except ValueError as err:
        return Result("nvidia driver", "fail", f"{source} is built for {err}")
    floor = MINOR_COMPAT_DRIVER.get(cuda.split(".")[0], needed)
    fix = (f"Fix: install an NVIDIA driver >= {needed} (NVIDIA's CUDA release notes, {row}), or use a "
           "torch built for an older CUDA")
    try:
        installed = (query or nvidia_smi_driver)()
    except DriverQueryError as err:
        return Result("nvidia driver", "fail", f"{err}; {source} is built for CUDA {cuda}. {fix}")
    if _version(installed) >= _version(needed):
        return Result("nvidia driver", "ok", f"{installed} >= {needed} (CUDA {cuda}, {source})")
    if _version(installed) >= _version(floor):
        return Result("nvidia driver", "ok", f"{installed} runs CUDA {cuda} ({source}) through minor "
                      f"version compatibility only (>= {floor}); CUDA {cuda}'s own driver, {needed}, is "
                      "needed where kernels are compiled from PTX at run time")
    return Result("nvidia driver", "fail", f"driver {installed} is older than CUDA {cuda} needs "
                  f"({source}; at least {floor}, {needed} for every feature). {fix}")


def device_checks(params: Params, root: Path, query: Callable[[], str] | None = None) -> list[Result]:
    """torch and driver checks for common.device: none on cpu, nor on auto where no GPU is visible."""
    device = params.common.device
    if device == "cpu":
        return [Result("nvidia driver", "skip", "cpu profile (common.device cpu)")]
    if device == "auto" and shutil.which("nvidia-smi") is None:
        return [Result("nvidia driver", "skip", "cpu profile (common.device auto, no nvidia-smi: no GPU)")]
    version, cuda = torch_build()
    results = [check_torch_build(version, cuda)] if device == "cuda" else []
    if device == "auto" and cuda is None:
        return [Result("nvidia driver", "skip", f"common.device auto with torch {version} (no CUDA "
                       "build): runs on CPU")]
    source = f"torch {version}"
    if cuda is None:  # a profile that needs CUDA, before the GPU venv exists: what it will install
        lock = root / GPU_LOCK
        cuda = lock_cuda_version(lock.read_text(encoding="utf-8")) if lock.is_file() else None
        source = f"{GPU_LOCK}'s torch"
        if cuda is None:
            return [*results, Result("nvidia driver", "fail", f"no CUDA version found in {GPU_LOCK} (a "
                                     "+cuXYZ torch, a .../whl/cuXYZ index or an nvidia-cuda-runtime pin) "
                                     "and torch has no CUDA build. Fix: install the GPU venv (`make venv-gpu`)")]
    return [*results, check_driver(".".join(cuda.split(".")[:2]), source, query)]


# ---------------------------------------------------------------------------------------------------
# Models and datasets: local paths, the pipeline's own folders, hub ids
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class HubAnswer:
    """What the hub said of one id: `found` (with its `gated` flag and, for a gated id with a token,
    whether the token may download it), `missing`, or `unreachable` (with the reason)."""

    state: Literal["found", "missing", "unreachable"]
    gated: bool = False
    access: bool | None = None
    reason: str = ""


class Hub:
    """The Hugging Face hub and local cache as the checks see them; tests pass a fake with these methods."""

    def __init__(self, timeout_s: float = HUB_TIMEOUT_S) -> None:
        self.timeout_s = timeout_s
        self._cached_datasets: set[str] | None = None

    def offline(self) -> bool:
        """HF_HUB_OFFLINE is set: nothing may be downloaded."""
        return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}

    def token(self) -> str | None:
        """HF_TOKEN, or the token `hf auth login` stored."""
        import huggingface_hub

        return os.environ.get("HF_TOKEN") or huggingface_hub.get_token()

    def cached(self, repo_id: str, repo_type: str) -> bool:
        """Whether the id is already in the local cache (a model's config.json; any file of a dataset,
        in the hub cache or in `datasets`' own cache of prepared datasets)."""
        import huggingface_hub

        if repo_type == "model":
            return isinstance(huggingface_hub.try_to_load_from_cache(repo_id, "config.json"), str)
        if self._cached_datasets is None:
            self._cached_datasets = _cached_dataset_ids()
        return repo_id.lower() in self._cached_datasets

    def ask(self, repo_id: str, repo_type: str) -> HubAnswer:
        """One metadata request (short timeout): does the id exist, is it gated, may our token read it."""
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

        api = HfApi()
        lookup = api.model_info if repo_type == "model" else api.dataset_info
        try:
            gated = bool(lookup(repo_id, timeout=self.timeout_s).gated)
        except GatedRepoError:  # a subclass of RepositoryNotFoundError: the repo is there, closed to us
            return HubAnswer("found", gated=True, access=False)
        except (RepositoryNotFoundError, HFValidationError) as err:
            return HubAnswer("missing", reason=str(err).strip().splitlines()[0])
        except Exception as err:  # offline mode, DNS, timeouts, proxies: httpx and the hub raise many types
            return HubAnswer("unreachable", reason=f"{type(err).__name__}: {str(err).strip()[:200]}")
        if not gated or not self.token():
            return HubAnswer("found", gated=gated)
        try:
            api.auth_check(repo_id, repo_type=repo_type)
        except GatedRepoError:
            return HubAnswer("found", gated=True, access=False)
        except Exception:  # could not tell: the download will say
            return HubAnswer("found", gated=True)
        return HubAnswer("found", gated=True, access=True)


def _cached_dataset_ids() -> set[str]:
    """Lower-cased ids of datasets in the hub cache or in `datasets`' cache (`owner___name` folders)."""
    import huggingface_hub

    try:
        ids = {r.repo_id.lower() for r in huggingface_hub.scan_cache_dir().repos if r.repo_type == "dataset"}
    except huggingface_hub.CacheNotFound:
        ids = set()
    import datasets

    folder = Path(datasets.config.HF_DATASETS_CACHE)
    if folder.is_dir():
        ids |= {p.name.replace("___", "/").lower() for p in folder.iterdir() if "___" in p.name}
    return ids


def pipeline_outputs(params: Params) -> list[str]:
    """The folders the pipeline writes (each stage's output_dir): a name under one is made, not fetched."""
    return [params.model.output_dir, params.sft.output_dir, params.rl.output_dir, params.distill.output_dir]


def made_by_pipeline(value: str, outputs: list[str]) -> bool:
    """Whether `value` is one of `outputs` or lies under one (models/rl/dr_grpo/final under models/rl)."""
    parts = Path(value).parts
    return not Path(value).is_absolute() and any(
        parts[:len(Path(out).parts)] == Path(out).parts for out in outputs)


def model_references(params: Params) -> dict[str, tuple[str, str]]:
    """Every model the run loads, by params key: key -> (id or path, "model" or "tokenizer")."""
    refs = {}
    if params.model.source == "pretrained":
        refs["model.pretrained"] = params.model.pretrained
    refs.update({f"probe.models.{label}": value for label, value in params.probe.models.items()})
    refs["sft.init_model"] = params.sft.init_model
    if params.sft.source == "teacher":
        refs["sft.teacher"] = params.sft.teacher
    refs["rl.init_model"] = params.rl.init_model
    refs["distill.teacher"] = params.distill.teacher
    refs.update({f"distill.students.{label}.init": s.init for label, s in params.distill.students.items()
                 if s.init is not None})
    refs.update({f"evaluate.models.{label}": value for label, value in params.evaluate.models.items()})
    kinds = {key: (value, "model") for key, value in refs.items()}
    kinds.update({f"distill.students.{label}.tokenizer": (s.tokenizer, "tokenizer")
                  for label, s in params.distill.students.items() if s.tokenizer is not None})
    return kinds


def dataset_references(params: Params) -> dict[str, str]:
    """Every `hub:` dataset id the run loads, by params key (rl.prompts.hub.id, ...)."""
    subsets = {**params.training_subsets(), **params.reported_subsets()}
    return {f"{key}.hub.id": s.hub.id for key, s in subsets.items() if s.hub is not None}


def check_local_path(key: str, value: str, kind: str) -> Result:
    """A local path must exist (a model folder must hold a saved model)."""
    try:
        if kind == "model":
            check_source(value)
        elif not Path(value).expanduser().exists():
            raise ConfigError(f"{Path(value).expanduser().resolve()} does not exist")
    except ConfigError as err:
        return Result(f"{kind} {value}", "fail", f"{key}: {err}. Fix the path in the profile, or give a hub id")
    return Result(f"{kind} {value}", "ok", f"local ({key})")


def check_hub_id(keys: list[str], repo_id: str, repo_type: str, hub: Hub) -> Result:
    """A hub id must be reachable or cached; a gated one also needs a token with access, unless cached."""
    name, named, targets = f"{repo_type} {repo_id}", ", ".join(keys), " and ".join(keys)
    cached = hub.cached(repo_id, repo_type)
    page = f"https://huggingface.co/{'datasets/' if repo_type == 'dataset' else ''}{repo_id}"
    download = f"`hf download {repo_id}{' --repo-type dataset' if repo_type == 'dataset' else ''}`"
    gated_fix = (f"accept the licence on {page} while logged in, then `hf auth login` (older "
                 "huggingface_hub: `huggingface-cli login`) or set HF_TOKEN")
    if hub.offline():
        answer = HubAnswer("unreachable", reason="HF_HUB_OFFLINE is set")
    else:
        answer = hub.ask(repo_id, repo_type)
    if cached and answer.state != "missing":
        return Result(name, "ok", f"in the local Hugging Face cache ({named})")
    if answer.state == "missing":
        return Result(name, "fail", f"{named}: {repo_id!r} is not on the hub ({answer.reason}). Fix: "
                      f"check the id, or set {targets} to a local path in the profile")
    if answer.state == "unreachable":
        gated = (f" It is also gated: {gated_fix}." if repo_id.split("/")[0] in GATED_ORGS
                 and not hub.token() else "")
        return Result(name, "fail", f"{named}: {repo_id} is not in the local Hugging Face cache and the hub "
                      f"cannot be reached ({answer.reason}). Fix: run with network access to "
                      f"huggingface.co (HF_HUB_OFFLINE unset), or download it elsewhere ({download}) and "
                      f"set {targets} to its local folder in the profile.{gated}")
    if answer.gated and not hub.token():
        return Result(name, "fail", f"{named}: {repo_id} is gated and no Hugging Face token is set. Fix: "
                      f"{gated_fix}; or set {targets} to a local copy in the profile")
    if answer.gated and answer.access is False:
        return Result(name, "fail", f"{named}: {repo_id} is gated and the token has no access yet. Fix: "
                      f"accept the licence on {page} with the token's account (approval can take a while)")
    return Result(name, "ok", f"on the hub{', gated, token set' if answer.gated else ''} ({named})")


def reference_checks(params: Params, hub: Hub | None = None) -> list[Result]:
    """Every model and dataset the params name: pipeline folders in one line, then each other id."""
    outputs = pipeline_outputs(params)
    refs = [(key, value, kind) for key, (value, kind) in model_references(params).items()]
    refs += [(key, value, "dataset") for key, value in dataset_references(params).items()]
    made = sorted({value for _, value, kind in refs if kind != "dataset" and made_by_pipeline(value, outputs)})
    results = [Result("pipeline folders", "ok", f"made by the stages: {', '.join(made)}")] if made else []
    hub_ids: dict[tuple[str, str], list[str]] = {}
    for key, value, kind in refs:
        if kind != "dataset" and value in made:
            continue
        if looks_local(value):
            results.append(check_local_path(key, value, kind))
        else:
            hub_ids.setdefault((value, "dataset" if kind == "dataset" else "model"), []).append(key)
    if hub_ids:
        hub = hub or Hub()
        results += [check_hub_id(keys, repo_id, repo_type, hub) for (repo_id, repo_type), keys in hub_ids.items()]
    return results


# ---------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------


def resolve_params(profile: str | None, root: Path) -> tuple[Params, str]:
    """The params to check and their source: a params file (results/params.yaml), a profile merged
    into params.yaml, or (None) params.yaml with the active profile, as `python -m r1repro.config check`."""
    if profile and profile.endswith((".yaml", ".yml")):
        path = Path(profile) if Path(profile).is_absolute() else root / profile
        return validate(read_yaml(path), profile), profile
    name = profile or active_profile(root) or "none"
    return load_params(root, profile=name), f"params.yaml (profile: {name})"


def check_openvino_exporter(params: Params) -> Result:
    """The openvino engine (common.backend or rl.rollout_backend) converts each model with optimum-intel,
    in a venv of its own."""
    from r1repro import openvino_engine

    if "openvino" not in params.engines():
        return Result("openvino exporter", "skip", f"engines: {', '.join(params.engines())}")
    try:
        return Result("openvino exporter", "ok", openvino_engine.export_python())
    except ConfigError as err:
        return Result("openvino exporter", "fail", str(err))


def run_checks(params: Params, root: Path) -> list[Result]:
    """Every check that applies to `params`."""
    return [check_python(requires_python(root)), *device_checks(params, root), check_openvino_exporter(params),
            *reference_checks(params)]


def main(argv: list[str] | None = None) -> int:
    """Print one line per check; exit 1 listing every failure, 2 for params that do not validate."""
    parser = argparse.ArgumentParser(prog="python -m r1repro.prerequisites",
                                     description="Check what a run needs before `dvc repro` starts it.")
    parser.add_argument("--profile", help="a profile (profiles/NAME.yaml, or none) or a params file such as "
                        "results/params.yaml; default: params.yaml with the active profile")
    args = parser.parse_args(argv)
    try:
        root = repo_root()
        params, source = resolve_params(args.profile, root)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"prerequisites of {source}:")
    results = run_checks(params, root)
    for result in results:
        print(f"  {result.line()}")
    failures = [r for r in results if r.status == "fail"]
    if failures:
        print(f"error: {len(failures)} prerequisite{'s' if len(failures) > 1 else ''} not met:", file=sys.stderr)
        for result in failures:
            print(f"  - {result.check}: {result.detail}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
