"""How each row of the findings table is measured from the records the stages left in results/.

    from r1repro.claim_measures import Records, rl_gain, GRPO
    rl_gain(GRPO)(Records("results"))   # a Measurement: value, per-question values, paired counts, caveats

Every function here reads only `results/<stage>/` files (records, diagnostics, protocol.json) and
returns a `Measurement`, or None when its records are absent. A measurement says which test fits it
(`pair`: one 0/1 outcome per question on two sides, for the exact sign test; `share`: x of n, for a
Clopper-Pearson interval; neither: a bootstrap over `values`), carries the caveats the records
themselves show (the model probed, the RL task, the number of training seeds, the transfer to the
evaluate benchmark), and, when the row is not a test, a `note` saying why. `r1repro.findings` turns
them into the table.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from r1repro import metrics, reflection
from r1repro.exact_tests import PairedCounts
from r1repro.pipeline import seed_suffix

# The share of a group's advantage weight that counts as "extreme" (too easy or too hard): groups
# whose pass rate is at most this or at least 1 minus it.
EXTREME_PASS_RATE = 0.25
GRPO, DR_GRPO = ("grpo", "group"), ("dr_grpo", "none")


@dataclass(frozen=True)
class Measurement:
    """One row's number: the estimate, what it rests on, and which test fits it.

    Attributes:
        value: the point estimate (a difference or a share; fractions, not %, unless `scale` says).
        values: the per-unit values it averages (bootstrapped when neither `pair` nor `share` is set).
        unit: what one value is ("question", "training group", ...).
        scale: "share" (a difference, shown as signed points of %), "proportion" (a share, shown as %),
            "tokens", or "slope" (millinats per token per 10 tokens, `length_mechanism`).
        detail: a short line of context (the two means compared, truncation, seeds).
        pair: fixed/broken counts when each unit is one 0/1 outcome on both sides (the exact test).
        share: (x, n) when the value is a proportion x / n of independent units (Clopper-Pearson).
        test: how the interval is computed when neither applies (a bootstrap, and why).
        why: for a row that is not a counted claim, the reason in a few words.
        note: ... and in a sentence.
        caveats: what the records show differs from the paper's setting.
        extra: further numbers for findings.json (the transfer's counts).
    """

    value: float
    values: tuple[float, ...]
    unit: str
    scale: str = "share"
    detail: str = ""
    pair: PairedCounts | None = None
    share: tuple[int, int] | None = None
    test: str = ""
    why: str = ""
    note: str = ""
    caveats: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)


class Records:
    """The result folder's records, each file read once (missing files read as empty)."""

    def __init__(self, results_dir: Path | str):
        self.root = Path(results_dir)
        self._cache: dict[str, Any] = {}

    def jsonl(self, rel: str) -> list[dict]:
        if rel not in self._cache:
            path = self.root / rel
            lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
            self._cache[rel] = [json.loads(line) for line in lines if line.strip()]
        return self._cache[rel]

    def json(self, rel: str) -> dict:
        if rel not in self._cache:
            path = self.root / rel
            self._cache[rel] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        return self._cache[rel]

    def params(self, stage_folder: str) -> dict:
        """The params a stage ran with, from its protocol.json."""
        return self.json(f"{stage_folder}/protocol.json").get("params", {})

    def common(self, stage_folder: str) -> dict:
        """The resolved `common` section (seed, dtype, ...) a stage ran with, from its protocol.json."""
        return self.json(f"{stage_folder}/protocol.json").get("common", {})


def _by_question(records: Sequence[dict], value: Callable[[dict], float]) -> dict[str, float]:
    """{question_id: mean of `value` over that question's records}."""
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        groups[str(record["question_id"])].append(float(value(record)))
    return {q: float(np.mean(v)) for q, v in groups.items()}


def _binary(*per_question: dict[str, float]) -> bool:
    return all(v in (0.0, 1.0) for d in per_question for v in d.values())


def paired(first: dict[str, float], second: dict[str, float], unit: str = "question", detail: str = "",
           exact: bool | None = None) -> Measurement | None:
    """second - first over the questions both hold (the paired difference), or None if none.

    Args:
        first, second: {question: value} on the two sides.
        unit: what a question is called in the table.
        detail: context; default the two means.
        exact: count fixed/broken questions for the exact test. None: when every value is 0 or 1
            (one yes/no outcome per question on both sides), which is what the exact test needs.
    """
    common = sorted(set(first) & set(second))
    if not common:
        return None
    first, second = {q: first[q] for q in common}, {q: second[q] for q in common}
    diffs = tuple(second[q] - first[q] for q in common)
    a, b = np.mean(list(first.values())), np.mean(list(second.values()))
    exact = _binary(first, second) if exact is None else exact
    return Measurement(float(np.mean(diffs)), diffs, unit, detail=detail or f"{100 * a:.1f}% -> {100 * b:.1f}%",
                       pair=PairedCounts.from_outcomes(first, second) if exact else None)


def seeds_caveat(seeds: Sequence[int]) -> str:
    return f"{len(seeds)} training seed{'s' if len(seeds) != 1 else ''}"


# ---------------------------------------------------------------------------------------------------
# The probe (the model before any training)
# ---------------------------------------------------------------------------------------------------


def _probe_model_records(records: Records, rel: str) -> list[dict]:
    """The first probed model's records (the embedded default probes one model)."""
    rows = records.jsonl(rel)
    first = rows[0]["model"] if rows else None
    return [r for r in rows if r["model"] == first]


def probe_caveat(rows: Sequence[dict]) -> tuple[str, ...]:
    """What the probed model is, read from its label: the papers probe base models."""
    label = str(rows[0]["model"]) if rows else ""
    if "instruct" in label.lower():
        return (f"{label} is an instruct model, not a base model",)
    return (f"probed model: {label}",) if label else ()


def template_effect(field_name: str, with_template: str | None = "r1", without: str = "none"):
    """Paired difference of `field_name` (attempted or correct) between two templates' greedy answers.
    `with_template` None: the probe's `accuracy_template` param (r1 where the run predates it)."""
    def measure(records: Records) -> Measurement | None:
        rows = _probe_model_records(records, "probe/records_templates.jsonl")
        used = with_template or records.params("probe").get("accuracy_template", "r1")
        per = {t: _by_question([r for r in rows if r["template"] == t], lambda r: r[field_name])
               for t in (used, without)}
        found = paired(per[without], per[used]) if all(per.values()) else None
        return found and replace(found, caveats=probe_caveat(rows),
                                 detail=f"{without} {found.detail.replace(' -> ', f' -> {used} ')}")
    return measure


def reflection_before_rl(records: Records) -> Measurement | None:
    """Share of questions whose greedy answers (any template) hold a self-reflection keyword.

    An observation, never a test: a share is never below 0, so no outcome could contradict "base
    models already self-reflect"; it is described with its count and an exact interval.
    """
    rows = _probe_model_records(records, "probe/records_templates.jsonl")
    if not rows:
        return None
    per_question = _by_question(rows, lambda r: r.get("reflection_keywords", 0) > 0)
    values = tuple(float(per_question[q] > 0) for q in sorted(per_question))
    seen, n = int(sum(values)), len(values)
    total = sum(r.get("reflection_keywords", 0) for r in rows)
    templates = len({r["template"] for r in rows})
    said = "not seen at this size" if total == 0 else f"seen in {seen} of {n} questions"
    return Measurement(seen / n, values, "question", scale="proportion", share=(seen, n),
                       detail=f"{total} keywords in {len(rows)} greedy answers ({n} questions x {templates} "
                              f"templates; {', '.join(reflection.KEYWORDS[:4])}, ...)",
                       why=said, caveats=probe_caveat(rows) + ("keywords, not an LLM judge",),
                       note=f"{said}; a share of answers with a keyword is never below 0, so it cannot "
                            "contradict the claim: described, not tested")


def _exploration(records: Records) -> tuple[list[dict], list[float], int]:
    """The exploration records, their temperatures, and k (samples per question at the highest)."""
    rows = _probe_model_records(records, "probe/records_exploration.jsonl")
    temperatures = sorted({float(r["temperature"]) for r in rows})
    k = max(sum(1 for r in rows if r["question_id"] == rows[0]["question_id"]
                and float(r["temperature"]) == temperatures[-1]), 1) if rows else 0
    return rows, temperatures, k


def _pass_at(rows: Sequence[dict], temperature: float, k: int) -> dict[str, float]:
    """{question: unbiased pass@k} from the samples at one temperature."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if float(r["temperature"]) == temperature:
            groups[str(r["question_id"])].append(bool(r["correct"]))
    return {q: metrics.pass_at_k(len(v), sum(v), min(k, len(v))) for q, v in groups.items()}


def pass_at_k_rises_with_k(records: Records) -> Measurement | None:
    """pass@k - pass@1 at the highest probed temperature, per question: a mechanism (never below 0)."""
    rows, temperatures, k = _exploration(records)
    if not rows:
        return None
    found = paired(_pass_at(rows, temperatures[-1], 1), _pass_at(rows, temperatures[-1], k), exact=False,
                   detail=f"T={temperatures[-1]:g}, pass@1 vs pass@{k}")
    return found and replace(found, caveats=probe_caveat(rows), why="by construction",
                             note="pass@k >= pass@1 for every question by the estimator's definition (k "
                                  "samples hold a right one whenever one sample does), so the difference is "
                                  "never below 0 and cannot contradict the claim",
                             test=f"bootstrap over questions (pass@1 with {k} samples is not binary)")


def temperature_raises_pass_at_k(records: Records) -> Measurement | None:
    """pass@k at the highest probed temperature minus at the lowest (greedy: one answer repeated).
    With k equal to the samples drawn, pass@k is whether any sample is right: one 0/1 per question."""
    rows, temperatures, k = _exploration(records)
    if len(temperatures) < 2:
        return None
    found = paired(_pass_at(rows, temperatures[0], k), _pass_at(rows, temperatures[-1], k),
                   detail=f"pass@{k}, T={temperatures[0]:g} vs T={temperatures[-1]:g}")
    return found and replace(found, caveats=probe_caveat(rows))


# ---------------------------------------------------------------------------------------------------
# Cold-start SFT
# ---------------------------------------------------------------------------------------------------


def sft_change(value: Callable[[dict], float]):
    """Paired change of a per-answer value between SFT's before and after records."""
    def measure(records: Records) -> Measurement | None:
        return paired(_by_question(records.jsonl("sft/records_before.jsonl"), value),
                      _by_question(records.jsonl("sft/records_after.jsonl"), value))
    return measure


def readable(record: dict) -> bool:
    """R1's readability: the answer format kept and one language (the record's language score)."""
    return bool(record.get("formatted")) and float(record.get("language", 1.0)) >= 0.95


def sft_readability(records: Records) -> Measurement | None:
    """SFT's change in readable answers (format kept and one language).

    The rule that makes it an observation: when `readable` equals `formatted` on every answer before
    and after (every formatted answer is in one language), the row repeats the sft_format row's
    observation and adds no test of its own; it is shown, not counted.
    """
    found = sft_change(readable)(records)
    answers = records.jsonl("sft/records_before.jsonl") + records.jsonl("sft/records_after.jsonl")
    if found is None or any(readable(r) != bool(r.get("formatted")) for r in answers):
        return found
    return replace(found, why="same as sft_format",
                   note=f"every formatted answer of the {len(answers)} (before and after) is in one language, "
                        "so readable equals formatted on each: the same observation as sft_format, not a "
                        "second test")


# ---------------------------------------------------------------------------------------------------
# RL: GRPO and Dr. GRPO
# ---------------------------------------------------------------------------------------------------


def rl_seeds(records: Records) -> list[int]:
    """The RL stage's training seeds: rl.seeds, else the one common.seed its protocol records."""
    return list(records.params("rl").get("seeds") or [records.common("rl").get("seed")])


def rl_run_named(records: Records, loss_type: str, scale_rewards: str) -> tuple[str, list[int]] | None:
    """The RL stage's run with these two knobs (GRPO: grpo + group; Dr. GRPO: dr_grpo + none), and its seeds."""
    for run, knobs in (records.params("rl").get("runs") or {}).items():
        if knobs.get("loss_type") == loss_type and knobs.get("scale_rewards") == scale_rewards:
            return run, rl_seeds(records)
    return None


def rl_correct_by_seed(records: Records, run: str, seeds: Sequence[int]) -> list[dict[str, float]]:
    """One {question: correct} per seed of an RL run's greedy held-out answers (rl stage records)."""
    return [_by_question(records.jsonl(f"rl/records_{run}{seed_suffix(s, seeds)}.jsonl"), lambda r: r["correct"])
            for s in seeds]


def subset_name(subset: dict | None) -> str:
    """A data subset of params (synthetic task, file or hub id) in a few words."""
    subset = subset or {}
    if subset.get("synthetic"):
        return f"the generated {subset['synthetic'].get('task')} task"
    return str(subset.get("file") or subset.get("hub") or "unknown data")


def rl_task_caveat(records: Records) -> str:
    """Where RL trained and where its held-out check is, from the RL stage's params."""
    params = records.params("rl")
    trained, heldout = subset_name(params.get("prompts")), subset_name(params.get("heldout"))
    if trained == heldout:
        return f"in-distribution: trained and checked on {trained}"
    return f"trained on {trained}, checked on {heldout}"


def _eval_model(models: dict[str, str], path: str | None, fallback: str) -> str | None:
    """The evaluate stage's label for the model at `path` (or under it), else `fallback` if evaluated."""
    for label, model_path in models.items():
        if path and (model_path == path or str(model_path).startswith(f"{path}/")):
            return label
    return fallback if fallback in models else None


def benchmark_transfer(records: Records, run: str) -> tuple[str, PairedCounts] | None:
    """RL's run against its starting model on the evaluate benchmark (greedy, same questions)."""
    params, rl = records.params("eval"), records.params("rl")
    models = params.get("models") or {}
    benchmark = ((params.get("distill_vs_rl") or {}).get("benchmark")
                 or next(iter(params.get("benchmarks") or {}), None))
    start = _eval_model(models, rl.get("init_model"), "")
    after = _eval_model(models, f"{rl.get('output_dir')}/{run}" if rl.get("output_dir") else None, run)
    rows = [r for r in records.jsonl("eval/records.jsonl")
            if r.get("mode") == "greedy" and r.get("benchmark") == benchmark]
    per = {label: _by_question([r for r in rows if r["model"] == label], lambda r: r["correct"])
           for label in (start, after) if label}
    if not (start and after and per.get(start) and per.get(after) and _binary(*per.values())):
        return None
    counts = PairedCounts.from_outcomes(per[start], per[after])
    common = sorted(set(per[start]) & set(per[after]))
    shares = [100 * np.mean([per[label][q] for q in common]) for label in (start, after)]
    return (f"transfer to {benchmark} (evaluate stage; not counted): {start} {shares[0]:.1f}% -> {after} "
            f"{shares[1]:.1f}% on {counts.n} questions, {counts.text()}, exact p = {counts.p_value():.3g}"), counts


def rl_gain(knobs: tuple[str, str]):
    """RL's paired held-out change from its start, per question, averaged over the run's seeds.

    With one seed each question is one 0/1 outcome on both sides (the exact test); with several the
    per-question average over seeds is not binary and the row keeps the bootstrap.
    """
    def measure(records: Records) -> Measurement | None:
        found = rl_run_named(records, *knobs)
        start = _by_question(records.jsonl("rl/records_start.jsonl"), lambda r: r["correct"])
        if found is None or not start:
            return None
        run, seeds = found
        per_seed = rl_correct_by_seed(records, run, seeds)
        if not all(per_seed):
            return None
        start, after = metrics.seed_averaged(start, per_seed)
        result = paired(start, after, exact=None if len(seeds) == 1 else False,
                        detail=f"{run}: {100 * np.mean(list(start.values())):.1f}% -> "
                               f"{100 * np.mean(list(after.values())):.1f}%")
        transfer = benchmark_transfer(records, run)
        caveats = (rl_task_caveat(records), seeds_caveat(seeds)) + ((transfer[0],) if transfer else ())
        extra = {"transfer": {**asdict(transfer[1]), "p_value": transfer[1].p_value()}} if transfer else {}
        test = "" if len(seeds) == 1 else (f"bootstrap over questions (per-question means over {len(seeds)} "
                                           "seeds are not binary)")
        return replace(result, caveats=caveats, extra=extra, test=test)
    return measure


def rl_exploration_shrink(knobs: tuple[str, str]):
    """RL's pass@k gain minus its pass@1 gain over its start, per question (k = the samples drawn),
    averaged over the run's seeds; a bootstrap over questions (the values are not 0/1)."""
    def measure(records: Records) -> Measurement | None:
        from r1repro.rl_exploration import correct_counts, gain_shrink

        found = rl_run_named(records, *knobs)
        rows = records.jsonl("rl/records_exploration.jsonl")
        start = correct_counts([r for r in rows if r["model"] == "start"])
        if found is None or not start:
            return None
        run, seeds = found
        after = [correct_counts([r for r in rows if r["model"] == f"{run}{seed_suffix(s, seeds)}"]) for s in seeds]
        if not all(after):
            return None
        k = min(len(v) for side in (start, *after) for v in side.values())
        per_seed = [gain_shrink(start, side, k) for side in after]
        questions = sorted(set.intersection(*(set(d) for d in per_seed)))
        values = tuple(float(np.mean([d[q] for d in per_seed])) for q in questions)
        sides = (("start", start), (run, after[0]))
        mean = {label: 100 * np.mean([np.mean(side[q]) for q in questions]) for label, side in sides}
        reach = {label: 100 * np.mean([metrics.pass_at_k(len(side[q]), sum(side[q]), k) for q in questions])
                 for label, side in sides}
        return Measurement(float(np.mean(values)), values, "question",
                           detail=f"{run}: pass@1 {mean['start']:.1f}% -> {mean[run]:.1f}%, pass@{k} "
                                  f"{reach['start']:.1f}% -> {reach[run]:.1f}% (first seed), k = {k}",
                           test=f"bootstrap over questions (per-question pass@{k} and pass@1 gains are not 0/1)",
                           caveats=(rl_task_caveat(records), seeds_caveat(seeds)))
    return measure


def training_groups(records: Records, knobs: tuple[str, str], late_only: bool) -> list[dict]:
    """A run's training groups from its diagnostics (every seed), each tagged with seed and step.

    Each diagnostics row of a step holds `groups`: per prompt, its completions' total rewards,
    correctness, lengths and truncation. `late_only` keeps the second half of the steps, where the
    paper's length bias shows.
    """
    found = rl_run_named(records, *knobs)
    if found is None:
        return []
    run, seeds = found
    out = []
    for seed in seeds:
        rows = [r for r in records.jsonl(f"rl/diagnostics_{run}{seed_suffix(seed, seeds)}.jsonl")
                if r.get("groups")]
        steps = sorted({r["step"] for r in rows})
        first_late = steps[len(steps) // 2] if steps else 0
        for row in rows:
            if late_only and row["step"] < first_late:
                continue
            out += [{**g, "seed": seed, "step": row["step"], "group": i} for i, g in enumerate(row["groups"])]
    return out


def _incorrect_length(group: dict) -> float | None:
    lengths = [n for n, ok in zip(group["lengths"], group["correct"]) if not ok]
    return float(np.mean(lengths)) if lengths else None


def length_bias(records: Records) -> Measurement | None:
    """GRPO's minus Dr. GRPO's mean length of incorrect responses, per training group of the second
    half of training (the same prompt at the same step and seed in both runs)."""
    groups = {name: {(g["seed"], g["step"], g["group"]): g for g in training_groups(records, knobs, True)}
              for name, knobs in (("grpo", GRPO), ("dr_grpo", DR_GRPO))}
    keys = sorted(k for k in set(groups["grpo"]) & set(groups["dr_grpo"])
                  if _incorrect_length(groups["grpo"][k]) is not None
                  and _incorrect_length(groups["dr_grpo"][k]) is not None)
    if not keys:
        return None
    lengths = {name: [_incorrect_length(groups[name][k]) for k in keys] for name in groups}
    diffs = tuple(a - b for a, b in zip(lengths["grpo"], lengths["dr_grpo"]))
    truncated = {name: np.mean([t for k in keys for t in groups[name][k]["truncated"]]) for name in groups}
    seeds = sorted({k[0] for k in keys})
    return Measurement(float(np.mean(diffs)), diffs, "training group", scale="tokens",
                       detail=f"GRPO {np.mean(lengths['grpo']):.1f} vs Dr. GRPO {np.mean(lengths['dr_grpo']):.1f} "
                              f"tokens; truncated {100 * truncated['grpo']:.0f}% vs {100 * truncated['dr_grpo']:.0f}%",
                       test="bootstrap over training groups (lengths are continuous)",
                       caveats=(seeds_caveat(seeds),))


def heldout_length_bias(records: Records) -> Measurement | None:
    """After training: GRPO's minus Dr. GRPO's length of incorrect greedy held-out answers, per
    (question, seed) both runs answered wrong (the paper's Figures 5-6 as behaviour, not mechanism)."""
    grpo, dr = rl_run_named(records, *GRPO), rl_run_named(records, *DR_GRPO)
    if grpo is None or dr is None:
        return None
    seeds = grpo[1]
    diffs, lengths = [], {"grpo": [], "dr_grpo": []}
    for seed in seeds:
        answers = {name: {str(r["question_id"]): r for r in
                          records.jsonl(f"rl/records_{run}{seed_suffix(seed, seeds)}.jsonl")}
                   for name, run in (("grpo", grpo[0]), ("dr_grpo", dr[0]))}
        for q in sorted(set(answers["grpo"]) & set(answers["dr_grpo"])):
            a, b = answers["grpo"][q], answers["dr_grpo"][q]
            if not a["correct"] and not b["correct"] and None not in (a.get("num_tokens"), b.get("num_tokens")):
                diffs.append(float(a["num_tokens"] - b["num_tokens"]))
                lengths["grpo"].append(a["num_tokens"])
                lengths["dr_grpo"].append(b["num_tokens"])
    if not diffs:
        return None
    return Measurement(float(np.mean(diffs)), tuple(diffs), "question", scale="tokens",
                       detail=f"GRPO {np.mean(lengths['grpo']):.1f} vs Dr. GRPO {np.mean(lengths['dr_grpo']):.1f} "
                              f"tokens on the {len(diffs)} held-out answers both got wrong (greedy; SD of the "
                              f"differences {np.std(diffs, ddof=1) if len(diffs) > 1 else 0.0:.1f})",
                       test="bootstrap over question-seed pairs (lengths are continuous)",
                       caveats=(rl_task_caveat(records), seeds_caveat(seeds)))


# The mechanism row's slope is shown in millinats of mean per-token log-probability per 10 tokens of length.
SLOPE_SCALE = 1000 * 10


def length_mechanism(records: Records) -> Measurement | None:
    """One update from the same weights and batch (r1repro.length_mechanism): per batch, the slope of
    GRPO's minus Dr. GRPO's per-token log-prob change against length over the wrong answers."""
    from r1repro.length_mechanism import batch_slopes

    rows = records.jsonl("rl/records_length_mechanism.jsonl")
    slopes = tuple(SLOPE_SCALE * s for s in batch_slopes(rows))
    if not slopes:
        return None
    wrong = [r for r in rows if not r["correct"]]
    batches = len({r["batch"] for r in rows})
    mean = {k: float(np.mean([r[f"delta_{k}"] for r in wrong])) for k in ("grpo", "dr_grpo")}
    lengths = [r["length"] for r in wrong]
    return Measurement(
        float(np.mean(slopes)), slopes, "batch", scale="slope",
        detail=f"{len(wrong)} wrong answers of {len(rows)} in {batches} batches ({len(slopes)} with two or more "
               f"wrong lengths), {min(lengths)}-{max(lengths)} tokens; mean change of their per-token "
               f"log-prob {mean['grpo']:+.4f} (GRPO) vs {mean['dr_grpo']:+.4f} (Dr. GRPO) nats",
        test="bootstrap over batches (slopes are continuous)",
        caveats=("one update from the cold-start weights on the prompt filter's sampled groups (T of the "
                 "filter), accuracy rewards, the same advantages for both losses: the mechanism of §3.1, "
                 "not its Figures 5-6", *_update_precision_caveat(records)))


def _update_precision_caveat(records: Records) -> tuple[str, ...]:
    """Said when the mechanism's update ran in bf16 autocast: on the CPU default the same groups gave a
    float32 update ~3x the log-prob change and another verdict (LOG.md, 2026-12-07)."""
    if records.common("rl").get("dtype") != "bfloat16":
        return ()
    return ("the update ran in bf16 autocast (common.dtype): on the CPU default this row's verdict was seen "
            "to depend on the update's precision (LOG.md, 2026-12-07)",)


def advantage_weight(rewards: Sequence[float], scale_by_std: bool) -> float:
    """A group's total |advantage|: sum |r - mean|, divided by the group's std when `scale_by_std`
    (GRPO, TRL's scale_rewards=group, std + 1e-4 as TRL adds); 0 for a group whose rewards tie."""
    r = np.asarray(rewards, dtype=float)
    spread = np.abs(r - r.mean()).sum()
    if spread <= 1e-9:
        return 0.0
    return float(spread / (r.std(ddof=1) + 1e-4)) if scale_by_std else float(spread)


def _distinct_groups(groups: Sequence[dict]) -> list[dict]:
    """Each training group once. A group both runs drew appears in both diagnostics with the same
    seed, step, prompt and completions: step 1's (sampled from the same starting model with the same
    seed), and any later one whose completions came out the same token for token."""
    seen, out = set(), []
    for g in groups:
        key = (g["seed"], g["step"], str(g.get("question_id")), tuple(g["rewards"]), tuple(g["correct"]),
               tuple(g["lengths"]))
        if key not in seen:
            seen.add(key)
            out.append(g)
    return out


def std_scaling_extremes(records: Records) -> Measurement | None:
    """The share of advantage weight on too-easy/too-hard groups (pass rate <= 1/4 or >= 3/4) under
    GRPO's std scaling minus under Dr. GRPO's none, over the training groups of both runs (each once),
    bootstrapped over groups through each group's contribution to the difference.

    A mechanism: with two-valued rewards in a group of G, GRPO's weight over Dr. GRPO's for k of G
    right goes as 1 / sqrt(k (G - k)), larger for every extreme group than for every middle one, so
    the difference is above 0 for any mix of groups.
    """
    drawn = [g for knobs in (GRPO, DR_GRPO) for g in training_groups(records, knobs, False)]
    distinct = _distinct_groups(drawn)
    groups = [g for g in distinct if advantage_weight(g["rewards"], False) > 0]
    if not groups:
        return None
    pass_rate = np.array([np.mean(g["correct"]) for g in groups])
    extreme = np.minimum(pass_rate, 1 - pass_rate) <= EXTREME_PASS_RATE
    grpo = np.array([advantage_weight(g["rewards"], True) for g in groups])
    dr = np.array([advantage_weight(g["rewards"], False) for g in groups])
    share_grpo, share_dr = grpo[extreme].sum() / grpo.sum(), dr[extreme].sum() / dr.sum()
    # Linearised per-group contributions c_i with mean(c) = share_grpo - share_dr, so resampling
    # groups resamples the difference of shares itself.
    n = len(groups)
    contributions = tuple(float(n * (grpo[i] * (extreme[i] - share_grpo) / grpo.sum()
                                     - dr[i] * (extreme[i] - share_dr) / dr.sum())) + float(share_grpo - share_dr)
                          for i in range(n))
    multi = sum(len(set(g["rewards"])) > 2 for g in groups)
    seeds = sorted({g["seed"] for g in groups})
    note = ("with two-valued rewards GRPO's weight over Dr. GRPO's goes as 1/sqrt(k(G-k)) for k of G "
            "right, larger for every extreme group than every middle one, so the difference is above 0 "
            "for any mix of groups")
    if multi:
        note += f" ({multi} of the {n} groups here had more than two reward levels: the format reward varied)"
    return Measurement(float(share_grpo - share_dr), contributions, "training group",
                       detail=f"{100 * share_grpo:.0f}% vs {100 * share_dr:.0f}% of the weight on the "
                              f"{int(extreme.sum())} extreme groups of {n} with signal "
                              f"({len(drawn) - len(distinct)} drawn identically by both runs counted once)",
                       test="bootstrap over training groups", why="by construction", note=note,
                       caveats=(seeds_caveat(seeds),))


# ---------------------------------------------------------------------------------------------------
# Distillation vs RL
# ---------------------------------------------------------------------------------------------------


def distill_caveats(records: Records, pair: dict, compared_on: str) -> tuple[str, ...]:
    """What the distill-vs-RL comparison is, from the distill, RL and evaluate params."""
    models = records.params("eval").get("models") or {}
    teacher, rl_path = records.params("distill").get("teacher"), models.get(pair.get("rl"))
    out = []
    if teacher and teacher == rl_path:
        out.append(f"the teacher is the {pair['rl']} model itself ({teacher}), no stronger than the student: "
                   "not the paper's Table 6, which distils a far larger model")
    elif teacher:
        out.append(f"teacher {teacher}")
    rl, distill_prompts = records.params("rl"), records.params("distill").get("prompts")
    if rl:
        trained = subset_name(rl.get("prompts"))
        if distill_prompts and subset_name(distill_prompts) == trained:
            out.append(f"RL and distillation both trained on {trained}, compared on {compared_on}")
        else:
            distilled_on = f", distillation on {subset_name(distill_prompts)}" if distill_prompts else ""
            out.append(f"RL trained on {trained}{distilled_on}, compared on {compared_on}")
        out.append(f"the RL route rests on {seeds_caveat(rl.get('seeds') or [None])}")
    return tuple(out)


def _distilled_student(records: Records, pair: dict) -> str | None:
    """The distill stage's label of the evaluate model `pair["distilled"]` (its folder's name)."""
    path = (records.params("eval").get("models") or {}).get(pair.get("distilled"))
    return Path(path).name if path else None


def _distill_vs_rl_in_task(records: Records, pair: dict) -> Measurement | None:
    """On the RL stage's held-out questions that the distill stage's students also answered."""
    student, rl = _distilled_student(records, pair), records.params("rl")
    if student is None or pair.get("rl") not in (rl.get("runs") or {}):
        return None
    distilled = _by_question([r for r in records.jsonl(f"distill/records_{student}.jsonl")
                              if r.get("model") == f"{student} after" and r.get("mode") == "greedy"],
                             lambda r: r["correct"])
    seeds = rl_seeds(records)
    per_seed = rl_correct_by_seed(records, pair["rl"], seeds)
    if not all(per_seed):
        return None
    mine, route = metrics.seed_averaged(distilled, per_seed)  # the RL side averaged over its seeds
    if not mine:
        return None
    found = paired(route, mine, exact=None if len(seeds) == 1 else False,
                   detail=f"{pair['rl']} {100 * np.mean(list(route.values())):.1f}% -> {student} "
                          f"{100 * np.mean(list(mine.values())):.1f}% on {len(mine)} held-out questions of "
                          f"{subset_name(rl.get('heldout'))}")
    return found and replace(found, caveats=distill_caveats(records, pair, f"its held-out rows ({len(mine)})"))


def distill_vs_rl(records: Records) -> Measurement | None:
    """The distilled student's greedy test accuracy minus the RL route's, per question: on the RL task's
    held-out questions when the distill stage answered them (issue 33: the task RL trained on), else on
    the evaluate benchmark of params evaluate.distill_vs_rl."""
    pair = records.params("eval").get("distill_vs_rl") or {}
    if not pair:
        return None
    in_task = _distill_vs_rl_in_task(records, pair)
    if in_task is not None:
        return in_task
    rows = [r for r in records.jsonl("eval/records.jsonl") if r.get("mode") == "greedy"
            and r.get("benchmark") == pair.get("benchmark")]
    if not rows:
        return None
    per = {label: _by_question([r for r in rows if r["model"] == label], lambda r: r["correct"])
           for label in (pair["rl"], pair["distilled"])}
    if not all(per.values()):
        return None
    found = paired(per[pair["rl"]], per[pair["distilled"]])
    return found and replace(found, caveats=distill_caveats(records, pair, str(pair.get("benchmark"))))
