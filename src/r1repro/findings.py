"""The papers' claims as a checked table: each claim, its expected sign, the measured value, a verdict.

    python -m r1repro.report      # writes results/findings.md and findings.json, then REPORT.md

One row per claim of the two papers that the pipeline tests. Each row is measured from the per-answer
records the stages left in results/ (nothing else: `build_findings` is a pure function of those
files), as a difference or share whose sign the paper predicts, with a bootstrap interval over the
units that were paired (questions, training groups). The verdict is computed from the interval:

* `reproduced`: the whole interval lies on the side of 0 the paper predicts;
* `contradicted`: the whole interval lies on the other side;
* `inconclusive at this size`: the interval holds 0 (or the records are too few to measure).

Several claims are judged at once, so the verdicts use Bonferroni-adjusted intervals: with m claims
measured, each verdict's interval has level 1 - alpha/m (alpha = 1 - `report.confidence`), which
keeps the chance of any false `reproduced` or `contradicted` verdict below alpha. The table shows
the plain 95% interval too. Verdicts are never written by hand and settings are not tuned toward
them: the records are the test split's (`splits.report_on`), which no setting was chosen on.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from r1repro import metrics, reflection
from r1repro.pipeline import seed_suffix

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive at this size"
FINDINGS_MD, FINDINGS_JSON = "findings.md", "findings.json"
# The share of a group's advantage weight that counts as "extreme" (too easy or too hard): groups
# whose pass rate is at most this or at least 1 minus it.
EXTREME_PASS_RATE = 0.25


@dataclass(frozen=True)
class Measurement:
    """One claim's number: the estimate, its intervals, and what it rests on.

    Attributes:
        value: the point estimate (a difference or a share; fractions, not %, unless `unit` says).
        values: the per-unit values it averages (bootstrapped for the intervals).
        unit: what one value is ("question", "training group", ...).
        scale: "share" (shown as points of %) or "tokens".
        detail: a short line of context (the two means compared, truncation, seeds).
    """

    value: float
    values: tuple[float, ...]
    unit: str
    scale: str = "share"
    detail: str = ""


@dataclass(frozen=True)
class Claim:
    """A claim of one of the papers, and how the pipeline measures it.

    Attributes:
        id: a short stable name.
        text: the claim in one line.
        source: where the paper makes it.
        expected: the sign the paper predicts for the measured value (+1 or -1).
        measure: reads the records; returns a Measurement, or None when they are not there.
        measured_as: what the number is, in words.
        caveat: what differs from the paper's setting.
    """

    id: str
    text: str
    source: str
    expected: int
    measure: Callable[[Records], Measurement | None]
    measured_as: str
    caveat: str = ""


def verdict(expected: int, low: float, high: float) -> str:
    """The verdict that an interval [low, high] gives a claim expecting the sign `expected`.

    Args:
        expected: +1 (the paper predicts a value above 0) or -1 (below 0).
        low, high: the interval's ends; NaN means nothing was measured.

    Returns:
        REPRODUCED, CONTRADICTED or INCONCLUSIVE.
    """
    if expected not in (1, -1):
        raise ValueError(f"expected must be +1 or -1, got {expected!r}")
    if any(map(math.isnan, (low, high))):
        return INCONCLUSIVE
    if low > high:
        raise ValueError(f"interval ends reversed: [{low}, {high}]")
    if expected * low > 0 and expected * high > 0:
        return REPRODUCED
    if expected * low < 0 and expected * high < 0:
        return CONTRADICTED
    return INCONCLUSIVE


# ---------------------------------------------------------------------------------------------------
# Reading the records
# ---------------------------------------------------------------------------------------------------


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


def _by_question(records: Sequence[dict], value: Callable[[dict], float]) -> dict[str, float]:
    """{question_id: mean of `value` over that question's records}."""
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        groups[str(record["question_id"])].append(float(value(record)))
    return {q: float(np.mean(v)) for q, v in groups.items()}


def paired(first: dict[str, float], second: dict[str, float], unit: str = "question",
           detail: str = "") -> Measurement | None:
    """second - first over the questions both hold (the paired difference), or None if none."""
    common = sorted(set(first) & set(second))
    if not common:
        return None
    diffs = tuple(second[q] - first[q] for q in common)
    a, b = np.mean([first[q] for q in common]), np.mean([second[q] for q in common])
    return Measurement(float(np.mean(diffs)), diffs, unit,
                       detail=detail or f"{100 * a:.1f}% -> {100 * b:.1f}%")


# ---------------------------------------------------------------------------------------------------
# The claims' measurements
# ---------------------------------------------------------------------------------------------------


def _probe_model_records(records: Records, rel: str) -> list[dict]:
    """The first probed model's records (the embedded default probes one model)."""
    rows = records.jsonl(rel)
    first = rows[0]["model"] if rows else None
    return [r for r in rows if r["model"] == first]


def template_effect(field_name: str, with_template: str = "r1", without: str = "none"):
    """Paired difference of `field_name` (attempted or correct) between two templates' greedy answers."""
    def measure(records: Records) -> Measurement | None:
        rows = _probe_model_records(records, "probe/records_templates.jsonl")
        per = {t: _by_question([r for r in rows if r["template"] == t], lambda r: r[field_name])
               for t in (with_template, without)}
        return paired(per[without], per[with_template]) if all(per.values()) else None
    return measure


def reflection_before_rl(records: Records) -> Measurement | None:
    """Share of the base model's greedy answers (every template) with a self-reflection keyword."""
    rows = _probe_model_records(records, "probe/records_templates.jsonl")
    if not rows:
        return None
    per_question = _by_question(rows, lambda r: r.get("reflection_keywords", 0) > 0)
    values = tuple(per_question[q] for q in sorted(per_question))
    total = sum(r.get("reflection_keywords", 0) for r in rows)
    return Measurement(float(np.mean(values)), values, "question",
                       detail=f"{total} keywords in {len(rows)} answers ({', '.join(reflection.KEYWORDS[:4])}, ...)")


def _exploration(records: Records) -> tuple[list[dict], list[float]]:
    rows = _probe_model_records(records, "probe/records_exploration.jsonl")
    return rows, sorted({float(r["temperature"]) for r in rows})


def _pass_at(rows: Sequence[dict], temperature: float, k: int) -> dict[str, float]:
    """{question: unbiased pass@k} from the samples at one temperature."""
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        if float(r["temperature"]) == temperature:
            groups[str(r["question_id"])].append(bool(r["correct"]))
    return {q: metrics.pass_at_k(len(v), sum(v), min(k, len(v))) for q, v in groups.items()}


def pass_at_k_rises_with_k(records: Records) -> Measurement | None:
    """pass@k - pass@1 at the highest probed temperature, per question."""
    rows, temperatures = _exploration(records)
    if not rows:
        return None
    k = max(sum(1 for r in rows if r["question_id"] == rows[0]["question_id"]
                and float(r["temperature"]) == temperatures[-1]), 1)
    return paired(_pass_at(rows, temperatures[-1], 1), _pass_at(rows, temperatures[-1], k),
                  detail=f"T={temperatures[-1]:g}, pass@1 vs pass@{k}")


def temperature_raises_pass_at_k(records: Records) -> Measurement | None:
    """pass@k at the highest probed temperature minus at the lowest (greedy: one answer repeated)."""
    rows, temperatures = _exploration(records)
    if len(temperatures) < 2:
        return None
    k = max(sum(1 for r in rows if r["question_id"] == rows[0]["question_id"]
                and float(r["temperature"]) == temperatures[-1]), 1)
    return paired(_pass_at(rows, temperatures[0], k), _pass_at(rows, temperatures[-1], k),
                  detail=f"pass@{k}, T={temperatures[0]:g} vs T={temperatures[-1]:g}")


def sft_change(value: Callable[[dict], float]):
    """Paired change of a per-answer value between SFT's before and after records."""
    def measure(records: Records) -> Measurement | None:
        return paired(_by_question(records.jsonl("sft/records_before.jsonl"), value),
                      _by_question(records.jsonl("sft/records_after.jsonl"), value))
    return measure


def readable(record: dict) -> bool:
    """R1's readability: the answer format kept and one language (the record's language score)."""
    return bool(record.get("formatted")) and float(record.get("language", 1.0)) >= 0.95


def rl_run_named(records: Records, loss_type: str, scale_rewards: str) -> tuple[str, list[int]] | None:
    """The RL stage's run with these two knobs (GRPO: grpo + group; Dr. GRPO: dr_grpo + none), and its seeds."""
    params = records.json("rl/protocol.json").get("params", {})
    for run, knobs in (params.get("runs") or {}).items():
        if knobs.get("loss_type") == loss_type and knobs.get("scale_rewards") == scale_rewards:
            return run, list(params.get("seeds") or [records.json("rl/protocol.json").get("common", {}).get("seed")])
    return None


GRPO, DR_GRPO = ("grpo", "group"), ("dr_grpo", "none")


def rl_gain(knobs: tuple[str, str]):
    """RL's paired held-out change from its start, per question, averaged over the run's seeds."""
    def measure(records: Records) -> Measurement | None:
        found = rl_run_named(records, *knobs)
        start = _by_question(records.jsonl("rl/records_start.jsonl"), lambda r: r["correct"])
        if found is None or not start:
            return None
        run, seeds = found
        per_seed = [_by_question(records.jsonl(f"rl/records_{run}{seed_suffix(s, seeds)}.jsonl"),
                                 lambda r: r["correct"]) for s in seeds]
        if not all(per_seed):
            return None
        questions = sorted(set(start).intersection(*map(set, per_seed)))
        after = {q: float(np.mean([s[q] for s in per_seed])) for q in questions}
        return paired({q: start[q] for q in questions}, after,
                      detail=f"{run}, {len(seeds)} seed(s): {100 * np.mean([start[q] for q in questions]):.1f}% "
                             f"-> {100 * np.mean(list(after.values())):.1f}%")
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
    return Measurement(float(np.mean(diffs)), diffs, "training group", scale="tokens",
                       detail=f"GRPO {np.mean(lengths['grpo']):.1f} vs Dr. GRPO {np.mean(lengths['dr_grpo']):.1f} "
                              f"tokens; truncated {100 * truncated['grpo']:.0f}% vs {100 * truncated['dr_grpo']:.0f}%")


def advantage_weight(rewards: Sequence[float], scale_by_std: bool) -> float:
    """A group's total |advantage|: sum |r - mean|, divided by the group's std when `scale_by_std`
    (GRPO, TRL's scale_rewards=group, std + 1e-4 as TRL adds); 0 for a group whose rewards tie."""
    r = np.asarray(rewards, dtype=float)
    spread = np.abs(r - r.mean()).sum()
    if spread <= 1e-9:
        return 0.0
    return float(spread / (r.std(ddof=1) + 1e-4)) if scale_by_std else float(spread)


def std_scaling_extremes(records: Records) -> Measurement | None:
    """The share of advantage weight on too-easy/too-hard groups (pass rate <= 1/4 or >= 3/4) under
    GRPO's std scaling minus under Dr. GRPO's none, on the same training groups (both runs', every
    step), bootstrapped over groups through each group's contribution to the difference."""
    groups = [g for knobs in (GRPO, DR_GRPO) for g in training_groups(records, knobs, False)]
    groups = [g for g in groups if advantage_weight(g["rewards"], False) > 0]
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
    return Measurement(float(share_grpo - share_dr), contributions, "training group",
                       detail=f"{100 * share_grpo:.0f}% vs {100 * share_dr:.0f}% of the weight on the "
                              f"{int(extreme.sum())} extreme groups of {n} with signal")


def distill_vs_rl(records: Records) -> Measurement | None:
    """The distilled student's greedy test accuracy minus the RL route's, per question (evaluate stage,
    params evaluate.distill_vs_rl)."""
    pair = records.json("eval/protocol.json").get("params", {}).get("distill_vs_rl") or {}
    rows = [r for r in records.jsonl("eval/records.jsonl") if r.get("mode") == "greedy"
            and r.get("benchmark") == pair.get("benchmark")]
    if not pair or not rows:
        return None
    per = {label: _by_question([r for r in rows if r["model"] == label], lambda r: r["correct"])
           for label in (pair["rl"], pair["distilled"])}
    if not all(per.values()):
        return None
    return paired(per[pair["rl"]], per[pair["distilled"]])


CLAIMS: tuple[Claim, ...] = (
    Claim("template_answer_rate", "A prompt template changes whether a base model answers at all",
          "Dr. GRPO §2.1 (templates and question sets)", +1, template_effect("attempted"),
          "answer rate with the R1 template minus with no template, same questions (greedy)",
          "SmolLM2-135M-Instruct is an instruct model, not a base model"),
    Claim("template_accuracy", "The template changes a base model's accuracy",
          "Dr. GRPO §2.1, Table 1", +1, template_effect("correct"),
          "accuracy with the R1 template minus with no template (greedy)",
          "an instruct model; a 135M model is rarely right either way"),
    Claim("reflection_before_rl", "Base models already self-reflect before any RL ('aha' is not new)",
          "Dr. GRPO §2.3 (aha moment)", +1, reflection_before_rl,
          "share of questions whose greedy answers (any template) hold a self-reflection keyword",
          "an instruct model; keywords, not an LLM judge"),
    Claim("pass_at_k_rises_with_k", "Sampling explores: pass@k rises with k", "Dr. GRPO §2 (exploration)",
          +1, pass_at_k_rises_with_k, "pass@k minus pass@1 at the highest probed temperature"),
    Claim("temperature_raises_pass_at_k", "Higher temperature raises pass@k over greedy decoding",
          "Dr. GRPO §2 (exploration)", +1, temperature_raises_pass_at_k,
          "pass@k at the highest probed temperature minus at T=0"),
    Claim("sft_format", "Cold-start SFT teaches the answer format", "DeepSeek-R1 §2.3.1 (cold start)", +1,
          sft_change(lambda r: r["formatted"]), "format-compliant share after SFT minus before (greedy)"),
    Claim("sft_readability", "Cold-start SFT makes responses readable (format kept, one language)",
          "DeepSeek-R1 §2.3.1 (readability)", +1, sft_change(readable),
          "share formatted and in one language after SFT minus before"),
    Claim("sft_accuracy", "Cold-start SFT raises held-out accuracy from the base model",
          "DeepSeek-R1 §2.3.1", +1, sft_change(lambda r: r["correct"]),
          "greedy accuracy after SFT minus before"),
    Claim("rl_gain_grpo", "RL (GRPO) raises held-out accuracy over its start", "DeepSeek-R1 §2.2; Dr. GRPO §3",
          +1, rl_gain(GRPO), "greedy accuracy after GRPO minus the cold-start model's, per question, "
          "averaged over seeds"),
    Claim("rl_gain_dr_grpo", "RL (Dr. GRPO) raises held-out accuracy over its start", "Dr. GRPO §3.2", +1,
          rl_gain(DR_GRPO), "greedy accuracy after Dr. GRPO minus the cold-start model's, per question, "
          "averaged over seeds"),
    Claim("length_bias", "GRPO's incorrect responses grow longer than Dr. GRPO's during training",
          "Dr. GRPO §3.1, Fig. 5-6", +1, length_bias,
          "GRPO's minus Dr. GRPO's mean incorrect-response length, same prompt, step and seed, second half"),
    Claim("std_scaling_extremes", "GRPO's std scaling weights too-easy and too-hard questions more",
          "Dr. GRPO §3.1 (question-level difficulty bias)", +1, std_scaling_extremes,
          "share of advantage weight on groups with pass rate <= 1/4 or >= 3/4, GRPO's scaling minus "
          "none, on the same training groups"),
    Claim("distill_vs_rl", "Distilling an RL teacher's traces beats RL on the same small student",
          "DeepSeek-R1 §4.1, Table 6", +1, distill_vs_rl,
          "greedy test accuracy of the distilled student minus the RL route's (SFT + Dr. GRPO) from the "
          "same base", "the teacher is the Dr. GRPO model itself (same size as the student), filtered to "
          "correct traces; R1 distills a far larger model"),
)


# ---------------------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One row of findings.json."""

    id: str
    claim: str
    source: str
    expected: str
    measured_as: str
    caveat: str
    value: float | None = None
    low: float | None = None
    high: float | None = None
    adjusted_low: float | None = None
    adjusted_high: float | None = None
    adjusted_level: float | None = None
    n: int = 0
    unit: str = ""
    scale: str = "share"
    detail: str = ""
    verdict: str = INCONCLUSIVE
    measured: bool = False
    extra: dict = field(default_factory=dict)


def _interval(values: Sequence[float], level: float, n_boot: int, seed: int) -> tuple[float, float]:
    if len(values) < 2:
        return math.nan, math.nan
    return metrics.bootstrap_ci(values, n_boot=n_boot, confidence=level, seed=seed)


def build_findings(results_dir: Path | str, confidence: float = 0.95, n_boot: int = 10000,
                   seed: int = 0, claims: Sequence[Claim] = CLAIMS) -> list[Finding]:
    """Measure every claim from the records under `results_dir` and give each its verdict.

    Args:
        results_dir: the folder holding the stages' result folders.
        confidence: the plain interval's level; alpha = 1 - confidence is shared by all verdicts.
        n_boot: bootstrap resamples.
        seed: the resampling seed.
        claims: the claims to check.

    Returns:
        One Finding per claim, in the order given; unmeasured ones say so and count as inconclusive.
    """
    records = Records(results_dir)
    measured = [(claim, claim.measure(records)) for claim in claims]
    m = max(1, sum(1 for _, found in measured if found is not None))
    adjusted = 1 - (1 - confidence) / m  # Bonferroni: every verdict's interval at 1 - alpha/m
    rows = []
    for claim, found in measured:
        row = Finding(id=claim.id, claim=claim.text, source=claim.source,
                      expected="above 0" if claim.expected > 0 else "below 0",
                      measured_as=claim.measured_as, caveat=claim.caveat)
        if found is not None:
            low, high = _interval(found.values, confidence, n_boot, seed)
            adj_low, adj_high = _interval(found.values, adjusted, n_boot, seed)
            row.value, row.low, row.high = found.value, low, high
            row.adjusted_low, row.adjusted_high, row.adjusted_level = adj_low, adj_high, adjusted
            row.n, row.unit, row.scale, row.detail = len(found.values), found.unit, found.scale, found.detail
            row.verdict, row.measured = verdict(claim.expected, adj_low, adj_high), True
        rows.append(row)
    return rows


def _number(value: float | None, scale: str, signed: bool = True) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    shown = 100 * value if scale == "share" else value
    return f"{shown:+.1f}" if signed else f"{shown:.1f}"


def _interval_text(low: float | None, high: float | None, scale: str) -> str:
    if low is None or high is None or math.isnan(low) or math.isnan(high):
        return "n/a"
    return f"[{_number(low, scale)}, {_number(high, scale)}]"


def findings_markdown(rows: Sequence[Finding], split: str = "test") -> str:
    """findings.md: the table, then each row's measure and caveat."""
    level = next((r.adjusted_level for r in rows if r.adjusted_level), None)
    counts = {v: sum(r.verdict == v for r in rows if r.measured) for v in (REPRODUCED, CONTRADICTED, INCONCLUSIVE)}
    lines = [
        "# Findings: the papers' claims, checked", "",
        f"Measured on the {split} split's records of this run (`results/`), by `r1repro.findings`. Values "
        "are differences or shares in percentage points (tokens where marked). The verdict is computed "
        "from the Bonferroni-adjusted interval"
        + (f" ({100 * level:.2f}%, over {sum(r.measured for r in rows)} claims)" if level else "")
        + ": `reproduced` when it lies wholly on the side the paper predicts, `contradicted` when wholly on "
        "the other, else `inconclusive at this size`.", "",
        f"{counts[REPRODUCED]} reproduced, {counts[CONTRADICTED]} contradicted, "
        f"{counts[INCONCLUSIVE]} inconclusive, {sum(not r.measured for r in rows)} not measured.", "",
        "| claim | where | expected | measured | 95% interval | adjusted interval | n | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        unit = " tokens" if r.scale == "tokens" else " pts"
        measured = (_number(r.value, r.scale) + unit) if r.measured else "not measured"
        lines.append(f"| {r.claim} | {r.source} | {r.expected} | {measured} | "
                     f"{_interval_text(r.low, r.high, r.scale)} | "
                     f"{_interval_text(r.adjusted_low, r.adjusted_high, r.scale)} | "
                     + (f"{r.n} {r.unit}{'s' if r.n != 1 else ''}" if r.measured else "-") + f" | **{r.verdict}** |")
    lines += ["", "## What each row measures", ""]
    for r in rows:
        text = f"- **{r.id}**: {r.measured_as}."
        if r.detail:
            text += f" Here: {r.detail}."
        if r.caveat:
            text += f" Caveat: {r.caveat}."
        lines.append(text)
    return "\n".join(lines) + "\n"


def write_findings(results_dir: Path | str, confidence: float = 0.95, n_boot: int = 10000, seed: int = 0,
                   split: str = "test") -> list[Finding]:
    """Build the findings and write findings.json and findings.md into `results_dir` (atomically)."""
    from r1repro.io import atomic_write_json, atomic_write_text

    results_dir = Path(results_dir)
    rows = build_findings(results_dir, confidence=confidence, n_boot=n_boot, seed=seed)
    atomic_write_json(results_dir / FINDINGS_JSON, {"split": split, "confidence": confidence,
                                                     "bootstrap_samples": n_boot,
                                                     "findings": [asdict(r) for r in rows]})
    atomic_write_text(results_dir / FINDINGS_MD, findings_markdown(rows, split))
    return rows
