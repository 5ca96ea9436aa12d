"""Probe base models before any training (the Dr. GRPO paper's section 2).

Three questions per model: does a template make it answer rather than ramble on (answer rate)? How
much do its samples explore (pass@k across temperatures)? Does it already self-reflect ("aha"
keywords) before RL? Every table is derived from per-response records saved beside it.

    records = template_records(generator, tokenizer, "base", rows, ["r1", "none"], 256, seed=0,
                               answer_close=common.stop_at_answer_close)
    grade(records, workers=2, timeout_s=5)
    answer_rate_table(records)
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

import pandas as pd

from r1repro import grading, metrics, reflection, templates
from r1repro.generation import Completion
from r1repro.stops import stop_policy

# A response "attempts an answer" when it commits to one: a boxed/tagged answer, or a phrase that
# announces it. Text that only continues or repeats the question does neither.
_ANSWER_PHRASE = re.compile(r"\b(final answer|the answer is|answer\s*:|therefore,? the)\b", re.IGNORECASE)


def attempts_answer(response: str) -> bool:
    """Rule-based judge of answering ability: True when the response commits to an answer."""
    return grading.extract_answer(response) is not None or bool(_ANSWER_PHRASE.search(response))


def _rows_to_records(label: str, rows: Sequence[dict], prompts: Sequence[str], completions,
                     **fields) -> list[dict]:
    records = []
    for row, prompt, samples in zip(rows, prompts, completions):
        for sample in samples:
            records.append({"model": label, "question_id": str(row.get("id", "")), "prompt": prompt,
                            "response": sample.text, "gold": str(row["answer"]),
                            "sample_index": sample.sample_index, "num_tokens": sample.num_tokens,
                            "finish_reason": sample.finish_reason, **fields})
    return records


def template_records(generator, tokenizer, label: str, rows: Sequence[dict], template_names: Sequence[str],
                     max_new_tokens: int, seed: int, *, answer_close: bool = False) -> list[dict]:
    """Greedy responses of one model to every question under each template.

    Args:
        generator: a `r1repro.generation` backend holding the model.
        tokenizer: its tokenizer (chat templates need one; every template's stops too).
        label: the model's name in tables.
        rows: question rows (`id`, `problem`, `answer`).
        template_names: templates to compare.
        max_new_tokens: token budget per response.
        seed: generation seed.
        answer_close: common.stop_at_answer_close (r1-family responses also end at `</answer>`).
    Returns:
        Ungraded records with a `template` field.
    """
    records = []
    for name in template_names:
        prompts = [templates.render_prompt(name, row["problem"], tokenizer) for row in rows]
        out = generator.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=max_new_tokens, seed=seed,
                                 stop_policy=stop_policy(name, tokenizer, answer_close=answer_close))
        records += _rows_to_records(label, rows, prompts, out, template=name)
    return records


def exploration_records(generator, tokenizer, label: str, rows: Sequence[dict], template: str,
                        temperatures: Sequence[float], k: int, top_p: float, max_new_tokens: int,
                        seed: int, *, answer_close: bool = False,
                        greedy_records: Sequence[dict] = ()) -> list[dict]:
    """k sampled responses per question at each temperature, for pass@k curves.

    Args:
        generator, tokenizer, label, rows, max_new_tokens, seed, answer_close: as in `template_records`.
        template: the template used (the model's best one).
        temperatures: sampling temperatures (0 means greedy).
        k: samples per question.
        top_p: nucleus sampling threshold.
        greedy_records: `template_records` of this model with the same rows, token budget and stops:
            T=0 takes its answers from them instead of decoding the same request again.
    Returns:
        Ungraded records with `template` and `temperature` fields.
    """
    prompts = [templates.render_prompt(template, row["problem"], tokenizer) for row in rows]
    stops = stop_policy(template, tokenizer, answer_close=answer_close)
    records = []
    for temperature in temperatures:
        out = _greedy_answers(greedy_records, label, prompts) if temperature == 0 else None
        # Greedy decoding gives one answer however often it is asked: decode it once, count it k times.
        out = out or generator.generate(prompts, n=1 if temperature == 0 else k, temperature=temperature,
                                        top_p=top_p, max_tokens=max_new_tokens, seed=seed, stop_policy=stops)
        if temperature == 0:
            out = [[dataclasses.replace(samples[0], sample_index=j) for j in range(k)] for samples in out]
        records += _rows_to_records(label, rows, prompts, out, template=template, temperature=temperature)
    return records


def _greedy_answers(records: Sequence[dict], label: str, prompts: Sequence[str]) -> list[list[Completion]] | None:
    """`label`'s greedy answers to exactly `prompts` among `template_records`' records, as a
    generator returns them; None unless every prompt has one (then the request is decoded)."""
    by_prompt = {r["prompt"]: r for r in records if r["model"] == label}
    if not prompts or any(p not in by_prompt for p in prompts):
        return None
    return [[Completion(by_prompt[p]["response"], by_prompt[p]["num_tokens"], by_prompt[p]["finish_reason"], i, 0)]
            for i, p in enumerate(prompts)]


def grade(records: list[dict], workers: int, timeout_s: float) -> list[dict]:
    """Add `extracted`, `correct`, `attempted` and `reflection_keywords` to each record."""
    verdicts = grading.grade_many([r["response"] for r in records], [r["gold"] for r in records],
                                  workers=workers, timeout_s=timeout_s)
    for record, verdict in zip(records, verdicts):
        record["extracted"] = grading.extract_answer(record["response"])
        record["correct"] = bool(verdict)
        record["attempted"] = attempts_answer(record["response"])
        record["reflection_keywords"] = sum(reflection.count_keywords(record["response"]).values())
    return records


def answer_rate_table(records: Sequence[dict]) -> pd.DataFrame:
    """Per (model, template): answer rate, greedy accuracy, truncation rate, mean length."""
    frame = pd.DataFrame(list(records))
    grouped = frame.groupby(["model", "template"], sort=False)
    return grouped.agg(answer_rate=("attempted", "mean"), accuracy=("correct", "mean"),
                       truncated=("finish_reason", lambda s: float((s == "length").mean())),
                       mean_tokens=("num_tokens", "mean"), n_questions=("question_id", "nunique"),
                       ).reset_index()


def best_template(table: pd.DataFrame, model: str) -> str:
    """The template with the highest greedy accuracy for `model` (answer rate breaks ties)."""
    part = table[table["model"] == model].sort_values(["accuracy", "answer_rate"], ascending=False,
                                                      kind="stable")
    return str(part.iloc[0]["template"])


def pass_at_k_table(records: Sequence[dict], ks: Sequence[int]) -> pd.DataFrame:
    """Per (model, temperature, k): pass@k averaged over questions (unbiased estimator)."""
    frame = pd.DataFrame(list(records))
    rows = []
    for (model, temperature), part in frame.groupby(["model", "temperature"], sort=False):
        verdicts = [list(g["correct"]) for _, g in part.groupby("question_id", sort=True)]
        for k in ks:
            rows.append({"model": model, "temperature": float(temperature), "k": int(k),
                         "pass_at_k": metrics.mean_pass_at_k(verdicts, k)})
    return pd.DataFrame(rows)


def reflection_table(records: Sequence[dict]) -> pd.DataFrame:
    """Per (model, template, keyword): total count, and each pair's question-level reflection rate."""
    rows = []
    frame = pd.DataFrame(list(records))
    for (model, template), part in frame.groupby(["model", "template"], sort=False):
        totals = reflection.keyword_totals(list(part["response"]))
        per_question = [list(g["response"]) for _, g in part.groupby("question_id", sort=True)]
        rate = reflection.question_reflection_rate(per_question)
        for keyword, count in totals.items():
            rows.append({"model": model, "template": template, "keyword": keyword, "count": int(count),
                         "question_rate": rate})
    return pd.DataFrame(rows)


def probe_metrics(answer_rates: pd.DataFrame, pass_k: pd.DataFrame, n_questions: int) -> dict:
    """metrics.json of the probe stage: answer rate and accuracy per model and template, pass@k
    per model, temperature and k (nested, so `dvc metrics diff` lists each number by name)."""
    metrics: dict = {"answer_rate": {}, "accuracy": {}, "pass_at_k": {}, "n_questions": n_questions}
    for r in answer_rates.itertuples():
        metrics["answer_rate"].setdefault(r.model, {})[r.template] = float(r.answer_rate)
        metrics["accuracy"].setdefault(r.model, {})[r.template] = float(r.accuracy)
    for r in pass_k.itertuples():
        by_temperature = metrics["pass_at_k"].setdefault(r.model, {}).setdefault(f"T{r.temperature:g}", {})
        by_temperature[f"k{r.k}"] = float(r.pass_at_k)
    return metrics
