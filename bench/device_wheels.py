"""The wheels a lent GPU machine needs to run bench/device_check.sh, and the check that they arrived.

The machine's image (CPython 3.12, no network) has torch, transformers, accelerate and peft with their
own dependencies; everything else the bench scripts import travels in bench/wheels/ at the versions
requirements-gpu.lock pins, for CPython 3.12 manylinux x86_64, installed there with
`pip install --no-deps --target` into a folder of its own (the image's packages are never touched).
The working tree that travels is capped at 64 MiB, so the wheels get at most 56 MiB.

    python bench/device_wheels.py download                       # bench/wheels/, CPython 3.12
    python bench/device_wheels.py download --python 3.11 --dest .wheels-cp311   # the CPU dry run's set
    python bench/device_wheels.py image                          # what a dry run's venv stands in with
    python bench/device_wheels.py check --wheels bench/wheels    # there, after the install: versions

What travels (`CARRIED`), and what deliberately does not:

* the declared dependency closure of trl, datasets, pandas, pydantic and math-verify, less what the
  image's four packages bring;
* dvclive (every RL step is logged through it) with what `dvclive.Live` imports when it runs: its
  declared closure is dvc's, ~80 packages (pygit2, cryptography, celery, ...) that nothing here calls;
* not pyarrow (`IMAGE_PROVIDED`): its wheel alone is 52 MiB and the image has one; `check` reports
  whether its version meets what datasets asks for;
* not vllm (`NOT_CARRIED`): gigabytes with its CUDA torch; the device check times the backends that
  run without it and says it is absent. Nor OpenVINO: a CPU engine, never used on a GPU.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata as metadata
import importlib.util
import json
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-gpu.lock"
WHEELS = ROOT / "bench" / "wheels"
MIB = 1024 * 1024
LIMIT_MIB = 56  # the travelling tree's 64 MiB less ~8 MiB of source, notebooks and results

# In the GPU image (versions as in requirements-gpu.lock for the dry run's stand-in venv).
IMAGE = ("torch", "transformers", "accelerate", "peft")
# Used from the image although outside IMAGE's dependencies: too large to carry.
IMAGE_PROVIDED = {"pyarrow": "52 MiB wheel, over the budget with the rest; the image has pyarrow"}
# Imported by the bench scripts only when installed.
NOT_CARRIED = {"vllm": "GPU build with its CUDA torch and kernels: gigabytes",
               # CPU-only engine (common.backend: openvino); the GPU profiles generate with vLLM
               "openvino": "CPU-only engine (backend openvino), unused on a GPU",
               "openvino-genai": "CPU-only engine (backend openvino), unused on a GPU"}

# Closure roots: TRL's GRPO and the datasets it trains from; r1repro.config (pydantic),
# r1repro.grading (math-verify), r1repro.evaluation and rl_diagnostics (pandas).
ROOTS = ("trl", "datasets", "pandas", "pydantic", "math-verify")
CLOSURE = ROOTS + (
    "dill", "multiprocess", "xxhash",                                  # datasets
    "python-dateutil", "six",                                          # pandas
    "pydantic-core", "annotated-types", "typing-inspection",           # pydantic
    "latex2sympy2-extended", "antlr4-python3-runtime",                 # math-verify
)
# dvclive and what `Live(...)`, log_metric, make_summary and end import (not its declared closure).
DVCLIVE = (
    "dvclive", "dvc", "dvc-data", "dvc-http", "dvc-objects", "dvc-render", "dvc-studio-client",
    "scmrepo", "dulwich", "sqltrie", "pygtrie", "funcy", "flufl-lock", "zc-lockfile", "atpublic",
    "voluptuous", "configobj", "dpath", "diskcache", "flatten-dict", "orjson", "ruamel-yaml",
    "tabulate", "nvidia-ml-py", "pathspec", "platformdirs", "colorama", "attrs", "wcwidth",
    "requests", "urllib3", "certifi", "charset-normalizer",
)
CARRIED = CLOSURE + DVCLIVE
# PyPI has only an sdist of the pinned version: built here into a pure-Python (py3-none-any) wheel.
BUILT_FROM_SDIST = ("antlr4-python3-runtime",)
# Modules the bench scripts import that must work on the device (the check imports each).
MODULES = ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "pyarrow", "pandas",
           "pydantic", "yaml", "math_verify", "latex2sympy2_extended", "dvclive")


def canonical(name: str) -> str:
    """PEP 503 normalised project name: `flufl.lock` and `Flufl_Lock` are `flufl-lock`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def lock_pins(lock: Path = LOCK) -> dict[str, str]:
    """{canonical name: version} of every `name==version` line of a lock file."""
    pins = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonical(name)] = version.split(";", 1)[0].strip()
    return pins


def pinned(names: tuple[str, ...], pins: dict[str, str]) -> list[str]:
    """`name==version` for each name, from the lock; every name must be pinned there."""
    missing = [n for n in names if canonical(n) not in pins]
    if missing:
        raise SystemExit(f"error: {LOCK.name} pins no version of {', '.join(missing)}")
    return [f"{n}=={pins[canonical(n)]}" for n in names]


def wheel_name_version(path: Path) -> tuple[str, str]:
    """(canonical name, version) from a wheel's file name."""
    name, version = path.name.split("-")[:2]
    return canonical(name), version


def total_bytes(folder: Path) -> int:
    """Bytes of the wheels in `folder`."""
    return sum(p.stat().st_size for p in folder.glob("*.whl"))


def check_size(total: int, limit_mib: float = LIMIT_MIB) -> str:
    """A line stating the total; SystemExit naming the excess when it is over `limit_mib`.

    Args:
        total: bytes of the wheels.
        limit_mib: what the wheels may take of the travelling tree (MiB).
    """
    if total > limit_mib * MIB:
        raise SystemExit(f"error: the wheels take {total / MIB:.1f} MiB, over the {limit_mib} MiB they may "
                         f"take of the 64 MiB tree that travels to the device; carry less "
                         f"(bench/device_wheels.py, CARRIED)")
    return f"wheels: {total / MIB:.1f} MiB of {limit_mib} MiB"


def pip_download_args(python: str) -> list[str]:
    """`pip download` options for wheels that install on CPython `python` (e.g. "3.12"), Linux x86_64."""
    platforms = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64",
                 "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux_2_5_x86_64", "manylinux1_x86_64"]
    return ["--no-deps", "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
            *(a for p in platforms for a in ("--platform", p))]


def download(dest: Path, python: str, lock: Path = LOCK) -> list[Path]:
    """Fetch every `CARRIED` wheel at its pinned version into `dest`; remove any other wheel there.

    Returns:
        The wheels, largest first.
    """
    pins = lock_pins(lock)
    dest.mkdir(parents=True, exist_ok=True)
    wanted = {canonical(n): pins.get(canonical(n)) for n in CARRIED}
    for old in dest.glob("*.whl"):  # two versions of one package stop the whole install
        name, version = wheel_name_version(old)
        if wanted.get(name) != version:
            old.unlink()
    binary = tuple(n for n in CARRIED if n not in BUILT_FROM_SDIST)
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "download", "--quiet", *pip_download_args(python), "--dest", str(dest),
                    *pinned(binary, pins)], check=True)
    for spec in pinned(BUILT_FROM_SDIST, pins):
        subprocess.run([*pip, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(dest), spec], check=True)
    wheels = sorted(dest.glob("*.whl"), key=lambda p: -p.stat().st_size)
    got = {wheel_name_version(p)[0] for p in wheels}
    if got != set(wanted):
        raise SystemExit(f"error: {dest} lacks {sorted(set(wanted) - got)}, has extra {sorted(got - set(wanted))}")
    for built in (p for p in wheels if wheel_name_version(p)[0] in BUILT_FROM_SDIST):
        if not built.name.endswith("-none-any.whl"):
            raise SystemExit(f"error: {built.name} is not pure Python; it would not run on the device")
    return wheels


def requirements(dist: metadata.Distribution) -> list[str]:
    """A distribution's requirements that apply on the running interpreter (no extras)."""
    from packaging.requirements import Requirement

    out = []
    for text in dist.requires or []:
        req = Requirement(text)
        if req.marker is None or req.marker.evaluate({"extra": ""}):
            out.append(text)
    return out


def module_version(module: str) -> str:
    """The version of the distribution that provides an imported top-level module."""
    dists = metadata.packages_distributions().get(module) or [module]
    try:
        return metadata.version(dists[0])
    except metadata.PackageNotFoundError:
        return "?"


def smoke() -> None:
    """Use what the steps rely on without a model: math-verify's LaTeX parser (ANTLR) and dvclive."""
    import tempfile

    from dvclive import Live
    from math_verify import parse, verify

    if not verify(parse("$\\frac{1}{2}$"), parse("$0.5$")):
        raise RuntimeError("math-verify: 1/2 != 0.5")
    with tempfile.TemporaryDirectory() as folder:
        live = Live(dir=folder, resume=False, save_dvc_exp=False, dvcyaml=None)
        live.log_metric("x", 1.0)
        live.make_summary()
        live.end()


def check(wheels: Path) -> dict:
    """Run where the wheels were installed: every module imports, every carried package is the
    carried version, the closure roots' requirements are met (warnings only), math-verify and dvclive
    work.

    Returns:
        {"versions": {module: version}, "errors": [...], "warnings": [...]}; no errors: all is well.
    """
    from packaging.requirements import Requirement

    versions, errors, warnings = {}, [], []
    for module in MODULES:
        try:
            importlib.import_module(module)
            versions[module] = module_version(module)
        except Exception as err:  # an import that fails for any reason fails the check
            errors.append(f"import {module}: {type(err).__name__}: {err}")
    for name, why in NOT_CARRIED.items():
        versions[name] = module_version(name) if importlib.util.find_spec(name) else f"absent (not carried: {why})"
    for name, version in sorted(wheel_name_version(p) for p in wheels.glob("*.whl")):
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            found = None
        if found != version:
            errors.append(f"{name} {version} was carried but {found} is what imports")
    for name in CLOSURE:
        for text in requirements(metadata.distribution(name)):
            req = Requirement(text)
            try:
                found = metadata.version(req.name)
            except metadata.PackageNotFoundError:
                warnings.append(f"{name} requires {text}: not installed")
                continue
            if not req.specifier.contains(found, prereleases=True):
                warnings.append(f"{name} requires {text}; {found} is installed")
    if not errors:
        try:
            smoke()
        except Exception as err:
            errors.append(f"smoke test: {type(err).__name__}: {err}")
    return {"versions": versions, "errors": errors, "warnings": warnings}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    get = sub.add_parser("download", help="fetch the wheels (needs PyPI)")
    get.add_argument("--dest", type=Path, default=WHEELS)
    get.add_argument("--python", default="3.12", help="CPython version the wheels are for")
    sub.add_parser("image", help="print name==version of the image's packages, for a stand-in venv")
    verify = sub.add_parser("check", help="after the install: imports, versions, requirements")
    verify.add_argument("--wheels", type=Path, default=WHEELS)
    verify.add_argument("--out", type=Path, default=None, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    if args.command == "download":
        wheels = download(args.dest, args.python)
        for path in wheels:
            print(f"  {path.stat().st_size / MIB:6.2f} MiB  {path.name}")
        print(f"{check_size(total_bytes(args.dest))} in {len(wheels)} wheels ({args.dest}, CPython {args.python})")
        return 0
    if args.command == "image":
        print(" ".join(pinned(IMAGE + tuple(IMAGE_PROVIDED), lock_pins())))
        return 0
    result = check(args.wheels)
    for module, version in result["versions"].items():
        print(f"  {module}: {version}")
    for line in result["warnings"]:
        print(f"  warning: {line}")
    for line in result["errors"]:
        print(f"  error: {line}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
