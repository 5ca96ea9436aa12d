"""The findings table: verdicts follow from intervals by code, and the table is rebuilt from records alone."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from r1repro import findings
from r1repro.findings import CONTRADICTED, INCONCLUSIVE, REPRODUCED, verdict


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


def _write(path: Path, rows) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(rows, dict):
        path.write_text(json.dumps(rows))
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _group(correct: list[bool], lengths: list[int]) -> dict:
    rewards = [1.0 * c + 0.5 for c in correct]
    return {"question_id": "q", "rewards": rewards, "correct": correct, "lengths": lengths,
            "truncated": [False] * len(correct)}


def make_results(root: Path, n: int = 60) -> Path:
    """Records of a made-up run in which each claim's effect is planted (or absent) on purpose."""
    results = root / "results"
    qs = [f"q{i}" for i in range(n)]
    probe = []
    for i, q in enumerate(qs):
        probe.append({"model": "m", "template": "r1", "question_id": q, "attempted": True,
                      "correct": i % 3 == 0, "reflection_keywords": 1 if i % 4 == 0 else 0})
        probe.append({"model": "m", "template": "none", "question_id": q, "attempted": i % 5 == 0,
                      "correct": False, "reflection_keywords": 0})
    _write(results / "probe" / "records_templates.jsonl", probe)
    exploration = [{"model": "m", "template": "r1", "question_id": q, "temperature": t, "sample_index": j,
                    "correct": (t > 0 and j == i % 4) or (t == 0 and i % 10 == 0)}
                   for i, q in enumerate(qs) for t in (0.0, 1.0) for j in range(4)]
    _write(results / "probe" / "records_exploration.jsonl", exploration)
    _write(results / "sft" / "records_before.jsonl",
           [{"question_id": q, "formatted": False, "correct": False, "language": 1.0} for q in qs])
    _write(results / "sft" / "records_after.jsonl",
           [{"question_id": q, "formatted": True, "correct": i % 5 == 0, "language": 1.0}
            for i, q in enumerate(qs)])
    _write(results / "rl" / "protocol.json", {"params": {
        "runs": {"grpo": {"loss_type": "grpo", "scale_rewards": "group"},
                 "dr_grpo": {"loss_type": "dr_grpo", "scale_rewards": "none"}}, "seeds": [7, 8]}})
    _write(results / "rl" / "records_start.jsonl", [{"question_id": q, "correct": i % 10 == 0}
                                                    for i, q in enumerate(qs)])
    for run in ("grpo", "dr_grpo"):  # GRPO: no change; Dr. GRPO: planted gain on both seeds
        for seed, suffix in ((7, ""), (8, "_seed8")):
            gain = run == "dr_grpo"
            _write(results / "rl" / f"records_{run}{suffix}.jsonl",
                   [{"question_id": q, "correct": i % 10 == 0 or (gain and i % 3 == 1)} for i, q in enumerate(qs)])
            long = 110 if run == "grpo" else 70  # GRPO's incorrect answers longer
            diagnostics = [{"step": step, "groups": [_group([True, False, False, False], [60, long, long + 4, long - 4]),
                                                     _group([True, True, False, False], [60, 60, long, long])]}
                           for step in range(1, 9)]
            _write(results / "rl" / f"diagnostics_{run}{suffix}.jsonl", [{"step": 0}] + diagnostics)
    _write(results / "eval" / "protocol.json", {"params": {"distill_vs_rl": {
        "start": "base", "rl": "dr_grpo", "distilled": "student", "benchmark": "asdiv_test"}}})
    _write(results / "eval" / "records.jsonl",
           [{"model": m, "benchmark": "asdiv_test", "mode": "greedy", "question_id": q,
             "correct": (m == "dr_grpo" and i % 2 == 0)} for m in ("dr_grpo", "student") for i, q in enumerate(qs)])
    return results


def _by_id(rows):
    return {r.id: r for r in rows}


def test_planted_effects_get_the_verdicts_they_should(tmp_path: Path) -> None:
    rows = _by_id(findings.build_findings(make_results(tmp_path), n_boot=2000))
    assert all(r.measured for r in rows.values())
    assert rows["template_answer_rate"].verdict == REPRODUCED
    assert rows["template_answer_rate"].value == pytest.approx(1 - 12 / 60)
    assert rows["reflection_before_rl"].verdict == REPRODUCED
    assert rows["sft_format"].verdict == REPRODUCED and rows["sft_format"].value == 1.0
    assert rows["rl_gain_dr_grpo"].verdict == REPRODUCED
    assert rows["rl_gain_grpo"].verdict == INCONCLUSIVE and rows["rl_gain_grpo"].value == 0.0
    assert rows["length_bias"].verdict == REPRODUCED and rows["length_bias"].value == pytest.approx(40.0)
    assert rows["length_bias"].n == 2 * 2 * 4  # 2 groups x 2 seeds x the last 4 of 8 steps
    assert rows["std_scaling_extremes"].verdict == REPRODUCED
    assert rows["distill_vs_rl"].verdict == CONTRADICTED  # the RL route planted higher
    assert rows["pass_at_k_rises_with_k"].verdict == REPRODUCED
    # Bonferroni over every measured claim: the verdict's interval is wider than the plain one.
    r = rows["rl_gain_dr_grpo"]
    assert r.adjusted_level == pytest.approx(1 - 0.05 / len(rows))
    assert r.adjusted_low <= r.low and r.adjusted_high >= r.high


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
    assert {row["verdict"] for row in table["findings"]} <= {REPRODUCED, CONTRADICTED, INCONCLUSIVE}
    # Take a stage's records away: its claims read "not measured" and no longer count for Bonferroni.
    shutil.rmtree(copy / "rl")
    rows = _by_id(findings.write_findings(copy, n_boot=500))
    assert not rows["rl_gain_grpo"].measured and rows["rl_gain_grpo"].verdict == INCONCLUSIVE
    assert "| not measured |" in (copy / findings.FINDINGS_MD).read_text()
    measured = sum(r.measured for r in rows.values())
    assert rows["sft_format"].adjusted_level == pytest.approx(1 - 0.05 / measured)


def test_advantage_weight_matches_trl_normalisations() -> None:
    rewards = [1.0, 0.0, 0.0, 0.0]
    assert findings.advantage_weight(rewards, scale_by_std=False) == pytest.approx(1.5)
    assert findings.advantage_weight(rewards, scale_by_std=True) == pytest.approx(1.5 / (0.5 + 1e-4))
    assert findings.advantage_weight([1.0, 1.0, 1.0], scale_by_std=True) == 0.0


def test_a_claim_without_its_records_is_not_measured(tmp_path: Path) -> None:
    rows = findings.build_findings(tmp_path / "empty", n_boot=100)
    assert rows and not any(r.measured for r in rows)
    assert all(r.verdict == INCONCLUSIVE for r in rows)
