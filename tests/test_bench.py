"""The benchmark helpers (r1repro.bench) and the benchmark scripts at their smallest settings.

The scripts are benchmarks, not tests: here they only have to run end to end on a toy model and
write the JSON the README describes (~30 s on 2 CPU cores; two_runs, marked slow, ~40 s more).

    pytest tests/test_bench.py -q
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from r1repro import bench, roofline

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings(  # raised inside TRL 1.16 on transformers 5, not by us
    "ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")


def load_script(name: str):
    """bench/<name>.py as a module (bench/ is a folder of scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_architecture_is_qwen25_math_1_5b():
    arch = bench.architecture()
    assert (arch["hidden_size"], arch["num_hidden_layers"], arch["num_attention_heads"],
            arch["num_key_value_heads"], arch["intermediate_size"], arch["vocab_size"]) == \
           (1536, 28, 12, 2, 8960, 151936)
    assert arch["tie_word_embeddings"] is True and arch is not bench.QWEN25_MATH_1_5B


def test_word_tokenizer_maps_words_to_ids_and_puts_eos_outside_the_vocabulary():
    tokenizer = bench.word_tokenizer(50)
    assert tokenizer("t7 t49 t2")["input_ids"] == [7, 49, 2]
    assert tokenizer("hello t3")["input_ids"] == [1, 3]  # unknown words are <unk>
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 50)
    prompts = bench.random_prompts(3, 5, 50, seed=2)
    assert prompts == bench.random_prompts(3, 5, 50, seed=2)
    assert all(len(tokenizer(p)["input_ids"]) == 5 for p in prompts)


def test_kv_bytes_and_roofline_by_hand():
    arch = bench.architecture()
    # 28 layers x (K and V) x 2 KV heads x head_dim 128 x 2 bytes
    assert roofline.kv_bytes_per_token(arch, roofline.DTYPE_BYTES["bfloat16"]) == 28 * 2 * 2 * 128 * 2
    roof = roofline.decode_roofline(arch, weights=3_000_000_000, dtype_bytes=2, rows=2,
                                    prompt_tokens=10, new_tokens=3, bandwidth_gbs=1000.0)
    kv = 2 * 28672 * (10 + 11 + 12)  # rows x bytes/token x context read at steps 0, 1, 2
    assert roof["total_bytes"] == pytest.approx(3 * 3e9 + kv)
    assert roof["min_seconds"] == pytest.approx((3 * 3e9 + kv) / 1e12)
    assert roof["max_tokens_per_s"] == pytest.approx(6 / roof["min_seconds"])


def test_random_model_cannot_end_a_row():
    arch = bench.architecture(tiny=True)
    tokenizer = bench.word_tokenizer(arch["vocab_size"])
    model = bench.random_model(arch, tokenizer, dtype="float32", device="cpu")
    assert model.config.vocab_size == tokenizer.eos_token_id == model.generation_config.eos_token_id
    assert bench.weight_bytes(model) == 4 * sum(p.numel() for p in model.parameters())


def test_rollout_benchmark_runs_and_writes_json(tmp_path):
    out = tmp_path / "rollout.json"
    payload = load_script("rollout").main([
        "--tiny", "--prompts", "3", "--new-tokens", "4", "--prompt-tokens", "5", "--device", "cpu",
        "--dtype", "float32", "--repeats", "1", "--out", str(out),
        "--backends", "transformers,transformers_static,transformers_continuous"])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    results = payload["results"]
    assert set(results) == {"plain_generate", "transformers", "transformers_static",
                            "transformers_continuous"}
    for r in results.values():  # EOS is impossible: every engine decodes every token
        assert r["tokens"] == 3 * 4 and r["tokens_per_s"] > 0 and 0 < r["roofline_fraction"] < 1
        assert r["process_peak_rss_gb"] > 0
    assert results["plain_generate"]["ratio_vs_plain"] == 1.0
    assert payload["fastest_backend"] in results


def test_rollout_benchmark_on_the_pipeline_s_questions_stops_where_rows_end(tmp_path, tiny_model):
    out = tmp_path / "rollout.json"
    payload = load_script("rollout").main([
        "--model", str(tiny_model), "--task-template", "r1_chat", "--prompts", "2", "--samples", "3",
        "--temperature", "1.0", "--new-tokens", "6", "--device", "cpu", "--dtype", "float32", "--repeats", "1",
        "--out", str(out), "--backends", "transformers_fast"])
    workload = payload["workload"]
    assert workload["eos"] == "on" and workload["samples"] == 3 and workload["batch_size"] == 6
    assert set(payload["results"]) == {"plain_generate", "transformers_fast"}
    for r in payload["results"].values():  # 6 rows of at most 6 tokens, counted up to each row's stop
        assert 6 <= r["tokens"] <= 36 and r["tokens_per_s"] > 0
    with pytest.raises(SystemExit, match="--samples"):
        load_script("rollout").main(["--model", str(tiny_model), "--task-template", "r1_chat", "--samples", "2",
                                     "--out", str(out)])


def test_grpo_step_benchmark_takes_several_optimiser_steps_per_rollout(tmp_path):
    out = tmp_path / "grpo_step.json"
    payload = load_script("grpo_step").main([
        "--tiny", "--prompts", "2", "--samples", "2", "--updates", "2", "--rollouts", "1", "--new-tokens", "4",
        "--prompt-tokens", "4", "--runs", "dr_grpo", "--learning-rate", "1e-2", "--device", "cpu",
        "--dtype", "float32", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload)) and payload["complete"]
    project = payload["runs"]["dr_grpo"]
    assert project["speedup_vs_plain"] > 0
    for r in (payload["plain"], project):
        assert len(r["step_seconds"]) == r["optimizer_steps"] == r["global_step"] == 2 and r["seconds"] > 0
        # Counted from the trainer: one rollout, two optimiser steps on it, as the config says.
        assert r["rollouts"] == 1 and r["optimizer_steps_per_rollout"] == [2] and r["configured_steps_per_rollout"] == 2
        assert len(r["clip_ratio"]) == 2 and r["clip_ratio"][0] == 0.0  # the first update is on-policy
    # The GPU profile asks for vLLM; on the CPU the project's settings fall back to transformers.
    assert project["rollout"]["requested"] == "vllm"
    assert project["rollout"]["engine"] == "transformers"


@pytest.mark.slow
def test_two_runs_train_in_processes_of_their_own_and_write_json(tmp_path):
    out = tmp_path / "two_runs.json"
    payload = load_script("two_runs").main([
        "--tiny", "--device", "cpu", "--dtype", "float32", "--steps", "2", "--updates", "2",
        "--new-tokens", "4", "--out", str(out)])
    assert json.loads(out.read_text()) == json.loads(json.dumps(payload))
    assert [(r["run"], r["global_step"]) for r in payload["runs"]] == [("grpo", 2), ("dr_grpo", 2)]
    assert payload["workload"]["isolate_training"] is True
    assert payload["memory_returned"] is None  # measured on CUDA only


def test_agreement_counts_same_texts_answers_and_verdicts():
    agreement = load_script("agreement")
    reference = [{"response": "a", "extracted": "1", "correct": True},
                 {"response": "b", "extracted": "2", "correct": False},
                 {"response": "c", "extracted": "3", "correct": False}]
    other = [{"response": "a", "extracted": "1", "correct": True},
             {"response": "b'", "extracted": "2", "correct": False},
             {"response": "c'", "extracted": "4", "correct": False}]
    assert agreement.compare(reference, other) == {"same_text": 1, "same_final_answer": 2, "same_verdict": 3}
    with pytest.raises(ValueError):  # records of other questions cannot be compared
        agreement.compare(reference, other[:2])
    assert agreement.parse_engine("openvino:bfloat16") == ("openvino", "bfloat16")
    for bad in ("openvino", "openvino:bf16", ":float32"):
        with pytest.raises(SystemExit, match="backend:dtype"):
            agreement.parse_engine(bad)


def test_agreement_of_two_engines_on_sft_s_heldout_questions(tmp_path, tiny_model, monkeypatch):
    """Plain generate and the fast loop give the same float32 greedy texts; the exit status follows --require."""
    monkeypatch.chdir(ROOT)
    out = tmp_path / "agreement.json"
    argv = ["--model", str(tiny_model), "--questions", "3", "--sample-questions", "2", "--samples", "2",
            "--reference", "transformers:float32", "--engines", "transformers_fast:float32", "--out", str(out)]
    assert load_script("agreement").main(argv) == 0
    report = json.loads(out.read_text())
    assert report["questions"] == 3 and report["agreement"]["transformers_fast:float32"]["same_text"] == 3
    assert report["engines"]["transformers:float32"]["sampled"]["n"] == 4  # 2 questions x 2 samples
    assert set(report["pairs"]) == {"transformers:float32 vs transformers_fast:float32"}
    assert load_script("agreement").main(argv + ["--require", "1.01"]) == 1


def test_rollout_gap_scores_the_policy_s_own_samples_under_the_sampling_distribution(tmp_path, tiny_model,
                                                                                       monkeypatch):
    """The decode loop's recorded log-probs are the full forward's, up to the precision's rounding:
    recording them untempered (or misaligned with the completion) gives gaps far above this bound."""
    monkeypatch.chdir(ROOT)
    report = load_script("rollout_gap").main(["--model", str(tiny_model), "--prompts", "1", "--openvino-dtypes", "",
                                              "--out", str(tmp_path / "gap.json")])
    own = report["engines"]["transformers_fast"]
    assert own["rows"] == report["rows"] > 1 and own["mean_tokens"] > 0
    # Measured 4e-5 nats/token here with bf16 autocast (a tiny random model's logits are small, so
    # even the temperature moves them little: recording untempered log-probs gives 4e-3).
    assert own["gap_per_token_max"] < 1e-3 and own["ratio_min"] > 0
