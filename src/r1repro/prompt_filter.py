"""Choose RL training prompts by the starting policy's pass rate, so that groups carry a signal.

GRPO and Dr. GRPO learn only from groups whose rewards differ: when every completion of a prompt is
wrong (or every one right), the accuracy rewards tie, the advantages are zero and the step spends its
compute on nothing. A small policy fails most prompts: the 135M cold-start model solved none of 4
samples (T=0.7) for 97 of 128 ASDiv training prompts. Before training, each candidate prompt is
therefore answered `sampling.n` times by the starting policy and kept only when its pass rate lies in
[min_pass, max_pass]. Both runs then train on the same kept prompts in the same order, so the pairing
of GRPO and Dr. GRPO is unchanged. This is offline difficulty filtering; DAPO's "dynamic sampling"
does the same online, per batch, at the price of extra rollouts during training.

    from r1repro import prompt_filter
    chosen = prompt_filter.select_prompts(cfg, common, rows)   # cfg: RlParams with prompt_filter on
    chosen.rows            # the kept question rows, in training order
    chosen.table           # one row per candidate: id, solved, n, pass_rate, kept
    chosen.samples         # each kept row's sampled answers (text, tokens, stop, correct)

The measurement, answers included, is cached in `<rl.output_dir>/prompt_filter.json`, keyed by the
starting model's weights and the filter's settings, so a resumed stage does not sample again. The
answers are kept because they are groups the starting policy really sampled: `r1repro.length_mechanism`
takes its one-update batches from them at no further generation cost.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from r1repro import grading, io, templates
from r1repro.config import CommonParams, ConfigError, RlParams

log = logging.getLogger(__name__)

CACHE_FILE = "prompt_filter.json"


@dataclass(frozen=True)
class FilteredPrompts:
    """The outcome of filtering.

    Attributes:
        rows: the kept question rows, in the order they were measured (the training order's start).
        table: one row per candidate: id, solved, n, pass_rate, kept.
        reused: True when the measurement came from the cache.
        samples: for each kept row, its sampled answers (`sample_groups`), in the same order.
    """

    rows: list[dict]
    table: pd.DataFrame
    reused: bool
    samples: list[list[dict]] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """Counts for metrics.json: candidates, kept, their share, and mean pass rates."""
        kept = self.table[self.table["kept"]]
        return {"candidates": len(self.table), "kept": len(kept),
                "kept_share": len(kept) / len(self.table) if len(self.table) else float("nan"),
                "mean_pass_rate_candidates": float(self.table["pass_rate"].mean()),
                "mean_pass_rate_kept": float(kept["pass_rate"].mean()) if len(kept) else float("nan")}


def candidate_rows(rows: Sequence[Mapping[str, Any]], count: int | None, seed: int) -> list[dict]:
    """The first `count` rows of the seeded training order (all rows when count is None).

    Taking candidates in the order RL would have used keeps the filter a pure subset choice: with
    every candidate kept, training sees exactly the prompts of an unfiltered run.
    """
    from r1repro.rl import prompt_order

    count = len(rows) if count is None else min(count, len(rows))
    return [dict(rows[i]) for i in prompt_order(len(rows), count, seed)]


def sample_groups(model: str, rows: Sequence[Mapping[str, Any]], template: str, sampling: Any,
                  common: CommonParams) -> list[list[dict]]:
    """`sampling.n` sampled answers to each row, each graded.

    Args:
        model: hub id or local folder of the starting policy.
        rows: question rows (`problem`, `answer`).
        template: the prompt template RL trains with.
        sampling: SamplingParams (n samples per prompt, temperature, top_p, token budget).
        common: the validated `common` params (backend, inference dtype, seed, grading).

    Returns:
        One group per row: its answers as {text, num_tokens, finish_reason, correct} (text without the
        template's prefill, as generated).
    """
    from r1repro import generation, modeling
    from r1repro.stops import stop_policy_for

    tokenizer = modeling.load_tokenizer(model, trust_remote_code=common.trust_remote_code)
    prompts = [templates.render_prompt(template, row["problem"], tokenizer) for row in rows]
    # Closed here, not left to the garbage collector: RL trains next, and an OpenVINO pipeline left open
    # slowed a forward + backward by ~20% (LOG.md, 2026-12-07: OpenVINO's calls independent).
    with generation.generator_for(common, model) as generator:
        groups = generator.generate(prompts, n=sampling.n, temperature=sampling.temperature,
                                    top_p=sampling.top_p, max_tokens=sampling.max_new_tokens, seed=common.seed,
                                    stop_policy=stop_policy_for(common, template, tokenizer))
    # The prefill (e.g. "<think>") is part of the prompt, so the grader sees it put back.
    head = templates.prefill(template)
    responses = [head + c.text for group in groups for c in group]
    golds = [str(row["answer"]) for row, group in zip(rows, groups) for _ in group]
    verdicts = grading.grade_many(responses, golds, workers=common.grading_workers,
                                  timeout_s=common.grading_timeout_s)
    graded, at = [], 0
    for group in groups:
        graded.append([{"text": c.text, "num_tokens": c.num_tokens, "finish_reason": c.finish_reason,
                        "correct": bool(verdicts[at + j])} for j, c in enumerate(group)])
        at += len(group)
    return graded


def solved_counts(groups: Sequence[Sequence[Mapping[str, Any]]]) -> list[int]:
    """Correct answers in each group of `sample_groups`."""
    return [sum(bool(answer["correct"]) for answer in group) for group in groups]


def pass_table(rows: Sequence[Mapping[str, Any]], solved: Sequence[int], n: int, min_pass: float,
               max_pass: float) -> pd.DataFrame:
    """One row per candidate: id, solved, n, pass_rate, kept (min_pass <= pass_rate <= max_pass)."""
    rates = [s / n for s in solved]
    return pd.DataFrame({"id": [str(r.get("id", f"row-{i}")) for i, r in enumerate(rows)],
                         "solved": list(solved), "n": n, "pass_rate": rates,
                         "kept": [min_pass <= p <= max_pass for p in rates]})


def _fingerprint(cfg: RlParams, common: CommonParams, candidates: Sequence[Mapping[str, Any]]) -> dict:
    """What a measurement depends on: the starting weights, the filter's sampling, the candidates."""
    # Stops at </answer> only when on: measurements made before the switch existed stay valid (the
    # other stops follow from the template and the starting model's tokenizer, already in the key).
    stops = {"stop_at_answer_close": True} if common.stop_at_answer_close else {}
    return {"init_model": io.weights_digest(cfg.init_model), "template": cfg.template,
            "sampling": cfg.prompt_filter.sampling.model_dump(mode="json"), "seed": common.seed,
            "inference_dtype": common.inference_dtype or common.dtype, "backend": common.backend, **stops,
            "candidates": [str(r.get("id", "")) + "\t" + str(r["problem"]) for r in candidates]}


def _cached_groups(path: Path, fingerprint: Mapping[str, Any]) -> list[list[dict]] | None:
    record = io.read_json_or_none(path)
    if record is None or record.get("fingerprint") != dict(fingerprint) or "groups" not in record:
        return None  # a measurement from before the answers were kept is sampled again
    return record["groups"]


def select_prompts(cfg: RlParams, common: CommonParams, rows: Sequence[Mapping[str, Any]]) -> FilteredPrompts:
    """Measure the starting policy's pass rate on candidate prompts and keep those in bounds.

    Args:
        cfg: the validated `rl` section; `cfg.prompt_filter` holds candidates, sampling and bounds.
        common: the validated `common` section.
        rows: all training question rows (`rl.prompts`).

    Returns:
        The kept rows and the per-candidate table.

    Raises:
        ConfigError: fewer prompts kept than one step needs, naming the keys to change.
    """
    spec = cfg.prompt_filter
    candidates = candidate_rows(rows, spec.candidates, common.seed)
    cache = Path(cfg.output_dir) / CACHE_FILE
    fingerprint = _fingerprint(cfg, common, candidates)
    groups = _cached_groups(cache, fingerprint)
    reused = groups is not None
    if groups is None:
        log.info("rl.prompt_filter: sampling %d candidates x %d with %s", len(candidates),
                 spec.sampling.n, cfg.init_model)
        groups = sample_groups(cfg.init_model, candidates, cfg.template, spec.sampling, common)
        io.atomic_write_json(cache, {"fingerprint": fingerprint, "groups": groups})  # counts: solved_counts
    table = pass_table(candidates, solved_counts(groups), spec.sampling.n, spec.min_pass, spec.max_pass)
    kept = [row for row, keep in zip(candidates, table["kept"]) if keep]
    samples = [group for group, keep in zip(groups, table["kept"]) if keep]
    if len(kept) < cfg.prompts_per_step:
        raise ConfigError(
            f"rl.prompt_filter kept {len(kept)} of {len(candidates)} prompts (pass rate in "
            f"[{spec.min_pass}, {spec.max_pass}]), fewer than rl.prompts_per_step ({cfg.prompts_per_step}); "
            "raise rl.prompt_filter.candidates, widen min_pass/max_pass, or turn the filter off")
    needed = cfg.prompts_needed()
    if len(kept) < needed:
        log.warning("rl.prompt_filter: %d prompts kept for %d needed; each is trained on %.1f times",
                    len(kept), needed, needed / len(kept))
    return FilteredPrompts(rows=kept, table=table, reused=reused, samples=samples)
