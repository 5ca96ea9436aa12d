"""`make repro PROFILE=smoke` runs in runs/smoke/, a copy, so the checkout's committed results and dvc.lock
(the default run's) stay as they are and `git status` stays clean (issue 31). The pipeline itself is not
run here (tests/test_pipeline.py does that): only the copy, the profile choice and the `params` stage."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1repro import profile_run
from r1repro.config import ACTIVE_PROFILE_FILE, RESOLVED_FILE

# What the copy step and the `params` stage need: code, params, DVC's files, the committed results.
COPIED = [".gitignore", ".dvcignore", ".dvc", "dvc.yaml", "dvc.lock", "data.dvc", "params.yaml",
          "profiles", "src/r1repro", "results/params.yaml"]


def _git(root: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout


@pytest.fixture()
def checkout(tmp_path: Path, repo_root: Path, data_dir: Path) -> Path:
    """A git repository of the files a profile run copies, committed, with data/ beside them (ignored)."""
    root = tmp_path / "checkout"
    listed = _git(repo_root, "ls-files", "-co", "--exclude-standard", "--", *COPIED).split("\n")
    for rel in filter(None, listed):
        if (repo_root / rel).is_file():  # not a file deleted in the working tree but not yet committed
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(repo_root / rel, root / rel)
    shutil.copytree(data_dir.resolve(), root / "data")  # a copy: a test never writes through a link
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    assert _git(root, "status", "--porcelain") == ""
    return root


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_a_profile_run_leaves_the_checkout_clean_and_writes_in_its_copy(checkout: Path) -> None:
    committed = (checkout / RESOLVED_FILE).read_bytes()
    out = _run(["r1repro.profile_run", "smoke", "--prepare-only"], checkout).stdout
    copy = checkout / "runs" / "smoke"
    assert "runs/smoke is ready" in out
    assert yaml.safe_load((copy / ACTIVE_PROFILE_FILE).read_text()) == {"profile": "smoke"}
    assert not (checkout / ACTIVE_PROFILE_FILE).exists()
    _run(["dvc", "repro", "params"], copy)  # the pipeline's first stage, by DVC, in the copy
    assert "profiles/smoke.yaml" in (copy / RESOLVED_FILE).read_text()
    assert (checkout / RESOLVED_FILE).read_bytes() == committed
    assert _git(checkout, "status", "--porcelain") == ""
    # The checkout's DVC takes no stage from the copy's dvc.yaml (.dvcignore; a folder with a .dvc/ too).
    stages = _run(["dvc", "stage", "list", "--name-only"], checkout).stdout.split()
    assert stages == list(yaml.safe_load((checkout / "dvc.yaml").read_text())["stages"])


def test_a_refresh_carries_edits_and_keeps_what_the_run_made(checkout: Path) -> None:
    copy = profile_run.prepare(checkout, "smoke")
    (checkout / "params.yaml").write_text((checkout / "params.yaml").read_text() + "# edited\n")
    (checkout / "profiles" / "new.yaml").write_text("common: {seed: 7}\n")  # new, not committed
    (checkout / "src" / "r1repro" / "roofline.py").unlink()                 # deleted, not committed
    (copy / "results" / "made_by_run.txt").write_text("kept")
    (copy / "dvc.lock").write_text("the copy's own\n")
    (copy / "data" / "README.md").write_text("altered")
    profile_run.prepare(checkout, "smoke")
    assert (copy / "params.yaml").read_text().endswith("# edited\n")
    assert (copy / "profiles" / "new.yaml").is_file()
    assert not (copy / "src" / "r1repro" / "roofline.py").exists()
    assert (copy / "results" / "made_by_run.txt").read_text() == "kept"
    assert (copy / "dvc.lock").read_text() == "the copy's own\n"
    assert (copy / "data" / "README.md").read_bytes() == (checkout / "data" / "README.md").read_bytes()


def test_a_new_copy_links_the_base_model_and_uses_the_checkout_cache(checkout: Path) -> None:
    base = checkout / profile_run.BASE_MODEL
    base.mkdir(parents=True)
    (base / "config.json").write_text("{}")
    copy = profile_run.prepare(checkout, "smoke")
    linked = copy / profile_run.BASE_MODEL / "config.json"
    assert linked.stat().st_ino == (base / "config.json").stat().st_ino
    cache = _run(["dvc", "cache", "dir"], copy).stdout.strip()
    assert Path(cache) == (checkout / ".dvc" / "cache").resolve()


@pytest.mark.parametrize("profile, expected", [("nope", r"no profile 'nope'.*smoke"),
                                               ("none", r"profile none runs in the checkout itself")])
def test_an_unknown_profile_fails_before_copying(checkout: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture, profile: str,
                                                 expected: str) -> None:
    monkeypatch.chdir(checkout)
    assert profile_run.main([profile]) == 2
    assert re.search(expected, capsys.readouterr().err)
    assert not (checkout / "runs").exists()


def test_the_copy_runs_what_make_repro_runs_in_place_in_that_order() -> None:
    commands = [" ".join(step[2:]) for step in profile_run.steps("smoke", prepare_only=False)]
    assert commands == ["r1repro.config use smoke", "r1repro.config check", "r1repro.prerequisites",
                        "dvc repro"]
    assert [" ".join(step[2:]) for step in profile_run.steps("smoke", prepare_only=True)] == commands[:1]


@pytest.mark.parametrize("profile, runs_in_copy", [("smoke", True), ("none", False)])
def test_make_repro_sends_a_profile_to_its_copy(repo_root: Path, profile: str, runs_in_copy: bool) -> None:
    """What `make repro` would run (make -n: nothing runs): none in place, another profile in runs/."""
    planned = subprocess.run(["make", "-n", "-C", str(repo_root), "repro", f"PROFILE={profile}"],
                             capture_output=True, text=True, check=True).stdout
    assert (f"python -m r1repro.profile_run {profile}" in planned) == runs_in_copy
    assert ("dvc repro" in planned) == (not runs_in_copy)
