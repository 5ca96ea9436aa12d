"""One SFT example (a question and the full response to learn) and TRL's dataset made of them.

Both stages that fine-tune on responses use it: stage 2's cold-start examples (checked worked
solutions, `r1repro.worked_solutions`, or a teacher's, `r1repro.rejection_sampling`) and stage 4's
distillation traces. `to_sft_dataset` renders them exactly as generation renders prompts
(`r1repro.templates.render_training_example`), the completion ending with the end-of-turn marker.

    # response: the full answer to learn, "<think>...</think> <answer>...</answer>", prefill included
    examples = [ColdStartExample("q1", "What is 2 + 3?", "5", response, "worked")]
    dataset = to_sft_dataset(examples, "r1_chat", tokenizer)     # columns "prompt" and "completion"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r1repro import templates


@dataclass(frozen=True)
class ColdStartExample:
    """One training example: a question and a full response (it starts with `<think>`).

    Attributes:
        id: the question's id in its file.
        problem: the question text, as the model will see it.
        answer: the gold answer.
        response: the response to learn, prefill included.
        source: "worked" (the solver) or "teacher" (rejection sampling).
    """

    id: str
    problem: str
    answer: str
    response: str
    source: str


def to_sft_dataset(examples: Sequence[ColdStartExample], template: str, tokenizer: Any):
    """TRL's prompt/completion dataset, rendered exactly as generation renders prompts.

    Args:
        examples: cold-start examples.
        template: prompt template name (params `sft.template`).
        tokenizer: the student's tokenizer (chat template and end-of-turn marker).

    Returns:
        A `datasets.Dataset` with columns "prompt" and "completion" (the completion ends with the
        end-of-turn marker, so the model learns to stop).

    Raises:
        ValueError: no examples (training on nothing is a setup error).
    """
    from datasets import Dataset

    if not examples:
        raise ValueError("no cold-start examples to train on: check the source questions and the yield")
    pairs = [templates.render_training_example(template, e.problem, e.response, tokenizer) for e in examples]
    return Dataset.from_list(pairs)
