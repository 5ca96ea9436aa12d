"""The papers' claims as a checked table: claims tested, mechanisms sized, observations described.

    python -m r1repro.report      # writes results/findings.md and findings.json, then REPORT.md

Every row is measured from the per-answer records the stages left in results/ (nothing else:
`build_findings` is a pure function of those files; the measures are in `r1repro.claim_measures`).
A row is one of three kinds:

* a **claim**: a direction one of the papers predicts, with a test whose outcome could contradict it.
  Only claims get a verdict and count in the Bonferroni adjustment.
* a **mechanism**: a quantity that holds by construction (GRPO's std scaling weights extreme groups
  more for any mix of two-valued rewards; pass@k >= pass@1 by the estimator's definition). It is
  shown with its size and the words "by construction", never as reproduced.
* an **observation**: described with its n, not tested. A row is one when no outcome could
  contradict it (a share that is never below 0), when it repeats another row (the rule is in its
  measure), when a claim's measured population shows no variation at all (its interval is one
  point: the model right on none of the questions under either template): not a test at this size,
  or when the population cannot move against the prediction (a predicted rise from a first side right
  on no question: nothing can break, so the difference is never below 0; `PairedCounts.can_go_against`).

The test that fits each row: where each question gives one yes/no outcome on both sides (two templates,
before and after training, two models), the exact sign test (McNemar exact) on the fixed (0 -> 1) and
broken (1 -> 0) questions, with an exact interval for the paired difference (`r1repro.exact_tests`);
elsewhere (per-question means over several seeds, lengths) a percentile bootstrap over the paired
units. With m claims counted, each claim's interval is taken at level 1 - alpha/m (alpha = 1 -
`report.confidence`; Bonferroni), and the verdict is read off it:

* `reproduced`: the whole interval lies on the side of 0 the paper predicts;
* `contradicted`: the whole interval lies on the other side;
* `inconclusive at this size`: the interval holds 0 (or the records are too few to measure).

For the exact rows this is the same as the two-sided exact p below alpha/m. Verdicts are never
written by hand and settings are not tuned toward them: the records are the test split's
(`splits.report_on`), which no setting was chosen on.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from r1repro import metrics
from r1repro.claim_measures import (DR_GRPO, GRPO, Measurement, Records, distill_vs_rl, heldout_length_bias,
                                    length_bias, length_mechanism,
                                    pass_at_k_rises_with_k, reflection_before_rl, rl_exploration_shrink,
                                    rl_gain, sft_change, sft_readability, std_scaling_extremes,
                                    template_effect, temperature_raises_pass_at_k)
from r1repro.exact_tests import clopper_pearson

REPRODUCED, CONTRADICTED, INCONCLUSIVE = "reproduced", "contradicted", "inconclusive at this size"
CLAIM, MECHANISM, OBSERVATION = "claim", "mechanism", "observation"
KINDS = (CLAIM, MECHANISM, OBSERVATION)
# What the verdict column says for rows that are not tests.
BY_CONSTRUCTION, OBSERVED, NOT_MEASURED = "holds by construction", "observation", "not measured"
FINDINGS_MD, FINDINGS_JSON = "findings.md", "findings.json"


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
        caveat: what differs from the paper's setting, beyond what the records show.
        kind: CLAIM (tested), MECHANISM (holds by construction) or OBSERVATION (described). A claim
            becomes an observation when its measure says why or its population shows no variation.
    """

    id: str
    text: str
    source: str
    expected: int
    measure: Callable[[Records], Measurement | None]
    measured_as: str
    caveat: str = ""
    kind: str = CLAIM

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"claim {self.id}: kind must be one of {KINDS}, got {self.kind!r}")


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


CLAIMS: tuple[Claim, ...] = (
    Claim("template_answer_rate", "A prompt template changes whether a base model answers at all",
          "Dr. GRPO §2.1 (templates and question sets)", +1, template_effect("attempted"),
          "answer rate with the R1 template minus with no template, same questions (greedy)"),
    Claim("template_accuracy", "The template changes a base model's accuracy",
          "Dr. GRPO §2.1, Table 1", +1, template_effect("correct", None),
          "accuracy with the probe's accuracy template (probe.accuracy_template) minus with no template (greedy)"),
    Claim("reflection_before_rl", "Base models already self-reflect before any RL ('aha' is not new)",
          "Dr. GRPO §2.3 (aha moment)", +1, reflection_before_rl,
          "share of questions with a self-reflection keyword in any of their greedy answers (every template)",
          kind=OBSERVATION),
    Claim("pass_at_k_rises_with_k", "Sampling explores: pass@k rises with k", "Dr. GRPO §2 (exploration)",
          +1, pass_at_k_rises_with_k, "pass@k minus pass@1 at the highest probed temperature",
          kind=MECHANISM),
    Claim("temperature_raises_pass_at_k", "Higher temperature raises pass@k over greedy decoding",
          "Dr. GRPO §2 (exploration)", +1, temperature_raises_pass_at_k,
          "pass@k at the highest probed temperature minus at T=0"),
    Claim("sft_format", "Cold-start SFT teaches the answer format", "DeepSeek-R1 §2.3.1 (cold start)", +1,
          sft_change(lambda r: r["formatted"]), "format-compliant share after SFT minus before (greedy)"),
    Claim("sft_readability", "Cold-start SFT makes responses readable (format kept, one language)",
          "DeepSeek-R1 §2.3.1 (readability)", +1, sft_readability,
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
    Claim("rl_exploration_grpo", "RL (GRPO) sharpens more than it widens: its gain shrinks from pass@1 to pass@k",
          "Yue et al. 2025 (RL and pass@k)", -1, rl_exploration_shrink(GRPO),
          "GRPO's pass@k gain over its start minus its pass@1 gain, per question (k sampled answers a side)"),
    Claim("rl_exploration_dr_grpo", "RL (Dr. GRPO) sharpens more than it widens: its gain shrinks from pass@1 "
          "to pass@k", "Yue et al. 2025 (RL and pass@k)", -1, rl_exploration_shrink(DR_GRPO),
          "Dr. GRPO's pass@k gain over its start minus its pass@1 gain, per question (k sampled answers a side)"),
    Claim("length_mechanism", "GRPO's length normaliser lowers long wrong answers' log-prob less than "
          "Dr. GRPO's (one update)", "Dr. GRPO §3.1 (the mechanism)", +1, length_mechanism,
          "slope against length of GRPO's minus Dr. GRPO's change in per-token log-prob of wrong answers, "
          "one update each from the same weights and batch, per batch"),
    Claim("length_bias", "GRPO's incorrect responses grow longer than Dr. GRPO's during training",
          "Dr. GRPO §3.1, Fig. 5-6", +1, length_bias,
          "GRPO's minus Dr. GRPO's mean incorrect-response length, same prompt, step and seed, second half"),
    Claim("length_bias_heldout", "After training, GRPO's incorrect answers are longer than Dr. GRPO's",
          "Dr. GRPO §3.1, Fig. 5-6", +1, heldout_length_bias,
          "GRPO's minus Dr. GRPO's length of greedy held-out answers both runs got wrong, per question and seed"),
    Claim("std_scaling_extremes", "GRPO's std scaling weights too-easy and too-hard questions more",
          "Dr. GRPO §3.1 (question-level difficulty bias)", +1, std_scaling_extremes,
          "share of advantage weight on groups with pass rate <= 1/4 or >= 3/4, GRPO's scaling minus "
          "none, each training group once", kind=MECHANISM),
    Claim("distill_vs_rl", "Distilling an RL teacher's traces beats RL on the same small student",
          "DeepSeek-R1 §4.1, Table 6", +1, distill_vs_rl,
          "greedy test accuracy of the distilled student minus the RL route's (SFT + Dr. GRPO) from the "
          "same base", "the teacher's traces filtered to correct ones"),
)


# ---------------------------------------------------------------------------------------------------
# Kinds, tests and the table
# ---------------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One row of findings.json."""

    id: str
    claim: str
    source: str
    kind: str
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
    test: str = ""
    fixed: int | None = None
    broken: int | None = None
    successes: int | None = None
    p_value: float | None = None
    counted: bool = False
    verdict: str = INCONCLUSIVE
    measured: bool = False
    why: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)


def plural(unit: str) -> str:
    """'question' -> 'questions', 'batch' -> 'batches'."""
    return unit + ("es" if unit.endswith(("ch", "sh", "s", "x")) else "s")


def no_variation(found: Measurement) -> bool:
    """The measured population shows no variation, so the row's interval is one point: no discordant
    question for the exact test, or every unit's value equal for the bootstrap."""
    if found.pair is not None:
        return found.pair.discordant == 0
    return len(set(found.values)) <= 1


def _no_variation_note(found: Measurement) -> str:
    n = len(found.values)
    what = (f"none of the {n} {plural(found.unit)} differs between the two sides ({found.detail}; 0 fixed, 0 broken)"
            if found.pair is not None else f"all {n} {plural(found.unit)} give the same value ({found.detail})")
    return (what + ": its interval is one point and no outcome could contradict the claim, so it is not a "
            "test at this size. The n it would need is unknown: first a population where the outcome varies "
            "(a model that sometimes answers them right)")


def classify(claim: Claim, found: Measurement | None) -> tuple[str, str, str]:
    """A row's kind, and for a row that is not a counted claim why (in a few words, then a sentence)."""
    if found is None:
        return claim.kind, "", ""
    if claim.kind != CLAIM or found.why:
        return (claim.kind if claim.kind != CLAIM else OBSERVATION), found.why, found.note
    if no_variation(found):
        return OBSERVATION, "no variation at this size", _no_variation_note(found)
    if found.pair is not None and not found.pair.can_go_against(claim.expected):
        return OBSERVATION, "cannot go against the prediction", _floor_note(claim, found)
    return CLAIM, "", ""


def _floor_note(claim: Claim, found: Measurement) -> str:
    side, cannot = ("right on none", "break") if claim.expected > 0 else ("right on every", "be fixed")
    return (f"the first side is {side} of the {found.pair.n} {plural(found.unit)} ({found.detail}), so no {found.unit} "
            f"can {cannot} and the difference cannot come out {'below' if claim.expected > 0 else 'above'} 0: "
            "described, not tested. It becomes a test on a population where the first side is sometimes "
            f"{'right' if claim.expected > 0 else 'wrong'}")


def interval(found: Measurement, level: float, n_boot: int, seed: int) -> tuple[float, float]:
    """The interval of the test that fits the measurement: exact for paired yes/no outcomes and for a
    share of independent units, else a percentile bootstrap over the units."""
    if found.pair is not None:
        return found.pair.interval(level)
    if found.share is not None:
        return clopper_pearson(found.share[0], found.share[1], level)
    if len(found.values) < 2:
        return math.nan, math.nan
    return metrics.bootstrap_ci(found.values, n_boot=n_boot, confidence=level, seed=seed)


def units_needed(values: Sequence[float], level: float) -> int | None:
    """Units (questions, groups) whose mean would clear 0 at `level` if the effect and the spread
    stayed as measured: (z * sd / |mean|)^2, normal approximation. None when the mean is 0."""
    if len(values) < 2 or not any(values):
        return None
    mean, sd = statistics.fmean(values), statistics.stdev(values)
    if mean == 0 or sd == 0:
        return None
    z = statistics.NormalDist().inv_cdf(1 - (1 - level) / 2)
    return math.ceil((z * sd / abs(mean)) ** 2)


def _measured_row(row: Finding, claim: Claim, found: Measurement, confidence: float, adjusted: float,
                  n_boot: int, seed: int) -> None:
    row.value, row.n, row.unit, row.scale = found.value, len(found.values), found.unit, found.scale
    row.detail, row.extra, row.measured = found.detail, dict(found.extra), True
    row.caveat = "; ".join(c for c in (*found.caveats, claim.caveat) if c)
    row.low, row.high = interval(found, confidence, n_boot, seed)
    if found.pair is not None:
        row.test, row.fixed, row.broken = "exact sign test (McNemar)", found.pair.fixed, found.pair.broken
        row.n, row.p_value = found.pair.n, found.pair.p_value()
    elif found.share is not None:
        row.test, (row.successes, row.n) = "Clopper-Pearson (exact)", found.share
    else:
        row.test = found.test or f"bootstrap over {plural(found.unit)}"
    if row.kind == CLAIM:
        row.adjusted_low, row.adjusted_high = interval(found, adjusted, n_boot, seed)
        row.adjusted_level, row.counted = adjusted, True
        row.verdict = verdict(claim.expected, row.adjusted_low, row.adjusted_high)
        needed = units_needed(found.values, adjusted)
        if row.verdict == INCONCLUSIVE and needed is not None:
            row.extra["n_needed"] = needed
            row.note = (f"at the measured effect ({_number(found.value, found.scale)}) and spread, about "
                        f"{needed} {plural(found.unit)} would put the adjusted interval clear of 0 (normal "
                        f"approximation; this run has {len(found.values)})")
    else:
        row.verdict = BY_CONSTRUCTION if row.kind == MECHANISM else OBSERVED


def build_findings(results_dir: Path | str, confidence: float = 0.95, n_boot: int = 10000,
                   seed: int = 0, claims: Sequence[Claim] = CLAIMS) -> list[Finding]:
    """Measure every row from the records under `results_dir`, classify it, and judge the claims.

    Args:
        results_dir: the folder holding the stages' result folders.
        confidence: the plain interval's level; alpha = 1 - confidence is shared by all verdicts.
        n_boot: bootstrap resamples.
        seed: the resampling seed.
        claims: the rows to check.

    Returns:
        One Finding per row, in the order given; the counted claims share the Bonferroni level
        1 - alpha/m. Unmeasured claims say so and read inconclusive.
    """
    records = Records(results_dir)
    measured = [(claim, claim.measure(records)) for claim in claims]
    kinds = [classify(claim, found) for claim, found in measured]
    m = sum(found is not None and kind == CLAIM for (_, found), (kind, _, _) in zip(measured, kinds))
    adjusted = 1 - (1 - confidence) / max(1, m)  # Bonferroni over the counted claims only
    rows = []
    for (claim, found), (kind, why, note) in zip(measured, kinds):
        row = Finding(id=claim.id, claim=claim.text, source=claim.source, kind=kind,
                      expected="above 0" if claim.expected > 0 else "below 0",
                      measured_as=claim.measured_as, caveat=claim.caveat, why=why, note=note,
                      verdict=INCONCLUSIVE if kind == CLAIM else NOT_MEASURED)
        if found is not None:
            _measured_row(row, claim, found, confidence, adjusted, n_boot, seed)
        rows.append(row)
    return rows


def _number(value: float | None, scale: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if scale == "proportion":
        return f"{100 * value:.1f}"
    return f"{100 * value if scale == 'share' else value:+.1f}"


def _interval_text(low: float | None, high: float | None, scale: str) -> str:
    return metrics.interval_text(low, high, lambda v: _number(v, scale)) or "n/a"


def _p_text(p: float) -> str:
    return f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"


def _cells(r: Finding) -> list[str]:
    """A measured row's cells from `measured` to `test`."""
    unit = {"tokens": " tokens", "proportion": "%", "slope": " mnat/token per 10 tokens"}.get(r.scale, " pts")
    if r.fixed is not None:
        n = f"{r.n} {plural(r.unit)}: {r.fixed} fixed, {r.broken} broken"
    elif r.successes is not None:
        n = f"{r.successes} of {r.n} {plural(r.unit)}"
    else:
        n = f"{r.n} {plural(r.unit) if r.n != 1 else r.unit}"
    test = f"{r.test}, p = {_p_text(r.p_value)}" if r.p_value is not None else r.test
    return [_number(r.value, r.scale) + unit, _interval_text(r.low, r.high, r.scale),
            _interval_text(r.adjusted_low, r.adjusted_high, r.scale) if r.counted else "-", n,
            test if r.kind == CLAIM else f"none: {r.why}"]


def findings_markdown(rows: Sequence[Finding], split: str = "test", confidence: float = 0.95) -> str:
    """findings.md: how rows are judged, the table, then each row's measure, test and caveats."""
    m = sum(r.counted for r in rows)
    level = next((r.adjusted_level for r in rows if r.counted), None)
    alpha = 1 - confidence
    claims = [r for r in rows if r.counted]
    counts = {v: sum(r.verdict == v for r in claims) for v in (REPRODUCED, CONTRADICTED, INCONCLUSIVE)}
    kinds = {k: sum(r.kind == k and r.measured for r in rows) for k in KINDS}
    rule = (f"Over the {m} counted claims each claim's interval is taken at the Bonferroni-adjusted level "
            f"{100 * level:.2f}% (1 - {alpha:g}/{m})" if level else "No claim is counted")
    lines = [
        "# Findings: the papers' claims, checked", "",
        f"Measured on the {split} split's records of this run (`results/`), by `r1repro.findings`. Values "
        "are differences in percentage points (shares in %, tokens where marked).", "",
        "Three kinds of row. A **claim** is a direction a paper predicts, with a test whose outcome could "
        "contradict it; only claims get a verdict and count in the Bonferroni adjustment. A **mechanism** "
        "holds by construction: shown with its size, never as reproduced. An **observation** is described "
        "with its n, not tested: a share that cannot fall below 0, a row that repeats another, a claim "
        "whose measured population shows no variation at all (its interval is one point: not a test at "
        "this size), or one whose population cannot move against the prediction (a rise from a first "
        "side right on no question: nothing can break).", "",
        "Tests: rows with one yes/no outcome per question on both sides use the exact sign test (McNemar "
        "exact) on the fixed (0->1) and broken (1->0) questions, with an exact interval for the paired "
        "difference (Clopper-Pearson for p = fixed/(fixed+broken), mapped to (fixed+broken)/n x (2p-1)); "
        "per-question means over seeds and lengths use a percentile bootstrap over the paired units. "
        f"{rule}: `reproduced` when it lies wholly on the side the paper predicts, `contradicted` when "
        "wholly on the other, else `inconclusive at this size`"
        + (f"; for the exact rows this is the same as the two-sided exact p below {alpha / m:.4f}." if m else "."),
        "",
        f"{kinds[CLAIM]} claims ({counts[REPRODUCED]} reproduced, {counts[CONTRADICTED]} contradicted, "
        f"{counts[INCONCLUSIVE]} inconclusive), {kinds[MECHANISM]} mechanisms, {kinds[OBSERVATION]} "
        f"observations, {sum(not r.measured for r in rows)} not measured.", "",
        f"| row | kind | where | expected | measured | {100 * confidence:g}% interval | adjusted interval | n "
        "| test | caveats | verdict |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = _cells(r) if r.measured else ["not measured", "n/a", "n/a", "-", "-"]
        lines.append("| " + " | ".join([r.claim, r.kind, r.source, r.expected, *cells, r.caveat or "-",
                                        f"**{r.verdict}**"]) + " |")
    lines += ["", "## What each row measures", ""]
    for r in rows:
        text = f"- **{r.id}** ({r.kind}): {r.measured_as}."
        if r.detail:
            text += f" Here: {r.detail}."
        if r.note:
            label = {MECHANISM: "By construction", OBSERVATION: "Not a test"}.get(r.kind, "Inconclusive at this size")
            text += f" {label}: {r.note}."
        if r.caveat:
            text += f" Caveats: {r.caveat}."
        lines.append(text)
    return "\n".join(lines) + "\n"


def write_findings(results_dir: Path | str, confidence: float = 0.95, n_boot: int = 10000, seed: int = 0,
                   split: str = "test") -> list[Finding]:
    """Build the findings and write findings.json and findings.md into `results_dir` (atomically)."""
    from r1repro.io import atomic_write_json, atomic_write_text

    results_dir = Path(results_dir)
    rows = build_findings(results_dir, confidence=confidence, n_boot=n_boot, seed=seed)
    counted = [r for r in rows if r.counted]
    atomic_write_json(results_dir / FINDINGS_JSON, {
        "split": split, "confidence": confidence, "bootstrap_samples": n_boot,
        "counted_claims": len(counted), "adjusted_level": counted[0].adjusted_level if counted else None,
        "kinds": {k: sum(r.kind == k and r.measured for r in rows) for k in KINDS},
        "findings": [asdict(r) for r in rows]})
    atomic_write_text(results_dir / FINDINGS_MD, findings_markdown(rows, split, confidence))
    return rows
