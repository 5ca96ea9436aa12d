"""Tests of r1repro.resumable on hand-made folders: which checkpoints count as complete, when a run's
checkpoints are resumed or discarded, the finished-model record, and the code part of the fingerprint.

The training stages' own refusals of an incomplete checkpoint run real steps: tests/test_sft.py and
tests/test_rl.py (`..._missing_its_optimizer_state_...`).

    pytest tests/test_resumable.py -q
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest

from r1repro import io, resumable
from r1repro.deps import import_closure


# --- completeness ---------------------------------------------------------------------------------


def test_complete_means_state_weights_optimizer_and_scheduler(fake_checkpoint, tmp_path):
    assert resumable.is_complete_checkpoint(fake_checkpoint(tmp_path, 1, 1))
    lora = fake_checkpoint(tmp_path, 2, 2, files=("adapter_model.safetensors", "optimizer.pt", "scheduler.pt"))
    deepspeed = fake_checkpoint(tmp_path, 3, 3, files=(
        "model.safetensors", "global_step3/bf16_zero_pp_rank_0_mp_rank_00_optim_states.pt", "scheduler.pt"))
    assert resumable.is_complete_checkpoint(lora) and resumable.is_complete_checkpoint(deepspeed)
    incomplete = {
        "no trainer state": fake_checkpoint(tmp_path, 10),
        "torn trainer state": fake_checkpoint(tmp_path, 11, state_text='{"global_st'),
        "another step's state": fake_checkpoint(tmp_path, 12, 3),
        "no weights": fake_checkpoint(tmp_path, 13, 13, files=("optimizer.pt", "scheduler.pt")),
        "no optimizer": fake_checkpoint(tmp_path, 14, 14, files=("model.safetensors", "scheduler.pt")),
        "no scheduler": fake_checkpoint(tmp_path, 15, 15, files=("model.safetensors", "optimizer.pt")),
    }
    assert [why for why, path in incomplete.items() if resumable.is_complete_checkpoint(path)] == []


def test_last_complete_checkpoint_skips_and_discards_partial_saves(fake_checkpoint, tmp_path):
    for step in (4, 12, 8):
        fake_checkpoint(tmp_path, step, step)
    fake_checkpoint(tmp_path, 16)  # killed before trainer_state.json
    fake_checkpoint(tmp_path, 20, state_text='{"global_st')  # killed while writing it
    fake_checkpoint(tmp_path, 24, 24, files=("model.safetensors",))  # no optimizer state
    (tmp_path / "checkpoint-x").mkdir()
    assert resumable.last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-12"
    assert len(list(tmp_path.glob("checkpoint-*"))) == 7  # looking deletes nothing
    assert resumable.last_complete_checkpoint(tmp_path, discard_incomplete=True) == tmp_path / "checkpoint-12"
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == \
        ["checkpoint-12", "checkpoint-4", "checkpoint-8", "checkpoint-x"]
    assert resumable.last_complete_checkpoint(tmp_path / "none") is None
    assert resumable.checkpoint_step(tmp_path / "checkpoint-12") == 12
    assert resumable.checkpoint_step(tmp_path / "checkpoint-x") is None


# --- resuming the same run only -------------------------------------------------------------------


def test_resume_point_continues_only_the_same_run(fake_checkpoint, tmp_path, caplog):
    log = tmp_path / "diagnostics.jsonl"
    files = resumable.RunFiles(tmp_path / "ck", tmp_path / "final", logs=(log,))
    run = {"settings": {"learning_rate": 1e-4, "seed": 1}, "code": "md5:a"}
    assert resumable.resume_point(files, run, "sft") is None  # nothing yet: step 0
    assert json.loads(files.record.read_text()) == run
    fake_checkpoint(files.checkpoint_dir, 2, 2)
    fake_checkpoint(files.checkpoint_dir, 3, 3)
    fake_checkpoint(files.checkpoint_dir, 4)  # cut mid-save
    log.write_text('{"step": 1}\n')
    assert resumable.resume_point(files, run, "sft") == files.checkpoint_dir / "checkpoint-3"
    assert not (files.checkpoint_dir / "checkpoint-4").exists() and log.exists()

    other = {**run, "settings": {"learning_rate": 2e-4, "seed": 1}}
    with caplog.at_level(logging.WARNING, logger="r1repro.resumable"):
        assert resumable.resume_point(files, other, "sft") is None  # other settings: start over
    assert "settings.learning_rate changed" in caplog.text and "seed" not in caplog.text
    assert not list(files.checkpoint_dir.glob("checkpoint-*")) and not log.exists()
    assert json.loads(files.record.read_text()) == other


def test_checkpoints_without_a_record_of_their_run_are_not_resumed(fake_checkpoint, tmp_path, caplog):
    files = resumable.RunFiles(tmp_path / "ck", tmp_path / "final")
    fake_checkpoint(files.checkpoint_dir, 2, 2)
    with caplog.at_level(logging.WARNING, logger="r1repro.resumable"):
        assert resumable.resume_point(files, {"code": "md5:a"}, "rl grpo") is None
    assert "rl grpo" in caplog.text and "no record" in caplog.text


def test_a_finished_model_is_recognised_by_its_record(tmp_path):
    final = tmp_path / "final"
    expected = {"settings": {"lora": None, "target_modules": ("q_proj",)}, "epochs": 1.0, "max_steps": -1}
    assert resumable.finished_record(final, expected) is None  # no model yet
    final.mkdir()
    io.atomic_write_json(final / resumable.FINAL_RECORD, {**expected, "global_step": 4})
    assert resumable.finished_record(final, expected)["global_step"] == 4  # tuples compared as JSON lists
    assert resumable.finished_record(final, {**expected, "epochs": 2.0}) is None
    (final / resumable.FINAL_RECORD).write_text('{"glo')
    assert resumable.finished_record(final, expected) is None


# --- the code part of the fingerprint -------------------------------------------------------------


@pytest.fixture
def package_copy(tmp_path, monkeypatch) -> Path:
    """A copy of src/r1repro whose files `io.source_digest` reads instead of the real ones."""
    real = Path(io.__file__).parent
    copy = tmp_path / "r1repro"
    shutil.copytree(real, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(io, "__file__", str(copy / "io.py"))
    return copy


def _edit(path: Path) -> None:
    path.write_text(path.read_text(encoding="utf-8") + "\n# edited\n", encoding="utf-8")


@pytest.mark.parametrize("training", ["rl", "sft"])
def test_the_code_digest_covers_every_module_the_training_imports_and_no_other(training, package_copy):
    closure = import_closure({training})
    # Reached only through imports: none of these was on the old hand-kept lists.
    assert {"resumable", "distributed", "io", "config", "__init__"} <= closure
    assert {"probe", "report", "plots"}.isdisjoint(closure)
    digest = resumable.code_digest(training)
    assert digest == resumable.code_digest(training)
    for outside in ("probe", "report"):
        _edit(package_copy / f"{outside}.py")
    assert resumable.code_digest(training) == digest  # code the training never runs does not count
    for module in ("io", "resumable", training):
        _edit(package_copy / f"{module}.py")
        assert resumable.code_digest(training) != digest, f"a change to {module}.py went unnoticed"
        digest = resumable.code_digest(training)


def test_the_rl_fingerprint_code_follows_the_diagnostics_and_reward_modules(package_copy):
    before = resumable.fingerprint("rl", "some/hub-model", {"run": "grpo"})
    assert before["init_weights"] == "some/hub-model" and "launch" not in before
    for module in ("rl_diagnostics", "rl_heldout", "rewards", "grading", "rollout"):
        _edit(package_copy / f"{module}.py")
        after = resumable.fingerprint("rl", "some/hub-model", {"run": "grpo"})
        assert after["code"] != before["code"], module
        before = after
