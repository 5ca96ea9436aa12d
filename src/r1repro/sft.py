"""Supervised fine-tuning with TRL's `SFTTrainer`: stage 2's cold start (and the distill stage's students).

    from r1repro import cold_start, sft
    dataset = cold_start.to_sft_dataset(examples, "r1_chat", tokenizer)
    result = sft.train_from_params(dataset, cfg, common, live_dir="results/sft/dvclive")
    # or, with plain arguments:
    result = sft.train_sft(dataset, "models/base", "models/sft", sft.TrainSettings(learning_rate=1e-4))
    result.output_dir, result.global_step, result.losses

What it guarantees:

* Loss on the completion only: the dataset is TRL's prompt/completion shape, and
  `completion_only_loss=True` sets the prompt tokens' labels to -100 (tests/test_sft.py checks the
  collated labels).
* Full fine-tune, or LoRA (PEFT) when `lora.enabled`; LoRA weights are merged into the saved model,
  so later stages load a plain transformers model.
* Resumable (`r1repro.resumable`, shared with the RL stage): checkpoints go to `checkpoint_dir`
  (default `<output_dir>-checkpoints`) every `save_steps`; a rerun resumes from the last complete
  one (weights, optimizer and scheduler state, RNG, step) and continues at the step it reached. A
  checkpoint is reused only when the run's fingerprint (the model path and a digest of its files,
  of the training code, of the data, and every setting except the run length) matches, so a changed
  learning rate, a code change or a re-imported base model never continues a stale run.
* With `reuse_finished` (the distill stage's students), a run whose final model is already in
  `output_dir` with the same fingerprint and length is not trained again: its record is read back.
* Atomic output: the final model is written to a temporary folder beside `output_dir` and renamed
  into place only after it is complete, so a failed run leaves the previous good model untouched.
* Training metrics (loss, learning rate, grad norm, ...) go to a DVCLive folder at the trainer's
  global step, offline: no dvc.yaml is written and no DVC experiment is created. `common.report_to`
  adds an experiment tracker on top (trackio, tensorboard, wandb or mlflow; its package is checked first).
* Several processes when `common.num_processes` > 1: the training runs under `accelerate launch`
  (`r1repro.distributed`), `batch_size` split evenly over the processes; this process keeps the
  checkpoint choice and the atomic replacement of the final model.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import transformers
from transformers import TrainerCallback

from r1repro.config import CommonParams, LoraParams, SftParams
from r1repro.distributed import Launch, per_process
from r1repro.modeling import (bf16_mixed_precision, check_tracker, checkpointing_argument, load_model,
                              load_tokenizer, lora_config, resolve_device, training_weights_dtype)
from r1repro.resumable import (RunFiles, Trained, checkpoint_step, finished_record, fingerprint, resume_point,
                               run_launched_job, run_training)

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Logging to DVCLive
# ---------------------------------------------------------------------------------------------------


def _trim_history(live_dir: Path, last_step: int) -> None:
    """Drop logged rows past `last_step`: a resumed run recomputes them from its checkpoint."""
    for table in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = table.read_text(encoding="utf-8").splitlines()
        header = lines[0].split("\t") if lines else []
        if "step" not in header:
            continue
        column = header.index("step")
        kept = [lines[0]] + [ln for ln in lines[1:] if int(ln.split("\t")[column]) <= last_step]
        table.write_text("\n".join(kept) + "\n", encoding="utf-8")


class DvcLiveLogger(TrainerCallback):
    """Trainer logs into a DVCLive folder, indexed by the trainer's global step.

    transformers' own DVCLiveCallback numbers rows with DVCLive's step counter, which restarts or
    drifts when training resumes; here each row carries the global step, and a resumed run first
    drops the rows its checkpoint does not cover. `dvcyaml=False, save_dvc_exp=False`: the pipeline's
    dvc.yaml declares the plots, and a stage run must not create DVC experiments.

    Args:
        live_dir: the DVCLive folder (metrics under plots/metrics/train/*.tsv, summary in metrics.json).
    """

    def __init__(self, live_dir: Path | str):
        self.live_dir = Path(live_dir)
        self.live = None

    def on_train_begin(self, args, state, control, **kwargs):
        from dvclive import Live

        if not state.is_world_process_zero:
            return
        resumed = state.global_step > 0
        if resumed:
            _trim_history(self.live_dir, state.global_step)
        self.live = Live(str(self.live_dir), resume=resumed, dvcyaml=False, save_dvc_exp=False, report=None)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.live is None:
            return
        self.live.step = state.global_step
        logs = logs or {}
        # The trainer's last log (train_runtime, train_loss, total_flos...) summarizes the run: it goes
        # to metrics.json, not into the curves.
        summary = "train_runtime" in logs
        for key, value in logs.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                self.live.log_metric(f"train/{key}", value, plot=not summary)
        self.live.make_summary()

    def on_train_end(self, args, state, control, **kwargs):
        if self.live is not None:
            self.live.end()
            self.live = None


class _StepRecorder(TrainerCallback):
    """This run's logged losses, as (global step, loss)."""

    def __init__(self) -> None:
        self.losses: list[tuple[int, float]] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append((state.global_step, float(logs["loss"])))


# ---------------------------------------------------------------------------------------------------
# Fingerprint
# ---------------------------------------------------------------------------------------------------


def dataset_digest(dataset: Any) -> str:
    """sha256 of the prompt/completion pairs, in order."""
    digest = hashlib.sha256()
    for row in dataset:
        digest.update(json.dumps([row["prompt"], row["completion"]]).encode())
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """The hyperparameters of one SFT run.

    Attributes:
        epochs: passes over the data (ignored when max_steps > 0).
        max_steps: total optimizer steps, overriding epochs when > 0.
        learning_rate: AdamW's peak rate.
        lr_scheduler: "linear", "cosine", "constant" or "constant_with_warmup".
        warmup_ratio: share of the steps spent warming up, in [0, 1).
        batch_size: examples per forward/backward pass, over all processes (each takes an equal share).
        grad_accum: device steps per optimizer update.
        max_length: longest tokenized prompt + completion; longer ones are cut (and counted).
        lora: LoRA settings; None or `enabled: false` for a full fine-tune.
        seed: seeds LoRA init, data order and dropout.
        save_steps: optimizer steps between resumable checkpoints.
        bf16: bfloat16 mixed precision (autocast) over float32 weights.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        shared_prefix: run each batch's shared prompt columns once (`r1repro.prefix_scoring`; the
            same loss and gradients, to rounding); off with several processes or gradient checkpointing.
        report_to: experiment tracker the trainer also logs to (common.report_to; "none": dvclive only).
    """

    epochs: float = 1.0
    max_steps: int = -1
    learning_rate: float = 5e-5
    lr_scheduler: str = "linear"
    warmup_ratio: float = 0.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    lora: LoraParams | None = None
    seed: int = 1234
    save_steps: int = 10
    bf16: bool = False
    gradient_checkpointing: bool = False
    shared_prefix: bool = False
    report_to: str = "none"

    @staticmethod
    def mixed_precision(common: CommonParams) -> bool:
        """`common.dtype: bfloat16`: bf16 autocast over float32 weights (`bf16_mixed_precision`)."""
        return bf16_mixed_precision(common.dtype, resolve_device(common.device))

    @classmethod
    def from_params(cls, cfg: SftParams, common: CommonParams) -> TrainSettings:
        """The settings of params.yaml's `sft` section, with the seed, precision and tracker from `common`."""
        return cls(epochs=cfg.epochs, learning_rate=cfg.learning_rate, lr_scheduler=cfg.lr_scheduler,
                   warmup_ratio=cfg.warmup_ratio, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum,
                   max_length=cfg.max_length, lora=cfg.lora, seed=common.seed, save_steps=cfg.save_steps,
                   bf16=cls.mixed_precision(common),
                   gradient_checkpointing=cfg.gradient_checkpointing, shared_prefix=cfg.shared_prefix_loss,
                   report_to=common.report_to)

    def identity(self) -> dict[str, Any]:
        """What changes the weights at a given step: all but the run length, save frequency and tracker.

        Leaving epochs and max_steps out lets a longer rerun continue a shorter one (with
        keep_checkpoints). Caveat: the resumed scheduler starts from the rate the shorter run ended
        at (0 for linear decay) for one step, then follows the longer schedule. An interrupted run
        resumed with the same length is unaffected.
        """
        fields = asdict(self)
        for key in ("epochs", "max_steps", "save_steps", "report_to", "shared_prefix"):  # how, not what
            fields.pop(key)
        fields["lora"] = self.lora.model_dump() if self.lora is not None and self.lora.enabled else None
        return fields

    def to_json(self) -> dict[str, Any]:
        """The settings as plain JSON, for a launched training process (`from_json` reads them back)."""
        return {**asdict(self), "lora": self.lora.model_dump() if self.lora is not None else None}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainSettings:
        """The inverse of `to_json`."""
        return cls(**{**data, "lora": LoraParams(**data["lora"]) if data["lora"] is not None else None})


@dataclass(frozen=True)
class SftResult:
    """What a training run did.

    Attributes:
        output_dir: the final model (merged, plain transformers folder with its tokenizer).
        global_step: optimizer steps done in total, earlier runs included.
        start_step: the step this run resumed from (0 for a fresh run).
        losses: (global step, training loss) logged by this run.
        train_loss: mean loss over this run's steps.
        runtime_s: wall time of `trainer.train`.
        examples: training examples.
        truncated: examples cut at `max_length` (their end-of-turn token is lost).
        reused: the final model was already there from an earlier, finished run (`reuse_finished`);
            nothing was trained, and losses and runtime are empty.
    """

    output_dir: Path
    global_step: int
    start_step: int
    losses: list[tuple[int, float]] = field(default_factory=list)
    train_loss: float | None = None
    runtime_s: float = 0.0
    examples: int = 0
    truncated: int = 0
    reused: bool = False


def _as_dataset(dataset: Any):
    from datasets import Dataset

    rows = dataset if isinstance(dataset, Dataset) else Dataset.from_list(list(dataset))
    missing = {"prompt", "completion"} - set(rows.column_names)
    if missing or len(rows) == 0:
        raise ValueError(f"SFT needs a non-empty prompt/completion dataset; got columns {rows.column_names} "
                         f"and {len(rows)} rows (build it with r1repro.cold_start.to_sft_dataset)")
    return rows.select_columns(["prompt", "completion"])


def _sft_config(checkpoint_dir: Path, settings: TrainSettings, on_cpu: bool, progress: bool):
    from trl import SFTConfig

    s = settings
    return SFTConfig(
        output_dir=str(checkpoint_dir), num_train_epochs=s.epochs, max_steps=s.max_steps,
        learning_rate=s.learning_rate, lr_scheduler_type=s.lr_scheduler, warmup_steps=s.warmup_ratio,
        per_device_train_batch_size=per_process(s.batch_size, "batch_size"),  # 1 share per process
        gradient_accumulation_steps=s.grad_accum,
        max_length=s.max_length,
        completion_only_loss=True,  # prompt tokens get label -100: the model learns responses only
        seed=s.seed, data_seed=s.seed,
        save_strategy="steps", save_steps=s.save_steps,
        save_total_limit=1,  # the trainer removes an older checkpoint only after a newer one is complete
        logging_steps=1, disable_tqdm=not progress,
        report_to=s.report_to,  # a tracker on top of the dvclive record (DvcLiveLogger), if any
        use_cpu=on_cpu, dataloader_pin_memory=not on_cpu,
        # TRL turns both on by default: bf16 follows common.dtype instead (autocast is emulated and slow
        # on CPUs without native bf16), and checkpointing costs ~20% time.
        bf16=s.bf16, **checkpointing_argument(s.gradient_checkpointing),
        # Several processes (DDP): every trainable weight takes part in each forward pass, so DDP's
        # search for unused ones would only cost an extra pass over the graph per step.
        ddp_find_unused_parameters=False,
    )


def build_trainer(dataset: Any, model: str, checkpoint_dir: Path | str, settings: TrainSettings, *,
                  device: str = "auto", trust_remote_code: bool = False,
                  callbacks: Sequence[TrainerCallback] = (), progress: bool = True):
    """An `SFTTrainer` for a prompt/completion dataset, with the model loaded by `r1repro.modeling`.

    Args:
        dataset: a `datasets.Dataset` or list of {"prompt", "completion"}.
        model: hub id or local folder.
        checkpoint_dir: where the trainer writes checkpoints.
        settings: the hyperparameters.
        device: "auto", "cpu", "cuda" or "cuda:N".
        trust_remote_code: let transformers run model code shipped with the model.
        callbacks: extra `TrainerCallback`s.
        progress: show tqdm progress bars.

    Returns:
        The trainer; its `train_dataset` holds the tokenized rows with their `labels`.
    """
    from r1repro.prefix_scoring import PrefixOnceSFTTrainer, prefix_sharing

    transformers.set_seed(settings.seed)  # before the model exists: LoRA's init draws from it
    target = resolve_device(device)
    # Trained weights stay float32; bf16 is autocast over them (mixed precision).
    policy = load_model(model, dtype=training_weights_dtype(settings.bf16, settings.lora), device=target,
                        trust_remote_code=trust_remote_code)
    tokenizer = load_tokenizer(model, trust_remote_code=trust_remote_code)
    trainer = PrefixOnceSFTTrainer(
        model=policy, args=_sft_config(Path(checkpoint_dir), settings, target == "cpu", progress),
        train_dataset=_as_dataset(dataset), processing_class=tokenizer, peft_config=lora_config(settings.lora),
        callbacks=list(callbacks))
    # params sft.shared_prefix_loss or distill.shared_prefix_loss
    trainer.shared_prefix = prefix_sharing(trainer, settings.shared_prefix, "shared_prefix_loss")
    return trainer


def _count_truncated(trainer, max_length: int) -> int:
    return sum(1 for ids in trainer.train_dataset["input_ids"] if len(ids) >= max_length)


def _train(job: dict[str, Any], callbacks: Sequence[TrainerCallback] = ()) -> Trained:
    """Build the trainer of a job (see `train_sft`) and train.

    Returns:
        The trainer, the `SftResult` fields but output_dir, and the record saved beside the final model.
    """
    settings = TrainSettings.from_json(job["settings"])
    recorder = _StepRecorder()
    extra = [recorder, *([DvcLiveLogger(job["live_dir"])] if job["live_dir"] else []), *callbacks]
    trainer = build_trainer(job["rows"], job["model"], job["checkpoint_dir"], settings, device=job["device"],
                            trust_remote_code=job["trust_remote_code"], callbacks=extra,
                            progress=job["progress"])
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=job["resume"])
    fields = {"global_step": trainer.state.global_step,
              "start_step": checkpoint_step(job["resume"]) if job["resume"] else 0,
              "losses": recorder.losses, "train_loss": output.training_loss,
              "runtime_s": time.perf_counter() - started, "examples": len(job["rows"]),
              "truncated": _count_truncated(trainer, settings.max_length)}
    record = {**job["record"], "global_step": trainer.state.global_step, "epochs": settings.epochs,
              "max_steps": settings.max_steps, "train_loss": fields["train_loss"],
              "examples": fields["examples"], "truncated": fields["truncated"]}
    return Trained(trainer, fields, record)


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """One launched process's part of `train_sft` (see `r1repro.distributed`): train, write the model
    into the staging folder `job["final_dir"]`, and report (`resumable.run_launched_job`)."""
    return run_launched_job(job, _train)


def train_sft(dataset: Any, model: str, output_dir: Path | str, settings: TrainSettings | None = None, *,
              checkpoint_dir: Path | str | None = None, live_dir: Path | str | None = None,
              device: str = "auto", trust_remote_code: bool = False, keep_checkpoints: bool = False,
              callbacks: Sequence[TrainerCallback] = (), progress: bool = True,
              launch: Launch | None = None, reuse_finished: bool = False) -> SftResult:
    """Fine-tune `model` on a prompt/completion dataset and save the result to `output_dir`.

    Args:
        dataset: a `datasets.Dataset` or list of {"prompt", "completion"} (see `cold_start.to_sft_dataset`).
        model: hub id or local folder of the model to start from.
        output_dir: where the final model goes (replaced only when the run succeeds).
        settings: the hyperparameters (default: `TrainSettings()`).
        checkpoint_dir: resumable checkpoints (default: `<output_dir>-checkpoints`).
        live_dir: DVCLive folder for the training metrics (None: no DVCLive logging).
        device: "auto", "cpu", "cuda" or "cuda:N".
        trust_remote_code: let transformers run model code shipped with the model.
        keep_checkpoints: keep checkpoint_dir after success (default: remove it; it is only for resuming).
        callbacks: extra `TrainerCallback`s (in-process training only).
        progress: show tqdm progress bars.
        launch: train in several processes under `accelerate launch` (`Launch.from_common`);
            None trains in this process.
        reuse_finished: when `output_dir` already holds the final model of this very run (same
            fingerprint and length), return its record instead of training again.

    Returns:
        An `SftResult`.

    Raises:
        ValueError: an empty dataset or one without prompt/completion columns.
        ConfigError: a model that cannot be loaded, a bad device, or a tracker that is not installed.
        LaunchError: the launched processes failed (`output_dir` keeps its previous model).
    """
    settings = settings or TrainSettings()
    check_tracker(settings.report_to)  # before any training or launch
    output_dir = Path(output_dir)
    checkpoint_dir = Path(checkpoint_dir or output_dir.with_name(output_dir.name + "-checkpoints"))
    files = RunFiles(checkpoint_dir, output_dir)
    rows = _as_dataset(dataset)
    # Checkpoints of another process layout are not resumed (their data order differs).
    run = fingerprint("sft", model, {"model": str(model), "data": dataset_digest(rows),
                                     "settings": settings.identity()}, launch)
    length = {"epochs": settings.epochs, "max_steps": settings.max_steps}
    finished = finished_record(output_dir, {**run, **length}) if reuse_finished else None
    if finished is not None:
        logger.info("%s: already trained by this run (step %d); not training again", output_dir,
                    finished["global_step"])
        fields = {"global_step": finished["global_step"], "start_step": finished["global_step"],
                  "train_loss": finished.get("train_loss"), "examples": finished.get("examples", len(rows)),
                  "truncated": finished.get("truncated", 0), "reused": True}
    else:
        resume = resume_point(files, run, "sft")
        job = {"rows": rows, "model": str(model), "checkpoint_dir": str(files.checkpoint_dir),
               "settings": settings.to_json(), "resume": str(resume) if resume else None,
               "live_dir": str(live_dir) if live_dir else None, "device": device,
               "trust_remote_code": trust_remote_code, "progress": progress, "record": run}
        trained = run_training("sft", output_dir, launch, here=lambda: _train(job, callbacks),
                               payload=lambda: {**job, "rows": rows.to_list()},
                               lora=settings.lora, lora_key="sft.lora / distill.lora", callbacks=callbacks)
        fields = {k: v for k, v in trained.fields.items() if k in SftResult.__dataclass_fields__}
        fields["losses"] = [tuple(pair) for pair in fields["losses"]]  # a launch's JSON made the pairs lists
    if not keep_checkpoints:  # also after a reused run: a kill may have come before this cleanup
        shutil.rmtree(files.checkpoint_dir, ignore_errors=True)
    return SftResult(output_dir=output_dir, **fields)


def train_from_params(dataset: Any, cfg: SftParams, common: CommonParams, *,
                      live_dir: Path | str | None = None, callbacks: Sequence[TrainerCallback] = (),
                      progress: bool = True) -> SftResult:
    """`train_sft` with the settings of params.yaml's `sft` and `common` sections.

    Args:
        dataset: prompt/completion rows (see `train_sft`).
        cfg: the validated `sft` section (init_model, output_dir, checkpoints, hyperparameters).
        common: the validated `common` section (seed, device, dtype, trust_remote_code, report_to).
        live_dir: DVCLive folder for the training metrics.
        callbacks: extra `TrainerCallback`s.
        progress: show tqdm progress bars.

    Returns:
        An `SftResult`.
    """
    return train_sft(dataset, cfg.init_model, cfg.output_dir, TrainSettings.from_params(cfg, common),
                     checkpoint_dir=cfg.checkpoint_dir, live_dir=live_dir, device=common.device,
                     trust_remote_code=common.trust_remote_code, keep_checkpoints=cfg.keep_checkpoints,
                     callbacks=callbacks, progress=progress, launch=Launch.from_common(common))
