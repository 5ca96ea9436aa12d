"""Helpers for tests that run pipeline stages: a scratch copy of the checkout, never the real one.

A copy holds the tracked and new files (no results, no dvc.lock, no models), data/, a one-commit git
history (dvclive reads the current commit) and params.yaml with the smoke profile (or another) baked
in, so `dvc repro` there touches nothing of the working tree the tests were started from. Baking the
profile into the copy's params.yaml lets a test's overrides win over the profile's values.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from r1repro.config import deep_merge, validate, write_resolved


def run(args: list[str], cwd: Path, timeout: int = 1800, check: bool = True,
        env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run a command with this interpreter's tools first on PATH; fail the test with its output."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           **(env_extra or {})}
    result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    if check:
        assert result.returncode == 0, (f"{' '.join(args)} failed:\n{result.stdout[-4000:]}\n"
                                        f"{result.stderr[-4000:]}")
    return result


def make_copy(dest: Path, repo_root: Path, data_dir: Path, overrides: dict | None = None,
              profile: str = "smoke") -> Path:
    """Copy the checkout to `dest` on a profile's params (plus `overrides`, merged key by key); return it."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=repo_root,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for rel in filter(None, listed):
        if rel.startswith("results/") or rel == "dvc.lock" \
                or not (repo_root / rel).is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(repo_root / rel, dest / rel)
    shutil.copytree(data_dir, dest / "data")
    run(["git", "init", "-q"], dest)
    run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-q",
         "--allow-empty", "-m", "test copy"], dest)
    profile_overrides = yaml.safe_load((repo_root / "profiles" / f"{profile}.yaml").read_text())
    set_params(dest, deep_merge(profile_overrides, overrides or {}))
    return dest


def set_params(root: Path, overrides: dict) -> None:
    """Merge `overrides` into root/params.yaml (validated first), as a profile is merged."""
    path = root / "params.yaml"
    merged = deep_merge(yaml.safe_load(path.read_text()), overrides)
    validate(merged)
    path.write_text(yaml.safe_dump(merged, sort_keys=False))
    # What dvc.yaml's params stage does first, so a stage run by hand (not through dvc) finds it.
    write_resolved(root)


def stages_run(output: str) -> set[str]:
    """The stages a `dvc repro` ran, from its output."""
    return set(re.findall(r"Running stage '([\w-]+)'", output))
