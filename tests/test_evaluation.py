"""Stage 5 tables come from per-sample records alone: checked on hand-made records with known answers."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from r1repro import evaluation
from r1repro.config import EvaluateParams


def _record(model, bench, qid, mode, i, extracted, correct, tokens, finish="stop", formatted=True):
    response = f"<think>work</think><answer>{extracted}</answer>" if extracted is not None else "rambling"
    return {"model": model, "benchmark": bench, "question_id": qid, "mode": mode, "sample_index": i,
            "prompt": "p", "response": response, "extracted": extracted, "gold": "4", "correct": correct,
            "num_tokens": tokens, "finish_reason": finish, "formatted": formatted}


@pytest.fixture()
def records() -> list[dict]:
    recs = []
    # q1: 3 of 4 samples correct (majority right), greedy right.
    recs.append(_record("m", "b", "q1", "greedy", 0, "4", True, 10))
    for i, (ans, ok) in enumerate([("4", True), ("4", True), ("5", False), ("4", True)]):
        recs.append(_record("m", "b", "q1", "sampled", i, ans, ok, 10 if ok else 30))
    # q2: 1 of 4 correct (majority wrong), greedy wrong, one truncated, one unformatted.
    recs.append(_record("m", "b", "q2", "greedy", 0, "7", False, 20))
    for i, (ans, ok) in enumerate([("7", False), ("7", False), ("4", True), (None, False)]):
        recs.append(_record("m", "b", "q2", "sampled", i, ans, ok, 20 if ok else 50,
                            finish="length" if ans is None else "stop", formatted=ans is not None))
    return recs


def test_summary_numbers_by_hand(records: list[dict]) -> None:
    row = evaluation.summarize_records(records, n_boot=200, seed=0).iloc[0]
    assert row["n_questions"] == 2 and row["k"] == 4
    assert row["mean@k"] == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert row["greedy"] == pytest.approx(0.5)
    assert row["cons@k"] == pytest.approx(0.5)  # q1 majority "4" right, q2 majority "7" wrong
    assert row["len_correct"] == pytest.approx((10 * 3 + 20) / 4)
    assert row["len_incorrect"] == pytest.approx((30 + 50 * 3) / 4)
    assert row["truncated"] == pytest.approx(1 / 8)
    assert row["formatted"] == pytest.approx(7 / 8)
    for metric in ("mean@k", "greedy", "cons@k"):
        assert row[f"{metric}_low"] <= row[metric] <= row[f"{metric}_high"]


def test_tables_and_metrics_json(records: list[dict]) -> None:
    more = [dict(r, model="m2", correct=False) for r in records]
    summary = evaluation.summarize_records(records + more, n_boot=100, seed=1)
    table = evaluation.markdown_table(summary, "mean@k")
    assert "| b (n=2, CI width 25 pts) |" in table  # the median interval width over models
    assert "| m | 50.0 [" in table and "| m2 | 0.0 [" in table
    nested = evaluation.metrics_json(summary)
    assert nested["mean@k"]["m"]["b"] == pytest.approx(0.5)
    assert nested["len_correct"]["m2"]["b"] is None  # no correct response: undefined, not 0


def test_report_states_protocol(records: list[dict]) -> None:
    cfg = EvaluateParams(models={"m": "x"}, benchmarks={"b": {"file": "f.jsonl", "limit": 2}})
    summary = evaluation.summarize_records(records, n_boot=50)
    text = evaluation.report_tables({m: evaluation.markdown_table(summary, m)
                                     for m in evaluation.SUMMARY_METRICS}, cfg)
    assert "T=0.6" in text and "top-p=0.95" in text and "k=4" in text
    assert text.count("## ") == len(evaluation.SUMMARY_METRICS)


def test_follows_format_per_template() -> None:
    prompt_r1 = "User: 2+2?\nAssistant: <think>"
    assert evaluation.follows_format("r1", prompt_r1, " 2+2=4 </think> <answer>4</answer>")
    assert not evaluation.follows_format("r1", prompt_r1, " 2+2=4, the answer is 4")
    assert evaluation.follows_format("none", "2+2?", "so \\boxed{4}")
    assert not evaluation.follows_format("none", "2+2?", "four")


def test_saved_tables_recompute_from_records(repo_root) -> None:
    """Every number in results/eval/table.md follows from results/eval/records.jsonl."""
    folder = repo_root / "results" / "eval"
    if not (folder / "records.jsonl").is_file():
        pytest.skip("no evaluation results in this checkout yet (run `make repro`)")
    # The params that made these results, as recorded beside them (params.yaml may have moved on).
    protocol = json.loads((folder / "protocol.json").read_text())
    cfg = EvaluateParams(**protocol["params"])
    seed = protocol["common"]["seed"]
    records = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines()]
    summary = evaluation.summarize_records(records, cfg.bootstrap_samples, cfg.confidence, seed)
    tables = {m: evaluation.markdown_table(summary, m) for m in evaluation.reported_metrics(summary)}
    assert evaluation.report_tables(tables, cfg) == (folder / "table.md").read_text()
    assert not math.isnan(summary["mean@k"].iloc[0])


class _CountingGenerator:
    """Answers each prompt with its own text; records every generate call."""

    def __init__(self):
        self.calls = []
        self.closed = 0

    def close(self):
        self.closed += 1

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed, stop=None, stop_policy=None):
        from r1repro.generation import Completion

        self.calls.append((len(prompts), n, temperature))
        return [[Completion(prompt_index=i, sample_index=j, text=f"{p}#{j}", num_tokens=3, finish_reason="stop")
                 for j in range(n)] for i, p in enumerate(prompts)]


class _Tok:
    chat_template = None
    eos_token, eos_token_id = "</s>", 0

    def encode(self, text, add_special_tokens=False):
        return [0]


def _evaluate(monkeypatch, tmp_path, benchmarks, **cfg):
    """evaluation.evaluate_model with a counting generator in place of a model, cache in tmp_path."""
    from r1repro import generation, modeling
    from r1repro.config import CommonParams

    gen, loads = _CountingGenerator(), []
    monkeypatch.setattr(modeling, "load_tokenizer", lambda *a, **k: _Tok())
    monkeypatch.setattr(generation, "generator_for", lambda common, model: loads.append(model) or gen)
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    params = EvaluateParams(models={"m": str(model)}, benchmarks={"a": {"file": "f"}}, template="none", **cfg)
    common = CommonParams(answer_cache_dir=str(tmp_path / "cache"))
    return evaluation.evaluate_model(str(model), "m", benchmarks, params, common), gen, loads


BENCHMARKS = {"a": [{"id": "a1", "problem": "P-a1", "answer": "1"}],
              "b": [{"id": "b1", "problem": "P-b1", "answer": "2"}, {"id": "b2", "problem": "P-b2", "answer": "3"}]}


def test_evaluate_model_pools_benchmarks_and_can_skip_greedy(monkeypatch, tmp_path) -> None:
    recs, gen, _ = _evaluate(monkeypatch, tmp_path, BENCHMARKS, greedy_max_new_tokens=0)
    sampling = EvaluateParams(models={"m": "x"}, benchmarks={"a": {"file": "f"}}).sampling
    assert gen.calls == [(3, sampling.n, sampling.temperature)]  # one call for all benchmarks, no greedy
    assert {r["mode"] for r in recs} == {"sampled"}
    for r in recs:  # each response stays with its own benchmark, question and gold
        assert r["response"].startswith(r["prompt"]) and f"P-{r['question_id']}" in r["prompt"]
        assert r["benchmark"] == r["question_id"][0]
    recs, gen, _ = _evaluate(monkeypatch, tmp_path, BENCHMARKS, greedy_max_new_tokens=16)
    assert gen.calls[0] == (3, 1, 0.0) and len(recs) == 3 * (1 + sampling.n)
    summary = evaluation.summarize_records([dict(r, correct=False, extracted=None, formatted=False)
                                            for r in recs if r["mode"] == "sampled"], n_boot=10)
    assert "greedy" not in evaluation.reported_metrics(summary)


def test_greedy_covers_every_question_samples_only_the_first_ones(monkeypatch, tmp_path) -> None:
    recs, gen, loads = _evaluate(monkeypatch, tmp_path, BENCHMARKS, greedy_max_new_tokens=16, sampled_limit=1)
    assert len(loads) == 1 and gen.closed == 1  # loaded once for both modes, released before the next model
    greedy = {r["question_id"] for r in recs if r["mode"] == "greedy"}
    sampled = {r["question_id"] for r in recs if r["mode"] == "sampled"}
    assert greedy == {"a1", "b1", "b2"} and sampled == {"a1", "b1"}  # the first of each benchmark
    graded = [dict(r, correct=r["question_id"] != "b2", extracted="1", formatted=True) for r in recs]
    summary = evaluation.summarize_records(graded, n_boot=10)
    b = summary[summary["benchmark"] == "b"].iloc[0]
    assert (b["n_greedy"], b["n_questions"]) == (2, 1)
    assert "| b (n=2, CI width" in evaluation.markdown_table(summary, "greedy")
    assert "| b (n=1, CI width" in evaluation.markdown_table(summary, "mean@k")


def test_a_second_evaluation_reads_greedy_answers_from_the_cache(monkeypatch, tmp_path) -> None:
    _evaluate(monkeypatch, tmp_path, BENCHMARKS, greedy_max_new_tokens=16, sampled_limit=1)
    recs, gen, loads = _evaluate(monkeypatch, tmp_path, BENCHMARKS, greedy_max_new_tokens=16, sampled_limit=1)
    assert [c[2] for c in gen.calls] == [0.6]  # only the samples were generated again
    assert len([r for r in recs if r["mode"] == "greedy"]) == 3
    recs, gen, loads = _evaluate(monkeypatch, tmp_path, {"b": BENCHMARKS["b"]}, greedy_max_new_tokens=16,
                                 sampled_limit=None, sampling={"n": 1, "temperature": 0.0})
    assert gen.calls == [(2, 1, 0.0)]  # greedy "samples" are a separate request; greedy itself cached
