"""Stage 3's per-step diagnostics: what every GRPO / Dr. GRPO step did, recorded as it trains, and the
tables the notebook compares the runs with.

    diagnostics = Diagnostics(run, run_dir, weights, num_generations, stop_ids)
    trainer = GRPOTrainer(..., reward_funcs=diagnostics.wrap(funcs), callbacks=[diagnostics])
    load_diagnostics(run_dir)            # one row per step: reward, accuracy, lengths, zero-std share, ...
    late_means(curves_frame(results))    # each run averaged over its second half of training

The reward functions are wrapped so that each step's completions and scores are captured; at TRL's
log event of that step a `step_row` is completed with TRL's own metrics (KL, clip ratio, loss, ...)
and the step time, appended to `<run>/diagnostics.jsonl` (the record) and replayed into dvclive.
A resumed run first drops the rows its checkpoint does not cover. Held-out accuracy over training
comes from `r1repro.rl_heldout` and lands in the same rows.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from transformers import TrainerCallback

from r1repro.io import write_jsonl

log = logging.getLogger(__name__)

DIAGNOSTICS_FILE, COMPLETIONS_FILE = "diagnostics.jsonl", "completions.jsonl"
ZERO_STD_WARN_SHARE = 0.5  # warn when more than this share of groups carries no signal
# TRL log keys kept in the diagnostics rows, under our names. The trl_* ones repeat what we compute
# ourselves, so a disagreement between the two shows up in a test.
TRL_KEYS = {
    "kl": "kl", "clip_ratio/region_mean": "clip_ratio", "clip_ratio/low_mean": "clip_ratio_low",
    "clip_ratio/high_mean": "clip_ratio_high", "entropy": "entropy", "loss": "loss",
    "grad_norm": "grad_norm", "learning_rate": "learning_rate", "reward": "trl_reward",
    "frac_reward_zero_std": "trl_frac_reward_zero_std", "completions/mean_length": "trl_mean_length",
    "completions/clipped_ratio": "trl_clipped_ratio",
}
# Logged by the openvino rollout engine only (r1repro.openvino_rollouts); kept in a row when present.
ROLLOUT_KEYS = {
    "rollout/sync_s": "rollout_sync_s", "rollout/generate_s": "rollout_generate_s",
    "rollout/logprob_gap_per_token": "engine_logprob_gap_per_token",
    "rollout/importance_ratio_min": "engine_importance_ratio_min",
    "rollout/importance_ratio_max": "engine_importance_ratio_max",
}


# ---------------------------------------------------------------------------------------------------
# One step
# ---------------------------------------------------------------------------------------------------


@dataclass
class Rollouts:
    """One step's completions as the reward functions saw them (each group contiguous, as TRL orders them).

    Attributes:
        question_ids: the `id` of each completion's question.
        completions: completion texts (without the prompt's prefill).
        lengths: generated tokens, the end-of-turn token included when there is one.
        truncated: whether generation hit max_completion_length before the end-of-turn token.
        rewards: {reward name: one score per completion}, unweighted.
    """

    question_ids: list[str]
    completions: list[str]
    lengths: list[int]
    truncated: list[bool]
    rewards: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def joined(cls, parts: Sequence[Rollouts]) -> Rollouts:
        """The processes' shares of one step, in rank order: the step's whole batch, groups contiguous."""
        return cls(question_ids=[q for p in parts for q in p.question_ids],
                   completions=[c for p in parts for c in p.completions],
                   lengths=[n for p in parts for n in p.lengths],
                   truncated=[t for p in parts for t in p.truncated],
                   rewards={name: [r for p in parts for r in p.rewards[name]] for name in parts[0].rewards})


def mean_or_none(values: Sequence[float]) -> float | None:
    """The mean, or None for no values (a step with no correct response has no mean length of them)."""
    return sum(values) / len(values) if values else None


def step_row(step: int, rollouts: Rollouts, weights: Mapping[str, float],
             num_generations: int) -> dict[str, Any]:
    """The diagnostics of one step, from its completions and rewards.

    Args:
        step: the optimiser step (TRL's global_step after the update).
        rollouts: the step's completions; `rewards` must hold every name in `weights`, accuracy included.
        weights: {reward name: weight}; the total reward is the weighted sum, as TRL computes it.
        num_generations: group size.

    Returns:
        reward (total), reward_<name> (unweighted means), accuracy (share correct), mean_length,
        mean_length_correct / _incorrect (None when there are none), truncated_share,
        zero_std_share (groups whose total rewards are all equal), all_rewards_zero, question_ids, and
        groups: per prompt, its completions' total rewards, correctness, lengths and truncation (what
        the findings' length-bias and std-scaling rows are measured from).
    """
    totals = [sum(w * rollouts.rewards[name][i] for name, w in weights.items())
              for i in range(len(rollouts.lengths))]
    correct = [score >= 1.0 for score in rollouts.rewards["accuracy"]]
    groups = [totals[k:k + num_generations] for k in range(0, len(totals), num_generations)]
    return {
        "step": step,
        "reward": mean_or_none(totals),
        **{f"reward_{name}": mean_or_none(rollouts.rewards[name]) for name in weights},
        "accuracy": mean_or_none([float(c) for c in correct]),
        "mean_length": mean_or_none(rollouts.lengths),
        "mean_length_correct": mean_or_none([n for n, c in zip(rollouts.lengths, correct) if c]),
        "mean_length_incorrect": mean_or_none([n for n, c in zip(rollouts.lengths, correct) if not c]),
        "truncated_share": mean_or_none([float(t) for t in rollouts.truncated]),
        # Equal rewards in a group give every member advantage 0: no gradient from that prompt.
        "zero_std_share": mean_or_none([float(max(g) - min(g) <= 1e-6) for g in groups]),
        "all_rewards_zero": all(t == 0 for t in totals),
        "question_ids": list(dict.fromkeys(rollouts.question_ids)),
        "groups": [{"question_id": rollouts.question_ids[k], "rewards": totals[k:k + num_generations],
                    "correct": correct[k:k + num_generations], "lengths": rollouts.lengths[k:k + num_generations],
                    "truncated": rollouts.truncated[k:k + num_generations]}
                   for k in range(0, len(totals), num_generations)],
    }


def warn_if_no_signal(row: Mapping[str, Any], run: str) -> None:
    """Log a warning when a step gave (almost) no learning signal.

    Args:
        row: a `step_row` result.
        run: the run's name, for the message.
    """
    if row["all_rewards_zero"]:
        log.warning("rl %s step %s: every reward is 0; advantages are 0 and this step teaches nothing "
                    "(too hard a task, a broken reward, or a format the model never hits)", run, row["step"])
    elif row["zero_std_share"] is not None and row["zero_std_share"] > ZERO_STD_WARN_SHARE:
        log.warning("rl %s step %s: %.0f%% of groups have zero reward std: no learning signal from them",
                    run, row["step"], 100 * row["zero_std_share"])


# ---------------------------------------------------------------------------------------------------
# The record of a run: a callback that writes each step's row
# ---------------------------------------------------------------------------------------------------


def read_rows(path: Path | str) -> list[dict]:
    """Rows of a JSONL file written by this module; a missing file is empty, a torn last line dropped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a crash mid-append
    return rows


class _RecordedReward:
    """A reward function that also hands its scores, and the batch it scored, to `Diagnostics`.

    It keeps the wrapped function's name, so TRL's log keys (rewards/<name>/mean) do not change.
    """

    def __init__(self, func: Callable[..., list[float]], name: str, diagnostics: Diagnostics):
        self.func, self.name, self.diagnostics = func, name, diagnostics
        inner = getattr(func, "func", func)  # TRL names a functools.partial after what it wraps
        self.__name__ = getattr(inner, "__name__", name)

    def __call__(self, prompts: Any, completions: Any, completion_ids: Any = None,
                 **kwargs: Any) -> list[float]:
        scores = self.func(prompts=prompts, completions=completions, completion_ids=completion_ids,
                           **kwargs)
        self.diagnostics.record(self.name, scores, completions, completion_ids, kwargs.get("id"))
        return scores


class Diagnostics(TrainerCallback):
    """Per-step diagnostics of one run: reward-function wrapper and trainer callback in one.

    The wrapped reward functions capture each step's completions and scores; at TRL's log event for
    that step (logging_steps=1) a `step_row` is completed with TRL's own metrics (KL, clip ratio,
    loss, ...) and the step time, appended to diagnostics.jsonl and logged through dvclive. On a
    resumed run, rows after the checkpoint's step are dropped first (they will be recomputed) and
    the dvclive folder is rebuilt from the rows kept. With several processes each scores its share of
    the completions; the shares are gathered at the log event and only the main process writes.

    Args:
        run: the run's name.
        run_dir: where diagnostics.jsonl and completions.jsonl go.
        weights: {reward name: weight} in TRL's order (see `monitored_weights`).
        num_generations: group size.
        stop_ids: token ids that end a response (end-of-turn and EOS).
        live_dir: the dvclive folder (default run_dir/dvclive).
        is_truncated: (completion ids, text) -> cut at the length cap before it stopped (the run's
            `r1repro.stops.is_truncated`, which also knows stop strings); default: no stop id in it.
    """

    def __init__(self, run: str, run_dir: Path, weights: Mapping[str, float], num_generations: int,
                 stop_ids: Sequence[int], live_dir: Path | None = None,
                 is_truncated: Callable[[list[int], str], bool] | None = None):
        self.run, self.run_dir, self.weights = run, Path(run_dir), dict(weights)
        self.num_generations, self.stop_ids = num_generations, set(stop_ids)
        self.is_truncated = is_truncated or (lambda ids, text: not self.stop_ids.intersection(ids))
        self.live_dir = Path(live_dir) if live_dir else self.run_dir / "dvclive"
        self.rows: list[dict] = []
        self.live: Any = None
        self._pending: Rollouts | None = None
        self._heldout: dict[int, dict] = {}
        self._times = (0.0, 0.0)
        self.writes = True  # False in launched processes other than the main one

    @property
    def path(self) -> Path:
        return self.run_dir / DIAGNOSTICS_FILE

    def wrap(self, funcs: Sequence[Callable[..., list[float]]]) -> list[Callable[..., list[float]]]:
        """The reward functions (aligned with `weights`) wrapped so that their scores are recorded."""
        return [_RecordedReward(f, name, self) for f, name in zip(funcs, self.weights, strict=True)]

    def record(self, name: str, scores: Sequence[float], completions: Any, completion_ids: Any,
               question_ids: Any) -> None:
        """Store one reward function's scores; the first call of a step also stores the batch."""
        if self._pending is None:
            ids = [list(c) for c in completion_ids or [[] for _ in completions]]
            self._pending = Rollouts(
                question_ids=[str(q) for q in (question_ids or [""] * len(completions))],
                completions=[c if isinstance(c, str) else str(c) for c in completions],
                lengths=[len(c) for c in ids],
                truncated=[self.is_truncated(i, c if isinstance(c, str) else str(c))
                           for i, c in zip(ids, completions)],
            )
        self._pending.rewards[name] = [float(s) for s in scores]

    def add_heldout(self, step: int, metrics: Mapping[str, float]) -> None:
        """Held-out metrics for `step`: merged into that step's row, or a row of their own at step 0."""
        if not self.writes:
            return
        if step == 0:
            self._emit({"step": 0, **metrics}, [])
        else:
            self._heldout[step] = dict(metrics)

    # --- trainer events ----------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        from dvclive import Live

        self.writes = state.is_world_process_zero
        if not self.writes:
            return
        self.rows = self._keep_through(self.path, state.global_step)
        self._keep_through(self.run_dir / COMPLETIONS_FILE, state.global_step)
        # A fresh dvclive folder replayed from the kept rows: no duplicate points after a resume.
        self.live = Live(dir=str(self.live_dir), resume=False, save_dvc_exp=False, dvcyaml=None)
        for row in self.rows:
            self._log_live(row)

    def on_step_begin(self, args, state, control, **kwargs):
        self._times = (time.perf_counter(), 0.0)

    def on_step_end(self, args, state, control, **kwargs):
        self._times = (self._times[0], time.perf_counter())  # before any held-out evaluation runs

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self._pending is None:
            if logs and "loss" in logs and self.writes:  # not the end-of-training summary
                self._emit(self._update_row(state.global_step, logs), [])
            return
        rollouts, self._pending = self._pending, None
        if args.world_size > 1:  # every process joins the gather; the main one gets the whole step
            from accelerate.utils import gather_object

            rollouts = Rollouts.joined(gather_object([rollouts]))
        if not self.writes:
            return
        row = step_row(state.global_step, rollouts, self.weights, self.num_generations)
        row |= {ours: (logs or {}).get(theirs) for theirs, ours in TRL_KEYS.items()}
        row |= {ours: logs[theirs] for theirs, ours in ROLLOUT_KEYS.items() if theirs in (logs or {})}
        row |= {"step_time_s": self._times[1] - self._times[0], **self._heldout.pop(state.global_step, {})}
        warn_if_no_signal(row, self.run)
        self._emit(row, self._example_group(state.global_step, rollouts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()

    # --- helpers -----------------------------------------------------------------------------------

    def _update_row(self, step: int, logs: Mapping[str, Any]) -> dict[str, Any]:
        """A later optimiser step on the rollout an earlier row scored (rl.updates_per_rollout > 1):
        TRL's metrics (loss, clip ratio, ...) and the step time; the completions are in that row."""
        rollout_step = next((r["step"] for r in reversed(self.rows) if "groups" in r), None)
        return {"step": step, "rollout_step": rollout_step,
                **{ours: logs.get(theirs) for theirs, ours in TRL_KEYS.items()},
                "step_time_s": self._times[1] - self._times[0], **self._heldout.pop(step, {})}

    @staticmethod
    def _keep_through(path: Path, step: int) -> list[dict]:
        """Rewrite `path` keeping rows up to `step` (the checkpoint resumed from), and return them.

        A fresh start (step 0) keeps nothing, not even an earlier attempt's step-0 evaluation.
        """
        rows = [r for r in read_rows(path) if step > 0 and r.get("step", 0) <= step]
        if path.exists():
            write_jsonl(path, rows)
        return rows

    def _example_group(self, step: int, rollouts: Rollouts) -> list[dict]:
        """The step's first group of completions, with their scores, for showing examples."""
        return [
            {"step": step, "question_id": rollouts.question_ids[i], "sample": i,
             "completion": rollouts.completions[i], "length": rollouts.lengths[i],
             "truncated": rollouts.truncated[i],
             **{f"reward_{name}": scores[i] for name, scores in rollouts.rewards.items()}}
            for i in range(min(self.num_generations, len(rollouts.lengths)))
        ]

    def _emit(self, row: dict, examples: list[dict]) -> None:
        self.rows.append(row)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        # Appended, not rewritten: a crash can tear only the last line, which read_rows drops.
        for path, lines in ((self.path, [row]), (self.run_dir / COMPLETIONS_FILE, examples)):
            with path.open("a", encoding="utf-8") as handle:
                handle.writelines(json.dumps(line, ensure_ascii=False, sort_keys=True) + "\n"
                                  for line in lines)
        if self.live is not None:
            self._log_live(row)

    def _log_live(self, row: Mapping[str, Any]) -> None:
        self.live.step = row["step"]
        for key, value in row.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) \
                    and math.isfinite(value):
                self.live.log_metric(key, value)
        self.live.make_summary()


def load_diagnostics(run_dir: Path | str) -> list[dict]:
    """The per-step diagnostics rows of a run folder (for tables and plots).

    Args:
        run_dir: `<rl.output_dir>/<run>`.

    Returns:
        One dict per step, in step order (step 0 holds only held-out metrics, when evaluated).
    """
    return read_rows(Path(run_dir) / DIAGNOSTICS_FILE)


# ---------------------------------------------------------------------------------------------------
# Comparing the runs (the notebook's tables and plots)
# ---------------------------------------------------------------------------------------------------

CURVES = ("reward", "accuracy", "mean_length", "mean_length_incorrect", "truncated_share", "zero_std_share")


def curves_frame(results: Sequence[Any]) -> pd.DataFrame:
    """Every run's per-step diagnostics in one tidy table (column `run`), training steps only.

    Args:
        results: `r1repro.rl.RunResult`s (anything with `run` and `diagnostics`).
    """
    frames = [pd.DataFrame(r.diagnostics).assign(run=r.run) for r in results if r.diagnostics]
    if not frames:
        return pd.DataFrame(columns=["run", "step", *CURVES])
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["step"] > 0] if "step" in frame else frame
    for column in CURVES:
        if column not in frame:
            frame[column] = float("nan")
    return frame.reset_index(drop=True)


def heldout_frame(results: Sequence[Any], ends: Mapping[str, Mapping[int, float]] | None = None) -> pd.DataFrame:
    """Held-out accuracy over steps (rows of steps 0, eval_steps, 2 x eval_steps, ...), column `run`.

    Args:
        results: `r1repro.rl.RunResult`s (anything with `run` and `diagnostics`).
        ends: {run: {step: accuracy}} from the stage's own before/after checks, for steps the periodic
            check did not measure (with `rl.eval_steps` 0, the curve is these two points).
    """
    rows = [{"run": r.run, "step": d["step"], "heldout_accuracy": d["heldout_accuracy"]}
            for r in results for d in r.diagnostics if d.get("heldout_accuracy") is not None]
    seen = {(row["run"], row["step"]) for row in rows}
    rows += [{"run": run, "step": step, "heldout_accuracy": acc} for run, points in (ends or {}).items()
             for step, acc in points.items() if (run, step) not in seen]
    frame = pd.DataFrame(rows, columns=["run", "step", "heldout_accuracy"])
    return frame.sort_values(["run", "step"], kind="stable").reset_index(drop=True) if ends else frame


def late_means(frame: pd.DataFrame, share: float = 0.5) -> pd.DataFrame:
    """Each run's diagnostics averaged over its last `share` of steps (one row per run).

    Single steps are noisy (a step sees a couple of questions); the paper's claim is about the trend,
    so the bias diagnostics compare the second half of training.
    """
    rows = []
    for run, part in frame.groupby("run", sort=False):
        steps = sorted(part["step"].unique())
        late = part[part["step"].isin(steps[int(len(steps) * (1 - share)):])]
        rows.append({"run": run, "steps": len(late), **{c: late[c].astype(float).mean() for c in CURVES}})
    return pd.DataFrame(rows)
