"""Stage 4: distillation. Rejection-sampled traces from a teacher, then SFT into each student.

DeepSeek-R1 (Sec. 2.4) distills its reasoning into small dense models by plain SFT on ~800k samples
of the big model's answers, kept only when correct and readable. Here the teacher (by default the
best RL checkpoint of stage 3) answers training questions several times; a trace is kept when it
finished on its own, is in the R1 format, is in one language, is judged correct and is new
(`r1repro.cold_start.rejection_sample`, the same filter as the cold-start data). Each student is then
fine-tuned on the kept traces with TRL's SFTTrainer (`r1repro.sft`), with the same prompt strings the
evaluation uses.

    examples, stats = sample_traces(generator, tokenizer, rows, cfg, common)
    result = train_student("llama_smollm2", "models/base", examples, cfg, common, live_dir)
"""

from __future__ import annotations

from pathlib import Path
from statistics import mean
from typing import Any, Sequence

from r1repro import cold_start, modeling
from r1repro.config import CommonParams, DistillParams
from r1repro.sft import SftResult, TrainSettings, train_sft


def sample_traces(generator: Any, tokenizer: Any, rows: Sequence[dict], cfg: DistillParams,
                  common: CommonParams) -> tuple[list[cold_start.ColdStartExample], cold_start.RejectionStats]:
    """Rejection sampling from the teacher with the bare question (no demonstrations).

    Args:
        generator: the teacher behind `r1repro.generation`'s interface.
        tokenizer: the teacher's tokenizer (for the chat template).
        rows: training question rows, never benchmark questions.
        cfg: the validated `distill` section (sampling, per_question, min_language, template).
        common: the validated `common` section (seed, grading settings).

    Returns:
        (kept traces, counts of where the samples went).
    """
    s = cfg.sampling
    rule = cold_start.RejectionFilter(min_language=cfg.min_language, timeout_s=common.grading_timeout_s,
                                      workers=common.grading_workers)
    return cold_start.rejection_sample(generator, rows, cfg.template, tokenizer, n=s.n,
                                       temperature=s.temperature, top_p=s.top_p,
                                       max_tokens=s.max_new_tokens, seed=common.seed,
                                       per_question=cfg.per_question, rule=rule)


def trace_statistics(examples: Sequence[cold_start.ColdStartExample], stats: cold_start.RejectionStats,
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


def train_student(label: str, student: str, examples: Sequence[cold_start.ColdStartExample],
                  cfg: DistillParams, common: CommonParams, live_dir: Path | None = None) -> SftResult:
    """SFT one student on the traces; the model lands in `<cfg.output_dir>/<label>`.

    The traces are rendered with the student's own tokenizer (its chat template and end-of-turn
    token), so a student of another family learns to stop where its own generation stops.

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
    dataset = cold_start.to_sft_dataset(examples, cfg.template, tokenizer)
    settings = TrainSettings(epochs=cfg.epochs, learning_rate=cfg.learning_rate, batch_size=cfg.batch_size,
                             max_length=cfg.max_length, lora=cfg.lora, seed=common.seed,
                             bf16=common.dtype == "bfloat16" and modeling.resolve_device(common.device) != "cpu")
    return train_sft(dataset, student, Path(cfg.output_dir) / label, settings, live_dir=live_dir,
                     device=common.device, trust_remote_code=common.trust_remote_code)
