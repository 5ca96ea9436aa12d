"""Evaluate models on benchmarks: per-sample records first, every reported number derived from them.

The protocol follows DeepSeek-R1: pass@1 is the mean over k sampled responses per question (T=0.6,
top-p 0.95 by default), reported beside greedy accuracy and cons@k (majority vote), each with a
bootstrap interval over questions. The Dr. GRPO paper's quantity of interest, the mean length of
correct and of incorrect responses, is reported too, with truncation and format-compliance rates.

    records = evaluate_model("models/base", "base", benchmarks, cfg, common)
    table = summarize_records(records, n_boot=1000, confidence=0.95, seed=0)

Each record: model, benchmark, question_id, mode ("greedy" or "sampled"), sample_index, prompt,
response, extracted, gold, correct, num_tokens, finish_reason, formatted.
"""

from __future__ import annotations

import math

from collections import defaultdict
from typing import Any, Sequence

import numpy as np
import pandas as pd

from r1repro import grading, metrics, rewards, templates
from r1repro.metrics import interval_text
from r1repro.stops import StopPolicy, stop_policy_for

MODES = ("greedy", "sampled")
# The columns of the summary table, in the order the report shows them.
SUMMARY_METRICS = ("mean@k", "greedy", "cons@k", "len_correct", "len_incorrect", "truncated", "formatted")


def follows_format(template: str, prompt: str, response: str) -> bool:
    """Whether a response keeps the answer format its template asks for.

    R1-style templates (prefill `<think>`) ask for `<think>…</think><answer>…</answer>`; the others
    ask for a final answer we can extract (a `\\boxed{}` or answer tags).
    """
    if templates.prefill(template):
        return rewards.format_reward(prompts=[prompt], completions=[response])[0] == 1.0
    return grading.extract_answer(response) is not None


def _records(label: str, benchmark: str, rows: Sequence[dict], prompts: Sequence[str],
             completions: Sequence[Sequence[Any]], mode: str) -> list[dict]:
    out = []
    for row, prompt, samples in zip(rows, prompts, completions):
        for sample in samples:
            out.append({
                "model": label, "benchmark": benchmark, "question_id": str(row.get("id", "")),
                "mode": mode, "sample_index": sample.sample_index, "prompt": prompt,
                "response": sample.text, "gold": str(row["answer"]),
                "num_tokens": sample.num_tokens, "finish_reason": sample.finish_reason,
            })
    return out


def evaluate_model(model: str, label: str, benchmarks: dict[str, Sequence[dict]], cfg, common) -> list[dict]:
    """One model's ungraded records on every benchmark: greedy on every question (from the answer
    cache where an earlier stage gave the same answers), k samples on the first
    `cfg.sampled_limit` questions of each benchmark (all when None).

    The model is loaded once, and only if something is not cached; all benchmarks share one
    `generate` call per mode, so small subsets fill whole batches.

    Args:
        model: hub id or local folder.
        label: the model's name in tables.
        benchmarks: benchmark name -> question rows (`id`, `problem`, `answer`).
        cfg: the validated `evaluate` section (template, sampling, greedy budget, sampled_limit).
        common: the validated, dtype-resolved `common` section.

    Returns:
        One record per response, without verdicts, benchmark by benchmark, greedy before sampled.
    """
    from r1repro import generation, modeling

    tokenizer = modeling.load_tokenizer(model, trust_remote_code=common.trust_remote_code)
    loaded: list[Any] = []

    def generator() -> Any:
        if not loaded:
            loaded.append(generation.generator_for(common, model))
        return loaded[0]

    names = [name for name, rows in benchmarks.items() for _ in rows]
    rows = [row for part in benchmarks.values() for row in part]
    prompts = [templates.render_prompt(cfg.template, row["problem"], tokenizer) for row in rows]
    stops = stop_policy_for(common, cfg.template, tokenizer)
    outputs: dict[str, dict[int, Any]] = {}
    if cfg.greedy_max_new_tokens > 0:
        greedy = cached_greedy(model, prompts, cfg.greedy_max_new_tokens, common, label, generator,
                               stop_policy=stops)
        outputs["greedy"] = dict(enumerate(greedy))
    position = [sum(1 for m in names[:i] if m == n) for i, n in enumerate(names)]  # index within its benchmark
    sampled = [i for i in range(len(rows)) if cfg.sampled_limit is None or position[i] < cfg.sampled_limit]
    s = cfg.sampling
    if sampled:
        out = generator().generate([prompts[i] for i in sampled], n=s.n, temperature=s.temperature,
                                   top_p=s.top_p, max_tokens=s.max_new_tokens, seed=common.seed,
                                   stop_policy=stops)
        outputs["sampled"] = dict(zip(sampled, out))
    for generator_ in loaded:  # released before the next model loads (a vLLM engine's GPU memory too)
        generator_.close()
    records: list[dict] = []
    for name in benchmarks:  # benchmark by benchmark, greedy before sampled, as the tables read
        for mode, out in outputs.items():
            keep = [i for i, n in enumerate(names) if n == name and i in out]
            records += _records(label, name, [rows[i] for i in keep], [prompts[i] for i in keep],
                                [out[i] for i in keep], mode)
    return records


def grade_records(records: list[dict], template: str, workers: int, timeout_s: float) -> list[dict]:
    """Add `extracted`, `correct` and `formatted` to each record (grading in parallel processes)."""
    verdicts = grading.grade_many([r["response"] for r in records], [r["gold"] for r in records],
                                  workers=workers, timeout_s=timeout_s)
    for record, verdict in zip(records, verdicts):
        record["extracted"] = grading.extract_answer(record["response"])
        record["correct"] = bool(verdict)
        record["formatted"] = follows_format(template, record["prompt"], record["response"])
        # Share of target-language words (R1's language-consistency reward): readability, with format.
        record["language"] = rewards.language_score(record["response"])
    return records


def _majority_correct(group: pd.DataFrame) -> bool:
    """cons@k for one question: the verdict of the majority answer (equivalent answers grouped)."""
    answers = list(group["extracted"])
    winner = metrics.majority_answer(answers, grading.answers_equivalent)
    if winner is None:
        return False
    return bool(group.loc[group["extracted"] == winner, "correct"].iloc[0])


def _mean_ci(values: Sequence[float], n_boot: int, confidence: float, seed: int) -> tuple[float, float, float]:
    if len(values) == 0:
        return float("nan"), float("nan"), float("nan")
    low, high = metrics.bootstrap_ci(values, n_boot=n_boot, confidence=confidence, seed=seed)
    return float(np.mean(values)), low, high


def summarize_group(records: pd.DataFrame, n_boot: int, confidence: float, seed: int) -> dict[str, Any]:
    """The numbers for one (model, benchmark): each accuracy with its interval, lengths and rates."""
    sampled = records[records["mode"] == "sampled"]
    greedy = records[records["mode"] == "greedy"]
    per_question = sampled.groupby("question_id", sort=True)
    row: dict[str, Any] = {"n_questions": int(per_question.ngroups),
                           "n_greedy": int(greedy["question_id"].nunique()),
                           "k": int(per_question.size().max()) if len(sampled) else 0}
    accuracy = {
        "mean@k": per_question["correct"].mean().to_list(),
        "greedy": greedy.sort_values("question_id")["correct"].astype(float).to_list(),
        "cons@k": [float(_majority_correct(g)) for _, g in per_question],
    }
    for name, values in accuracy.items():
        row[name], row[f"{name}_low"], row[f"{name}_high"] = _mean_ci(values, n_boot, confidence, seed)
    lengths = sampled.groupby("correct")["num_tokens"].mean()
    row["len_correct"] = float(lengths.get(True, float("nan")))
    row["len_incorrect"] = float(lengths.get(False, float("nan")))
    row["truncated"] = float((sampled["finish_reason"] == "length").mean()) if len(sampled) else float("nan")
    row["formatted"] = float(sampled["formatted"].mean()) if len(sampled) else float("nan")
    return row


def summarize_records(records: Sequence[dict], n_boot: int = 1000, confidence: float = 0.95,
                      seed: int = 0) -> pd.DataFrame:
    """One row per (model, benchmark) with every summary metric; recomputable from the records alone.

    Args:
        records: graded records (see the module docstring).
        n_boot, confidence, seed: bootstrap settings for the intervals.
    Returns:
        A DataFrame with columns model, benchmark, n_questions, k, and each metric (with _low/_high
        interval columns for the accuracies).
    """
    frame = pd.DataFrame(list(records))
    rows = []
    for (model, benchmark), group in frame.groupby(["model", "benchmark"], sort=False):
        rows.append({"model": model, "benchmark": benchmark,
                     **summarize_group(group, n_boot, confidence, seed)})
    return pd.DataFrame(rows)


def _cell(row: pd.Series, metric: str) -> str:
    value = row[metric]
    if pd.isna(value):
        return "n/a"
    if metric.startswith("len_"):
        return f"{value:.0f}"
    text = f"{100 * value:.1f}"
    if f"{metric}_low" in row:
        text += f" [{100 * row[f'{metric}_low']:.1f}, {100 * row[f'{metric}_high']:.1f}]"
    return text


def reported_metrics(summary: pd.DataFrame) -> list[str]:
    """The SUMMARY_METRICS that hold a number somewhere (greedy is absent when greedy decoding is off)."""
    return [m for m in SUMMARY_METRICS if m in summary and summary[m].notna().any()]


def column_size(summary: pd.DataFrame, metric: str, benchmark: str) -> int:
    """Questions behind one column: greedy answers cover every question, samples maybe fewer."""
    column = "n_greedy" if metric == "greedy" and "n_greedy" in summary else "n_questions"
    return int(summary.loc[summary["benchmark"] == benchmark, column].max())


def column_width(summary: pd.DataFrame, metric: str, benchmark: str) -> float | None:
    """The median width (high - low) of the column's intervals over models, or None without intervals."""
    if f"{metric}_low" not in summary:
        return None
    part = summary[summary["benchmark"] == benchmark]
    widths = (part[f"{metric}_high"] - part[f"{metric}_low"]).dropna()
    return float(widths.median()) if len(widths) else None


def markdown_table(summary: pd.DataFrame, metric: str) -> str:
    """A models x benchmarks markdown table of one metric; each column header carries its n and the
    median width of its intervals, so a reader sees what a difference between two cells can mean."""
    benchmarks = list(dict.fromkeys(summary["benchmark"]))

    def head(b: str) -> str:
        width = column_width(summary, metric, b)
        return f"{b} (n={column_size(summary, metric, b)}" + (f", CI width {100 * width:.0f} pts)"
                                                              if width is not None else ")")

    header = "| model | " + " | ".join(head(b) for b in benchmarks) + " |"
    lines = [header, "|---|" + "---|" * len(benchmarks)]
    for model, part in summary.groupby("model", sort=False):
        cells = {r["benchmark"]: _cell(r, metric) for _, r in part.iterrows()}
        lines.append(f"| {model} | " + " | ".join(cells.get(b, "") for b in benchmarks) + " |")
    return "\n".join(lines)


def metrics_json(summary: pd.DataFrame) -> dict[str, Any]:
    """{metric: {model: {benchmark: value}}} for `dvc metrics diff` (one table per metric)."""
    nested: dict[str, Any] = defaultdict(lambda: defaultdict(dict))
    value_columns = [c for c in summary.columns if c not in ("model", "benchmark")]
    for _, row in summary.iterrows():
        for column in value_columns:
            value = row[column]
            nested[column][row["model"]][row["benchmark"]] = None if pd.isna(value) else float(value)
    return {metric: {m: dict(b) for m, b in models.items()} for metric, models in nested.items()}


_METRIC_TITLES = {
    "mean@k": "pass@1, mean over k samples (%, 95% CI)",
    "greedy": "Greedy accuracy (%, 95% CI)",
    "cons@k": "cons@k, majority vote over k samples (%, 95% CI)",
    "len_correct": "Mean length of correct sampled responses (tokens)",
    "len_incorrect": "Mean length of incorrect sampled responses (tokens)",
    "truncated": "Truncated sampled responses (%, hit the token budget)",
    "formatted": "Format-compliant sampled responses (%)",
}


def report_tables(tables: dict[str, str], cfg) -> str:
    """table.md: the protocol line, then one models x benchmarks table per metric.

    Args:
        tables: metric -> markdown table (from `markdown_table`).
        cfg: the evaluate section (template, sampling, budgets) stated above the tables.
    Returns:
        The markdown text.
    """
    s = cfg.sampling
    lines = [
        "# Evaluation",
        "",
        f"Protocol: template `{cfg.template}`; k={s.n} samples at T={s.temperature}, top-p={s.top_p}, "
        f"at most {s.max_new_tokens} new tokens; "
        + (f"greedy budget {cfg.greedy_max_new_tokens} tokens; " if cfg.greedy_max_new_tokens
           else "no greedy decoding (greedy_max_new_tokens 0); ") +
        f"intervals: {cfg.confidence:.0%} bootstrap over questions ({cfg.bootstrap_samples} resamples). "
        "n = questions used from each benchmark.",
    ]
    for metric, table in tables.items():
        lines += ["", f"## {_METRIC_TITLES.get(metric, metric)}", "", table]
    return "\n".join(lines) + "\n"


def cached_greedy(model: str, prompts: Sequence[str], max_new_tokens: int, common, label: str,
                  make_generator: Any = None, *, stop_policy: StopPolicy) -> list[list[Any]]:
    """Greedy answers of `model` to `prompts`, from `common.answer_cache_dir` where an earlier stage
    asked the same (see `r1repro.answer_cache`); the model is loaded only for what is missing.

    Args:
        model: hub id or local folder (its weights digest keys the cache).
        prompts: final prompt strings.
        max_new_tokens: the token budget.
        common: the validated, dtype-resolved `common` params.
        label: the model's name, for the printed line.
        make_generator: returns a generator of `model` for what is missing (default: load one).
        stop_policy: where responses end (`r1repro.stops.stop_policy_for`); part of the cache key.

    Returns:
        One list with one `Completion` per prompt, as generators return.
    """
    from r1repro import generation
    from r1repro.answer_cache import AnswerCache

    cache = AnswerCache.for_model(common.answer_cache_dir, model, common, max_tokens=max_new_tokens,
                                  stop_policy=stop_policy)
    if make_generator is not None:  # the caller's generator: the caller closes it
        out = cache.generate(prompts, make_generator, seed=common.seed)
    else:
        opened: list[Any] = []
        try:
            out = cache.generate(prompts, lambda: opened.append(generation.generator_for(common, model))
                                 or opened[0], seed=common.seed)
        finally:
            for generator in opened:
                generator.close()
    print(f"{label}: {cache.hits} greedy answers from the cache, {cache.misses} generated")
    return out


def greedy_heldout(model: str, rows: Sequence[dict], template: str, max_new_tokens: int, common,
                   label: str, n_boot: int = 1000, confidence: float = 0.95) -> tuple[list[dict], dict]:
    """One model's greedy answers on held-out questions: graded records and their summary.

    The before/after check of the training stages (SFT, RL, distillation), so all three measure
    the same way: greedy, the template training used, the stage's token budget.

    Args:
        model: hub id or local folder.
        rows: held-out question rows (`id`, `problem`, `answer`).
        template: prompt template name.
        max_new_tokens: token budget per response.
        common: the validated `common` params (backend, device, dtype, seed, grading).
        label: the model's name in the records.
        n_boot, confidence: bootstrap settings for the accuracy interval.
    Returns:
        (records, summary) where summary holds n, accuracy with its interval, format_rate,
        truncated (share that hit the budget) and mean_tokens.
    """
    from r1repro import modeling

    tokenizer = modeling.load_tokenizer(model, trust_remote_code=common.trust_remote_code)
    prompts = [templates.render_prompt(template, row["problem"], tokenizer) for row in rows]
    out = cached_greedy(model, prompts, max_new_tokens, common, label,
                        stop_policy=stop_policy_for(common, template, tokenizer))
    records = graded_heldout_records(label, rows, prompts, out, template, common.grading_workers,
                                     common.grading_timeout_s)
    return records, heldout_summary(records, n_boot, confidence, common.seed)


def graded_heldout_records(label: str, rows: Sequence[dict], prompts: Sequence[str],
                           completions: Sequence[Sequence[Any]], template: str, workers: int,
                           timeout_s: float) -> list[dict]:
    """Held-out answers as graded records: the one way every held-out check scores (the training
    stages' before/after checks and RL's periodic check in `r1repro.rl_heldout`)."""
    return grade_records(_records(label, "heldout", rows, prompts, completions, "greedy"), template,
                         workers, timeout_s)


def heldout_summary(records: Sequence[dict], n_boot: int = 1000, confidence: float = 0.95,
                    seed: int = 0) -> dict[str, Any]:
    """n, accuracy with its bootstrap interval, format_rate, truncated and mean_tokens of graded records."""
    accuracy, low, high = _mean_ci([float(r["correct"]) for r in records], n_boot, confidence, seed)

    def share(values: list[float]) -> float:
        return float(np.mean(values)) if values else float("nan")

    return {"n": len(records), "accuracy": accuracy, "accuracy_low": low, "accuracy_high": high,
            "format_rate": share([r["formatted"] for r in records]),
            "truncated": share([r["finish_reason"] == "length" for r in records]),
            "mean_tokens": share([r["num_tokens"] for r in records])}


def paired_change(before: Sequence[dict], after: Sequence[dict], n_boot: int = 1000,
                  confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """The change in accuracy between two graded record sets on the same questions, with a paired interval.

    Each question contributes after - before (-1, 0 or +1 for one greedy answer each), so the
    interval reflects how many answers changed, not the spread of two independent estimates: two
    overlapping unpaired intervals can still hide a real gain.

    Args:
        before, after: graded records (`question_id`, `correct`), one per question, same questions.
        n_boot, confidence, seed: bootstrap settings.

    Returns:
        change, change_low, change_high (accuracy points as fractions), fixed (wrong -> right),
        broke (right -> wrong), n, and sign_test_p: the exact two-sided sign test (McNemar's exact
        test) of fixed against broke, the chance of a split at least this uneven if each changed
        answer were equally likely to go either way.

    Raises:
        ValueError: the two sets cover different questions.
    """
    return _paired_scores_change(_scores(before), _scores(after), n_boot, confidence, seed)


def _scores(records: Sequence[dict]) -> dict[Any, float]:
    return {r["question_id"]: float(r["correct"]) for r in records}


def _same_questions(first: dict[Any, float], second: dict[Any, float]) -> None:
    if set(first) != set(second):
        raise ValueError(f"paired_change: the record sets cover different questions "
                         f"({len(set(first) ^ set(second))} differ)")


def _paired_scores_change(first: dict[Any, float], second: dict[Any, float], n_boot: int, confidence: float,
                          seed: int) -> dict[str, Any]:
    """`paired_change` on {question: score} of both sides."""
    _same_questions(first, second)
    diffs = [second[q] - first[q] for q in sorted(first)]
    change, low, high = _mean_ci(diffs, n_boot, confidence, seed)
    fixed, broke = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    return {"change": change, "change_low": low, "change_high": high, "n": len(diffs),
            "fixed": fixed, "broke": broke, "sign_test_p": sign_test_p(fixed, broke)}


def paired_change_over_seeds(before: Sequence[dict], after_by_seed: dict[Any, Sequence[dict]],
                             n_boot: int = 1000, confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """`paired_change` of one start against a run trained with several seeds: each question's after
    score is its mean correctness over the seeds, so the interval is over questions with the seeds'
    noise averaged in (with one seed it is `paired_change` itself).

    Args:
        before: graded records of the starting model, one per question.
        after_by_seed: {seed: graded records of that seed's trained model on the same questions}.
        n_boot, confidence, seed: bootstrap settings.

    Returns:
        `paired_change`'s fields, plus seeds; fixed and broke count questions whose seed-averaged
        score rose or fell.
    """
    if not after_by_seed:
        raise ValueError("paired_change_over_seeds: no seeds")
    per_seed = [_scores(records) for records in after_by_seed.values()]
    if any(set(p) != set(per_seed[0]) for p in per_seed):
        raise ValueError("paired_change_over_seeds: the seeds' record sets cover different questions")
    first = _scores(before)
    _same_questions(first, per_seed[0])  # before the averaging, which keeps only the shared questions
    change = _paired_scores_change(*metrics.seed_averaged(first, per_seed), n_boot, confidence, seed)
    return {**change, "seeds": len(per_seed)}


def sign_test_p(fixed: int, broke: int) -> float:
    """Two-sided exact sign test: P(a Binomial(fixed + broke, 1/2) split at least as uneven).

    Args:
        fixed, broke: answers that went wrong -> right and right -> wrong (unchanged ones carry no
            information about the direction of the change).

    Returns:
        The p-value in [0, 1]; 1.0 when nothing changed.
    """
    if fixed < 0 or broke < 0:
        raise ValueError(f"sign_test_p: counts must be >= 0, got fixed={fixed}, broke={broke}")
    changed, fewer = fixed + broke, min(fixed, broke)
    tail = sum(math.comb(changed, k) for k in range(fewer + 1)) / 2 ** changed
    return min(1.0, 2 * tail)


def _interval_text(metrics: dict[str, Any], metric: str, model: str, benchmark: str) -> str:
    """One model's value on one benchmark from metrics.json, in %, with its interval when recorded."""
    value = metrics[metric][model].get(benchmark)
    if value is None:
        return "n/a"
    low = metrics.get(f"{metric}_low", {}).get(model, {}).get(benchmark)
    high = metrics.get(f"{metric}_high", {}).get(model, {}).get(benchmark)
    bracket = interval_text(low, high)
    return f"{100 * value:.1f}" + (f" {bracket}" if bracket else "")


def _higher(metrics: dict[str, Any], metric: str, a: str, b: str, benchmark: str) -> str:
    """Which of models a and b scores higher on `benchmark`, "tie", or "n/a"."""
    va, vb = metrics[metric][a].get(benchmark), metrics[metric][b].get(benchmark)
    if va is None or vb is None:
        return "n/a"
    return "tie" if va == vb else a if va > vb else b


def distill_vs_rl_table(metrics: dict[str, Any], rl: str, distilled: str, start: str | None = None,
                        metric: str = "mean@k") -> str:
    """Markdown: the RL route vs a distilled student from the same starting weights, per benchmark.

    DeepSeek-R1 (Sec. 4.1) finds distilling a strong model's traces beats RL on the small model
    itself; this table puts our two routes side by side: `rl` (cold-start SFT, then RL, from `start`)
    and `distilled` (SFT on the teacher's traces, from `start`), each with its own interval. Whether
    one beats the other is not read off two unpaired intervals: the findings table judges the paired
    difference over the same questions (its `distill_vs_rl` row, `r1repro.findings`).

    Args:
        metrics: the evaluate stage's metrics.json ({metric: {model: {benchmark: value}}}, with
            `<metric>_low`/`_high`, `n_questions` and `k`).
        rl, distilled: labels in `metrics` (params `evaluate.distill_vs_rl`).
        start: label of the shared starting weights, shown for reference (None: left out).
        metric: the accuracy compared.
    Returns:
        The markdown; a "not run" line instead when a label has no results (smoke runs).
    """
    wanted = [m for m in (start, rl, distilled) if m]
    missing = [m for m in wanted if m not in metrics.get(metric, {})]
    title = f"## Distillation vs RL from the same starting weights ({metric}, %)"
    if missing:
        return (f"{title}\n\nNot run: no evaluate results for {', '.join(missing)} "
                "(add them to evaluate.models, or run the stage that makes them).\n")
    benchmarks = list(metrics[metric][rl])
    lines = [title, "", f"RL route: `{rl}`; distilled: `{distilled}`"
             + (f"; both from `{start}`." if start else "."), "",
             "| benchmark | n | k | " + " | ".join(wanted) + " | higher |",
             "|---|---|---|" + "---|" * (len(wanted) + 1)]
    for b in benchmarks:
        n, k = (metrics.get(key, {}).get(rl, {}).get(b) for key in ("n_questions", "k"))
        cells = [_interval_text(metrics, metric, m, b) for m in wanted]
        lines.append(f"| {b} | {n or 0:.0f} | {k or 0:.0f} | " + " | ".join(cells)
                     + f" | {_higher(metrics, metric, distilled, rl, b)} |")
    note = ("The verdict is the paired difference over the same questions, in the findings table "
            "(row distill_vs_rl): two unpaired intervals that overlap can still hide a real difference.")
    return "\n".join([*lines, "", note]) + "\n"
