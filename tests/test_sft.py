"""Tests for r1repro.sft on a tiny random-weight Llama with the real SmolLM2 tokenizer.

Checked: the collated labels mask the prompt, a few steps change every parameter, LoRA is merged
into a plain saved model, training resumes from the last checkpoint at its step (and refuses one
missing its optimizer state), a failed run leaves the previous final model untouched, and the loss is
logged with DVCLive. The model and the examples come from tests/conftest.py.

    pytest tests/test_sft.py -q
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, TrainerCallback

from r1repro import resumable, sft
from r1repro.config import CommonParams, LoraParams, SftParams
from r1repro.modeling import load_tokenizer

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
pytestmark = pytest.mark.skipif(not (BASE / "config.json").is_file(), reason="models/base missing")


@pytest.fixture(scope="module")
def tokenizer(tiny_model):
    return load_tokenizer(str(tiny_model))


@pytest.fixture(scope="module")
def dataset(sft_rows) -> list[dict]:
    return sft_rows


def weights(folder: Path) -> dict[str, torch.Tensor]:
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def files_digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def logged_steps(live_dir: Path) -> list[int]:
    lines = (live_dir / "plots" / "metrics" / "train" / "loss.tsv").read_text().split("\n")[1:]
    return [int(line.split("\t")[0]) for line in lines if line]


QUICK = sft.TrainSettings(max_steps=2, batch_size=2, learning_rate=1e-2, save_steps=1, seed=0)


class Recorder(TrainerCallback):
    def __init__(self):
        self.steps = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.steps.append(state.global_step)


class FailAt(TrainerCallback):
    """Simulates a crash (killed job, full disk) right after the checkpoint of step `step` is saved."""

    def __init__(self, step: int):
        self.step = step

    def on_save(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            raise RuntimeError("simulated crash")


# ---------------------------------------------------------------------------------------------------
# Quick tests (no training)
# ---------------------------------------------------------------------------------------------------


def test_collated_labels_mask_the_prompt(tiny_model, dataset, tokenizer, tmp_path):
    trainer = sft.build_trainer(dataset, str(tiny_model), tmp_path / "ck", QUICK, device="cpu", progress=False)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for row, ids, labels, mask in zip(dataset, batch["input_ids"], batch["labels"], batch["attention_mask"]):
        prompt_len = len(tokenizer(row["prompt"])["input_ids"])
        real = int(mask.sum())
        assert (labels[:prompt_len] == -100).all()                          # prompt: no loss
        assert torch.equal(labels[prompt_len:real], ids[prompt_len:real])  # completion: all of it
        assert (labels[real:] == -100).all()                                # padding: no loss
        assert tokenizer.decode(ids[prompt_len:real]) == row["completion"]
        assert tokenizer.decode(ids[:prompt_len]) == row["prompt"]


def test_settings_from_params():
    cfg = SftParams(learning_rate=3e-4, epochs=2.0, lr_scheduler="constant", save_steps=3,
                    lora=LoraParams(enabled=True, r=4))
    settings = sft.TrainSettings.from_params(cfg, CommonParams(seed=9, device="cpu", dtype="bfloat16"))
    assert (settings.learning_rate, settings.epochs, settings.lr_scheduler, settings.seed) == (3e-4, 2.0, "constant", 9)
    assert settings.lora.r == 4 and settings.save_steps == 3
    assert settings.bf16 is True  # bf16 autocast over float32 weights, on CPU as on GPU
    assert sft.TrainSettings.from_params(cfg, CommonParams(device="cpu")).bf16 is False
    assert "max_steps" not in settings.identity() and settings.identity()["lora"]["r"] == 4


def test_params_refuse_training_rows_that_overlap_the_heldout_rows():
    from pydantic import ValidationError

    from r1repro.config import BenchmarkSubset

    asdiv = "train/asdiv.jsonl"
    with pytest.raises(ValidationError, match="share rows of train/asdiv.jsonl"):
        SftParams(train_questions=BenchmarkSubset(file=asdiv, limit=100),
                  heldout=BenchmarkSubset(file=asdiv, limit=10, offset=95))
    SftParams(train_questions=BenchmarkSubset(file=asdiv, limit=100),
              heldout=BenchmarkSubset(file=asdiv, limit=10, offset=100))
    SftParams(train_questions=BenchmarkSubset(file="train/gsm8k.jsonl"), heldout=BenchmarkSubset(file=asdiv))


def test_empty_dataset_is_refused(tiny_model, tmp_path):
    with pytest.raises(ValueError, match="non-empty prompt/completion"):
        sft.train_sft([], str(tiny_model), tmp_path / "out", QUICK, device="cpu", progress=False)


# ---------------------------------------------------------------------------------------------------
# Training runs (2-8 s each on 2 CPU cores: short examples, a 32-wide model)
# ---------------------------------------------------------------------------------------------------


def test_full_fine_tune_changes_every_parameter(tiny_model, dataset, tmp_path):
    before = weights(tiny_model)
    out, live = tmp_path / "sft", tmp_path / "live"
    result = sft.train_sft(dataset, str(tiny_model), out, QUICK, live_dir=live, device="cpu", progress=False)
    after = weights(out)
    assert after.keys() == before.keys()
    unchanged = [name for name in before if torch.equal(before[name], after[name])]
    assert not unchanged
    assert result.global_step == 2 and result.start_step == 0 and [s for s, _ in result.losses] == [1, 2]
    assert result.examples == 4 and result.truncated == 0
    assert logged_steps(live) == [1, 2]
    assert json.loads((live / "metrics.json").read_text())["train"]["loss"] == pytest.approx(result.losses[-1][1])
    assert (out / "tokenizer.json").is_file() and (out / resumable.FINAL_RECORD).is_file()
    assert not (tmp_path / "sft-checkpoints").exists()  # removed once the final model is in place


def test_lora_is_merged_into_a_plain_model(tiny_model, dataset, tmp_path):
    before = weights(tiny_model)
    settings = sft.TrainSettings(max_steps=2, batch_size=2, learning_rate=1e-2, seed=0,
                                 lora=LoraParams(enabled=True, r=4, alpha=8, dropout=0.0,
                                                 target_modules=["q_proj", "v_proj"]))
    out = tmp_path / "sft"
    sft.train_sft(dataset, str(tiny_model), out, settings, device="cpu", progress=False)
    assert not (out / "adapter_config.json").exists()
    after = weights(out)
    assert after.keys() == before.keys()  # no lora_A / lora_B left: a plain Llama
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {n for n in before if "q_proj" in n or "v_proj" in n}


def test_resume_continues_from_the_last_checkpoint(tiny_model, dataset, tmp_path):
    out, live = tmp_path / "sft", tmp_path / "live"
    first = sft.train_sft(dataset, str(tiny_model), out, QUICK, live_dir=live, device="cpu",
                          keep_checkpoints=True, progress=False)
    assert first.global_step == 2 and (tmp_path / "sft-checkpoints" / "checkpoint-2").is_dir()
    recorder = Recorder()
    longer = dataclasses.replace(QUICK, max_steps=4)
    second = sft.train_sft(dataset, str(tiny_model), out, longer, live_dir=live, device="cpu",
                           callbacks=[recorder], progress=False)
    assert (second.start_step, second.global_step) == (2, 4)
    assert recorder.steps == [3, 4] and [s for s, _ in second.losses] == [3, 4]
    assert logged_steps(live) == [1, 2, 3, 4]  # the curve continues, no step twice
    assert json.loads((out / resumable.FINAL_RECORD).read_text())["global_step"] == 4


def test_a_checkpoint_missing_its_optimizer_state_is_refused_not_resumed(tiny_model, dataset, tmp_path, caplog):
    out, checkpoints = tmp_path / "sft", tmp_path / "sft-checkpoints"
    sft.train_sft(dataset, str(tiny_model), out, QUICK, device="cpu", keep_checkpoints=True, progress=False)
    (checkpoints / "checkpoint-2" / "optimizer.pt").unlink()  # as a kill between two files leaves it
    longer = dataclasses.replace(QUICK, max_steps=3)
    with caplog.at_level(logging.WARNING, logger="r1repro.resumable"):
        rerun = sft.train_sft(dataset, str(tiny_model), out, longer, device="cpu", keep_checkpoints=True,
                              progress=False)
    assert (rerun.start_step, rerun.global_step) == (0, 3)  # from step 0, not from the torn checkpoint
    assert "removing incomplete checkpoint" in caplog.text and "checkpoint-2" in caplog.text
    assert resumable.is_complete_checkpoint(checkpoints / "checkpoint-3")


def test_crash_keeps_the_good_model_and_the_rerun_resumes(tiny_model, dataset, tmp_path):
    out, live = tmp_path / "sft", tmp_path / "live"
    sft.train_sft(dataset, str(tiny_model), out, QUICK, device="cpu", progress=False)
    good = files_digest(out)
    longer = dataclasses.replace(QUICK, max_steps=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        sft.train_sft(dataset, str(tiny_model), out, longer, live_dir=live, device="cpu",
                      callbacks=[FailAt(2)], progress=False)
    assert files_digest(out) == good  # the failed run wrote nothing over the last good model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["live", "sft", "sft-checkpoints"]  # no staging left
    rerun = sft.train_sft(dataset, str(tiny_model), out, longer, live_dir=live, device="cpu", progress=False)
    assert (rerun.start_step, rerun.global_step) == (2, 3)
    assert logged_steps(live) == [1, 2, 3]
    assert files_digest(out) != good


def test_bf16_on_a_cpu_without_native_bf16_warns_and_names_the_fix(monkeypatch, caplog):
    from r1repro.modeling import bf16_mixed_precision

    monkeypatch.setattr("r1repro.cpu.native_bf16_cpu", lambda: False)
    with caplog.at_level(logging.WARNING, logger="r1repro.modeling"):
        assert bf16_mixed_precision("bfloat16", "cpu") is True
        assert bf16_mixed_precision("float32", "cpu") is False
    assert [r.getMessage() for r in caplog.records] == [
        "common.dtype: bfloat16 on a CPU without native bf16 (AMX or avx512_bf16) is emulated and slower "
        "than float32; set common.dtype: float32 on this machine"]
