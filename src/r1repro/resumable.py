"""A resumable training run: the bookkeeping that SFT (stage 2), the distill students (stage 4, through
`r1repro.sft`) and GRPO / Dr. GRPO (stage 3, `r1repro.rl`) share.

    from r1repro import resumable
    files = resumable.RunFiles(checkpoint_dir, final_dir)
    fingerprint = resumable.fingerprint("sft", model, {"data": ..., "settings": ...}, launch)
    resume = resumable.resume_point(files, fingerprint, "sft")      # a checkpoint folder, or None
    trained = resumable.run_training("sft", files.final_dir, launch, here=..., payload=...,
                                     lora=settings.lora, lora_key="sft.lora")

What it guarantees:

* Same run or a fresh start. A run's fingerprint holds the digest of its starting weights, of its
  code (every r1repro module the training module reaches through imports, `code_digest`), the
  settings that shape its weights and, with several processes, the launch layout. It is stored beside
  the checkpoints (`RUN_RECORD`); when it differs (or is missing), the checkpoints and the logs that
  go with them are discarded and training starts at step 0: a changed learning rate, a retrained
  starting model or a code change must not resume, and for a finished run silently keep, the old run.
* Complete checkpoints only. The trainer writes a checkpoint's files one after another into its
  folder, trainer_state.json last, with no staging folder, so a kill mid-save leaves a folder that
  looks like a checkpoint. `is_complete_checkpoint` accepts one only when trainer_state.json parses
  and names the folder's own step and the weights, optimizer state and scheduler state are there;
  the others are deleted before training, so the trainer neither mixes their files into a new save
  nor counts them when it rotates old checkpoints away.
* A staged final model. It is written into a temporary folder beside its target and renamed into
  place only once complete (and, for a launch, only after every process finished), with a record of
  the run (`FINAL_RECORD`); a failed run, or one whose weights went NaN, leaves the previous model.
* In this process or launched. With `common.num_processes` > 1 the training runs under
  `accelerate launch` (`r1repro.distributed.Launch`) in the training module's `run_job`
  (`run_launched_job`); this process still chooses the checkpoint and replaces the final model.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1repro.deps import import_closure
from r1repro.distributed import Launch, launched_result
from r1repro.io import atomic_write_json, read_json_or_none, source_digest, staged_dir, weights_digest
from r1repro.modeling import save_trained_model

log = logging.getLogger(__name__)

RUN_RECORD = "r1repro_run.json"  # in the checkpoint folder: the fingerprint its checkpoints belong to
FINAL_RECORD = "r1repro_training.json"  # in the final model's folder: the fingerprint and how far it got
# Any one of these holds a checkpoint's weights (full model, sharded index, LoRA adapters, or .bin).
_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "adapter_model.safetensors",
                 "pytorch_model.bin")


# ---------------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------------


def code_digest(training_module: str) -> str:
    """An MD5 over the source of every r1repro module `training_module` reaches through imports.

    The closure is computed (`r1repro.deps.import_closure`), never listed by hand, so a module that
    the training code starts to import counts from then on. It is the closure DVC reruns a training
    stage for, so whenever a code change reruns the stage, its checkpoints start afresh.

    Args:
        training_module: the module whose `run_job` trains, "sft" or "rl".
    """
    return source_digest(*sorted(import_closure({training_module})))


def fingerprint(training_module: str, init_model: str | Path, settings: Mapping[str, Any],
                launch: Launch | None = None) -> dict[str, Any]:
    """What a run's checkpoints and final model depend on: resuming under anything else mixes two runs.

    Args:
        training_module: "sft" or "rl" (see `code_digest`).
        init_model: the starting weights, a local folder (digested) or a hub id (kept as is).
        settings: the stage's own identity: every setting that changes the weights at a given step
            (not the run length or the save frequency, so that a longer rerun continues a shorter one).
        launch: the launch, when several processes train; their layout changes data order and
            checkpoint format. Left out for one process.

    Returns:
        {**settings, "init_weights", "code", "launch" (with several processes)}, JSON-ready.
    """
    layout = launch.identity() if launch is not None else None
    return {**settings, "init_weights": weights_digest(init_model), "code": code_digest(training_module),
            **({"launch": layout} if layout is not None else {})}


def _changed_keys(old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The keys whose values differ, nested ones as `settings.learning_rate`."""
    changed = []
    for key in sorted({*old, *new}):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed


def _as_json(data: Mapping[str, Any]) -> dict[str, Any]:
    """`data` as it reads back from a JSON file (tuples become lists), for comparing with a record."""
    return json.loads(json.dumps(dict(data)))


# ---------------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------------


def checkpoint_step(path: Path | str) -> int | None:
    """N for a folder named checkpoint-N, else None."""
    prefix, _, number = Path(path).name.partition("-")
    return int(number) if prefix == "checkpoint" and number.isdigit() else None


def is_complete_checkpoint(path: Path | str) -> bool:
    """Whether a checkpoint folder was written to the end, so that training can resume from it.

    `Trainer._save_checkpoint` writes the weights, then optimizer and scheduler, and trainer_state.json
    last, without a staging folder. So a folder counts as complete only if trainer_state.json parses
    and names the folder's own step, and the weights, the optimizer state (optimizer.pt, or DeepSpeed's
    global_stepN/*optim_states.pt) and scheduler.pt are there.

    Args:
        path: a `checkpoint-N` folder.

    Returns:
        True when it is complete.
    """
    path = Path(path)
    state = read_json_or_none(path / "trainer_state.json")
    return (
        isinstance(state, dict) and state.get("global_step") == checkpoint_step(path)
        and any((path / name).is_file() for name in _WEIGHT_FILES)
        and ((path / "optimizer.pt").is_file() or any(path.glob("global_step*/*optim_states.pt")))
        and (path / "scheduler.pt").is_file()
    )


def last_complete_checkpoint(folder: Path | str, discard_incomplete: bool = False) -> Path | None:
    """The complete checkpoint with the highest step in `folder`, if any.

    Args:
        folder: the run's checkpoint folder (holding checkpoint-N subfolders).
        discard_incomplete: delete the incomplete checkpoint folders (see the module docstring).

    Returns:
        The folder to resume from, or None.
    """
    found = sorted((p for p in Path(folder).glob("checkpoint-*") if checkpoint_step(p) is not None),
                   key=checkpoint_step)
    complete = [p for p in found if is_complete_checkpoint(p)]
    if discard_incomplete:
        for path in sorted(set(found) - set(complete)):
            log.warning("removing incomplete checkpoint %s (a save that did not finish)", path)
            shutil.rmtree(path, ignore_errors=True)
    return complete[-1] if complete else None


@dataclass(frozen=True)
class RunFiles:
    """Where one training run keeps its files.

    Attributes:
        checkpoint_dir: the trainer's output folder (checkpoint-N subfolders, and `RUN_RECORD`).
        final_dir: the final model, replaced only by a run that finished.
        logs: files written along with the checkpoints (per-step logs); discarded with them.
    """

    checkpoint_dir: Path
    final_dir: Path
    logs: tuple[Path, ...] = ()

    @property
    def record(self) -> Path:
        """The fingerprint of the run the checkpoints belong to."""
        return self.checkpoint_dir / RUN_RECORD


def resume_point(files: RunFiles, run_fingerprint: Mapping[str, Any], label: str) -> Path | None:
    """Where to resume from: this run's last complete checkpoint; another run's checkpoints are discarded.

    Args:
        files: the run's folders.
        run_fingerprint: `fingerprint(...)` of this call; stored in `files.record`.
        label: names the run in the warning (e.g. "sft", "rl grpo").

    Returns:
        The last complete checkpoint when the folder holds this run's checkpoints, else None (step 0).
    """
    wanted = _as_json(run_fingerprint)
    previous = read_json_or_none(files.record)
    left = files.checkpoint_dir.exists() or any(path.exists() for path in files.logs)
    if previous != wanted and left:
        why = (f"{', '.join(_changed_keys(previous, wanted))} changed" if isinstance(previous, dict)
               else "no record of the run that made them")
        log.warning("%s: %s holds checkpoints of another run (%s); starting from step 0",
                    label, files.checkpoint_dir, why)
        shutil.rmtree(files.checkpoint_dir, ignore_errors=True)
        for path in files.logs:
            path.unlink(missing_ok=True)
    files.checkpoint_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(files.record, wanted)
    resume = last_complete_checkpoint(files.checkpoint_dir, discard_incomplete=True)
    if resume is not None:
        log.info("%s: resuming from %s", label, resume)
    return resume


# ---------------------------------------------------------------------------------------------------
# The final model
# ---------------------------------------------------------------------------------------------------


def finished_record(final_dir: Path | str, expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """The record of a final model in `final_dir` that holds every entry of `expected`, or None.

    The record is written into the final model's staging folder, which is renamed into place whole:
    a record that is there belongs to a complete model.

    Args:
        final_dir: the final model's folder.
        expected: the run's fingerprint plus its length (e.g. epochs and max_steps).
    """
    record = read_json_or_none(Path(final_dir) / FINAL_RECORD)
    if not isinstance(record, dict):
        return None
    return record if all(record.get(key) == value for key, value in _as_json(expected).items()) else None


def write_final(trainer: Any, folder: Path, record: Mapping[str, Any]) -> None:
    """Write the trained model (LoRA merged), its tokenizer and `record` into `folder`.

    In a launch every process calls this (ZeRO-3 gathers the shards); the main process writes.

    Raises:
        FloatingPointError: a weight is NaN or inf (nothing is written).
    """
    for name, param in trainer.model.named_parameters():
        if not param.isfinite().all():
            raise FloatingPointError(f"parameter {name} holds NaN or inf after training; "
                                     "the previous final model is kept")
    save_trained_model(trainer, folder)
    if trainer.is_world_process_zero():
        atomic_write_json(folder / FINAL_RECORD, dict(record))


def save_final(trainer: Any, final_dir: Path, record: Mapping[str, Any]) -> Path:
    """`write_final` into a staging folder beside `final_dir`, then rename it onto `final_dir`.

    Returns:
        `final_dir`.
    """
    with staged_dir(final_dir) as tmp:
        write_final(trainer, tmp, record)
    return final_dir


# ---------------------------------------------------------------------------------------------------
# In this process, or launched
# ---------------------------------------------------------------------------------------------------


@dataclass
class Trained:
    """What a training call gives back.

    Attributes:
        trainer: the trainer after `train()` (None when the training ran in launched processes).
        fields: JSON-ready results (steps, losses, ...); a launched process reports these.
        record: written beside the final model as `FINAL_RECORD` (None when launched: written there).
        local: in-process extras that cannot cross a launch (e.g. RL's diagnostics callback).
    """

    trainer: Any
    fields: dict[str, Any]
    record: dict[str, Any] | None = None
    local: Any = None


def run_training(kind: str, final_dir: Path, launch: Launch | None, *, here: Callable[[], Trained],
                 payload: Callable[[], dict[str, Any]], lora: Any, lora_key: str,
                 callbacks: Sequence[Any] = ()) -> Trained:
    """Train in this process, or in launched processes; the final model replaces `final_dir` on success.

    Args:
        kind: the job kind a launched process runs (a key of `r1repro.distributed.JOBS`).
        final_dir: where the final model goes.
        launch: `Launch.from_common(common)`; None trains in this process.
        here: trains in this process and returns what it trained.
        payload: the JSON-ready job of the launched processes (called only for a launch); their
            `run_job` gets it with `final_dir`, the staging folder, added.
        lora, lora_key: the stage's LoRA settings and their params key (ZeRO-3 refuses LoRA).
        callbacks: extra trainer callbacks (refused for a launch: they live in this process).

    Returns:
        `here()`'s result; for a launch, `Trained(None, <rank 0's report>)`.

    Raises:
        LaunchError: the launched processes failed (`final_dir` keeps its previous model).
    """
    if launch is None:
        trained = here()
        save_final(trained.trainer, final_dir, trained.record or {})
        return trained
    launch.check(lora, callbacks, lora_key)
    with staged_dir(final_dir) as tmp:  # replaced only if every process finished
        report = launch.run(kind, {**payload(), "final_dir": str(tmp)})
    return Trained(trainer=None, fields=report)


def run_launched_job(job: dict[str, Any], train: Callable[[dict[str, Any]], Trained]) -> dict[str, Any]:
    """One launched process's part of `run_training`: train, write the model into the staging folder
    `job["final_dir"]`, and report (rank 0's report is the one kept).

    Args:
        job: the payload, with `final_dir`.
        train: the training module's in-process training of a job.

    Returns:
        The training's fields with the world size and every process's weight digest
        (`r1repro.distributed.launched_result`).
    """
    trained = train(job)
    report = launched_result(trained.trainer, **trained.fields)  # before a LoRA merge changes the model
    write_final(trained.trainer, Path(job["final_dir"]), trained.record or {})
    return report

