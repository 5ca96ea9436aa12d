"""Rule-based rewards for GRPO, in the call shape of TRL 1.16's `GRPOTrainer`, chosen by name.

TRL calls each reward function as `f(prompts=..., completions=..., completion_ids=..., **columns)`,
where `columns` are the dataset's other columns (one value per completion) plus `trainer_state`,
`log_extra` and `log_metric`; completions are strings for plain-text prompts and lists of message
dicts for conversational ones. Every function here accepts both and returns one finite float per
completion, whatever the text (None, empty, a megabyte, null bytes).

    from r1repro.rewards import reward_functions
    funcs, weights = reward_functions({"accuracy": 1.0, "format": 0.0})   # params rl.reward_weights
    GRPOTrainer(..., reward_funcs=funcs, args=GRPOConfig(reward_weights=weights, ...))

Rewards (the registry `REWARDS`):
- `accuracy`: 1.0 if the response's final answer matches the dataset's `answer` column
  (r1repro.grading.is_correct, math-verify, time-bounded). The Dr. GRPO paper trains on this alone.
- `format`: 1.0 iff the response, with the prompt's `<think>` prefill put back in front, is exactly
  `<think>...</think>` then `<answer>non-empty</answer>`, whitespace aside (R1-Zero's format reward).
- `language`: DeepSeek-R1's language-consistency reward: the share of words in the reasoning (the
  think block; the whole response when it has none) that are in the target language.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from r1repro import grading
from r1repro.templates import THINK_PREFILL

RewardFunc = Callable[..., list[float]]

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
ANSWER_OPEN, ANSWER_CLOSE = "<answer>", "</answer>"


# ---------------------------------------------------------------------------------------------------
# Text from TRL's two completion shapes
# ---------------------------------------------------------------------------------------------------


def _content_text(content: Any) -> str:
    """A message's content: a string, or a list of parts such as {"type": "text", "text": ...}."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = (p.get("text") for p in content if isinstance(p, dict))
        return "".join(p for p in parts if isinstance(p, str))
    return ""


def completion_text(completion: Any) -> str:
    """The generated text of one completion, in either of TRL's shapes.

    Args:
        completion: a string, or a list of message dicts (conversational), or anything else.

    Returns:
        The text; the assistant messages joined for conversational completions, "" otherwise.
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(
            _content_text(m.get("content"))
            for m in completion
            if isinstance(m, dict) and m.get("role", "assistant") == "assistant"
        )
    return ""


def prompt_prefill(prompt: Any) -> str:
    """The response-format text a prompt ends with: "<think>" for r1 / r1_chat prompts, else "".

    Args:
        prompt: a prompt string, or a message list whose last message may be a prefilled assistant turn.

    Returns:
        "<think>" or "".
    """
    if isinstance(prompt, list) and prompt and isinstance(prompt[-1], dict):
        last = prompt[-1]
        text = _content_text(last.get("content")) if last.get("role") == "assistant" else ""
    else:
        text = prompt if isinstance(prompt, str) else ""
    return THINK_PREFILL if text.rstrip().endswith(THINK_PREFILL) else ""


def _responses(completions: Any, prompts: Any) -> list[str]:
    """Full responses: each completion with its prompt's prefill put back in front."""
    completions = list(completions) if isinstance(completions, (list, tuple)) else []
    prompts = list(prompts) if isinstance(prompts, (list, tuple)) else []
    return [
        prompt_prefill(prompts[i] if i < len(prompts) else None) + completion_text(c)
        for i, c in enumerate(completions)
    ]


def _safe(score: Callable[[], float]) -> float:
    """Run one score; any failure or non-finite value becomes 0.0 so training never stops on text."""
    try:
        value = float(score())
    except Exception:  # noqa: BLE001 - a reward must not raise on model output
        return 0.0
    return value if math.isfinite(value) else 0.0


# ---------------------------------------------------------------------------------------------------
# Single-response scores
# ---------------------------------------------------------------------------------------------------


def format_score(response: str) -> float:
    """1.0 iff `response` is one `<think>…</think>` then one non-empty `<answer>…</answer>`.

    Args:
        response: the full response, prefill included (it must start with `<think>`, leading
            whitespace aside).

    Returns:
        1.0 or 0.0. Text before `<think>`, between the blocks or after `</answer>` (other than
        whitespace), a repeated or missing tag, or a blank answer all give 0.0.
    """
    text = response if isinstance(response, str) else ""
    tags = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
    if any(text.count(tag) != 1 for tag in tags):
        return 0.0
    t0, t1, a0, a1 = (text.index(tag) for tag in tags)
    if not t0 < t1 < a0 < a1:
        return 0.0
    gaps = (text[:t0], text[t1 + len(THINK_CLOSE) : a0], text[a1 + len(ANSWER_CLOSE) :])
    if any(gap.strip() for gap in gaps):
        return 0.0
    return 1.0 if text[a0 + len(ANSWER_OPEN) : a1].strip() else 0.0


def reasoning_text(response: str) -> str:
    """The reasoning part of a response: the think block, or all of it when there is none.

    Args:
        response: the full response, prefill included.

    Returns:
        Text after the first `<think>` up to the next `</think>` (or the end if unclosed).
    """
    text = response if isinstance(response, str) else ""
    start = text.find(THINK_OPEN)
    if start < 0:
        return text
    start += len(THINK_OPEN)
    end = text.find(THINK_CLOSE, start)
    return text[start:] if end < 0 else text[start:end]


# CJK characters count one word each (those scripts do not separate words by spaces); any other
# run of letters is one word. Digits, symbols and LaTeX punctuation are not words.
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_WORD_RE = re.compile(rf"[{_CJK}]|[^\W\d_{_CJK}]+")
_ZH_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# Target languages by code: a predicate on one word.
LANGUAGES: dict[str, Callable[[str], bool]] = {
    "en": lambda word: word.isascii(),
    "zh": lambda word: _ZH_RE.fullmatch(word) is not None,
}


def language_score(response: str, language: str = "en") -> float:
    """Share of words in the reasoning that belong to `language` (DeepSeek-R1, Sec. 2.3.2).

    Args:
        response: the full response, prefill included.
        language: a key of `LANGUAGES`; "en" counts words of ASCII letters only.

    Returns:
        A float in [0, 1]; 0.0 when the reasoning holds no words, so that an empty or
        symbols-only think block earns nothing.

    Raises:
        ValueError: unknown language.
    """
    in_language = _language_predicate(language)
    words = _WORD_RE.findall(reasoning_text(response))
    return sum(1 for w in words if in_language(w)) / len(words) if words else 0.0


def _language_predicate(language: str) -> Callable[[str], bool]:
    if language not in LANGUAGES:
        valid = ", ".join(LANGUAGES)
        raise ValueError(f"unknown language {language!r} for the language reward; valid: {valid}")
    return LANGUAGES[language]


# ---------------------------------------------------------------------------------------------------
# TRL reward functions
# ---------------------------------------------------------------------------------------------------


def _golds(answer: Any, count: int) -> list[Any]:
    if answer is None:
        raise ValueError(
            "accuracy_reward needs the gold answers: the training dataset must have an `answer` column"
        )
    if isinstance(answer, (list, tuple)):
        return list(answer) + [None] * (count - len(answer))
    return [answer] * count  # one gold for the whole call, e.g. a single question's group


def _accuracy_one(response: str, gold: Any, timeout_s: float) -> float:
    if gold is None or not response.strip():
        return 0.0
    return 1.0 if grading.is_correct(response, str(gold), timeout_s=timeout_s) else 0.0


def accuracy_reward(
    completions: Any, answer: Any = None, prompts: Any = None, *, timeout_s: float = 5.0, **kwargs: Any
) -> list[float]:
    """1.0 where the completion's final answer equals the gold answer, else 0.0.

    Args:
        completions: TRL completions (strings or message lists).
        answer: the dataset's `answer` column, one gold per completion (a single value is
            broadcast to all).
        prompts: unused; the prefill does not change the final answer.
        timeout_s: seconds allowed to grade one completion (bind with `make_accuracy_reward`).
        **kwargs: other TRL arguments and dataset columns, unused.

    Returns:
        1.0 or 0.0 per completion.

    Raises:
        ValueError: no `answer` column (a setup error, not a text one).
    """
    texts = [completion_text(c) for c in (completions or [])]
    golds = _golds(answer, len(texts))
    return [_safe(lambda t=t, g=g: _accuracy_one(t, g, timeout_s)) for t, g in zip(texts, golds)]


def format_reward(completions: Any, prompts: Any = None, **kwargs: Any) -> list[float]:
    """R1-Zero's format reward per completion (see `format_score`), prompt prefill included.

    Args:
        completions: TRL completions (strings or message lists).
        prompts: the matching prompts; a prompt ending in `<think>` puts that tag in front.
        **kwargs: other TRL arguments and dataset columns, unused.

    Returns:
        1.0 or 0.0 per completion.
    """
    return [_safe(lambda r=r: format_score(r)) for r in _responses(completions, prompts)]


def language_reward(
    completions: Any, prompts: Any = None, *, language: str = "en", **kwargs: Any
) -> list[float]:
    """Share of reasoning words in the target language, per completion (see `language_score`).

    Args:
        completions: TRL completions (strings or message lists).
        prompts: the matching prompts; a prompt ending in `<think>` opens the think block.
        language: a key of `LANGUAGES` (bind with `make_language_reward`).
        **kwargs: other TRL arguments and dataset columns, unused.

    Returns:
        A float in [0, 1] per completion.
    """
    return [_safe(lambda r=r: language_score(r, language)) for r in _responses(completions, prompts)]


def _named(func: Callable[..., list[float]], name: str, **bound: Any) -> RewardFunc:
    """A picklable partial with a `__name__`, which TRL uses for its log keys (rewards/<name>/mean)."""
    wrapped = functools.partial(func, **bound)
    wrapped.__name__ = name  # type: ignore[attr-defined]
    return wrapped


def make_accuracy_reward(timeout_s: float = 5.0) -> RewardFunc:
    """The accuracy reward with its own grading time limit.

    Args:
        timeout_s: seconds allowed to grade one completion (params common.grading_timeout_s).

    Returns:
        A TRL reward function named `accuracy_reward`.

    Raises:
        ValueError: timeout_s is not a positive number (checked here, because inside the reward
            the grader's own error would be swallowed into rewards of 0.0).
    """
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
        raise ValueError(f"grading timeout (params common.grading_timeout_s) must be > 0, got {timeout_s!r}")
    return _named(accuracy_reward, "accuracy_reward", timeout_s=float(timeout_s))


def make_language_reward(language: str = "en") -> RewardFunc:
    """The language-consistency reward for one target language.

    Args:
        language: a key of `LANGUAGES`.

    Returns:
        A TRL reward function, named `language_reward` for English, `language_reward_<code>` otherwise.

    Raises:
        ValueError: unknown language (at construction, not mid-training).
    """
    _language_predicate(language)
    name = "language_reward" if language == "en" else f"language_reward_{language}"
    return _named(language_reward, name, language=language)


REWARDS: dict[str, RewardFunc] = {
    "accuracy": accuracy_reward,
    "format": format_reward,
    "language": language_reward,
}


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    if not isinstance(weights, Mapping) or not weights:
        raise ValueError("reward weights (params key `rl.reward_weights`) must name at least one reward")
    valid = ", ".join(REWARDS)
    checked = {}
    for name, weight in weights.items():
        if name not in REWARDS:
            raise ValueError(
                f"unknown reward {name!r} in params key `rl.reward_weights`; valid rewards: {valid}"
            )
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight):
            raise ValueError(f"rl.reward_weights.{name}: weight must be a finite number, got {weight!r}")
        checked[name] = float(weight)
    return checked


def reward_functions(
    weights: Mapping[str, float], timeout_s: float = 5.0
) -> tuple[list[RewardFunc], list[float]]:
    """Reward functions and weights for `GRPOTrainer(reward_funcs=...)` and `GRPOConfig(reward_weights=...)`.

    Zero weights are kept: TRL still logs those rewards, which makes them free monitors (for
    example the format reward while training on accuracy alone, as the Dr. GRPO paper does).

    Args:
        weights: {reward name: weight}, in the order TRL should log them (params `rl.reward_weights`).
        timeout_s: grading time limit per completion for the accuracy reward
            (params `common.grading_timeout_s`).

    Returns:
        (functions, weights), index-aligned.

    Raises:
        ValueError: empty mapping, unknown name (valid ones listed) or non-finite weight.
    """
    checked = _check_weights(weights)
    funcs = [
        # Only accuracy has a setting to bind; the others are used as registered.
        make_accuracy_reward(timeout_s) if name == "accuracy" else REWARDS[name]
        for name in checked
    ]
    return funcs, list(checked.values())


# ---------------------------------------------------------------------------------------------------
# Truncated completions (the Dr. GRPO paper's code: "Set zero reward for truncated outputs")
# ---------------------------------------------------------------------------------------------------

TRUNCATED_TERM = "truncated"

TruncationTest = Callable[[list[int], str], bool]


def _truncation_flags(completions: Any, completion_ids: Any, is_truncated: TruncationTest) -> list[bool]:
    """Which completions were cut at the length cap, from TRL's `completion_ids` and their text."""
    if completion_ids is None:
        raise ValueError("truncated-completion rewards need TRL's completion_ids (TRL >= 0.19 passes them)")
    return [bool(is_truncated(list(ids), completion_text(c))) for ids, c in zip(completion_ids, completions)]


class ZeroIfTruncated:
    """A reward function that scores a truncated completion 0 and the others as `func` does."""

    def __init__(self, func: RewardFunc, is_truncated: TruncationTest) -> None:
        self.func, self.is_truncated = func, is_truncated
        inner = getattr(func, "func", func)  # keep the log key TRL would give `func` (rewards/<name>/mean)
        self.__name__ = getattr(func, "__name__", getattr(inner, "__name__", "reward"))

    def __call__(self, completions: Any, completion_ids: Any = None, **kwargs: Any) -> list[float]:
        scores = self.func(completions=completions, completion_ids=completion_ids, **kwargs)
        flags = _truncation_flags(completions, completion_ids, self.is_truncated)
        return [0.0 if cut else float(score) for score, cut in zip(scores, flags)]


class TruncatedReward:
    """The reward term of truncated completions: `value` for each one, 0 for the others."""

    def __init__(self, value: float, is_truncated: TruncationTest) -> None:
        self.value, self.is_truncated = float(value), is_truncated
        self.__name__ = f"{TRUNCATED_TERM}_reward"

    def __call__(self, completions: Any, completion_ids: Any = None, **kwargs: Any) -> list[float]:
        flags = _truncation_flags(completions, completion_ids, self.is_truncated)
        return [self.value if cut else 0.0 for cut in flags]


def with_truncated_reward(funcs: list[RewardFunc], value: float,
                          is_truncated: TruncationTest) -> list[RewardFunc]:
    """Reward functions under which a truncated completion's whole reward is `value`.

    Every function scores a truncated completion 0, and one more term (`TRUNCATED_TERM`, to be
    weighted 1) adds `value`: with value 0, the paper's rule. The term is logged like any reward, so
    the share of truncated completions shows in TRL's logs whenever value is not 0.

    Args:
        funcs: the reward functions (`reward_functions`).
        value: params `rl.truncated_reward`.
        is_truncated: (completion token ids, completion text) -> cut at the length cap before it stopped
            (`r1repro.stops.is_truncated` with the run's stop policy and max_completion_length).

    Returns:
        funcs wrapped, then the truncated term.
    """
    return [*(ZeroIfTruncated(f, is_truncated) for f in funcs), TruncatedReward(value, is_truncated)]


class CombinedReward:
    """The weighted sum of named rewards, as one picklable TRL reward function."""

    def __init__(self, weights: Mapping[str, float], timeout_s: float = 5.0) -> None:
        self.funcs, self.factors = reward_functions(weights, timeout_s)
        self.__name__ = "combined_reward"

    def __call__(self, completions: Any, **kwargs: Any) -> list[float]:
        totals = [0.0] * len(completions or [])
        for func, factor in zip(self.funcs, self.factors):
            if factor == 0.0:
                continue  # skip the work; it would add nothing
            for i, value in enumerate(func(completions=completions, **kwargs)):
                totals[i] += factor * value
        return totals


def combined_reward(weights: Mapping[str, float], timeout_s: float = 5.0) -> RewardFunc:
    """One reward function returning the weighted sum of the named rewards.

    Args:
        weights: {reward name: weight}.
        timeout_s: see `reward_functions`.

    Returns:
        A TRL reward function named `combined_reward`.

    Raises:
        ValueError: see `reward_functions`.
    """
    return CombinedReward(weights, timeout_s)
