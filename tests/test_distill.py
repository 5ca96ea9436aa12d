"""Distillation: rejection sampling keeps only finished, well-formed, correct, new traces."""

from __future__ import annotations

import pytest

from r1repro import distill
from r1repro.config import CommonParams, DistillParams
from r1repro.generation import Completion

GOOD = "\nTom has 3 + 4 = 7 apples.\n</think>\n<answer>\\boxed{7}</answer>"
GOOD_AGAIN = "\nThree plus four is 7.\n</think>\n<answer>\\boxed{7}</answer>"
WRONG = "\nThree plus four is 8.\n</think>\n<answer>\\boxed{8}</answer>"
NO_TAGS = "The answer is \\boxed{7}."


class ScriptedTeacher:
    """A generator that answers every prompt with the same fixed samples, and records the prompts."""

    def __init__(self, samples: list[tuple[str, str]]):
        self.samples, self.prompts, self.stop_policies = samples, [], []

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed, stop=None, stop_policy=None):
        self.prompts += prompts
        self.stop_policies.append(stop_policy)
        return [[Completion(text, 10, finish, i, j) for j, (text, finish) in enumerate(self.samples[:n])]
                for i in range(len(prompts))]


@pytest.fixture
def cfg() -> DistillParams:
    return DistillParams(template="r1", sampling={"n": 6, "temperature": 0.8, "top_p": 0.95},
                         per_question=1)


def test_only_finished_formatted_correct_new_traces_are_kept(cfg: DistillParams, base_model_dir) -> None:
    from r1repro.modeling import load_tokenizer
    from r1repro.stops import StopPolicy

    teacher = ScriptedTeacher([(GOOD, "length"), (NO_TAGS, "stop"), (WRONG, "stop"), (GOOD, "stop"),
                               (GOOD, "stop"), (GOOD_AGAIN, "stop")])
    rows = [{"id": "q1", "problem": "Tom has 3 apples and gets 4 more. How many?", "answer": "7"}]
    tokenizer = load_tokenizer(str(base_model_dir))
    kept, stats = distill.sample_traces(teacher, tokenizer, rows, cfg, CommonParams(grading_workers=1))
    assert [k.response for k in kept] == ["<think>" + GOOD]
    assert teacher.stop_policies == [StopPolicy((tokenizer.eos_token_id,))]  # the r1 template's stops
    assert (stats.truncated, stats.bad_format, stats.incorrect, stats.duplicate, stats.surplus) == (1, 1, 1, 1, 1)
    # The teacher sees the bare question in the template, no few-shot demonstrations.
    assert teacher.prompts[0].endswith("User: " + rows[0]["problem"] + "\nAssistant: <think>")


def test_trace_statistics(cfg: DistillParams, base_model_dir) -> None:
    from r1repro.modeling import load_tokenizer

    teacher = ScriptedTeacher([(GOOD, "stop"), (WRONG, "stop")])
    rows = [{"id": "q1", "problem": "3 + 4?", "answer": "7"}, {"id": "q2", "problem": "2 + 5?", "answer": "7"}]
    cfg = cfg.model_copy(update={"sampling": cfg.sampling.model_copy(update={"n": 2})})
    tokenizer = load_tokenizer(str(base_model_dir))
    kept, stats = distill.sample_traces(teacher, tokenizer, rows, cfg, CommonParams(grading_workers=1))
    numbers = distill.trace_statistics(kept, stats, tokenizer)
    assert numbers["acceptance_rate"] == pytest.approx(2 / 4)
    assert numbers["questions_kept"] == 2 and numbers["mean_tokens"] > 5


def test_no_traces_is_a_clear_error(cfg: DistillParams) -> None:
    with pytest.raises(ValueError, match="distill.sampling.n"):
        distill.train_student("s", "models/base", [], cfg, CommonParams())
