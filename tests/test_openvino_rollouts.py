"""RL rollouts by OpenVINO (r1repro.openvino_rollouts): the engine decodes from the weights last put
into it (its log-probs match the policy that has them, not the one before), LoRA merged as PEFT
merges it, and a GRPO step logs the sync, the decode and the engine/policy log-prob check.

Runs on a tiny random model whose every tensor is varied (a fresh model's norms are all ones, which
no constant-to-tensor map can tell apart: that case is an error, tested too).
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path

import pytest
import torch

from r1repro import openvino_engine, rl
from r1repro.config import CommonParams, ConfigError, LoraParams, RlParams
from r1repro.modeling import load_model, load_tokenizer
from r1repro.openvino_rollouts import OpenVinoRollouts, logprob_check, merged_weights

pytestmark = [
    pytest.mark.skipif(not (os.environ.get(openvino_engine.EXPORT_PYTHON_ENV)
                            or (openvino_engine.DEFAULT_EXPORT_VENV / "bin" / "python").is_file()),
                       reason="no OpenVINO exporter venv: run `make venv-openvino` (make test builds it)"),
    pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning"),
]
ROWS = [{"problem": f"What is {i} + {i}?", "answer": str(2 * i), "id": f"q{i}"} for i in range(4)]


def varied(model_dir: Path, folder: Path, seed: int) -> Path:
    """A copy of a model folder with every tensor scaled by 1 + 0.1 * noise."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(model_dir, folder)
    generator = torch.Generator().manual_seed(seed)
    weights = load_file(folder / "model.safetensors")
    save_file({name: (value * (1 + 0.1 * torch.randn(value.shape, generator=generator))).contiguous()
               for name, value in weights.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino_cache")


@pytest.fixture(scope="module")
def policy_dir(tiny_model, tmp_path_factory) -> Path:
    return varied(tiny_model, tmp_path_factory.mktemp("policy") / "model", seed=1)


def test_the_engine_decodes_from_the_weights_put_into_it(policy_dir, cache_dir, tmp_path):
    before = load_model(str(policy_dir), dtype="float32", device="cpu")
    after = load_model(str(varied(policy_dir, tmp_path / "after", seed=2)), dtype="float32", device="cpu")
    prompt = load_tokenizer(str(policy_dir))("What is 2 + 2? Answer:")["input_ids"]
    prompts, seeds = [prompt] * 4, [11, 12, 13, 14]
    kwargs = dict(temperature=0.7, top_p=0.9, max_new_tokens=8, stop_token_ids=[2])
    engine = OpenVinoRollouts(str(policy_dir), dtype="float32", cache_dir=cache_dir)
    try:
        with pytest.raises(RuntimeError, match="before sync"):
            engine.generate(prompts, seeds, **kwargs)
        engine.sync(merged_weights(before))
        first = engine.generate(prompts, seeds, **kwargs)
        assert first == engine.generate(prompts, seeds, **kwargs)  # seeded
        assert len({tuple(r.ids) for r in first}) > 1  # rows draw from their own streams
        assert logprob_check(before, prompts, first, 4, 0.7, 0.9)["logprob_gap_per_token"] < 1e-4
        engine.sync(merged_weights(after))
        second = engine.generate(prompts, seeds, **kwargs)
        assert logprob_check(after, prompts, second, 4, 0.7, 0.9)["logprob_gap_per_token"] < 1e-4
        assert logprob_check(before, prompts, second, 4, 0.7, 0.9)["logprob_gap_per_token"] > 1e-3
    finally:
        engine.close()
    assert not engine.folder.exists()


def test_merged_weights_are_peft_merge(policy_dir):
    from peft import LoraConfig, get_peft_model

    model = load_model(str(policy_dir), dtype="float32", device="cpu")
    plain = merged_weights(model)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in peft_model.named_parameters():
            if "lora_B" in name:
                parameter.normal_()  # B starts at zero: the merge would change nothing
    got = merged_weights(peft_model)
    want = copy.deepcopy(peft_model).merge_and_unload().state_dict()
    assert set(got) == set(want) == set(plain)
    assert all(torch.equal(got[name], want[name]) for name in want)
    changed = [name for name in want if not torch.equal(got[name], plain[name])]
    assert changed and all(("q_proj" in name or "down_proj" in name) for name in changed)


def test_a_grpo_step_samples_with_openvino_and_logs_the_check(policy_dir, cache_dir, tmp_path, monkeypatch):
    cfg = RlParams(init_model=str(policy_dir), output_dir=str(tmp_path / "rl"), template="r1", max_steps=2,
                   num_generations=2, prompts_per_step=2, max_completion_length=8, save_steps=1,
                   reward_weights={"accuracy": 1.0, "format": 0.0}, lora=LoraParams(enabled=True, dropout=0.0))
    original = rl.lora_config

    def lora_away_from_zero(params):  # PEFT's B starts at zero, so an unmerged LoRA would go unseen
        config = original(params)
        config.init_lora_weights = False
        return config

    monkeypatch.setattr(rl, "lora_config", lora_away_from_zero)
    common = CommonParams(backend="openvino", device="cpu", seed=3, openvino_cache_dir=str(cache_dir))
    result = rl.train_run(cfg, "dr_grpo", common, rows=ROWS)
    assert result.global_step == 2 and result.rollout["engine"] == "openvino"
    rows = [row for row in result.diagnostics if "groups" in row]
    assert [row["step"] for row in rows] == [1, 2]
    for row in rows:
        assert row["rollout_sync_s"] > 0 and row["rollout_generate_s"] > 0
        assert row["engine_logprob_gap_per_token"] < 1e-4  # LoRA (random, not zero) merged into the engine
        assert 0.999 < row["engine_importance_ratio_min"] <= row["engine_importance_ratio_max"] < 1.001
    assert not list(cache_dir.glob(".rollouts-*"))  # the engine's IR folder is gone


def test_a_conversion_cached_without_a_map_gets_one(policy_dir, tmp_path):
    """Conversions cached before weight maps were kept still serve as the rollout engine's graph."""
    cache = tmp_path / "cache"
    folder = openvino_engine.converted_model(policy_dir, cache)
    (folder / openvino_engine.WEIGHT_MAP_FILE).unlink()
    shutil.rmtree(cache / openvino_engine.GRAPHS_DIR)
    assert openvino_engine.weights_template(policy_dir, cache) == folder
    assert (folder / openvino_engine.WEIGHT_MAP_FILE).is_file()


def test_a_graph_without_a_one_to_one_map_is_a_clear_error(tiny_model, tmp_path):
    """A fresh model's norm weights are all ones: which constant holds which cannot be told."""
    with pytest.raises(ConfigError, match="one-to-one map.*transformers_fast"):
        openvino_engine.weights_template(tiny_model, tmp_path / "cache")
