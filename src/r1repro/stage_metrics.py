"""Each training stage's metrics.json, built in one place from typed parts.

The notebooks call these builders instead of assembling dicts in cells, and the report reads the keys
they write (`r1repro.report`), so the contract between a stage and its readers lives here:

    metrics = stage_metrics.sft_metrics(before, after, result, examples=64, source="worked")
    stage_metrics.write(ctx, metrics, model_dir=...)     # metrics.json + protocol.json (runtime)

Every held-out block ("before", "after", "start", "heldout") is `evaluation.heldout_summary`'s dict:
n, accuracy with accuracy_low/high, format_rate, truncated, mean_tokens. Every paired change is
`evaluation.paired_change`'s: change with change_low/high, n, fixed, broke, sign_test_p.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Sequence, TypeVar

HeldoutSummary = dict[str, Any]   # evaluation.heldout_summary
PairedChange = dict[str, Any]     # evaluation.paired_change / paired_change_over_seeds
T = TypeVar("T")


def _fields_of(cls: type[T], data: Mapping[str, Any]) -> T:
    """`cls` from the entries of a metrics.json dict that are its fields (the file also holds the
    headline, which is derived). A missing field raises TypeError naming it."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class StageMetrics:
    """What a stage writes to metrics.json, and the few numbers its one-line summary prints."""

    def headline(self) -> dict[str, Any]:
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls: type[T], data: Mapping[str, Any]) -> T:
        """The metrics back from the dict `to_json` wrote (what the report reads)."""
        return _fields_of(cls, data)


@dataclass
class SftMetrics(StageMetrics):
    """Stage 2: held-out answers before and after the cold-start SFT, and the training run."""

    before: HeldoutSummary
    after: HeldoutSummary
    training: dict[str, Any]
    cold_start: dict[str, Any]

    def headline(self) -> dict[str, Any]:
        return {"format_before": self.before["format_rate"], "format_after": self.after["format_rate"],
                "accuracy_before": self.before["accuracy"], "accuracy_after": self.after["accuracy"]}


def sft_metrics(before: HeldoutSummary, after: HeldoutSummary, result: Any, *, examples: int,
                source: str) -> SftMetrics:
    """From the two held-out summaries and the `sft.SftResult`."""
    return SftMetrics(before, after,
                      training={"steps": result.global_step, "resumed_from_step": result.start_step,
                                "train_loss": result.train_loss, "examples": result.examples,
                                "truncated_examples": result.truncated},
                      cold_start={"examples": examples, "source": source})


@dataclass
class RlRunMetrics:
    """One algorithm (its two TRL knobs) over every seed: held-out accuracy and the paired change."""

    loss_type: str
    scale_rewards: str
    seeds: list[int]
    steps: int
    heldout: HeldoutSummary                    # the first seed's model (the one later stages use)
    heldout_by_seed: dict[str, HeldoutSummary]
    heldout_change: float                      # seed-averaged accuracy minus the start's
    heldout_change_paired: PairedChange        # over questions, seeds averaged per question
    late_training: dict[str, float]            # second half of training, averaged over seeds


@dataclass
class RlMetrics(StageMetrics):
    """Stage 3: the start, each run, and the prompt filter's outcome."""

    start: HeldoutSummary
    runs: dict[str, RlRunMetrics]
    prompt_filter: dict[str, Any] | None = None
    # Which questions the held-out checks answer, e.g. "synthetic:word_ops rows 600-855"
    heldout_set: str | None = None
    training_rollouts: dict[str, Any] = field(default_factory=dict)

    def headline(self) -> dict[str, Any]:
        return {"start_heldout_accuracy": self.start["accuracy"],
                **{f"{run}_heldout_accuracy": r.heldout["accuracy"] for run, r in self.runs.items()},
                **{f"{run}_change": r.heldout_change_paired["change"] for run, r in self.runs.items()}}

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("training_rollouts")  # wall-clock facts go to protocol.json, metrics stay reproducible
        for optional in ("prompt_filter", "heldout_set"):
            if data[optional] is None:
                data.pop(optional)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "RlMetrics":
        runs = {name: _fields_of(RlRunMetrics, run) for name, run in data["runs"].items()}
        return cls(start=data["start"], runs=runs, prompt_filter=data.get("prompt_filter"),
                   heldout_set=data.get("heldout_set"))


def rl_metrics(cfg: Any, start: HeldoutSummary, after: Mapping[str, HeldoutSummary],
               change: Mapping[str, PairedChange], results: Mapping[str, Any], late: Any,
               seeds: Sequence[int], dir_name: Any, prompt_filter: dict[str, Any] | None = None) -> RlMetrics:
    """The RL stage's metrics.

    Args:
        cfg: the `rl` section.
        start: the starting model's held-out summary.
        after: {run folder name: held-out summary} (one per run and seed).
        change: {run: paired change over seeds} (`evaluation.paired_change_over_seeds`).
        results: {run folder name: `rl.RunResult`}.
        late: `rl.late_means` of the curves (one row per run folder name).
        seeds: `rl.run_seeds`.
        dir_name: `rl.run_dir_name`.
        prompt_filter: the filter's summary, when it ran.
    """
    late_rows = late.set_index("run")
    runs = {}
    for run, knobs in cfg.runs.items():
        names = [dir_name(run, s, seeds) for s in seeds]
        late_run = late_rows.loc[[n for n in names if n in late_rows.index]].drop(columns="steps")
        runs[run] = RlRunMetrics(
            loss_type=knobs.loss_type, scale_rewards=knobs.scale_rewards, seeds=list(seeds),
            steps=results[names[0]].global_step, heldout=after[names[0]],
            heldout_by_seed={str(s): after[n] for s, n in zip(seeds, names)},
            heldout_change=sum(after[n]["accuracy"] for n in names) / len(names) - start["accuracy"],
            heldout_change_paired=dict(change[run]),
            late_training={k: float(v) for k, v in late_run.mean().items()})
    rollouts = [d for r in results.values() for d in r.diagnostics if d.get("step", 0) > 0]
    per_step = cfg.prompts_per_step * cfg.num_generations
    heldout_set = f"{cfg.heldout.source} {cfg.heldout.rows_text()}" if cfg.heldout is not None else None
    return RlMetrics(start=start, runs=runs, prompt_filter=prompt_filter, heldout_set=heldout_set,
                     training_rollouts={
        "tokens": int(sum((d.get("mean_length") or 0) * per_step for d in rollouts)),
        "seconds": round(sum(d.get("step_time_s") or 0 for d in rollouts), 1),
        "note": "TRL's own rollouts during training; seconds are whole training steps"})


@dataclass
class DistillMetrics(StageMetrics):
    """Stage 4: the rejection-sampled traces and each student before and after."""

    traces: dict[str, Any]
    students: dict[str, dict[str, Any]]

    def headline(self) -> dict[str, Any]:
        return {"acceptance_rate": self.traces["acceptance_rate"], "traces": self.traces.get("kept"),
                **{f"{label}_accuracy_after": s["after"]["accuracy"] for label, s in self.students.items()}}


def student_entry(start: str, spec: Any, before: HeldoutSummary, after: HeldoutSummary, result: Any) -> dict:
    """One student's block of DistillMetrics.students."""
    return {"start": start, "pretrained": spec.pretrained, "note": spec.note, "before": before, "after": after,
            "steps": result.global_step, "train_loss": result.train_loss,
            # a rerun after a kill: resumed from this step, or the student was already done
            "resumed_from_step": result.start_step, "reused": result.reused}


def write(ctx: Any, metrics: StageMetrics, **protocol_extra: Any) -> None:
    """metrics.json (with its headline) and protocol.json of the stage (`runtime.write_metrics`)."""
    from r1repro import runtime

    extra = dict(protocol_extra)
    if isinstance(metrics, RlMetrics) and metrics.training_rollouts:
        extra["training_rollouts"] = metrics.training_rollouts
    runtime.write_metrics(ctx, metrics.to_json(), headline=metrics.headline(), **extra)
