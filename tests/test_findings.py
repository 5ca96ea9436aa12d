"""The findings table: rows are claims, mechanisms or observations; verdicts follow from the test that
fits each row; only counted claims share the Bonferroni level; the table is rebuilt from records alone."""

from __future__ import annotations

import json
import math
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from r1repro import claim_measures, findings
from r1repro.exact_tests import PairedCounts
from r1repro.findings import (BY_CONSTRUCTION, CLAIM, CONTRADICTED, INCONCLUSIVE, MECHANISM, OBSERVATION, OBSERVED,
                              REPRODUCED, verdict)
from r1repro.pipeline import seed_suffix


@pytest.mark.parametrize(("expected", "low", "high", "result"), [
    (+1, 0.01, 0.30, REPRODUCED),
    (+1, -0.30, -0.01, CONTRADICTED),
    (+1, -0.05, 0.20, INCONCLUSIVE),
    (+1, 0.0, 0.20, INCONCLUSIVE),       # touching 0 is not excluding it
    (-1, -0.30, -0.01, REPRODUCED),
    (-1, 0.01, 0.30, CONTRADICTED),
    (+1, 0.0, 0.0, INCONCLUSIVE),        # every value 0: nothing to tell
    (+1, math.nan, math.nan, INCONCLUSIVE),
])
def test_each_verdict_follows_from_its_interval(expected, low, high, result) -> None:
    assert verdict(expected, low, high) == result


def test_verdict_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match="expected must be"):
        verdict(0, 0.1, 0.2)
    with pytest.raises(ValueError, match="reversed"):
        verdict(1, 0.3, 0.1)


@pytest.mark.parametrize(("counts", "level", "result"), [
    (PairedCounts(fixed=12, broken=0, n=40), 0.95, REPRODUCED),
    (PairedCounts(fixed=0, broken=12, n=40), 0.95, CONTRADICTED),
    (PairedCounts(fixed=6, broken=0, n=64), 1 - 0.05 / 7, INCONCLUSIVE),  # p = 0.031 > 0.05/7
    (PairedCounts(fixed=6, broken=0, n=64), 0.95, REPRODUCED),            # p = 0.031 < 0.05
    (PairedCounts(fixed=5, broken=6, n=64), 0.95, INCONCLUSIVE),
])
def test_each_verdict_is_reachable_through_the_exact_test(counts, level, result) -> None:
    assert verdict(+1, *counts.interval(level)) == result


def _write(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, dict):
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _read(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _group(correct: list[bool], lengths: list[int]) -> dict:
    rewards = [1.0 * c + 0.5 for c in correct]
    return {"question_id": "q", "rewards": rewards, "correct": correct, "lengths": lengths,
            "truncated": [False] * len(correct)}


def _diagnostics(run: str) -> list[dict]:
    """Two groups a step; step 1's drawn identically by both runs (the same start and seed), and
    later GRPO's incorrect answers longer by 40 + step tokens."""
    rows = [{"step": 0}]
    for step in range(1, 9):
        long = 70 if step == 1 or run == "dr_grpo" else 110 + step
        rows.append({"step": step, "groups": [_group([True, False, False, False], [60, long, long + 4, long - 4]),
                                              _group([True, True, False, False], [60, 60, long, long])]})
    return rows


def make_results(root: Path, n: int = 60, seeds: tuple[int, ...] = (7, 8)) -> Path:
    """Records of a made-up run in which each claim's effect is planted (or absent) on purpose."""
    results = root / "results"
    qs = [f"q{i}" for i in range(n)]
    probe = []
    for i, q in enumerate(qs):
        probe.append({"model": "Tiny-Instruct", "template": "r1", "question_id": q, "attempted": True,
                      "correct": i % 3 == 0, "reflection_keywords": 1 if i % 4 == 0 else 0})
        probe.append({"model": "Tiny-Instruct", "template": "none", "question_id": q, "attempted": i % 5 == 0,
                      "correct": i % 30 == 1, "reflection_keywords": 0})
    _write(results / "probe" / "records_templates.jsonl", probe)
    exploration = [{"model": "Tiny-Instruct", "template": "r1", "question_id": q, "temperature": t, "sample_index": j,
                    "correct": (t > 0 and j == i % 4) or (t == 0 and i % 10 == 0)}
                   for i, q in enumerate(qs) for t in (0.0, 1.0) for j in range(4)]
    _write(results / "probe" / "records_exploration.jsonl", exploration)
    # A few questions right and formatted before SFT, so that SFT could break them (a test, not a floor).
    _write(results / "sft" / "records_before.jsonl",
           [{"question_id": q, "formatted": i % 20 == 0, "correct": i % 20 == 0, "language": 1.0}
            for i, q in enumerate(qs)])
    _write(results / "sft" / "records_after.jsonl",
           [{"question_id": q, "formatted": True, "correct": i % 5 == 0, "language": 1.0}
            for i, q in enumerate(qs)])
    word_ops = {"file": None, "synthetic": {"task": "word_ops", "size": 1800}}
    _write(results / "rl" / "protocol.json", {"params": {
        "runs": {"grpo": {"loss_type": "grpo", "scale_rewards": "group"},
                 "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"}}, "seeds": list(seeds),
        "init_model": "models/sft", "output_dir": "models/rl", "prompts": word_ops, "heldout": word_ops}})
    _write(results / "rl" / "records_start.jsonl", [{"question_id": q, "correct": i % 10 == 0}
                                                    for i, q in enumerate(qs)])
    for run in ("grpo", "dr_grpo"):  # GRPO: no change; Dr. GRPO: planted gain on every seed
        for seed in seeds:
            suffix, gain = seed_suffix(seed, list(seeds)), run == "dr_grpo"
            _write(results / "rl" / f"records_{run}{suffix}.jsonl",
                   [{"question_id": q, "correct": i % 10 == 0 or (gain and i % 3 == 1), "num_tokens": 70}
                    for i, q in enumerate(qs)])
            _write(results / "rl" / f"diagnostics_{run}{suffix}.jsonl", _diagnostics(run))
    # 8 samples a question: GRPO samples as its start (no change); Dr. GRPO sharpens: the questions its
    # start gets 2 of 8 it gets 8 of 8 (pass@1 +0.75, pass@8 +0), the others stay at 0 of 8.
    start_right = lambda i: 2 if i % 2 == 0 else 0  # noqa: E731
    explore = [{"model": "start", "question_id": q, "sample_index": j, "correct": j < start_right(i)}
               for i, q in enumerate(qs) for j in range(8)]
    for seed in seeds:
        suffix = seed_suffix(seed, list(seeds))
        explore += [{"model": f"grpo{suffix}", "question_id": q, "sample_index": j, "correct": j < start_right(i)}
                    for i, q in enumerate(qs) for j in range(8)]
        explore += [{"model": f"dr_grpo{suffix}", "question_id": q, "sample_index": j, "correct": i % 2 == 0}
                    for i, q in enumerate(qs) for j in range(8)]
    _write(results / "rl" / "records_exploration.jsonl", explore)
    # One update each: GRPO's change minus Dr. GRPO's rises 1e-4 nats/token per token of length (+ noise).
    _write(results / "rl" / "records_length_mechanism.jsonl",
           [{"batch": b, "id": f"q{b}", "sample": j, "correct": j == 0, "length": 50 + 10 * j,
             "delta_dr_grpo": -0.05, "delta_grpo": -0.05 + 1e-4 * (50 + 10 * j) + 1e-4 * ((b * j) % 3)}
            for b in range(16) for j in range(4)])
    _write(results / "distill" / "protocol.json", {"params": {"teacher": "models/rl/dr_grpo/final"}})
    _write(results / "eval" / "protocol.json", {"params": {
        "distill_vs_rl": {"start": "base", "rl": "dr_grpo", "distilled": "student", "benchmark": "asdiv_test"},
        "models": {"cold_start_sft": "models/sft", "grpo": "models/rl/grpo/final",
                   "dr_grpo": "models/rl/dr_grpo/final", "student": "models/distill/student"}}})
    right = {"dr_grpo": lambda i: i % 2 == 0, "student": lambda i: False,  # the RL route planted higher
             "cold_start_sft": lambda i: i % 4 == 0, "grpo": lambda i: i % 4 in (0, 1)}
    _write(results / "eval" / "records.jsonl",
           [{"model": m, "benchmark": "asdiv_test", "mode": "greedy", "question_id": q, "correct": right[m](i)}
            for m in right for i, q in enumerate(qs)])
    return results


def _by_id(rows):
    return {r.id: r for r in rows}


def test_planted_effects_get_the_verdicts_they_should(tmp_path: Path) -> None:
    rows = _by_id(findings.build_findings(make_results(tmp_path), n_boot=2000))
    assert all(r.measured for r in rows.values())
    assert rows["template_answer_rate"].verdict == REPRODUCED
    assert rows["template_answer_rate"].value == pytest.approx(1 - 12 / 60)
    assert (rows["template_answer_rate"].fixed, rows["template_answer_rate"].broken) == (48, 0)
    assert rows["template_answer_rate"].p_value == pytest.approx(2 * 0.5 ** 48)
    assert rows["sft_format"].verdict == REPRODUCED and rows["sft_format"].value == pytest.approx(57 / 60)
    assert (rows["sft_format"].fixed, rows["sft_format"].broken) == (57, 0)
    assert rows["temperature_raises_pass_at_k"].verdict == REPRODUCED  # pass@4 = any of 4: binary, exact
    assert rows["rl_gain_dr_grpo"].verdict == REPRODUCED
    assert "bootstrap" in rows["rl_gain_dr_grpo"].test and "2 seeds" in rows["rl_gain_dr_grpo"].test
    assert rows["rl_gain_dr_grpo"].fixed is None  # per-question means over 2 seeds are not binary
    assert rows["length_bias"].verdict == REPRODUCED and rows["length_bias"].value == pytest.approx(46.5)
    assert rows["length_bias"].n == 2 * 2 * 4  # 2 groups x 2 seeds x the last 4 of 8 steps
    mechanism = rows["length_mechanism"]
    assert mechanism.verdict == REPRODUCED and mechanism.n == 16 and mechanism.unit == "batch"
    assert mechanism.value == pytest.approx(1.0, abs=0.3)  # 1e-4 per token = 1 mnat/token per 10 tokens
    assert rows["distill_vs_rl"].verdict == CONTRADICTED and rows["distill_vs_rl"].broken == 30
    shrink = rows["rl_exploration_dr_grpo"]
    assert shrink.verdict == REPRODUCED and shrink.value == pytest.approx(-0.75 / 2) and shrink.n == 60
    assert "k = 8" in shrink.detail and "bootstrap" in shrink.test
    assert rows["rl_exploration_grpo"].kind == OBSERVATION  # sampled as its start: no variation
    # Not tests: a share that cannot fall below 0, a row repeating another, mechanisms, no variation.
    assert rows["reflection_before_rl"].kind == OBSERVATION and rows["reflection_before_rl"].verdict == OBSERVED
    assert rows["reflection_before_rl"].value == pytest.approx(15 / 60)
    assert rows["sft_readability"].kind == OBSERVATION and "same as sft_format" in rows["sft_readability"].why
    assert rows["rl_gain_grpo"].kind == OBSERVATION and rows["rl_gain_grpo"].value == 0.0
    for mechanism in ("pass_at_k_rises_with_k", "std_scaling_extremes"):
        assert rows[mechanism].kind == MECHANISM and rows[mechanism].verdict == BY_CONSTRUCTION
        assert not rows[mechanism].counted and rows[mechanism].adjusted_low is None
    assert rows["std_scaling_extremes"].n == 2 * (8 * 2 * 2 - 2)  # per seed: step 1's 2 groups once
    # Bonferroni over the counted claims only; the verdict's interval is wider than the plain one.
    counted = [r for r in rows.values() if r.counted]
    assert {r.kind for r in counted} == {CLAIM} and len(counted) == 10
    r = rows["rl_gain_dr_grpo"]
    assert r.adjusted_level == pytest.approx(1 - 0.05 / 10)
    assert r.adjusted_low <= r.low and r.adjusted_high >= r.high
    assert not any(r.adjusted_low == r.adjusted_high for r in counted)


def test_a_claim_without_variation_becomes_an_uncounted_observation(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    before = sum(r.counted for r in findings.build_findings(results, n_boot=200))
    probe = results / "probe" / "records_templates.jsonl"
    _write(probe, [{**r, "correct": False} for r in _read(probe)])  # right on none, under either template
    rows = _by_id(findings.build_findings(results, n_boot=200))
    row = rows["template_accuracy"]
    assert row.kind == OBSERVATION and not row.counted and row.verdict == OBSERVED
    assert (row.low, row.high, row.fixed, row.broken) == (0.0, 0.0, 0, 0)
    assert "not a test at this size" in row.note and "unknown" in row.note
    assert sum(r.counted for r in rows.values()) == before - 1
    assert rows["sft_format"].adjusted_level == pytest.approx(1 - 0.05 / (before - 1))


def test_no_variation_is_read_from_the_test_that_fits() -> None:
    assert findings.no_variation(claim_measures.Measurement(0.0, (0.0, 0.0), "question"))
    assert findings.no_variation(claim_measures.Measurement(1.0, (1.0, 1.0), "group"))  # a bootstrap of one point
    # Every question fixed: the differences are all equal, yet the exact interval is not a point.
    every = claim_measures.Measurement(1.0, (1.0,) * 8, "question", pair=PairedCounts(8, 0, 8))
    assert not findings.no_variation(every) and findings.interval(every, 0.95, 100, 0)[0] > 0


def test_readability_is_a_claim_when_the_language_check_adds_something(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    after = results / "sft" / "records_after.jsonl"
    rows = _read(after)
    rows[1]["language"] = 0.5  # one formatted answer in two languages: readable != formatted
    _write(after, rows)
    row = _by_id(findings.build_findings(results, n_boot=200))["sft_readability"]
    assert row.kind == CLAIM and row.counted and (row.fixed, row.broken) == (56, 0)


def test_a_rise_from_a_floor_cannot_go_against_and_is_an_observation(tmp_path: Path) -> None:
    """Before SFT nothing formatted and nothing right: no question can break, so the change can never
    come out below 0 whatever SFT does; the rows are described, not counted."""
    results = make_results(tmp_path)
    before = sum(r.counted for r in findings.build_findings(results, n_boot=200))
    path = results / "sft" / "records_before.jsonl"
    _write(path, [{**r, "formatted": False, "correct": False} for r in _read(path)])
    rows = _by_id(findings.build_findings(results, n_boot=200))
    for name in ("sft_format", "sft_accuracy"):
        row = rows[name]
        assert row.kind == OBSERVATION and not row.counted and row.verdict == OBSERVED
        assert row.why == "cannot go against the prediction" and "right on none of the 60" in row.note
        assert row.broken == 0 and row.fixed > 0  # it still shows what was measured
    assert sum(r.counted for r in rows.values()) == before - 2
    # One question right before is enough to make it a test again (it could have broken).
    _write(path, [{**r, "correct": r["question_id"] == "q1"} for r in _read(path)])
    assert _by_id(findings.build_findings(results, n_boot=200))["sft_accuracy"].kind == CLAIM


def test_which_way_a_paired_population_can_go() -> None:
    from_floor = PairedCounts.from_outcomes({"a": 0, "b": 0}, {"a": 1, "b": 0})
    assert from_floor.first_yes == 0 and not from_floor.can_go_against(+1) and from_floor.can_go_against(-1)
    from_ceiling = PairedCounts.from_outcomes({"a": 1, "b": 1}, {"a": 1, "b": 0})
    assert from_ceiling.can_go_against(+1) and not from_ceiling.can_go_against(-1)
    assert PairedCounts(3, 0, 10).can_go_against(+1)  # not recorded: assumed able
    with pytest.raises(ValueError):
        PairedCounts(fixed=1, broken=2, n=5, first_yes=1)  # two broken need two right first


def test_one_seed_rl_gain_uses_the_exact_test_and_states_its_caveats(tmp_path: Path) -> None:
    rows = _by_id(findings.build_findings(make_results(tmp_path, seeds=(7,)), n_boot=200))
    r = rows["rl_gain_dr_grpo"]
    assert r.kind == CLAIM and r.test.startswith("exact sign test") and (r.fixed, r.broken) == (18, 0)
    assert r.verdict == REPRODUCED
    assert "in-distribution" in r.caveat and "the generated word_ops task" in r.caveat
    assert "1 training seed" in r.caveat
    assert "transfer to asdiv_test" in r.caveat and "15 fixed, 0 broken" in r.caveat
    assert r.extra["transfer"]["fixed"] == 15 and r.extra["transfer"]["n"] == 60
    assert "Tiny-Instruct is an instruct model, not a base model" in rows["template_answer_rate"].caveat
    assert "keywords, not an LLM judge" in rows["reflection_before_rl"].caveat
    distill = rows["distill_vs_rl"].caveat
    assert "the teacher is the dr_grpo model itself" in distill and "not the paper's Table 6" in distill
    assert "RL trained on the generated word_ops task, compared on asdiv_test" in distill


def test_kinds_and_the_bonferroni_count_reach_json_and_markdown(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    rows = findings.write_findings(results, n_boot=300)
    table = json.loads((results / findings.FINDINGS_JSON).read_text())
    counted = [r for r in table["findings"] if r["counted"]]
    assert table["counted_claims"] == len(counted) == 10
    assert table["kinds"] == {CLAIM: 10, MECHANISM: 2, OBSERVATION: 5}
    assert all(r["kind"] in (CLAIM, MECHANISM, OBSERVATION) for r in table["findings"])
    text = (results / findings.FINDINGS_MD).read_text()
    assert "over the 10 counted claims" in text.lower() and "99.50%" in text
    assert "10 claims (" in text and "2 mechanisms, 5 observations" in text
    for row in rows:
        assert f"| {row.claim} | {row.kind} |" in text
    assert "48 fixed, 0 broken" in text and "by construction" in text


def test_findings_are_rebuilt_from_the_records_alone(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    findings.write_findings(results, n_boot=500)
    first = (results / findings.FINDINGS_MD).read_text()
    copy = tmp_path / "elsewhere"
    shutil.copytree(results, copy)
    (copy / findings.FINDINGS_MD).unlink()
    (copy / findings.FINDINGS_JSON).unlink()
    findings.write_findings(copy, n_boot=500)
    assert (copy / findings.FINDINGS_MD).read_text() == first
    table = json.loads((copy / findings.FINDINGS_JSON).read_text())
    assert {row["verdict"] for row in table["findings"]} <= {REPRODUCED, CONTRADICTED, INCONCLUSIVE,
                                                             BY_CONSTRUCTION, OBSERVED}
    # Take a stage's records away: its claims read "not measured" and no longer count for Bonferroni.
    shutil.rmtree(copy / "rl")
    rows = _by_id(findings.write_findings(copy, n_boot=500))
    assert not rows["rl_gain_grpo"].measured and rows["rl_gain_grpo"].verdict == INCONCLUSIVE
    assert "| not measured |" in (copy / findings.FINDINGS_MD).read_text()
    counted = sum(r.counted for r in rows.values())
    assert rows["sft_format"].adjusted_level == pytest.approx(1 - 0.05 / counted)


def test_the_committed_findings_are_rebuilt_from_the_committed_records(tmp_path: Path, repo_root: Path) -> None:
    """results/findings.{md,json} as the report stage writes them from a copy of the run's records,
    with the run's own resolved settings (results/params.yaml)."""
    results = repo_root / "results"
    if not (results / findings.FINDINGS_MD).is_file():
        pytest.skip("no committed results/")
    resolved = yaml.safe_load((results / "params.yaml").read_text())
    copy = tmp_path / "results"
    shutil.copytree(results, copy, ignore=shutil.ignore_patterns("*.html", "*.ipynb", "live", "plots",
                                                                 findings.FINDINGS_MD, findings.FINDINGS_JSON))
    findings.write_findings(copy, confidence=resolved["report"]["confidence"],
                            n_boot=resolved["report"]["bootstrap_samples"], seed=resolved["common"]["seed"],
                            split=resolved["splits"]["report_on"])
    assert (copy / findings.FINDINGS_MD).read_text() == (results / findings.FINDINGS_MD).read_text()
    assert json.loads((copy / findings.FINDINGS_JSON).read_text()) == \
        json.loads((results / findings.FINDINGS_JSON).read_text())


def test_advantage_weight_matches_trl_normalisations() -> None:
    rewards = [1.0, 0.0, 0.0, 0.0]
    assert claim_measures.advantage_weight(rewards, scale_by_std=False) == pytest.approx(1.5)
    assert claim_measures.advantage_weight(rewards, scale_by_std=True) == pytest.approx(1.5 / (0.5 + 1e-4))
    assert claim_measures.advantage_weight([1.0, 1.0, 1.0], scale_by_std=True) == 0.0


def test_std_scaling_favours_extreme_groups_by_construction() -> None:
    """Why std_scaling_extremes is a mechanism: with 0/1 rewards in groups of 8, GRPO's weight over
    Dr. GRPO's is larger for every extreme group (k <= 2 or >= 6 right) than every middle one, so the
    extreme share is larger under GRPO for any mix of groups."""
    def weights(k: int) -> tuple[float, float]:
        rewards = [1.0] * k + [0.0] * (8 - k)
        return (claim_measures.advantage_weight(rewards, True), claim_measures.advantage_weight(rewards, False))

    ratio = {k: weights(k)[0] / weights(k)[1] for k in range(1, 8)}
    assert min(ratio[k] for k in (1, 2, 6, 7)) > max(ratio[k] for k in (3, 4, 5))
    rng = random.Random(0)
    for _ in range(200):
        mix = [rng.choice([1, 2, 6, 7]), rng.choice([3, 4, 5])] + [rng.randint(1, 7) for _ in range(rng.randint(0, 20))]
        extreme = np.array([min(k, 8 - k) <= 2 for k in mix])
        grpo, dr = np.array([weights(k) for k in mix]).T
        assert grpo[extreme].sum() / grpo.sum() > dr[extreme].sum() / dr.sum()


def test_a_claim_without_its_records_is_not_measured(tmp_path: Path) -> None:
    rows = findings.build_findings(tmp_path / "empty", n_boot=100)
    assert rows and not any(r.measured or r.counted for r in rows)
    assert all(r.verdict == (INCONCLUSIVE if r.kind == CLAIM else findings.NOT_MEASURED) for r in rows)


def test_held_out_length_bias_pairs_answers_both_runs_got_wrong(tmp_path: Path) -> None:
    results = make_results(tmp_path, seeds=(7,))
    length = {"grpo": lambda i: 90 + i % 3, "dr_grpo": lambda i: 60 + i % 5}
    for run in length:
        path = results / "rl" / f"records_{run}.jsonl"
        _write(path, [{**r, "num_tokens": length[run](i)} for i, r in enumerate(_read(path))])
    row = _by_id(findings.build_findings(results, n_boot=500))["length_bias_heldout"]
    # Questions wrong in both runs: GRPO planted no gain, Dr. GRPO fixed i % 3 == 1; the start's i % 10 == 0 right.
    both_wrong = [i for i in range(60) if i % 10 != 0 and i % 3 != 1]
    expected = sum(length["grpo"](i) - length["dr_grpo"](i) for i in both_wrong) / len(both_wrong)
    assert row.n == len(both_wrong) and row.value == pytest.approx(expected) and row.verdict == REPRODUCED
    # Dr. GRPO's wrong answers the longer ones: below 0, against the prediction.
    for run, base, spread in (("grpo", 60, 4), ("dr_grpo", 95, 3)):
        path = results / "rl" / f"records_{run}.jsonl"
        _write(path, [{**r, "num_tokens": base + i % spread} for i, r in enumerate(_read(path))])
    row = _by_id(findings.build_findings(results, n_boot=500))["length_bias_heldout"]
    assert row.value < -30 and row.verdict == CONTRADICTED
    # The same lengths on both sides but for noise: near 0, inconclusive, with the n it would need.
    for run, sign in (("grpo", 1), ("dr_grpo", -1)):
        path = results / "rl" / f"records_{run}.jsonl"
        _write(path, [{**r, "num_tokens": 60 + sign * ((i % 5) - 2) + (i % 7 == 0)} for i, r in enumerate(_read(path))])
    row = _by_id(findings.build_findings(results, n_boot=500))["length_bias_heldout"]
    assert row.verdict == INCONCLUSIVE and abs(row.value) < 1
    assert row.extra["n_needed"] > row.n and "would put the adjusted interval clear of 0" in row.note


def test_units_needed_follows_the_spread_and_the_effect() -> None:
    assert findings.units_needed([1.0, -1.0], 0.95) is None  # mean 0: no size helps
    small, large = findings.units_needed([0.1, 0.3, -0.1, 0.5], 0.95), findings.units_needed([1.1, 1.3, 0.9, 1.5], 0.95)
    assert small > large >= 1


def test_distill_vs_rl_pairs_on_the_rl_task_when_the_distill_stage_answered_it(tmp_path: Path) -> None:
    """Issue 33: the student's answers to RL's held-out questions (distill stage) against the RL route's
    (rl stage), per question with the exact test; the evaluate benchmark is the fallback."""
    results = make_results(tmp_path, seeds=(7,))
    rl_records = [json.loads(line) for line in (results / "rl" / "records_dr_grpo.jsonl").read_text().splitlines()]
    student = [{"model": "student after", "mode": "greedy", "question_id": r["question_id"],
                "correct": not r["correct"] if i < 10 else r["correct"]} for i, r in enumerate(rl_records[:40])]
    student += [{"model": "student before", "mode": "greedy", "question_id": "q0", "correct": True}]
    _write(results / "distill" / "records_student.jsonl", student)
    _write(results / "distill" / "protocol.json", {"params": {
        "teacher": "models/rl/dr_grpo/final", "prompts": {"synthetic": {"task": "word_ops"}, "limit": 16}}})
    row = _by_id(findings.build_findings(results, n_boot=200))["distill_vs_rl"]
    flipped = [r["correct"] for r in rl_records[:10]]
    assert row.n == 40 and (row.fixed, row.broken) == (flipped.count(False), flipped.count(True))
    assert "40 held-out questions of the generated word_ops task" in row.detail
    assert "RL and distillation both trained on the generated word_ops task" in row.caveat


def test_the_mechanism_row_says_when_its_update_ran_in_bf16(tmp_path: Path) -> None:
    results = make_results(tmp_path)
    assert "bf16" not in _by_id(findings.build_findings(results, n_boot=200))["length_mechanism"].caveat
    protocol = json.loads((results / "rl" / "protocol.json").read_text())
    _write(results / "rl" / "protocol.json", {**protocol, "common": {"dtype": "bfloat16"}})
    caveat = _by_id(findings.build_findings(results, n_boot=200))["length_mechanism"].caveat
    assert "bf16 autocast" in caveat and "precision" in caveat
