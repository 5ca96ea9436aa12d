"""Tests for r1repro.templates: the exact strings the embedded model sees, and SFT boundaries.

Run: python -m pytest tests/test_templates.py -q
Uses the real tokenizer of the embedded model at models/base (skipped, with the reason, if absent).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from r1repro import templates
from r1repro.templates import (
    TEMPLATES,
    end_of_turn,
    needs_chat_template,
    prefill,
    render_prompt,
    render_training_example,
)

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
QUESTION = "What is $\\frac{1}{2} + {x}$?"

# Spelled out in full, not built from the module's constants, so an accidental edit of the
# template wording fails here.
R1_TEXT = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant solves it. "
    "The Assistant first thinks about the reasoning process in the mind and then provides the User with "
    "the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed within "
    "<answer> </answer> tags, respectively, i.e., <think> reasoning process here </think> "
    "<answer> answer here </answer>."
)

EXPECTED = {
    "r1": R1_TEXT + "\nUser: " + QUESTION + "\nAssistant: <think>",
    "none": QUESTION,
    "qwen_math": (
        "<|im_start|>system\n"
        "Please reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n"
    ),
    "chat": (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n"
    ),
    "r1_chat": (
        "<|im_start|>system\n" + R1_TEXT + "<|im_end|>\n"
        "<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n<think>"
    ),
    "r1_chat_1shot": (
        "<|im_start|>system\n" + R1_TEXT + "<|im_end|>\n"
        "<|im_start|>user\nAna has 2 pens. Ana gets 3 more pens. How many pens does Ana have now?<|im_end|>\n"
        "<|im_start|>assistant\n<think> Ana has 2 pens and gets 3 more, so 2 + 3 = 5. </think> "
        "<answer> 5 </answer><|im_end|>\n"
        "<|im_start|>user\n" + QUESTION + "<|im_end|>\n<|im_start|>assistant\n<think>"
    ),
}

RESPONSES = {
    "r1": "<think> Half plus x. </think> <answer> \\frac{1}{2} + x </answer>",
    "r1_chat": "<think>\nHalf plus x.\n</think>\n<answer>\\frac{1}{2} + x</answer>",
    "r1_chat_1shot": "<think> Half plus x. </think> <answer> \\frac{1}{2} + x </answer>",
    "none": " The sum is $\\boxed{\\frac{1}{2} + x}$.",
    "qwen_math": "The sum is $\\boxed{\\frac{1}{2} + x}$.",
    "chat": "It is 1/2 + x.",
}


@pytest.fixture(scope="module")
def tokenizer():
    if not (BASE / "tokenizer.json").is_file():
        pytest.skip(f"embedded model missing at {BASE}: run the import_model stage (dvc repro import_model)")
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(BASE))


@pytest.fixture(scope="module")
def no_chat_tokenizer(tokenizer):
    from transformers import AutoTokenizer

    bare = AutoTokenizer.from_pretrained(str(BASE))
    bare.chat_template = None
    return bare


def test_registry_names_and_flags():
    assert set(TEMPLATES) == {"r1", "qwen_math", "none", "chat", "r1_chat", "r1_chat_1shot"}
    assert [n for n in TEMPLATES if needs_chat_template(n)] == ["qwen_math", "chat", "r1_chat", "r1_chat_1shot"]
    assert prefill("r1") == prefill("r1_chat") == "<think>"
    assert prefill("none") == prefill("chat") == prefill("qwen_math") == ""


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_exact_prompt_strings(tokenizer, name):
    assert render_prompt(name, QUESTION, tokenizer) == EXPECTED[name]


def test_plain_templates_need_no_tokenizer():
    assert render_prompt("r1", QUESTION) == EXPECTED["r1"]
    assert render_prompt("none", QUESTION) == QUESTION


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_prompt_ends_with_prefill(tokenizer, name):
    assert render_prompt(name, QUESTION, tokenizer).endswith(prefill(name))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_training_prompt_equals_generation_prompt(tokenizer, name):
    example = render_training_example(name, QUESTION, RESPONSES[name], tokenizer)
    assert example["prompt"] == render_prompt(name, QUESTION, tokenizer)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_completion_ends_with_eos_exactly_once(tokenizer, name):
    completion = render_training_example(name, QUESTION, RESPONSES[name], tokenizer)["completion"]
    assert completion.endswith("<|im_end|>")
    assert completion.count("<|im_end|>") == 1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_tokenization_boundary(tokenizer, name):
    """The eos id is the last token, and the prompt's tokens are a prefix of the whole example's."""
    example = render_training_example(name, QUESTION, RESPONSES[name], tokenizer)
    prompt_ids = tokenizer(example["prompt"], add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(example["prompt"] + example["completion"], add_special_tokens=False)["input_ids"]
    assert full_ids[-1] == tokenizer.eos_token_id
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert len(full_ids) > len(prompt_ids) + 1


def test_prefill_is_not_repeated_in_completion(tokenizer):
    example = render_training_example("r1", QUESTION, RESPONSES["r1"], tokenizer)
    assert example["completion"] == " Half plus x. </think> <answer> \\frac{1}{2} + x </answer><|im_end|>"
    assert "<think>" not in example["completion"]


def test_response_already_ending_with_eos_is_not_doubled(tokenizer):
    example = render_training_example("chat", QUESTION, "It is 1/2 + x.<|im_end|>", tokenizer)
    assert example["completion"] == "It is 1/2 + x.<|im_end|>"


def test_eos_inside_response_is_rejected(tokenizer):
    with pytest.raises(ValueError, match="end-of-turn marker"):
        render_training_example("chat", QUESTION, "a<|im_end|>b", tokenizer)


def test_end_of_turn_for_embedded_tokenizer(tokenizer):
    assert all(end_of_turn(name, tokenizer) == "<|im_end|>" for name in TEMPLATES)


def test_unknown_template_lists_valid_names():
    valid = "chat, none, qwen_math, r1, r1_chat"
    with pytest.raises(ValueError, match=rf"unknown template 'r2'.*`template`.*{valid}"):
        render_prompt("r2", QUESTION)
    with pytest.raises(ValueError, match="unknown template"):
        prefill(None)


@pytest.mark.parametrize("name", ["qwen_math", "chat", "r1_chat"])
def test_chat_template_missing_is_explained(no_chat_tokenizer, name):
    with pytest.raises(ValueError, match=rf"{name}.*has none.*r1 or none"):
        render_prompt(name, QUESTION, no_chat_tokenizer)


def test_chat_template_without_tokenizer_is_explained():
    with pytest.raises(ValueError, match="pass the tokenizer"):
        render_prompt("qwen_math", QUESTION)


@pytest.mark.parametrize("question", ["", "{question}", "a\x00b", "ß∑ 数学", "x" * 200_000])
def test_odd_questions_render_verbatim(question):
    assert render_prompt("r1", question).endswith("User: " + question + "\nAssistant: <think>")
    assert render_prompt("none", question) == question


def test_non_string_question_is_a_type_error():
    with pytest.raises(TypeError, match="question must be a string"):
        render_prompt("r1", None)


def test_module_constants_match_the_literal_text():
    assert templates.R1_INSTRUCTIONS == R1_TEXT
