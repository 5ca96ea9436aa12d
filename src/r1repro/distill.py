"""Stage 4: distillation. Rejection-sampled traces from a teacher, then SFT into each student.

DeepSeek-R1 (Sec. 2.4) distills its reasoning into small dense models by plain SFT on ~800k samples
of the big model's answers, kept only when correct and readable. Here the teacher (by default the
best RL checkpoint of stage 3) answers training questions several times; a trace is kept when it
finished on its own, is in the R1 format, is in one language, is judged correct and is new
(`r1repro.rejection_sampling`, the same filter as the cold-start data). Each student is then
fine-tuned on the kept traces with TRL's SFTTrainer (`r1repro.sft`, resumable through
`r1repro.resumable`), with the same prompt strings the evaluation uses.

Students come in two kinds (params `distill.students`): pretrained weights (`{init: models/base}`), or a
model built from a config around a tokenizer (`{architecture: qwen2, config: {...}, tokenizer: ...}`).
The second is our departure from the paper, which distills into pretrained Qwen2.5 and Llama models:
no pretrained Qwen weights can be fetched on the CPU default, so a small Qwen2 is built with random
weights; its label says "not_pretrained" wherever it appears, and its numbers measure what SFT on a
few traces gives a model that knows no language, not what distillation gives a pretrained one.

    examples, stats = sample_traces(generator, tokenizer, rows, cfg, common)
    start = prepare_student("llama_smollm2", cfg.students["llama_smollm2"], cfg, common)
    result = train_student("llama_smollm2", start, examples, cfg, common, live_dir)
    result.start_step, result.reused    # resumed from a checkpoint / already trained by this run
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any, Sequence

from r1repro import modeling
from r1repro.config import CommonParams, DistillParams, ScratchModelConfig, StudentSpec
from r1repro.distributed import Launch
from r1repro.io import atomic_write_json, staged_dir
from r1repro.rejection_sampling import RejectionFilter, RejectionStats, rejection_sample
from r1repro.sft import SftResult, TrainSettings, train_sft
from r1repro.sft_examples import ColdStartExample, to_sft_dataset
from r1repro.stops import stop_policy_for

STUDENT_RECORD = "r1repro_student.json"


def _qwen2_config(size: ScratchModelConfig, tokenizer: Any):
    """A Qwen2 config of the given size around `tokenizer`: its vocabulary, BOS, EOS and pad ids."""
    from transformers import Qwen2Config

    return Qwen2Config(vocab_size=len(tokenizer), hidden_size=size.hidden_size,
                       num_hidden_layers=size.num_hidden_layers, num_attention_heads=size.num_attention_heads,
                       num_key_value_heads=size.num_key_value_heads, intermediate_size=size.intermediate_size,
                       max_position_embeddings=size.max_position_embeddings, tie_word_embeddings=True,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)


# Architectures a student can be built from (params `distill.students.<label>.architecture`).
SCRATCH_BUILDERS = {"qwen2": _qwen2_config}


def sample_traces(generator: Any, tokenizer: Any, rows: Sequence[dict], cfg: DistillParams,
                  common: CommonParams) -> tuple[list[ColdStartExample], RejectionStats]:
    """Rejection sampling from the teacher with the bare question (no demonstrations).

    Args:
        generator: the teacher behind `r1repro.generation`'s interface.
        tokenizer: the teacher's tokenizer (for the chat template and where responses end).
        rows: training question rows, never benchmark questions.
        cfg: the validated `distill` section (sampling, per_question, min_language, template).
        common: the validated `common` section (seed, grading settings).

    Returns:
        (kept traces, counts of where the samples went).
    """
    s = cfg.sampling
    rule = RejectionFilter.from_params(cfg.min_language, common)
    return rejection_sample(generator, rows, cfg.template, tokenizer, n=s.n, temperature=s.temperature,
                            top_p=s.top_p, max_tokens=s.max_new_tokens, seed=common.seed,
                            per_question=cfg.per_question, rule=rule,
                            stop_policy=stop_policy_for(common, cfg.template, tokenizer))


def trace_statistics(examples: Sequence[ColdStartExample], stats: RejectionStats,
                     tokenizer: Any) -> dict[str, float]:
    """Acceptance rate, questions covered and trace lengths (tokens), for metrics.json.

    Args:
        examples: the kept traces.
        stats: the rejection counts from `sample_traces`.
        tokenizer: counts tokens.
    """
    lengths = [len(tokenizer(e.response, add_special_tokens=False)["input_ids"]) for e in examples]
    return {
        **stats.as_dict(),
        "acceptance_rate": stats.kept / stats.sampled if stats.sampled else 0.0,
        "mean_tokens": float(mean(lengths)) if lengths else 0.0,
        "max_tokens": float(max(lengths)) if lengths else 0.0,
    }


def train_student(label: str, student: str, examples: Sequence[ColdStartExample],
                  cfg: DistillParams, common: CommonParams, live_dir: Path | None = None) -> SftResult:
    """SFT one student on the traces; the model lands in `<cfg.output_dir>/<label>`.

    The traces are rendered with the student's own tokenizer (its chat template and end-of-turn
    token), so a student of another family learns to stop where its own generation stops.

    A killed stage loses little on its rerun: checkpoints go to `<cfg.output_dir>/<label>-checkpoints`
    every `cfg.save_steps` and training resumes from the last complete one (`r1repro.sft`), and a
    student whose final model this same run already wrote (same starting weights, traces and
    settings) is not trained again (`SftResult.reused`).

    Args:
        label: the student's name (params `distill.students` key).
        student: hub id or local path of the student's starting weights.
        examples: kept traces from `sample_traces`.
        cfg, common: validated params sections.
        live_dir: DVCLive folder for the training loss.

    Raises:
        ValueError: no traces were kept (nothing to distill); lower the filter or sample more.
    """
    if not examples:
        raise ValueError("distill: the teacher gave no accepted traces; raise distill.sampling.n or "
                         "distill.prompts.limit, or check the teacher (distill.teacher)")
    tokenizer = modeling.load_tokenizer(student, trust_remote_code=common.trust_remote_code)
    dataset = to_sft_dataset(examples, cfg.template, tokenizer)
    settings = TrainSettings(epochs=cfg.epochs, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                             max_length=cfg.max_length, lora=cfg.lora, seed=common.seed,
                             save_steps=cfg.save_steps, bf16=TrainSettings.mixed_precision(common),
                             shared_prefix=cfg.shared_prefix_loss,
                             report_to=common.report_to)  # train_sft checks that the tracker is installed
    return train_sft(dataset, student, Path(cfg.output_dir) / label, settings, live_dir=live_dir,
                     device=common.device, trust_remote_code=common.trust_remote_code,
                     launch=Launch.from_common(common),  # several processes when common.num_processes > 1
                     reuse_finished=True)


def build_scratch_student(spec: StudentSpec, output_dir: Path | str, template: str, seed: int,
                          trust_remote_code: bool = False) -> Path:
    """Build a randomly initialised student from its config and save it, with its tokenizer.

    Generation stops at the tokenizer's EOS and at the template's end-of-turn marker (the same token,
    `<|im_end|>`, for SmolLM2's tokenizer and `r1_chat`): both go into the saved generation config.

    Args:
        spec: a student with `architecture` (see `SCRATCH_BUILDERS`), `config` and `tokenizer`.
        output_dir: where the model goes (replaced as a whole).
        template: the prompt template the student is trained and evaluated with.
        seed: seeds the random initialisation.
        trust_remote_code: let transformers run tokenizer code shipped with the tokenizer.

    Returns:
        The folder, loadable by `r1repro.modeling.load_model`.
    """
    import transformers

    tokenizer = modeling.load_tokenizer(spec.tokenizer, trust_remote_code=trust_remote_code)
    config = SCRATCH_BUILDERS[spec.architecture](spec.config or ScratchModelConfig(), tokenizer)
    transformers.set_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    stops = list(dict.fromkeys([tokenizer.eos_token_id, modeling.end_of_turn_id(template, tokenizer)]))
    model.generation_config.eos_token_id = stops[0] if len(stops) == 1 else stops
    with staged_dir(output_dir) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(tmp / STUDENT_RECORD, {"pretrained": False, "seed": seed, **spec.model_dump()})
    return Path(output_dir)


def prepare_student(label: str, spec: StudentSpec, cfg: DistillParams, common: CommonParams) -> str:
    """A student's starting weights: its `init`, or a model built from its config.

    Args:
        label: the student's name (params `distill.students` key).
        spec: its entry.
        cfg, common: validated params sections.

    Returns:
        A hub id or local folder; a built student is saved in `<cfg.output_dir>/<label>-init`.
    """
    if spec.pretrained:
        return spec.init
    folder = Path(cfg.output_dir) / f"{label}-init"
    return str(build_scratch_student(spec, folder, cfg.template, common.seed, common.trust_remote_code))
