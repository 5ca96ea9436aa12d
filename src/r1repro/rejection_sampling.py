"""Rejection sampling from a teacher: keep only the responses that are correct, well formed, in one
language, complete and new (DeepSeek-R1, Sec. 2.3.1 for the cold start and Sec. 2.4 for distillation).

Stage 2 uses it with a few-shot prompt of worked demonstrations (`sft.source: teacher`); stage 4
(`r1repro.distill`) with the bare question, sampling the RL-trained teacher. Kept examples hold the
plain question: the student learns to answer without demonstrations.

    rule = RejectionFilter.from_params(cfg.min_language, common)
    examples, stats = rejection_sample(generator, rows, "r1_chat", tokenizer, n=4, rule=rule,
                                       stop_policy=stop_policy_for(common, "r1_chat", tokenizer))
    stats.as_dict()        # where the samples went: truncated, bad_format, ..., kept
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r1repro import grading, rewards, templates
from r1repro.config import CommonParams
from r1repro.sft_examples import ColdStartExample
from r1repro.stops import StopPolicy

FEW_SHOT_INSTRUCTIONS = (
    "Solve the last problem the way the examples are solved: reason step by step inside "
    "<think> </think>, check your work before you finish, then give a short summary with the final "
    "answer in \\boxed{} inside <answer> </answer>."
)


def few_shot_question(question: str, demos: Sequence[ColdStartExample]) -> str:
    """The teacher's user message: instructions, solved demonstrations, then the question.

    Args:
        question: the problem to solve.
        demos: worked examples shown in full (a demo with the same problem is left out).

    Returns:
        Text to pass to `templates.render_prompt` in place of the bare question.
    """
    parts = [FEW_SHOT_INSTRUCTIONS]
    for demo in demos:
        if demo.problem.strip() != question.strip():
            parts.append(f"Problem: {demo.problem}\nSolution: {demo.response}")
    parts.append(f"Problem: {question}")
    return "\n\n".join(parts)


@dataclass
class RejectionStats:
    """Where the teacher's samples went: each is counted under the first filter that rejects it."""

    sampled: int = 0
    truncated: int = 0
    bad_format: int = 0
    mixed_language: int = 0
    incorrect: int = 0
    duplicate: int = 0
    surplus: int = 0
    kept: int = 0
    questions_kept: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counts by name, for metrics.json."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class RejectionFilter:
    """What a teacher response must satisfy to be kept.

    Attributes:
        language: target language code (see `r1repro.rewards.LANGUAGES`).
        min_language: least share of reasoning words in that language (R1's language consistency).
        timeout_s: grading time bound per response.
        workers: grading processes.
    """

    language: str = "en"
    min_language: float = 0.95
    timeout_s: float = 5.0
    workers: int = 1

    @classmethod
    def from_params(cls, min_language: float, common: CommonParams) -> RejectionFilter:
        """The rule of a stage's `min_language`, graded with `common`'s time bound and workers."""
        return cls(min_language=min_language, timeout_s=common.grading_timeout_s, workers=common.grading_workers)


def _screen(full: str, finish: str, rule: RejectionFilter, stats: RejectionStats) -> bool:
    """The cheap filters, in order: complete, well formed, one language."""
    if finish != "stop":
        stats.truncated += 1  # cut at max_tokens: whatever it ends with was not the model's choice
    elif rewards.format_score(full) != 1.0:
        stats.bad_format += 1
    elif rewards.language_score(full, rule.language) < rule.min_language:
        stats.mixed_language += 1
    else:
        return True
    return False


def _normalized_response(text: str) -> str:
    return " ".join(text.split())


def _select(rows: Sequence[dict], candidates: list[tuple[int, str]], verdicts: list[bool],
            per_question: int, stats: RejectionStats) -> list[ColdStartExample]:
    """Keep correct, new responses, at most `per_question` per question, in sample order."""
    seen: dict[int, set[str]] = {}
    kept: list[ColdStartExample] = []
    for (index, full), correct in zip(candidates, verdicts):
        seen_here = seen.setdefault(index, set())
        key = _normalized_response(full)
        if not correct:
            stats.incorrect += 1
        elif key in seen_here:
            stats.duplicate += 1
        elif len(seen_here) >= per_question:
            stats.surplus += 1
        else:
            seen_here.add(key)
            row = rows[index]
            kept.append(ColdStartExample(str(row.get("id", "")), row["problem"], str(row["answer"]),
                                         full, "teacher"))
    stats.kept = len(kept)
    stats.questions_kept = sum(1 for keys in seen.values() if keys)
    return kept


def rejection_sample(generator: Any, rows: Sequence[dict], template: str, tokenizer: Any = None, *,
                     demos: Sequence[ColdStartExample] = (), n: int = 4, temperature: float = 0.8,
                     top_p: float = 0.95, max_tokens: int = 512, seed: int = 0, per_question: int = 1,
                     rule: RejectionFilter = RejectionFilter(),
                     stop_policy: StopPolicy | None = None) -> tuple[list[ColdStartExample], RejectionStats]:
    """Sample a teacher with a few-shot long-CoT prompt and keep only good responses (DeepSeek-R1, 2.3.1).

    A response is kept when it finished by itself, passes the R1 format reward, has at least
    `rule.min_language` of its reasoning words in the target language, is judged correct
    (`r1repro.grading`, the same judge as the accuracy reward) and differs from the responses already
    kept for its question (whitespace aside).

    Args:
        generator: an object with `generate(prompts, n=, temperature=, top_p=, max_tokens=, seed=)`
            returning, per prompt, a list of `Completion`s (see `r1repro.generation`).
        rows: training question rows ({"id", "problem", "answer"}).
        template: prompt template name; its prefill (e.g. `<think>`) is put back in front of each
            completion to make the full response.
        tokenizer: the teacher's tokenizer (needed for chat templates).
        demos: demonstrations for the few-shot prompt (e.g. from `build_worked_examples`); none:
            the bare question is asked.
        n: samples per question.
        temperature, top_p, max_tokens, seed: sampling settings.
        per_question: most examples kept per question.
        rule: the language and grading settings.
        stop_policy: where the teacher's responses end (`r1repro.stops.stop_policy_for` for the teacher's
            tokenizer); None: the generator's default, its tokenizer's EOS.

    Returns:
        (examples, stats). Each example holds the plain question, not the few-shot prompt: the student
        learns to answer without demonstrations.
    """
    # No demos: the bare question, as in distillation from a teacher that already answers in format.
    prompts = [templates.render_prompt(template, few_shot_question(r["problem"], demos) if demos else r["problem"],
                                       tokenizer) for r in rows]
    head = templates.prefill(template)
    outputs = generator.generate(prompts, n=n, temperature=temperature, top_p=top_p,
                                 max_tokens=max_tokens, seed=seed, stop_policy=stop_policy)
    stats = RejectionStats()
    candidates: list[tuple[int, str]] = []
    for index, samples in enumerate(outputs):
        for sample in samples:
            stats.sampled += 1
            full = head + sample.text
            if _screen(full, sample.finish_reason, rule, stats):
                candidates.append((index, full))
    verdicts = grading.grade_many([full for _, full in candidates],
                                  [str(rows[i]["answer"]) for i, _ in candidates],
                                  workers=rule.workers, timeout_s=rule.timeout_s, progress=False)
    return _select(rows, candidates, verdicts, per_question, stats), stats
