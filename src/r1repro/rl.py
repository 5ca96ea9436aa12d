"""Stage 3: GRPO and Dr. GRPO with TRL's `GRPOTrainer`, one parameter apart, run paired.

The two algorithms differ in exactly two TRL knobs, both set per run in params.yaml (`rl.runs`);
everything else (prompt order, seed, sampling, optimiser, rewards, logging) is shared, so the two
runs form a paired comparison. Dr. GRPO (Liu et al., 2025, "Understanding R1-Zero-Like Training: A
Critical Perspective", arXiv:2503.20783, Sec. 3.1) removes two normalisations of GRPO:

* `loss_type`: "grpo" divides each response's summed token losses by its own length |o_i|, so a
  token of a short response weighs more than one of a long response (short correct answers are
  favoured, long wrong ones penalised less); "dr_grpo" divides by a constant instead (responses x
  max_completion_length in TRL).
* `scale_rewards`: "group" divides each advantage by its group's reward std, up-weighting questions
  whose rewards barely vary (too easy or too hard); "none" keeps A_i = r_i - mean(r).

    from r1repro import rl
    result = rl.train_run(cfg, "dr_grpo", common)   # cfg: RlParams, common: CommonParams
    result.diagnostics                              # one dict per step, also in diagnostics.jsonl

One run's folder, `<rl.output_dir>/<run>/`:

    checkpoints/checkpoint-N/   TRL checkpoints every save_steps; a rerun resumes from the last complete one
    final/                      the trained model; replaced only by a run that finished
    diagnostics.jsonl           per-step diagnostics (the record; dvclive is replayed from it)
    completions.jsonl           the first group of completions of every step, for examples
    dvclive/                    the same per-step metrics through dvclive (plots/metrics/*.tsv)
    run_config.json             what the checkpoints were trained with; another config starts afresh

Several processes (`common.num_processes` > 1): each run trains under `accelerate launch`
(`r1repro.distributed`); a step's prompts_per_step x num_generations completions are split evenly over
the processes, the diagnostics gather every process's completions, and the main process writes them.

Notes on what TRL logs here (and so what the diagnostics hold):
* Each batch of completions is used for exactly one optimiser step (TRL's num_iterations=1), so the
  sampling policy equals the trained one, the importance ratio is exactly 1 and the clip ratio is 0
  by construction; it would move only with num_iterations > 1.
* With beta 0 (the Dr. GRPO paper's setting) TRL computes no KL term and logs none: `kl` is None.
* A group whose rewards are all equal has advantage 0 under both algorithms: no learning signal.
  Caveat (TRL 1.16): the group mean is taken in float32, so equal rewards that are not binary
  fractions (a weight of 0.1, the language score) leave r - mean ~ 1e-8. GRPO divides that by
  std + 1e-4 and gets |A| ~ 1e-4, which Adam rescales into an update of ordinary size; Dr. GRPO's
  stays 1e4 times smaller. Weights such as 0, 0.25, 0.5, 1 keep the 0/1 rewards exact.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

from r1repro import grading
from r1repro.config import CommonParams, ConfigError, RlParams, SamplingParams
from r1repro.data import load_subset
from r1repro.distributed import Launch, launched_result, per_process
from r1repro.io import atomic_write_json, staged_dir, write_jsonl
from r1repro.modeling import end_of_turn_id, load_model, load_tokenizer, resolve_device
from r1repro.rewards import reward_functions
from r1repro.templates import prefill, render_prompt

log = logging.getLogger(__name__)

CHECKPOINTS, FINAL = "checkpoints", "final"
DIAGNOSTICS_FILE, COMPLETIONS_FILE = "diagnostics.jsonl", "completions.jsonl"
RUN_CONFIG_FILE = "run_config.json"
# Always computed, at weight 0 when params leave them out: the diagnostics need them, and TRL logs a
# zero-weight reward without letting it touch the advantages.
MONITORED_REWARDS = ("accuracy", "format")
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


# ---------------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------------


def monitored_weights(weights: Mapping[str, float]) -> dict[str, float]:
    """Reward weights from params with the monitored rewards added at weight 0 where absent.

    Args:
        weights: params `rl.reward_weights`, {registry name: weight}.

    Returns:
        {name: weight}, params order first; the order TRL logs and weights the rewards in.
    """
    return {**dict(weights), **{n: 0.0 for n in MONITORED_REWARDS if n not in weights}}


def grpo_config(cfg: RlParams, run: str, *, output_dir: Path | str, seed: int, use_vllm: bool = False,
                use_cpu: bool = False, bf16: bool = False, keep_checkpoints: int = 1,
                num_processes: int | None = None) -> GRPOConfig:
    """TRL's `GRPOConfig` for one run of stage 3.

    Args:
        cfg: the validated `rl` section.
        run: a key of `cfg.runs` (its loss_type and scale_rewards are the only per-run settings).
        output_dir: where TRL writes checkpoints.
        seed: common.seed; the same for every run so that they are paired.
        use_vllm: generate with vLLM colocated on the training GPU (common.backend == "vllm").
        use_cpu: train on the CPU.
        bf16: bfloat16 mixed precision (common.dtype == "bfloat16").
        keep_checkpoints: newest checkpoints kept (older ones are deleted after a newer one is complete).
        num_processes: processes sharing each step (default: this launch's world size, 1 in place).

    Returns:
        The config; its reward_weights follow `monitored_weights(cfg.reward_weights)`.

    Raises:
        ConfigError: `run` is not in rl.runs, or a step does not split evenly over the processes.
    """
    if run not in cfg.runs:
        raise ConfigError(f"rl.runs has no run {run!r}; runs: {', '.join(cfg.runs)}")
    algorithm = cfg.runs[run]
    # A step is prompts_per_step x num_generations completions in all; each process takes an equal share.
    per_step = per_process(cfg.prompts_per_step * cfg.num_generations,
                           "rl.prompts_per_step x rl.num_generations", num_processes)
    micro = cfg.micro_batch_size or per_step
    if per_step % micro:
        raise ConfigError(f"rl.micro_batch_size ({micro}) must divide each process's {per_step} completions")
    return GRPOConfig(
        output_dir=str(output_dir),
        # Dr. GRPO modification 1 (Liu et al., 2025, Sec. 3.1): "dr_grpo" sums token losses over the
        # batch and divides by the constant (responses x max_completion_length); "grpo" divides each
        # response's sum by its own length |o_i| first, the length bias the paper removes.
        loss_type=algorithm.loss_type,
        # Dr. GRPO modification 2 (same section): "none" keeps A_i = r_i - mean(group); "group" also
        # divides by std(group), the question-difficulty bias the paper removes.
        scale_rewards=algorithm.scale_rewards,
        multi_objective_aggregation="sum_then_normalize",  # weighted sum first, as both papers do
        reward_weights=list(monitored_weights(cfg.reward_weights).values()),
        beta=cfg.beta, epsilon=cfg.epsilon, num_generations=cfg.num_generations,
        # One optimiser step = prompts_per_step prompts x num_generations completions, generated at
        # once and fed through forward/backward in micro-batches on each process (TRL's
        # steps_per_generation follows gradient_accumulation_steps, so one generation per step).
        per_device_train_batch_size=micro, gradient_accumulation_steps=per_step // micro,
        num_iterations=1,  # one update per batch: on-policy, so the clip ratio stays 0 (see module doc)
        max_completion_length=cfg.max_completion_length, temperature=cfg.temperature, top_p=1.0,
        mask_truncated_completions=False,  # truncated responses are scored, as in both papers
        learning_rate=cfg.learning_rate, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_steps=cfg.max_steps, seed=seed, data_seed=seed,
        shuffle_dataset=False,  # build_dataset fixes the (seeded) order, the same for every run
        logging_steps=1, save_strategy="steps", save_steps=cfg.save_steps,
        save_total_limit=keep_checkpoints, save_only_model=False,  # optimiser state, for resuming
        use_vllm=use_vllm, vllm_mode="colocate", use_cpu=use_cpu, bf16=bf16,
        activation_checkpointing=cfg.gradient_checkpointing, disable_dropout=True,
        report_to="none", push_to_hub=False, log_completions=False,  # diagnostics go through dvclive
        ddp_find_unused_parameters=False,  # several processes: every weight is used; skip DDP's search
    )


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def prompt_order(num_rows: int, num_prompts: int, seed: int) -> list[int]:
    """Row indices of the prompts trained on, in order: passes over the rows, each freshly shuffled.

    Pass k is a permutation seeded by (seed, k) alone, so a longer run (more steps) extends the same
    order rather than changing it, and every run with the same seed sees the same prompts per step.

    Args:
        num_rows: rows available.
        num_prompts: prompts needed (max_steps x prompts_per_step).
        seed: common.seed.

    Returns:
        num_prompts indices in [0, num_rows).
    """
    if num_rows < 1:
        raise ValueError("no training prompts: rl.prompts selects no rows")
    order: list[int] = []
    for epoch in range(math.ceil(num_prompts / num_rows)):
        perm = list(range(num_rows))
        random.Random(f"r1repro-rl:{seed}:{epoch}").shuffle(perm)  # str seeds hash the same everywhere
        order += perm
    return order[:num_prompts]


def build_dataset(rows: Sequence[Mapping[str, Any]], template: str, tokenizer: Any, *, seed: int,
                  num_prompts: int) -> Any:
    """The training set in the order TRL will step through it (TRL's own shuffling is off).

    Args:
        rows: question rows with `problem`, `answer` and optionally `id`.
        template: a key of r1repro.templates.TEMPLATES.
        tokenizer: the policy's tokenizer (for chat templates).
        seed: common.seed.
        num_prompts: max_steps x prompts_per_step.

    Returns:
        A `datasets.Dataset` with columns `prompt` (the rendered string TRL tokenizes), `answer`
        (what the accuracy reward compares with) and `id`.
    """
    from datasets import Dataset

    order = prompt_order(len(rows), num_prompts, seed)
    return Dataset.from_list([
        {"prompt": render_prompt(template, rows[i]["problem"], tokenizer),
         "answer": str(rows[i]["answer"]), "id": str(rows[i].get("id", f"row-{i}"))}
        for i in order
    ])


# ---------------------------------------------------------------------------------------------------
# Diagnostics
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


def _mean(values: Sequence[float]) -> float | None:
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
        zero_std_share (groups whose total rewards are all equal), all_rewards_zero, question_ids.
    """
    totals = [sum(w * rollouts.rewards[name][i] for name, w in weights.items())
              for i in range(len(rollouts.lengths))]
    correct = [score >= 1.0 for score in rollouts.rewards["accuracy"]]
    groups = [totals[k:k + num_generations] for k in range(0, len(totals), num_generations)]
    return {
        "step": step,
        "reward": _mean(totals),
        **{f"reward_{name}": _mean(rollouts.rewards[name]) for name in weights},
        "accuracy": _mean([float(c) for c in correct]),
        "mean_length": _mean(rollouts.lengths),
        "mean_length_correct": _mean([n for n, c in zip(rollouts.lengths, correct) if c]),
        "mean_length_incorrect": _mean([n for n, c in zip(rollouts.lengths, correct) if not c]),
        "truncated_share": _mean([float(t) for t in rollouts.truncated]),
        # Equal rewards in a group give every member advantage 0: no gradient from that prompt.
        "zero_std_share": _mean([float(max(g) - min(g) <= 1e-6) for g in groups]),
        "all_rewards_zero": all(t == 0 for t in totals),
        "question_ids": list(dict.fromkeys(rollouts.question_ids)),
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
    """

    def __init__(self, run: str, run_dir: Path, weights: Mapping[str, float], num_generations: int,
                 stop_ids: Sequence[int], live_dir: Path | None = None):
        self.run, self.run_dir, self.weights = run, Path(run_dir), dict(weights)
        self.num_generations, self.stop_ids = num_generations, set(stop_ids)
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
                truncated=[not self.stop_ids.intersection(c) for c in ids],
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
        if self._pending is None:  # the end-of-training summary, not a step
            return
        rollouts, self._pending = self._pending, None
        if args.world_size > 1:  # every process joins the gather; the main one gets the whole step
            from accelerate.utils import gather_object

            rollouts = Rollouts.joined(gather_object([rollouts]))
        if not self.writes:
            return
        row = step_row(state.global_step, rollouts, self.weights, self.num_generations)
        row |= {ours: (logs or {}).get(theirs) for theirs, ours in TRL_KEYS.items()}
        row |= {"step_time_s": self._times[1] - self._times[0], **self._heldout.pop(state.global_step, {})}
        warn_if_no_signal(row, self.run)
        self._emit(row, self._example_group(state.global_step, rollouts))

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()

    # --- helpers -----------------------------------------------------------------------------------

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
# Held-out evaluation
# ---------------------------------------------------------------------------------------------------


class HeldoutEval(TrainerCallback):
    """Answer held-out prompts with the policy every `every` steps (and before step 1).

    Uses the transformers generation backend on the model in memory; the metrics land in the
    diagnostics row of that step as heldout_accuracy, heldout_mean_length, heldout_truncated_share.

    Args:
        rows: held-out question rows (`problem`, `answer`).
        template: the prompt template.
        tokenizer: the policy's tokenizer.
        sampling: params `rl.eval_sampling` (temperature 0: greedy).
        every: evaluate when global_step % every == 0.
        diagnostics: where the metrics go.
        seed: sampling seed.
        timeout_s: grading time limit per response.
        batch_size: sequences per generate call.
    """

    def __init__(self, rows: Sequence[Mapping[str, Any]], template: str, tokenizer: Any,
                 sampling: SamplingParams, every: int, diagnostics: Diagnostics, *, seed: int,
                 timeout_s: float = 5.0, batch_size: int = 16):
        self.prompts = [render_prompt(template, r["problem"], tokenizer) for r in rows]
        self.golds = [str(r["answer"]) for r in rows]
        self.head = prefill(template)
        self.tokenizer, self.sampling, self.every = tokenizer, sampling, every
        self.diagnostics, self.seed = diagnostics, seed
        self.timeout_s, self.batch_size = timeout_s, batch_size

    def evaluate(self, model: Any) -> dict[str, float]:
        """Generate and grade; returns heldout_accuracy, heldout_mean_length, heldout_truncated_share."""
        from r1repro.generation import load_generator

        generator = load_generator("transformers", (model, self.tokenizer), batch_size=self.batch_size,
                                   progress=False)
        s = self.sampling
        groups = generator.generate(self.prompts, n=s.n, temperature=s.temperature, top_p=s.top_p,
                                    max_tokens=s.max_new_tokens, seed=self.seed)
        pairs = [(c, gold) for group, gold in zip(groups, self.golds) for c in group]
        return {
            "heldout_accuracy": _mean([float(grading.is_correct(self.head + c.text, gold, self.timeout_s))
                                       for c, gold in pairs]),
            "heldout_mean_length": _mean([c.num_tokens for c, _ in pairs]),
            "heldout_truncated_share": _mean([float(c.finish_reason == "length") for c, _ in pairs]),
        }

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == 0:  # the starting policy, once; a resumed run has it already
            self.diagnostics.add_heldout(0, self.evaluate(model))

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step % self.every == 0:
            self.diagnostics.add_heldout(state.global_step, self.evaluate(model))


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                 "pytorch_model.bin")


def checkpoint_step(path: Path) -> int | None:
    """N for a folder named checkpoint-N, else None."""
    prefix, _, number = path.name.partition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def is_complete_checkpoint(path: Path | str) -> bool:
    """Whether a checkpoint folder was written to the end.

    `Trainer._save_checkpoint` writes the weights, then optimizer and scheduler, and trainer_state.json
    last, without a staging folder. So a folder counts as complete only if trainer_state.json parses
    and names the folder's own step, and the weights, the optimizer state (optimizer.pt, or DeepSpeed's
    global_stepN/*optim_states.pt) and scheduler.pt are there.

    Args:
        path: a `checkpoint-N` folder.

    Returns:
        True when training can resume from it.
    """
    path = Path(path)
    try:
        state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (
        state.get("global_step") == checkpoint_step(path)
        and any((path / name).is_file() for name in _WEIGHT_FILES)
        and ((path / "optimizer.pt").is_file() or any(path.glob("global_step*/*optim_states.pt")))
        and (path / "scheduler.pt").is_file()
    )


def last_complete_checkpoint(folder: Path | str, discard_incomplete: bool = False) -> Path | None:
    """The complete checkpoint with the highest step in `folder`, if any.

    Args:
        folder: the run's checkpoints folder.
        discard_incomplete: delete incomplete checkpoint folders, so that the trainer neither mixes
            their files into a new save nor counts them when it rotates old checkpoints away.

    Returns:
        The folder to resume from, or None.
    """
    folder = Path(folder)
    found = sorted((p for p in folder.glob("checkpoint-*") if checkpoint_step(p) is not None),
                   key=checkpoint_step)
    complete = [p for p in found if is_complete_checkpoint(p)]
    if discard_incomplete:
        for path in set(found) - set(complete):
            log.warning("rl: removing incomplete checkpoint %s (a save that did not finish)", path)
            shutil.rmtree(path, ignore_errors=True)
    return complete[-1] if complete else None


def run_fingerprint(cfg: RlParams, run: str, common: CommonParams) -> dict[str, Any]:
    """What a run's checkpoints depend on: resuming under anything else would mix two experiments.

    Steps, saving and held-out settings are left out: they may change between resumptions. The
    process layout counts (data order and checkpoint format depend on it); it is added only when
    several processes train, so single-process checkpoints made before it existed still resume.
    """
    shared = cfg.model_dump(mode="json", exclude={
        "runs", "max_steps", "save_steps", "heldout", "eval_steps", "eval_sampling", "output_dir",
        "gradient_checkpointing"})
    layout = {"launch": {"num_processes": common.num_processes,
                         "accelerate_config": common.accelerate_config}} if common.num_processes > 1 else {}
    return {"run": run, **cfg.runs[run].model_dump(mode="json"), **shared,
            "seed": common.seed, "dtype": common.dtype, **layout}


def start_run_dir(run_dir: Path, fingerprint: Mapping[str, Any]) -> None:
    """Make the run folder; when its checkpoints came from another config, discard them and their logs.

    Args:
        run_dir: `<rl.output_dir>/<run>`.
        fingerprint: `run_fingerprint(...)` of this call.
    """
    record = run_dir / RUN_CONFIG_FILE
    previous = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else None
    if previous is not None and previous != dict(fingerprint):
        changed = sorted(k for k in {*previous, *fingerprint} if previous.get(k) != fingerprint.get(k))
        log.warning("rl: %s was trained with other settings (%s); starting it afresh",
                    run_dir, ", ".join(changed))
        shutil.rmtree(run_dir / CHECKPOINTS, ignore_errors=True)
        for name in (DIAGNOSTICS_FILE, COMPLETIONS_FILE):
            (run_dir / name).unlink(missing_ok=True)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(record, dict(fingerprint))


# ---------------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    """What `train_run` did.

    Attributes:
        run: the run's name.
        final_dir: the trained model (`<run>/final`).
        diagnostics: every step's row so far (earlier sessions' included).
        run_dir: `<rl.output_dir>/<run>` (diagnostics.jsonl, completions.jsonl, checkpoints/).
        live_dir: the dvclive folder.
        resumed_from: the checkpoint step training continued from, or None for a fresh start.
        global_step: the step reached.
    """

    run: str
    final_dir: Path
    diagnostics: list[dict]
    run_dir: Path
    live_dir: Path
    resumed_from: int | None
    global_step: int


def stop_on_end_of_turn(model: Any, tokenizer: Any, template: str) -> list[int]:
    """Make generation stop at the template's end-of-turn token; return every stopping id.

    TRL stops sampling, and cuts the loss mask, at model.generation_config.eos_token_id plus the
    tokenizer's eos. A chat model whose end-of-turn marker differs from its eos (Qwen2.5-Math:
    <|im_end|> vs <|endoftext|>) would otherwise run on past the end of its answer.
    """
    marker_id = end_of_turn_id(template, tokenizer)
    configured = model.generation_config.eos_token_id
    ids = configured if isinstance(configured, list) else [configured]
    ids = [i for i in dict.fromkeys([*ids, tokenizer.eos_token_id, marker_id]) if i is not None]
    model.generation_config.eos_token_id = ids
    return ids


def _callbacks(cfg: RlParams, common: CommonParams, tokenizer: Any, diagnostics: Diagnostics,
               heldout_rows: Sequence[Mapping[str, Any]] | None) -> list[TrainerCallback]:
    """Diagnostics first (its step timer must stop before a held-out evaluation starts)."""
    if cfg.eval_steps and heldout_rows is None and cfg.heldout is not None:
        heldout_rows = load_subset(common.data_dir, cfg.heldout, key="rl.heldout")
    if not cfg.eval_steps or not heldout_rows:
        return [diagnostics]
    return [diagnostics, HeldoutEval(heldout_rows, cfg.template, tokenizer, cfg.eval_sampling, cfg.eval_steps,
                                     diagnostics, seed=common.seed, timeout_s=common.grading_timeout_s,
                                     batch_size=common.generation_batch_size)]


def make_trainer(cfg: RlParams, run: str, common: CommonParams, *,
                 rows: Sequence[Mapping[str, Any]] | None = None,
                 heldout_rows: Sequence[Mapping[str, Any]] | None = None,
                 callbacks: Sequence[TrainerCallback] = (), live_dir: Path | None = None,
                 ) -> tuple[GRPOTrainer, Diagnostics]:
    """A `GRPOTrainer` for one run, with its diagnostics attached (no training yet).

    Args:
        cfg: the validated `rl` section (init_model, prompts, reward weights, ...).
        run: a key of `cfg.runs`.
        common: the validated `common` section (seed, dtype, device, backend, data_dir, grading).
        rows: training question rows (default: `cfg.prompts` loaded from common.data_dir).
        heldout_rows: held-out rows for `cfg.eval_steps` (default: `cfg.heldout`).
        callbacks: extra trainer callbacks, called after ours.
        live_dir: the dvclive folder (default `<run>/dvclive`).

    Returns:
        (trainer, diagnostics).
    """
    run_dir = Path(cfg.output_dir) / run
    device = resolve_device(common.device)
    tokenizer = load_tokenizer(cfg.init_model, trust_remote_code=common.trust_remote_code)
    model = load_model(cfg.init_model, dtype=common.dtype, device=device,
                       trust_remote_code=common.trust_remote_code)
    stop_ids = stop_on_end_of_turn(model, tokenizer, cfg.template)
    rows = load_subset(common.data_dir, cfg.prompts, key="rl.prompts") if rows is None else rows
    dataset = build_dataset(rows, cfg.template, tokenizer, seed=common.seed,
                            num_prompts=cfg.max_steps * cfg.prompts_per_step)
    weights = monitored_weights(cfg.reward_weights)
    funcs, _ = reward_functions(weights, timeout_s=common.grading_timeout_s)
    diagnostics = Diagnostics(run, run_dir, weights, cfg.num_generations, stop_ids, live_dir)
    args = grpo_config(cfg, run, output_dir=run_dir / CHECKPOINTS, seed=common.seed,
                       use_vllm=common.backend == "vllm", use_cpu=device == "cpu",
                       bf16=common.dtype == "bfloat16")
    trainer = GRPOTrainer(
        model=model, reward_funcs=diagnostics.wrap(funcs), args=args, train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[*_callbacks(cfg, common, tokenizer, diagnostics, heldout_rows), *callbacks],
    )
    return trainer, diagnostics


def write_final(trainer: GRPOTrainer, folder: Path, meta: Mapping[str, Any]) -> None:
    """Write the trained model and `meta` into `folder` (in a launch, every process calls this).

    Raises:
        FloatingPointError: a weight is NaN or inf (nothing is written).
    """
    for name, param in trainer.model.named_parameters():
        if not param.isfinite().all():
            raise FloatingPointError(f"parameter {name} holds NaN or inf after training; "
                                     "the previous final model is kept")
    # weights, config, generation config, tokenizer; the trainer writes from the main process only
    # (under ZeRO-3 every process must join the gather of the shards)
    trainer.save_model(str(folder))
    if trainer.is_world_process_zero():
        atomic_write_json(folder / "r1repro_run.json", dict(meta))


def save_final(trainer: GRPOTrainer, target: Path, meta: Mapping[str, Any]) -> Path:
    """Save the trained model into a staging folder, then rename it onto `target`.

    A crash while saving leaves the previous final model in place; so does a model with non-finite
    weights, which raises instead.

    Args:
        trainer: the trainer after `train()`.
        target: `<run>/final`.
        meta: written beside the model as r1repro_run.json (run, step, algorithm).

    Returns:
        `target`.
    """
    with staged_dir(target) as tmp:
        write_final(trainer, tmp, meta)
    return target


@contextlib.contextmanager
def compact_lm_head_scoring(enabled: bool = True) -> Iterator[None]:
    """Let TRL's fused LM head score only the completion tokens on CPU: faster, same numbers.

    TRL 1.16's fused LM head (`trl.trainer.utils._fused_forward`) projects every position, prompt
    included, through the LM head on devices without Triton, to keep tile shapes fixed for backends
    that compile per shape (Neuron). On CPU nothing compiles, and with r1_chat's ~110-token prompt
    and 64-token completions most of that work is thrown away: for SmolLM2-135M, 16 such sequences,
    the loss forward and backward took 44 s instead of 66 s with this on (one busy CPU thread).
    It switches on TRL's own compact path (the one
    it takes on CUDA): the same kernel, fed only the scored positions. Log-probs, entropies and
    gradients are unchanged (tests/test_rl.py compares them).

    Args:
        enabled: False leaves TRL as it is (use on devices that compile per shape).
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if not enabled or original is None:  # another TRL layout: leave it alone
        yield
        return
    trl_utils._use_triton = lambda device: True  # decides only `compact` in _fused_forward
    try:
        yield
    finally:
        trl_utils._use_triton = original


def train_run(cfg: RlParams, run: str, common: CommonParams, *,
              rows: Sequence[Mapping[str, Any]] | None = None,
              heldout_rows: Sequence[Mapping[str, Any]] | None = None,
              callbacks: Sequence[TrainerCallback] = (), live_dir: Path | None = None) -> RunResult:
    """Train one run (GRPO or Dr. GRPO, per `cfg.runs[run]`), resuming from its last checkpoint.

    Checkpoints go to `<rl.output_dir>/<run>/checkpoints` every `cfg.save_steps` steps (and at the
    last step). A rerun resumes from the last complete one, step counter, optimiser and scheduler
    included; raising `cfg.max_steps` continues a finished run. Checkpoints made with other settings
    (see `run_fingerprint`) are discarded. The model lands in `<run>/final` only if training ends.

    With `common.num_processes` > 1 the training runs under `accelerate launch` (see
    `r1repro.distributed`); this process still picks the checkpoint and replaces `<run>/final`.

    Args:
        cfg, run, common, rows, heldout_rows, live_dir: see `make_trainer`.
        callbacks: see `make_trainer` (in-process training only).

    Returns:
        A `RunResult`.

    Raises:
        LaunchError: the launched processes failed (`<run>/final` keeps its previous model).
    """
    run_dir = Path(cfg.output_dir) / run
    start_run_dir(run_dir, run_fingerprint(cfg, run, common))
    resume = last_complete_checkpoint(run_dir / CHECKPOINTS, discard_incomplete=True)
    if resume is not None:
        log.info("rl %s: resuming from %s", run, resume)
    resumed_from = checkpoint_step(resume) if resume else None
    launch = Launch.from_common(common)
    if launch is None:
        trainer, diagnostics = _train(cfg, run, common, resume, rows=rows, heldout_rows=heldout_rows,
                                      callbacks=callbacks, live_dir=live_dir)
        step = trainer.state.global_step
        final = save_final(trainer, run_dir / FINAL, _final_meta(cfg, run, step))
        return RunResult(run=run, final_dir=final, diagnostics=list(diagnostics.rows), run_dir=run_dir,
                         live_dir=diagnostics.live_dir, resumed_from=resumed_from, global_step=step)
    if callbacks:
        raise ValueError("callbacks live in this process and cannot reach launched training processes; "
                         "pass none when common.num_processes > 1")
    with staged_dir(run_dir / FINAL) as tmp:  # replaced only if every process finished
        report = launch.run("rl", {
            "cfg": cfg.model_dump(mode="json"), "run": run, "common": common.model_dump(mode="json"),
            "rows": rows, "heldout_rows": heldout_rows, "live_dir": str(live_dir) if live_dir else None,
            "resume": str(resume) if resume else None, "final_dir": str(tmp)})
    return RunResult(run=run, final_dir=run_dir / FINAL, diagnostics=load_diagnostics(run_dir),
                     run_dir=run_dir, live_dir=Path(live_dir) if live_dir else run_dir / "dvclive",
                     resumed_from=resumed_from, global_step=report["global_step"])


def _train(cfg: RlParams, run: str, common: CommonParams, resume: Path | str | None,
           **trainer_args: Any) -> tuple[GRPOTrainer, Diagnostics]:
    """Make the trainer (`make_trainer` arguments) and train it, from `resume` when given."""
    trainer, diagnostics = make_trainer(cfg, run, common, **trainer_args)
    with compact_lm_head_scoring(enabled=trainer.args.device.type == "cpu"):
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return trainer, diagnostics


def _final_meta(cfg: RlParams, run: str, step: int) -> dict[str, Any]:
    """What r1repro_run.json beside a final model says: the run, its step and its algorithm."""
    return {"run": run, "global_step": step, **cfg.runs[run].model_dump(mode="json")}


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One launched process's part of `train_run` (see `r1repro.distributed`): train, write the model
    into the staging folder `job["final_dir"]`, and report (rank 0's report is the one kept)."""
    cfg, common = RlParams.model_validate(job["cfg"]), CommonParams.model_validate(job["common"])
    trainer, _ = _train(cfg, job["run"], common, job["resume"], rows=job["rows"],
                        heldout_rows=job["heldout_rows"],
                        live_dir=Path(job["live_dir"]) if job["live_dir"] else None)
    step = trainer.state.global_step
    report = launched_result(trainer, global_step=step)
    write_final(trainer, Path(job["final_dir"]), _final_meta(cfg, job["run"], step))
    return report


# ---------------------------------------------------------------------------------------------------
# Comparing the runs (the notebook's tables and plots)
# ---------------------------------------------------------------------------------------------------

CURVES = ("reward", "accuracy", "mean_length", "mean_length_incorrect", "truncated_share", "zero_std_share")


def curves_frame(results: Sequence[RunResult]) -> pd.DataFrame:
    """Every run's per-step diagnostics in one tidy table (column `run`), training steps only."""
    frames = [pd.DataFrame(r.diagnostics).assign(run=r.run) for r in results if r.diagnostics]
    if not frames:
        return pd.DataFrame(columns=["run", "step", *CURVES])
    frame = pd.concat(frames, ignore_index=True)
    frame = frame[frame["step"] > 0] if "step" in frame else frame
    for column in CURVES:
        if column not in frame:
            frame[column] = float("nan")
    return frame.reset_index(drop=True)


def heldout_frame(results: Sequence[RunResult]) -> pd.DataFrame:
    """Held-out accuracy over steps (rows of steps 0, eval_steps, 2 x eval_steps, ...), column `run`."""
    rows = [{"run": r.run, "step": d["step"], "heldout_accuracy": d["heldout_accuracy"]}
            for r in results for d in r.diagnostics if d.get("heldout_accuracy") is not None]
    return pd.DataFrame(rows, columns=["run", "step", "heldout_accuracy"])


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
