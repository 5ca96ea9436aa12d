"""bench/pipeline.py's arithmetic: parameter and FLOP counts from a config, stage rows from protocols."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from r1repro import roofline
from r1repro.io import atomic_write_json


def test_parameter_count_matches_the_weights_file(base_model_dir: Path) -> None:
    from safetensors import safe_open

    config = json.loads((base_model_dir / "config.json").read_text())
    with safe_open(str(base_model_dir / "model.safetensors"), "pt") as weights:
        stored = sum(_numel(weights.get_slice(name).get_shape()) for name in weights.keys())
    assert roofline.parameter_count(config) == stored


def _numel(shape) -> int:
    total = 1
    for dim in shape:
        total *= dim
    return total


def test_flops_and_bytes_per_token_by_hand() -> None:
    config = {"hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 16, "vocab_size": 10,
              "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": True}
    # per layer: q,o 2*64, k,v 2*8*4, mlp 3*8*16, norms 2*8 -> 128+64+384+16 = 592; embeddings 80; final norm 8
    assert roofline.parameter_count(config) == 2 * 592 + 80 + 8
    assert roofline.flops_per_token(config, context=5) == 2 * (2 * 592 + 80 + 8) + 4 * 2 * 8 * 5
    assert roofline.bytes_per_token(config, context=5, batch=4, dtype_bytes=4) == (1272 * 4 / 4 + 2 * 2 * 4 * 5 * 4)


def test_stage_rows_read_wall_time_and_generation(tmp_path: Path) -> None:
    atomic_write_json(tmp_path / "probe" / "protocol.json", {
        "wall_s": 100.0, "common": {"dtype": "float32"}, "generation": {"tokens": 5000, "seconds": 50.0}})
    atomic_write_json(tmp_path / "rl" / "protocol.json", {
        "wall_s": 300.0, "common": {"dtype": "float32"}, "generation": {"tokens": 1000, "seconds": 10.0},
        "training_rollouts": {"tokens": 3000, "seconds": 30.0}})
    config = {"hidden_size": 8, "num_hidden_layers": 2, "intermediate_size": 16, "vocab_size": 10,
              "num_attention_heads": 2}
    machine = {"matmul_gflops": {"float32": 1.0, "bfloat16": 1.0}, "bandwidth_gbs": 1.0}
    rows = {r["stage"]: r for r in roofline.stage_rows(tmp_path, config, machine, context=4, batch=2)}
    assert rows["probe"]["tokens_per_s"] == 100.0 and rows["probe"]["wall_s"] == 100.0
    assert rows["rl"]["tokens"] == 4000 and rows["rl"]["tokens_per_s"] == 100.0
    assert rows["probe"]["compute_fraction"] == pytest.approx(100 * roofline.flops_per_token(config, 4) / 1e9)
    assert rows["sft"]["wall_s"] is None and rows["sft"]["tokens_per_s"] is None
    assert rows["probe"]["peak_rss_gb"] is None  # protocols written before stages recorded it


@pytest.mark.parametrize("flags, budget", [
    ({"amx_bf16": True, "amx_tile": True, "avx512_bf16": True}, 1800),  # the Intel Xeon with AMX
    ({"amx_bf16": False, "amx_tile": False, "avx512_bf16": True}, 2700),  # the AMD EPYC with avx512_bf16
    ({"avx512f": True, "avx2": True}, None),  # no native bf16: no budget was set
])
def test_the_stage_time_budget_follows_the_cpu(flags: dict, budget: int | None) -> None:
    assert roofline.stage_time_budget(flags)[0] == budget


def test_the_script_prints_the_total_against_the_target(tmp_path: Path, base_model_dir: Path, repo_root: Path) -> None:
    atomic_write_json(tmp_path / "results" / "sft" / "protocol.json", {"wall_s": 900.0, "common": {},
                                                                      "peak_rss_gb": 3.2})
    atomic_write_json(tmp_path / "results" / "eval" / "protocol.json", {"wall_s": 1200.0, "common": {},
                                                                       "peak_rss_gb": 8.5})
    out = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, str(repo_root / "bench" / "pipeline.py"), "--results",
                             str(tmp_path / "results"), "--model", str(base_model_dir), "--seconds", "0.1",
                             "--out", str(out)], capture_output=True, text=True, cwd=repo_root)
    assert result.returncode == 0, result.stderr
    from r1repro.cpu import cpu_info

    budget, budget_for = roofline.stage_time_budget(cpu_info()["cpu_flags"])
    expected = ("total stage time: 2100 s (35.0 min)" + (f"; {budget_for}" if budget is None else
                f", {'under' if 2100 <= budget else 'over'} the {budget} s budget for {budget_for}"))
    assert expected in result.stdout
    assert "peak memory of the largest process: 8.5 GB, over the 8 GB budget" in result.stdout
    written = json.loads(out.read_text())
    assert (written["total_s"], written["budget_s"], written["peak_rss_gb"]) == (2100.0, budget, 8.5)
