"""Crash and resume, end to end: `dvc repro` killed with SIGKILL mid-training, then run again.

In a scratch copy on smoke params (4 SFT steps and 4 RL steps, a checkpoint after every step), the
training stage is started with `dvc repro <stage>` in its own process group and killed, the whole
tree at once, as soon as its first checkpoint is complete. A torn save is planted beside it (a
checkpoint folder without its files, as a kill during saving leaves). The rerun must resume from the
last complete checkpoint (not from step 0 and not from the torn one), finish the remaining steps
and leave the final model and results; the stage's results stay the old ones until then.

Run: python -m pytest tests/test_crash_resume.py -q     (about 6-10 min on 2 cores)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from repo_copy import make_copy, run

from r1repro import rl as rl_training
from r1repro import sft as sft_training

pytestmark = pytest.mark.slow

STEPS = 4
OVERRIDES = {
    # 4 training examples, batch 2, 2 epochs: 4 SFT steps; RL: 4 steps; a checkpoint after each.
    "sft": {"save_steps": 1, "epochs": 2.0},
    "rl": {"max_steps": STEPS, "save_steps": 1},
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, data_dir: Path) -> Path:
    """A smoke copy with the base model imported (the stages under test are still to run)."""
    copy = make_copy(tmp_path_factory.mktemp("crash") / "repo", repo_root, data_dir, OVERRIDES)
    run(["dvc", "repro", "import_model"], copy)
    return copy


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the process group of `process` and every descendant (the Jupyter kernel runs in a
    session of its own), as an out-of-memory kill or a power cut would end them."""
    try:
        tree = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    with contextlib.suppress(ProcessLookupError):  # the group may be gone already
        os.killpg(process.pid, signal.SIGKILL)
    for proc in tree:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    process.wait(timeout=60)
    psutil.wait_procs(tree, timeout=30)


def _crash_after_first_checkpoint(repo: Path, stage: str, find_checkpoint, timeout_s: float = 1500) -> None:
    """Start `dvc repro <stage>` and kill it once `find_checkpoint()` returns a complete checkpoint."""
    log = (repo / f"{stage}-crashed.log").open("w")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = subprocess.Popen(["dvc", "repro", stage], cwd=repo, stdout=log, stderr=subprocess.STDOUT,
                               env=env, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while find_checkpoint() is None:
            assert process.poll() is None, (f"dvc repro {stage} ended before its first checkpoint:\n"
                                            f"{(repo / f'{stage}-crashed.log').read_text()[-4000:]}")
            assert time.monotonic() < deadline, f"no {stage} checkpoint after {timeout_s} s"
            time.sleep(0.2)
    finally:
        _kill_tree(process)
        log.close()


def _plant_torn_save(checkpoints: Path, step: int) -> Path:
    """A checkpoint folder as a kill during saving leaves it: weights cut short, no trainer state."""
    torn = checkpoints / f"checkpoint-{step}"
    if not torn.exists():
        torn.mkdir()
        (torn / "model.safetensors").write_bytes(b"\0" * 100)
    assert not (torn / "trainer_state.json").exists()
    return torn


def test_sft_killed_mid_training_resumes_from_its_last_checkpoint(repo: Path) -> None:
    checkpoints = repo / "models" / "sft-checkpoints"
    _crash_after_first_checkpoint(repo, "sft", lambda: sft_training.last_checkpoint(checkpoints))
    reached = sft_training.last_checkpoint(checkpoints)
    step = int(reached.name.split("-")[-1])
    assert 1 <= step < STEPS, f"the kill came too late to test resuming (step {step})"
    assert not (repo / "results" / "sft" / "metrics.json").exists()  # no results from a killed run
    _plant_torn_save(checkpoints, step + 1)

    run(["dvc", "repro", "sft"], repo)
    training = json.loads((repo / "results" / "sft" / "metrics.json").read_text())["training"]
    assert training["resumed_from_step"] == step  # the complete checkpoint, not the torn one
    assert training["steps"] == STEPS
    assert (repo / "models" / "sft" / "model.safetensors").is_file()
    record = json.loads((repo / "models" / "sft" / sft_training.TRAINING_RECORD).read_text())
    assert record["global_step"] == STEPS
    assert not checkpoints.exists()  # removed once the run finished (sft.keep_checkpoints: false)


def test_rl_killed_mid_training_resumes_with_step_and_optimizer(repo: Path) -> None:
    run(["dvc", "repro", "sft"], repo)  # no-op after the SFT test; trains SFT when run alone
    checkpoints = repo / "models" / "rl" / "grpo" / "checkpoints"
    _crash_after_first_checkpoint(repo, "rl", lambda: rl_training.last_complete_checkpoint(checkpoints))
    reached = rl_training.last_complete_checkpoint(checkpoints)
    step = rl_training.checkpoint_step(reached)
    assert 1 <= step < STEPS, f"the kill came too late to test resuming (step {step})"
    assert (reached / "optimizer.pt").is_file() and (reached / "scheduler.pt").is_file()
    assert not (repo / "models" / "rl" / "grpo" / "final").exists()
    assert not (repo / "results" / "rl" / "metrics.json").exists()
    torn = _plant_torn_save(checkpoints, step + 1)

    result = run(["dvc", "repro", "rl"], repo)
    assert "Running stage 'rl'" in result.stdout
    protocol = json.loads((repo / "results" / "rl" / "protocol.json").read_text())
    # Resumed from the complete checkpoint (its optimizer.pt and scheduler.pt loaded by the trainer),
    # not from step 0 and not from the torn save; the second run had not started when killed.
    assert protocol["resumed_from"] == {"grpo": step, "dr_grpo": None}
    final_state = json.loads((checkpoints / f"checkpoint-{STEPS}" / "trainer_state.json").read_text())
    assert final_state["global_step"] == STEPS
    logged = [row["step"] for row in final_state["log_history"] if "loss" in row]
    assert logged == sorted(set(logged)) and logged[-1] == STEPS  # each step logged once
    assert not torn.exists() or rl_training.is_complete_checkpoint(torn)
    diagnostics = [json.loads(line) for line in
                   (repo / "results" / "rl" / "diagnostics_grpo.jsonl").read_text().splitlines()]
    assert [row["step"] for row in diagnostics if row["step"] > 0] == list(range(1, STEPS + 1))
    metrics = json.loads((repo / "results" / "rl" / "metrics.json").read_text())
    for run_name in ("grpo", "dr_grpo"):
        assert metrics["runs"][run_name]["steps"] == STEPS
        assert (repo / "models" / "rl" / run_name / "final" / "model.safetensors").is_file()
    assert "up to date" in run(["dvc", "status", "rl"], repo).stdout
