"""Tests of r1repro.rl_diagnostics on hand-made rows: one step's diagnostics, the no-signal warnings,
the record's torn last line, and the tables comparing runs. Real training steps filling these rows
are in tests/test_rl.py.

    pytest tests/test_rl_diagnostics.py -q
"""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from r1repro import rl
from r1repro.rl_diagnostics import (CURVES, Rollouts, curves_frame, heldout_frame, late_means, read_rows, step_row,
                                    warn_if_no_signal)


# --- one step -------------------------------------------------------------------------------------


def _rollouts() -> Rollouts:
    """Two groups of 3: group a mixed, group b all equal."""
    return Rollouts(
        question_ids=["a"] * 3 + ["b"] * 3, completions=["x"] * 6,
        lengths=[4, 10, 8, 8, 8, 8], truncated=[False, False, True, True, True, True],
        rewards={"accuracy": [1.0, 0.0, 1.0, 0.0, 0.0, 0.0], "format": [1.0, 0.0, 0.0, 1.0, 1.0, 1.0]},
    )


def test_step_row_lengths_truncation_and_zero_std_groups():
    row = step_row(3, _rollouts(), {"accuracy": 1.0, "format": 0.5}, num_generations=3)
    assert row["step"] == 3 and row["question_ids"] == ["a", "b"]
    assert row["reward"] == pytest.approx((1.5 + 0 + 1 + 0.5 * 3) / 6)
    assert row["reward_accuracy"] == pytest.approx(2 / 6) == row["accuracy"]
    assert row["reward_format"] == pytest.approx(4 / 6)
    assert row["mean_length"] == pytest.approx(46 / 6)
    assert row["mean_length_correct"] == 6.0 and row["mean_length_incorrect"] == pytest.approx(34 / 4)
    assert row["truncated_share"] == pytest.approx(4 / 6)
    assert row["zero_std_share"] == 0.5 and row["all_rewards_zero"] is False


def test_step_row_without_correct_answers_and_warnings(caplog):
    rollouts = _rollouts()
    rollouts.rewards = {"accuracy": [0.0] * 6, "format": [0.0] * 6}
    row = step_row(1, rollouts, {"accuracy": 1.0, "format": 0.5}, num_generations=3)
    assert row["mean_length_correct"] is None and row["accuracy"] == 0.0
    assert row["all_rewards_zero"] is True and row["zero_std_share"] == 1.0
    with caplog.at_level(logging.WARNING, logger="r1repro.rl_diagnostics"):
        warn_if_no_signal(row, "grpo")
        warn_if_no_signal({**row, "all_rewards_zero": False, "zero_std_share": 0.75}, "dr_grpo")
        warn_if_no_signal({**row, "all_rewards_zero": False, "zero_std_share": 0.5}, "dr_grpo")
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert "every reward is 0" in messages[0] and "75% of groups have zero reward std" in messages[1]


def test_read_rows_drops_a_torn_last_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"step": 1}\n{"step": 2}\n{"step": 3, "rew', encoding="utf-8")
    assert read_rows(path) == [{"step": 1}, {"step": 2}]
    assert read_rows(tmp_path / "missing.jsonl") == []


# --- comparing runs -----------------------------------------------------------------------------


def test_heldout_frame_keeps_only_evaluated_steps() -> None:
    diag = [{"step": 0, "heldout_accuracy": 0.25}, {"step": 1, "reward": 0.5},
            {"step": 2, "reward": 0.4, "heldout_accuracy": 0.5}]
    frame = heldout_frame([SimpleNamespace(run="grpo", diagnostics=diag),
                              SimpleNamespace(run="dr_grpo", diagnostics=diag[:2])])
    assert frame.to_dict("records") == [{"run": "grpo", "step": 0, "heldout_accuracy": 0.25},
                                        {"run": "grpo", "step": 2, "heldout_accuracy": 0.5},
                                        {"run": "dr_grpo", "step": 0, "heldout_accuracy": 0.25}]


def test_late_means_average_each_runs_second_half_of_training() -> None:
    rows = [{"step": 0, "heldout_accuracy": 0.1}] + [
        {"step": s, "reward": float(s), "accuracy": 0.5, "mean_length": 10.0 * s} for s in range(1, 5)]
    frame = curves_frame([SimpleNamespace(run="grpo", diagnostics=rows),
                          SimpleNamespace(run="dr_grpo", diagnostics=rows[:3]), SimpleNamespace(run="x", diagnostics=[])])
    assert frame["step"].min() == 1 and set(CURVES) <= set(frame.columns)  # step 0 holds only held-out numbers
    late = late_means(frame).set_index("run")
    assert list(late.index) == ["grpo", "dr_grpo"]
    assert (late.loc["grpo", "steps"], late.loc["grpo", "reward"], late.loc["grpo", "mean_length"]) == (2, 3.5, 35.0)
    assert (late.loc["dr_grpo", "steps"], late.loc["dr_grpo", "reward"]) == (1, 2.0)
    assert late["truncated_share"].isna().all()  # a curve no row has stays NaN, not 0


def test_the_rl_module_still_offers_the_notebooks_tables() -> None:
    assert (rl.curves_frame, rl.heldout_frame, rl.late_means) == (curves_frame, heldout_frame, late_means)
