"""Tests for r1repro.rewards: literal strings, both TRL completion shapes, and TRL's own call path.

Run: python -m pytest tests/test_rewards.py -q
"""

from __future__ import annotations

import math
import pickle
import tempfile

import pytest

from r1repro.rewards import (
    REWARDS,
    accuracy_reward,
    combined_reward,
    completion_text,
    format_reward,
    format_score,
    language_reward,
    language_score,
    make_accuracy_reward,
    make_language_reward,
    prompt_prefill,
    reward_functions,
)
from r1repro.templates import render_prompt

R1_PROMPT = render_prompt("r1", "What is 63/400 as a fraction?")

WEIRD = [None, "", "\x00\x00<think>\x00", "<answer></answer>" * 3, "x" * 1_000_000, 12, ["not", "messages"]]


def chat(text):
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------------
# accuracy
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "completion,gold,expected",
    [
        ("<think> 63 over 400. </think> <answer> \\frac{63}{400} </answer>", "\\frac{63}{400}", 1.0),
        ("So the answer is $\\boxed{\\frac{63}{400}}$.", "\\frac{63}{400}", 1.0),
        ("So the answer is $\\boxed{\\frac{63}{400}}$.", "0.1575", 1.0),
        ("The answer is \\boxed{4}.", "5", 0.0),
        ("No final answer here.", "4", 0.0),
    ],
)
def test_accuracy_on_literal_strings(completion, gold, expected):
    assert accuracy_reward(completions=[completion], answer=[gold]) == [expected]


def test_accuracy_conversational_shape():
    completions = [chat("\\boxed{\\frac{63}{400}}"), chat("\\boxed{7}")]
    assert accuracy_reward(completions=completions, answer=["\\frac{63}{400}"] * 2) == [1.0, 0.0]


def test_accuracy_needs_answer_column():
    with pytest.raises(ValueError, match="`answer` column"):
        accuracy_reward(completions=["\\boxed{4}"])


def test_accuracy_weird_text_and_golds():
    rewards = accuracy_reward(completions=WEIRD, answer=["4"] * len(WEIRD))
    assert rewards == [0.0] * len(WEIRD)
    assert accuracy_reward(completions=["\\boxed{4}", "\\boxed{4}"], answer=[None, 4]) == [0.0, 1.0]


# ---------------------------------------------------------------------------------------------------
# format
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,expected",
    [
        ("<think> reason </think> <answer> 4 </answer>", 1.0),
        ("\n<think>\nreason\n</think>\n<answer>\n\\frac{63}{400}\n</answer>\n", 1.0),
        ("<think></think><answer>4</answer>", 1.0),
        ("<think> reason </think> <answer>   </answer>", 0.0),  # blank answer
        ("<think> reason </think> <answer> 4 </answer> trailing", 0.0),
        ("preamble <think> r </think> <answer> 4 </answer>", 0.0),
        ("<think> r </think> text <answer> 4 </answer>", 0.0),
        ("<think> r <think> r </think> <answer> 4 </answer>", 0.0),
        ("<think> r </think> <answer> 4 </answer><answer> 5 </answer>", 0.0),
        ("<answer> 4 </answer> <think> r </think>", 0.0),
        ("<think> r <answer> 4 </answer> </think>", 0.0),
        ("<think> r </think> <answer> 4 </answer>\x00", 0.0),
        ("reason </think> <answer> 4 </answer>", 0.0),  # prefill missing
    ],
)
def test_format_score(response, expected):
    assert format_score(response) == expected


def test_format_reward_puts_prefill_back():
    completion = " 63 over 400. </think> <answer> \\frac{63}{400} </answer>"
    assert format_reward(completions=[completion], prompts=[R1_PROMPT]) == [1.0]
    assert format_reward(completions=[completion], prompts=["bare question"]) == [0.0]
    # With the prefill, a completion that opens its own think block has two.
    doubled = "<think> r </think> <answer> 4 </answer>"
    assert format_reward(completions=[doubled], prompts=[R1_PROMPT]) == [0.0]
    assert format_reward(completions=[doubled], prompts=["bare question"]) == [1.0]


def test_format_reward_conversational_prefill():
    prompt = [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "<think>"}]
    completion = chat("r </think> <answer> 4 </answer>")
    assert format_reward(completions=[completion], prompts=[prompt]) == [1.0]
    assert format_reward(completions=[completion], prompts=[[{"role": "user", "content": "Q"}]]) == [0.0]


def test_format_reward_weird_text():
    assert format_reward(completions=WEIRD, prompts=[R1_PROMPT] * len(WEIRD)) == [0.0] * len(WEIRD)
    assert format_reward(completions=WEIRD) == [0.0] * len(WEIRD)


# ---------------------------------------------------------------------------------------------------
# language
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response,expected",
    [
        ("<think> add the two numbers </think> <answer> 4 </answer>", 1.0),
        ("<think> add 两个 numbers </think>", 2 / 4),  # each CJK character is a word
        ("<think> the café </think>", 1 / 2),  # "café" is not ASCII
        ("<think> 2 + 2 = 4 </think> words outside do not count", 0.0),  # no words in the reasoning
        ("no tags at all, so all of it", 1.0),
        ("<think> unclosed reasoning über", 2 / 3),
        ("", 0.0),
    ],
)
def test_language_score(response, expected):
    assert language_score(response) == pytest.approx(expected)


def test_language_reward_chinese_target_and_names():
    zh = make_language_reward("zh")
    assert zh.__name__ == "language_reward_zh"
    assert zh(completions=["<think> 两个 numbers </think>"]) == [pytest.approx(2 / 3)]
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        make_language_reward("xx")


def test_language_reward_both_shapes_and_prefill():
    text = " add 两个 </think> <answer> 4 </answer> 中文中文中文"
    assert language_reward(completions=[text], prompts=[R1_PROMPT]) == [pytest.approx(1 / 3)]
    assert language_reward(completions=[chat(text)], prompts=[R1_PROMPT]) == [pytest.approx(1 / 3)]


def test_language_reward_weird_text():
    rewards = language_reward(completions=WEIRD, prompts=[R1_PROMPT] * len(WEIRD))
    assert len(rewards) == len(WEIRD) and all(math.isfinite(r) and 0.0 <= r <= 1.0 for r in rewards)


# ---------------------------------------------------------------------------------------------------
# registry, weights, combination
# ---------------------------------------------------------------------------------------------------


def test_shapes_helpers():
    assert completion_text(chat("a")) == "a"
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "b"}]}]) == "b"
    assert completion_text(None) == ""
    assert prompt_prefill(R1_PROMPT) == "<think>" and prompt_prefill("Q") == "" and prompt_prefill(None) == ""


def test_registry_and_names():
    assert set(REWARDS) == {"accuracy", "format", "language"}
    assert [f.__name__ for f in REWARDS.values()] == ["accuracy_reward", "format_reward", "language_reward"]
    assert make_accuracy_reward(2.0).__name__ == "accuracy_reward"
    assert pickle.loads(pickle.dumps(make_accuracy_reward(2.0))).__name__ == "accuracy_reward"
    with pytest.raises(ValueError, match="grading_timeout_s"):
        make_accuracy_reward(0)


def test_reward_functions_for_grpo_config():
    funcs, weights = reward_functions({"accuracy": 1.0, "format": 0.0, "language": 0.1})
    assert [f.__name__ for f in funcs] == ["accuracy_reward", "format_reward", "language_reward"]
    assert weights == [1.0, 0.0, 0.1]


@pytest.mark.parametrize(
    "weights,message",
    [
        ({}, "at least one reward"),
        ({"acc": 1.0}, r"unknown reward 'acc'.*`rl.reward_weights`.*accuracy, format, language"),
        ({"format": float("nan")}, "finite number"),
        ({"format": "1"}, "finite number"),
    ],
)
def test_reward_functions_errors(weights, message):
    with pytest.raises(ValueError, match=message):
        reward_functions(weights)


def test_combined_reward():
    combined = combined_reward({"accuracy": 1.0, "format": 0.5, "language": 0.0})
    assert combined.__name__ == "combined_reward"
    completions = [" r </think> <answer> 4 </answer>", " r </think> <answer> 5 </answer> junk", None]
    rewards = combined(prompts=[R1_PROMPT] * 3, completions=completions, answer=["4", "4", "4"])
    assert rewards == [1.5, 0.0, 0.0]
    assert pickle.loads(pickle.dumps(combined)).__name__ == "combined_reward"


# ---------------------------------------------------------------------------------------------------
# TRL's own call path
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grpo_trainer(tiny_model):
    """A GRPOTrainer on the tiny random-weight Llama of tests/conftest.py (no generation)."""
    from datasets import Dataset
    from transformers import AutoTokenizer, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    rows = [
        {"prompt": R1_PROMPT, "answer": "\\frac{63}{400}", "level": "Level 3"},
        {"prompt": render_prompt("r1", "What is 2+2?"), "answer": "4", "level": "Level 1"},
    ]
    funcs, weights = reward_functions({"accuracy": 1.0, "format": 0.0, "language": 0.0})
    args = GRPOConfig(
        output_dir=tempfile.mkdtemp(), per_device_train_batch_size=2, num_generations=2, max_steps=1,
        max_completion_length=8, report_to="none", use_cpu=True, reward_weights=weights,
    )  # fmt: skip
    trainer = GRPOTrainer(
        model=LlamaForCausalLM.from_pretrained(tiny_model), processing_class=tokenizer, reward_funcs=funcs,
        args=args, train_dataset=Dataset.from_list(rows),
    )  # fmt: skip
    return trainer, rows


@pytest.mark.filterwarnings("ignore:`gradient_checkpointing` is deprecated:FutureWarning")
def test_trl_calculate_rewards_with_dataset_columns(grpo_trainer):
    trainer, rows = grpo_trainer
    assert trainer.reward_func_names == ["accuracy_reward", "format_reward", "language_reward"]
    inputs = [rows[0], rows[0], rows[1], rows[1]]  # two generations per prompt, as TRL repeats them
    completions = [
        " 63 over 400 </think> <answer> \\frac{63}{400} </answer>",
        " no idea </think> <answer> 7 </answer> and more",
        " 2 plus 2 </think> <answer> 4 </answer>",
        None,
    ]
    rewards = trainer._calculate_rewards(inputs, [r["prompt"] for r in inputs], completions, [[1]] * 4)
    assert rewards.tolist() == [
        [1.0, 1.0, 1.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 1.0],
        [0.0, 0.0, 0.0],
    ]
