"""Distillation students and the distill-vs-RL table.

Checked: a student built from a config is a Qwen2 with the teacher tokenizer's vocabulary and EOS,
stops generating at `<|im_end|>`, is changed by a few SFT steps through the same path as a pretrained
student, and carries "not_pretrained" in its label; a finished student is not trained again by the same
run (a rerun after a kill) but is by a changed one; bad student entries are named; the distill-vs-RL
table's verdict follows the numbers either way and a missing model gives a "not run" line.

    pytest tests/test_students.py -q
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import get_args

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

from r1repro import distill, evaluation, templates
from r1repro.config import (NOT_PRETRAINED_MARK, CommonParams, ConfigError, DistillParams, ScratchArchitecture,
                            StudentSpec, load_params, validate)
from r1repro.modeling import load_tokenizer

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
needs_base = pytest.mark.skipif(not (BASE / "config.json").is_file(), reason="models/base missing")


@pytest.fixture(scope="module")
def scratch(tmp_path_factory, tiny_size) -> Path:
    """A tiny Qwen2 student (tests/conftest.py's size) built around SmolLM2's tokenizer, saved to disk."""
    spec = StudentSpec(architecture="qwen2", config=tiny_size, tokenizer=str(BASE), note="random init")
    return distill.build_scratch_student(spec, tmp_path_factory.mktemp("students") / "s", "r1_chat", seed=0)


# ---------------------------------------------------------------------------------------------------
# The student built from a config
# ---------------------------------------------------------------------------------------------------


@needs_base
def test_scratch_student_is_a_qwen2_with_the_tokenizers_vocab_and_eos(scratch: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(scratch)
    tokenizer = load_tokenizer(str(scratch))
    assert type(model).__name__ == "Qwen2ForCausalLM" and model.config.model_type == "qwen2"
    assert model.config.vocab_size == len(tokenizer) == 49152
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # tied
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.eos_token == "<|im_end|>" and im_end == 2
    assert model.config.eos_token_id == im_end and model.generation_config.eos_token_id == im_end
    assert json.loads((scratch / distill.STUDENT_RECORD).read_text())["pretrained"] is False
    # The exact strings it is trained and prompted with: SmolLM2's chat template, ended by <|im_end|>.
    assert templates.end_of_turn("r1_chat", tokenizer) == "<|im_end|>"
    pair = templates.render_training_example("r1_chat", "2 + 2?", "<think>\n2 + 2 = 4.\n</think>\n"
                                             "<answer>\\boxed{4}</answer>", tokenizer)
    assert pair["prompt"].endswith("<|im_start|>user\n2 + 2?<|im_end|>\n<|im_start|>assistant\n<think>")
    assert pair["completion"] == "\n2 + 2 = 4.\n</think>\n<answer>\\boxed{4}</answer><|im_end|>"


@needs_base
def test_scratch_student_generation_stops_at_im_end(scratch: Path) -> None:
    """With weights rigged so <|im_end|> is the likeliest token, generate() stops right after it."""
    model = AutoModelForCausalLM.from_pretrained(scratch)
    tokenizer = load_tokenizer(str(scratch))
    ids = tokenizer(templates.render_prompt("r1_chat", "2 + 2?", tokenizer), return_tensors="pt").input_ids
    with torch.no_grad():
        for layer in model.model.layers:  # the residual stream becomes the last token's embedding
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
        embeddings = model.get_input_embeddings().weight
        embeddings[tokenizer.eos_token_id] = 50 * embeddings[ids[0, -1]]
    out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False)
    assert tokenizer.decode(out[0, ids.shape[1]:]) == "<|im_end|>"


@needs_base
def test_scratch_student_is_seeded(scratch: Path, tiny_size, tmp_path: Path) -> None:
    spec = StudentSpec(architecture="qwen2", config=tiny_size, tokenizer=str(BASE))
    again = distill.build_scratch_student(spec, tmp_path / "again", "r1_chat", seed=0)
    a, b = (AutoModelForCausalLM.from_pretrained(p).state_dict() for p in (scratch, again))
    assert all(torch.equal(a[k], b[k]) for k in a)


@needs_base
def test_sft_steps_change_every_parameter_of_the_scratch_student(scratch: Path, worked_traces,
                                                                 tmp_path: Path) -> None:
    cfg = DistillParams(output_dir=str(tmp_path), epochs=1.0, batch_size=2, learning_rate=1e-2)
    result = distill.train_student("qwen2_scratch_not_pretrained", str(scratch), worked_traces, cfg,
                                   CommonParams(device="cpu"))
    before = dict(AutoModelForCausalLM.from_pretrained(scratch).named_parameters())
    after = dict(AutoModelForCausalLM.from_pretrained(result.output_dir).named_parameters())
    assert result.global_step == 2 and result.output_dir == tmp_path / "qwen2_scratch_not_pretrained"
    assert before.keys() == after.keys()
    assert not [name for name in before if torch.equal(before[name], after[name])]


@needs_base
def test_a_finished_student_is_reused_only_by_the_same_run(scratch: Path, worked_traces, tiny_size,
                                                           tmp_path: Path) -> None:
    """A rerun (after a kill) skips a student whose final model this very run wrote; other settings,
    or other starting weights under the same path, train it again."""
    start = tmp_path / "init"
    shutil.copytree(scratch, start)
    cfg = DistillParams(output_dir=str(tmp_path / "out"), epochs=1.0, batch_size=2, learning_rate=1e-2,
                        save_steps=1)
    common = CommonParams(device="cpu")
    first = distill.train_student("s_not_pretrained", str(start), worked_traces, cfg, common)
    weights = tmp_path / "out" / "s_not_pretrained" / "model.safetensors"
    written = weights.stat().st_mtime_ns
    again = distill.train_student("s_not_pretrained", str(start), worked_traces, cfg, common)
    assert (first.reused, again.reused) == (False, True)
    assert again.global_step == again.start_step == first.global_step == 2 and again.train_loss == first.train_loss
    assert weights.stat().st_mtime_ns == written  # read back, not written again
    assert not (tmp_path / "out" / "s_not_pretrained-checkpoints").exists()
    changed = cfg.model_copy(update={"learning_rate": 5e-3})
    assert not distill.train_student("s_not_pretrained", str(start), worked_traces, changed, common).reused
    assert distill.train_student("s_not_pretrained", str(start), worked_traces, changed, common).reused
    spec = StudentSpec(architecture="qwen2", config=tiny_size, tokenizer=str(BASE))
    distill.build_scratch_student(spec, start, "r1_chat", seed=1)  # same path, other weights
    assert not distill.train_student("s_not_pretrained", str(start), worked_traces, changed, common).reused


def test_prepare_student_passes_pretrained_weights_through(tmp_path: Path) -> None:
    cfg = DistillParams(output_dir=str(tmp_path))
    assert distill.prepare_student("llama", StudentSpec(init="models/base"), cfg, CommonParams()) == "models/base"
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# Student entries in params
# ---------------------------------------------------------------------------------------------------


def test_every_scratch_architecture_has_a_builder() -> None:
    assert set(distill.SCRATCH_BUILDERS) == set(get_args(ScratchArchitecture))


def test_shipped_students_are_labelled_and_evaluated(repo_root: Path) -> None:
    params = load_params(repo_root)
    students = params.distill.students
    assert students["llama_smollm2"].pretrained
    scratch = [label for label, spec in students.items() if not spec.pretrained]
    assert scratch == ["qwen2_scratch_not_pretrained"]
    assert students["qwen2_scratch_not_pretrained"].architecture == "qwen2"
    # The evaluate stage reads each student under the same label, "not_pretrained" included.
    evaluated = {f"distill_{label}": f"models/distill/{label}" for label in students}
    assert evaluated.items() <= params.evaluate.models.items()
    gpu = load_params(repo_root, profile="gpu").distill.students
    assert gpu and all(spec.pretrained for spec in gpu.values())


def test_plain_string_student_means_init() -> None:
    assert DistillParams(students={"llama": "models/base"}).students["llama"] == StudentSpec(init="models/base")


@pytest.fixture()
def params_dict(repo_root: Path) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


@pytest.mark.parametrize("label, entry, named", [
    ("qwen2_scratch", {"architecture": "qwen2", "tokenizer": "models/base"},
     "distill.students.qwen2_scratch: a student built from a config has random weights; "
     f"its label must contain '{NOT_PRETRAINED_MARK}'"),
    ("q_not_pretrained", {"architecture": "qwen2", "tokenizer": "models/base", "config": {"hidden_size": 250}},
     "distill.students.q_not_pretrained.config: Value error, hidden_size (250) must be a multiple of"),
    ("q_not_pretrained", {"architecture": "gpt2", "tokenizer": "models/base"},
     "distill.students.q_not_pretrained.architecture:"),
    ("q_not_pretrained", {"architecture": "qwen2"},
     "distill.students.q_not_pretrained: Value error, architecture 'qwen2' needs `tokenizer`"),
    ("both", {"init": "models/base", "architecture": "qwen2", "tokenizer": "models/base"},
     "distill.students.both: Value error, give exactly one of `init`"),
    ("llama", {"init": "models/base", "hidden_size": 64}, "distill.students.llama.hidden_size: unknown key"),
])
def test_bad_student_entry_is_named(params_dict: dict, label: str, entry: dict, named: str) -> None:
    params_dict["distill"]["students"] = {label: entry}
    with pytest.raises(ConfigError) as err:
        validate(params_dict)
    assert named in str(err.value)


# ---------------------------------------------------------------------------------------------------
# Distillation vs RL
# ---------------------------------------------------------------------------------------------------


def hand_made_metrics(rl: tuple[float, float, float], distilled: tuple[float, float, float]) -> dict:
    """evaluate's metrics.json shape for base, dr_grpo and a distilled student on one benchmark."""
    values = {"base": (0.0, 0.0, 0.0), "dr_grpo": rl, "distill_s": distilled}
    metrics: dict = {key: {} for key in ("mean@k", "mean@k_low", "mean@k_high", "n_questions", "k")}
    for model, (mean, low, high) in values.items():
        for key, value in (("mean@k", mean), ("mean@k_low", low), ("mean@k_high", high),
                           ("n_questions", 32.0), ("k", 4.0)):
            metrics[key][model] = {"asdiv_heldout": value}
    return metrics


def test_distill_vs_rl_table_shows_both_routes_and_leaves_the_verdict_to_the_paired_findings() -> None:
    table = evaluation.distill_vs_rl_table(hand_made_metrics((0.2, 0.1, 0.3), (0.5, 0.4, 0.6)),
                                           rl="dr_grpo", distilled="distill_s", start="base")
    assert "| benchmark | n | k | base | dr_grpo | distill_s | higher |" in table
    assert "| asdiv_heldout | 32 | 4 | 0.0 [0.0, 0.0] | 20.0 [10.0, 30.0] | 50.0 [40.0, 60.0] | distill_s |" in table
    assert "findings table (row distill_vs_rl)" in table and "overlap on every" not in table
    table = evaluation.distill_vs_rl_table(hand_made_metrics((0.3, 0.1, 0.5), (0.25, 0.05, 0.45)),
                                           rl="dr_grpo", distilled="distill_s")
    assert "| dr_grpo |\n" in table  # the RL route higher here


def test_distill_vs_rl_missing_model_is_not_run() -> None:
    metrics = hand_made_metrics((0.3, 0.1, 0.5), (0.2, 0.1, 0.3))
    table = evaluation.distill_vs_rl_table(metrics, rl="dr_grpo", distilled="distill_other", start="base")
    assert "Not run: no evaluate results for distill_other" in table and "|" not in table
