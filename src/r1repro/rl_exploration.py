"""Does RL widen what a model can reach, or only sharpen what it already reaches? pass@k of RL's start
and of each RL model on the same held-out questions.

Yue et al. (2025, "Does Reinforcement Learning Really Incentivize Reasoning Capacity in LLMs Beyond
the Base Model?") report that RL's advantage over its start is largest at pass@1 and shrinks as k
grows: RL moves probability onto answers the start already samples. Per question q, with c of k
samples right, pass@1 = c/k and pass@k = [c > 0] (the unbiased estimator with all k samples); the
statistic is RL's pass@k gain minus its pass@1 gain, expected below 0. It can come out above 0: a
question the start never solves in k samples and RL sometimes does raises pass@k by 1 and pass@1 by
less.

    records = sampled_records(model, rows, "r1_chat", sampling, common, "grpo")   # graded, k per question
    curve = pass_at_k_curve(records, ks=[1, 2, 4, 8])                            # for the plot
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import pandas as pd

from r1repro import metrics, templates
from r1repro.stops import stop_policy_for


def sampled_records(model: str, rows: Sequence[dict], template: str, sampling, common, label: str) -> list[dict]:
    """`sampling.n` sampled answers per question from `model`, graded, one record each.

    Args:
        model: hub id or local folder.
        rows: the questions (`id`, `problem`, `answer`).
        template: the prompt template training used.
        sampling: a `config.SamplingParams` (n = k, temperature, top_p, max_new_tokens).
        common: the validated `common` params (backend, dtype, seed, grading, stops).
        label: the model's name in the records.

    Returns:
        Records with `model`, `question_id`, `sample_index`, `correct`, `num_tokens`, `finish_reason`.
    """
    from r1repro import evaluation, generation, modeling

    tokenizer = modeling.load_tokenizer(model, trust_remote_code=common.trust_remote_code)
    prompts = [templates.render_prompt(template, row["problem"], tokenizer) for row in rows]
    generator = generation.generator_for(common, model)
    try:
        out = generator.generate(prompts, n=sampling.n, temperature=sampling.temperature, top_p=sampling.top_p,
                                 max_tokens=sampling.max_new_tokens, seed=common.seed,
                                 stop_policy=stop_policy_for(common, template, tokenizer))
    finally:
        generator.close()
    records = evaluation.graded_heldout_records(label, rows, prompts, out, template, common.grading_workers,
                                                common.grading_timeout_s)
    return [{**r, "mode": "sampled"} for r in records]


def correct_counts(records: Sequence[dict]) -> dict[str, list[bool]]:
    """{question_id: its samples' correctness, in sample order}."""
    groups: dict[str, list[tuple[int, bool]]] = defaultdict(list)
    for r in records:
        groups[str(r["question_id"])].append((int(r.get("sample_index", 0)), bool(r["correct"])))
    return {q: [ok for _, ok in sorted(v)] for q, v in groups.items()}


def gain_shrink(start: dict[str, list[bool]], after: dict[str, list[bool]], k: int) -> dict[str, float]:
    """Per question both hold: (pass@k after - pass@k start) - (pass@1 after - pass@1 start).

    pass@1 is the mean over each side's samples and pass@k the unbiased estimator with k of them;
    every question needs at least k samples on both sides.
    """
    out = {}
    for q in sorted(set(start) & set(after)):
        s, a = start[q], after[q]
        if min(len(s), len(a)) < k:
            raise ValueError(f"question {q}: pass@{k} needs {k} samples a side, got {len(s)} and {len(a)}")
        gain_k = metrics.pass_at_k(len(a), sum(a), k) - metrics.pass_at_k(len(s), sum(s), k)
        gain_1 = sum(a) / len(a) - sum(s) / len(s)
        out[q] = float(gain_k - gain_1)
    return out


def pass_at_k_curve(records: Sequence[dict], ks: Sequence[int]) -> pd.DataFrame:
    """Per (model, k): pass@k averaged over questions, for the plot of pass@k against k."""
    rows = []
    for model in dict.fromkeys(r["model"] for r in records):
        verdicts = list(correct_counts([r for r in records if r["model"] == model]).values())
        rows += [{"model": model, "k": int(k), "pass_at_k": metrics.mean_pass_at_k(verdicts, k)} for k in ks]
    return pd.DataFrame(rows)
