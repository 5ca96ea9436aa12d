"""Crash and resume, end to end: `dvc repro` killed with SIGKILL mid-training, then run again.

In a scratch copy on smoke params (the smoke SFT steps, 4 RL steps, two tiny distill students; a
checkpoint after every step), the training stage is started with `dvc repro <stage>` in its own
process group and killed, the whole tree at once, as soon as its first checkpoint is complete (for
distill: the second student's, the first being finished). A torn save is planted beside it (a
checkpoint folder without its files, as a kill during saving leaves). The rerun must resume from the
last complete checkpoint (not from step 0 and not from the torn one) with its optimizer state,
finish the remaining steps and leave the final model and results; a finished student is not trained
again; the stage's results stay the old ones until then.

Run: python -m pytest tests/test_crash_resume.py -q     (about 8-12 min on 2 cores)
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from repo_copy import make_copy, run
from safetensors.torch import load_file

from r1repro import distill as distillation
from r1repro import resumable
from r1repro.config import validate
from r1repro.sft_examples import ColdStartExample

pytestmark = pytest.mark.slow

STEPS = 4
STUDENTS = ("first_not_pretrained", "second_not_pretrained")


def overrides(tiny_size: dict[str, int]) -> dict:
    """The smoke params, changed so that each training stage saves a checkpoint after every step."""
    qwen2 = {"architecture": "qwen2", "tokenizer": "models/base", "note": "random init, test size",
             "config": tiny_size}
    return {
        # float32: the distill check compares the resumed weights with an uninterrupted run's to 1e-6,
        # and bf16 autocast on an AMX CPU is not reproducible that closely between processes (the
        # same 4 steps gave other weights at 1 thread than at 2); resuming does not depend on dtype.
        "common": {"dtype": "float32"},
        "sft": {"save_steps": 1},  # the smoke SFT (its steps: see sft_steps), a checkpoint after each
        "rl": {"max_steps": STEPS, "save_steps": 1},
        # Two tiny students in turn, one trace per step, a checkpoint after each: the kill comes while
        # the second trains, after the first has finished.
        "distill": {"students": {label: qwen2 for label in STUDENTS}, "batch_size": 1, "epochs": 4.0,
                    "save_steps": 1},
    }


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, data_dir: Path, tiny_size) -> Path:
    """A smoke copy with the base model imported (the stages under test are still to run)."""
    copy = make_copy(tmp_path_factory.mktemp("crash") / "repo", repo_root, data_dir, overrides(tiny_size))
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


def _params(repo: Path):
    return validate(yaml.safe_load((repo / "params.yaml").read_text()))


def test_sft_killed_mid_training_resumes_from_its_last_checkpoint(repo: Path) -> None:
    sft = _params(repo).sft
    steps = math.ceil(sft.train_examples / sft.batch_size) * int(sft.epochs)  # at most: fewer may solve
    checkpoints = repo / "models" / "sft-checkpoints"
    _crash_after_first_checkpoint(repo, "sft", lambda: resumable.last_complete_checkpoint(checkpoints))
    reached = resumable.last_complete_checkpoint(checkpoints)
    step = resumable.checkpoint_step(reached)
    assert 1 <= step < steps, f"the kill came too late to test resuming (step {step})"
    assert not (repo / "results" / "sft" / "metrics.json").exists()  # no results from a killed run
    _plant_torn_save(checkpoints, step + 1)

    run(["dvc", "repro", "sft"], repo)
    training = json.loads((repo / "results" / "sft" / "metrics.json").read_text())["training"]
    assert training["resumed_from_step"] == step  # the complete checkpoint, not the torn one
    assert step < training["steps"] <= steps
    assert (repo / "models" / "sft" / "model.safetensors").is_file()
    record = json.loads((repo / "models" / "sft" / resumable.FINAL_RECORD).read_text())
    assert record["global_step"] == training["steps"]
    assert not checkpoints.exists()  # removed once the run finished (sft.keep_checkpoints: false)


def test_rl_killed_mid_training_resumes_with_step_and_optimizer(repo: Path) -> None:
    run(["dvc", "repro", "sft"], repo)  # no-op after the SFT test; trains SFT when run alone
    checkpoints = repo / "models" / "rl" / "grpo" / "checkpoints"
    _crash_after_first_checkpoint(repo, "rl", lambda: resumable.last_complete_checkpoint(checkpoints))
    reached = resumable.last_complete_checkpoint(checkpoints)
    step = resumable.checkpoint_step(reached)
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
    assert not torn.exists() or resumable.is_complete_checkpoint(torn)
    diagnostics = [json.loads(line) for line in
                   (repo / "results" / "rl" / "diagnostics_grpo.jsonl").read_text().splitlines()]
    assert [row["step"] for row in diagnostics if row["step"] > 0] == list(range(1, STEPS + 1))
    metrics = json.loads((repo / "results" / "rl" / "metrics.json").read_text())
    for run_name in ("grpo", "dr_grpo"):
        assert metrics["runs"][run_name]["steps"] == STEPS
        assert (repo / "models" / "rl" / run_name / "final" / "model.safetensors").is_file()
    assert "up to date" in run(["dvc", "status", "rl"], repo).stdout


def _train_student_here(repo: Path, label: str, out: Path, monkeypatch: pytest.MonkeyPatch,
                        checkpoints: Path | None = None) -> tuple[int, dict[str, torch.Tensor]]:
    """Train `label` in this process as the stage does (its traces, its starting weights), into `out`;
    from step 0, or resumed from a copy of `checkpoints`. Returns (start step, final weights)."""
    monkeypatch.chdir(repo)  # the stage ran here: its paths (and so its fingerprints) are relative
    params = _params(repo)
    cfg = params.distill.model_copy(update={"output_dir": str(out)})
    if checkpoints is not None:
        shutil.copytree(checkpoints, out / f"{label}-checkpoints")
    rows = (repo / "results" / "distill" / "traces.jsonl").read_text().splitlines()
    traces = [ColdStartExample(**json.loads(row)) for row in rows]
    start = f"{params.distill.output_dir}/{label}-init"
    result = distillation.train_student(label, start, traces, cfg, params.common)
    return result.start_step, load_file(out / label / "model.safetensors")


def _empty_adam_state(path: Path) -> None:
    """Rewrite a checkpoint's optimizer.pt as a fresh AdamW's: the same parameter groups, no moments.
    (A checkpoint without optimizer.pt is refused altogether: tests/test_sft.py.)"""
    state = torch.load(path, weights_only=False)
    torch.save({**state, "state": {}}, path)


def test_distill_killed_mid_student_resumes_it_and_keeps_the_finished_one(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(["dvc", "repro", "rl"], repo)  # the teacher's stages, when run alone (no-op after the RL test)
    distill_dir = repo / "models" / "distill"
    first, second = (distill_dir / label for label in STUDENTS)
    checkpoints = distill_dir / f"{STUDENTS[1]}-checkpoints"
    _crash_after_first_checkpoint(repo, "distill", lambda: resumable.last_complete_checkpoint(checkpoints))
    reached = resumable.last_complete_checkpoint(checkpoints)
    step = resumable.checkpoint_step(reached)
    assert (first / "model.safetensors").is_file() and not second.exists()
    assert (reached / "optimizer.pt").is_file() and (reached / "scheduler.pt").is_file()
    assert not (repo / "results" / "distill" / "metrics.json").exists()
    first_file = (first / "model.safetensors").stat()
    snapshot = tmp_path / "snapshot"
    shutil.copytree(checkpoints, snapshot)  # as the kill left it, for the optimizer check below
    torn = _plant_torn_save(checkpoints, step + 1)

    run(["dvc", "repro", "distill"], repo)
    students = json.loads((repo / "results" / "distill" / "metrics.json").read_text())["students"]
    total = students[STUDENTS[1]]["steps"]
    assert 1 <= step < total, f"the kill came too late to test resuming (step {step} of {total})"
    # The finished student was read back, not trained again: same file, same record.
    assert students[STUDENTS[0]]["reused"] is True and students[STUDENTS[0]]["steps"] == total
    after = (first / "model.safetensors").stat()
    assert (after.st_ino, after.st_mtime_ns) == (first_file.st_ino, first_file.st_mtime_ns)
    # The second resumed from the complete checkpoint, not from step 0 and not from the torn save.
    assert students[STUDENTS[1]]["resumed_from_step"] == step and students[STUDENTS[1]]["reused"] is False
    table = (repo / "results" / "distill" / "live" / STUDENTS[1] / "plots" / "metrics" / "train" / "loss.tsv")
    header, *rows = [line.split("\t") for line in table.read_text().splitlines()]
    assert [int(row[header.index("step")]) for row in rows] == list(range(step + 1, total + 1))  # step goes on
    record = json.loads((second / resumable.FINAL_RECORD).read_text())
    assert record["global_step"] == total
    assert not checkpoints.exists() and not torn.exists()  # removed once the student finished
    for label in STUDENTS:
        assert students[label]["after"]["n"] > 0 and (distill_dir / label / "model.safetensors").is_file()

    # Optimizer state restored: the resumed student ends with the weights of a run never killed,
    # and resuming from the same checkpoint with Adam's moments emptied does not.
    resumed = load_file(second / "model.safetensors")
    started, uninterrupted = _train_student_here(repo, STUDENTS[1], tmp_path / "reference", monkeypatch)
    assert started == 0 and resumed.keys() == uninterrupted.keys()
    assert all(torch.allclose(resumed[k], uninterrupted[k], rtol=0, atol=1e-6) for k in resumed)
    _empty_adam_state(snapshot / reached.name / "optimizer.pt")
    started, fresh_adam = _train_student_here(repo, STUDENTS[1], tmp_path / "no_optimizer", monkeypatch,
                                              snapshot)
    assert started == step
    assert not all(torch.allclose(fresh_adam[k], uninterrupted[k], rtol=0, atol=1e-6) for k in resumed)
    assert "up to date" in run(["dvc", "status", "distill"], repo).stdout
