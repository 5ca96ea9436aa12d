"""Prompt templates: the exact text a model sees, chosen by name (params key `template`).

One place renders prompts for every stage, so generation (probe, RL, evaluate) and supervised
training (SFT, distill) see byte-identical prompt strings:

    from r1repro.templates import render_prompt, render_training_example
    prompt = render_prompt("r1", "What is 2+2?")                 # plain text, no tokenizer needed
    prompt = render_prompt("qwen_math", "What is 2+2?", tokenizer)

Templates (the registry `TEMPLATES`):

- `r1`: the DeepSeek-R1-Zero template in the wording the Dr. GRPO paper trains with (Liu et al.,
  2025, sail-sg/understand-r1-zero). Plain text, no chat template; the prompt ends with `<think>`,
  so the response starts inside the reasoning block.
- `qwen_math`: the Qwen2.5-Math system prompt ("Please reason step by step, ...") with the question
  as user turn. Departure from the paper: it renders with Qwen's ChatML; we render with the model's
  own chat template so that the template works for any chat model.
- `none`: the bare question (the paper's "no template" condition).
- `chat`: the model's own chat template with the question as the only user turn.
- `r1_chat`: ours, not the paper's: the R1 instructions as system turn, the question as user turn,
  and the assistant turn prefilled with `<think>`. Instruct models such as SmolLM2 follow a system
  turn far better than a plain-text preamble.
- `r1_chat_1shot`: ours: `r1_chat` with one worked exchange before the question (`ONE_SHOT_EXAMPLE`,
  a one-step sum in the R1 format). A 135M instruct model rarely closes the R1 tags unprompted, so
  its strict-format accuracy is 0 under every zero-shot template whatever the question; one
  demonstration is the smallest change that lets the probe measure accuracy (LOG.md, 2026-12-06).

The r1 family (r1, r1_chat: `answer_close(name)` is "</answer>") asks for a response that ends with
`</answer>`; with `common.stop_at_answer_close` generation stops there too (`r1repro.stops`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

TemplateName = Literal["r1", "qwen_math", "none", "chat", "r1_chat", "r1_chat_1shot"]

THINK_PREFILL = "<think>"
ANSWER_CLOSE = "</answer>"  # the last tag of an R1-format response

# The R1-Zero instructions, worded exactly as in the Dr. GRPO paper's R1 template: the template is
# part of the experiment, so it is kept verbatim rather than paraphrased.
R1_INSTRUCTIONS = (
    "A conversation between User and Assistant. The User asks a question, and the Assistant "
    "solves it. The Assistant first thinks about the reasoning process in the mind and then "
    "provides the User with the answer. The reasoning process is enclosed within <think> </think> "
    "and answer is enclosed within <answer> </answer> tags, respectively, i.e., "
    "<think> reasoning process here </think> <answer> answer here </answer>."
)

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."

# The one worked exchange of `r1_chat_1shot`: (user turn, assistant turn). Its name is not one the
# generated tasks use (synthetic_tasks.NAMES), so it never repeats a probed question.
ONE_SHOT_EXAMPLE = ("Ana has 2 pens. Ana gets 3 more pens. How many pens does Ana have now?",
                    "<think> Ana has 2 pens and gets 3 more, so 2 + 3 = 5. </think> <answer> 5 </answer>")


@dataclass(frozen=True)
class PromptTemplate:
    """One registry entry.

    Attributes:
        name: the name used in params (`template: r1`).
        system: system-turn text for chat templates, or None for no system turn.
        uses_chat_template: whether rendering goes through `tokenizer.apply_chat_template`.
        prefill: text the prompt ends with that belongs to the response format.
        description: one line for error messages and docs.
        example: a worked (question, response) exchange shown before the question, or None.
        answer_close: the string a well-formed response ends with ("</answer>" for the r1 family),
            or "" when the format asks for none.
    """

    name: str
    system: str | None
    uses_chat_template: bool
    prefill: str
    description: str
    answer_close: str = ""
    example: tuple[str, str] | None = None


TEMPLATES: dict[str, PromptTemplate] = {
    t.name: t
    for t in (
        PromptTemplate("r1", None, False, THINK_PREFILL, "R1-Zero plain-text template (Dr. GRPO paper)",
                       answer_close=ANSWER_CLOSE),
        PromptTemplate("qwen_math", QWEN_MATH_SYSTEM, True, "", "Qwen-Math system prompt, chat template"),
        PromptTemplate("none", None, False, "", "the bare question"),
        PromptTemplate("chat", None, True, "", "the model's chat template, question only"),
        PromptTemplate("r1_chat", R1_INSTRUCTIONS, True, THINK_PREFILL, "R1 instructions as system turn",
                       answer_close=ANSWER_CLOSE),
        PromptTemplate("r1_chat_1shot", R1_INSTRUCTIONS, True, THINK_PREFILL,
                       "r1_chat with one worked exchange first", answer_close=ANSWER_CLOSE,
                       example=ONE_SHOT_EXAMPLE),
    )
}


def get_template(name: str) -> PromptTemplate:
    """Look a template up by name.

    Args:
        name: a key of `TEMPLATES`.

    Returns:
        The registry entry.

    Raises:
        ValueError: unknown name; the message lists the valid ones and names the params key.
    """
    if not isinstance(name, str) or name not in TEMPLATES:
        valid = ", ".join(sorted(TEMPLATES))
        raise ValueError(f"unknown template {name!r} (params key `template`); valid templates: {valid}")
    return TEMPLATES[name]


def needs_chat_template(name: str) -> bool:
    """Whether template `name` renders through the tokenizer's chat template.

    Args:
        name: a key of `TEMPLATES`.

    Returns:
        True for qwen_math, chat and the r1_chat family; False for r1 and none.
    """
    return get_template(name).uses_chat_template


def prefill(template: str) -> str:
    """The text a prompt ends with that belongs to the response format.

    Args:
        template: a key of `TEMPLATES`.

    Returns:
        "<think>" for r1 and r1_chat (the response starts inside the think block), "" otherwise.
    """
    return get_template(template).prefill


def answer_close(template: str) -> str:
    """The string a response to `template` ends with when it keeps the format.

    Args:
        template: a key of `TEMPLATES`.

    Returns:
        "</answer>" for the r1 family (r1, r1_chat, r1_chat_1shot), "" for templates that ask for no closing tag.
    """
    return get_template(template).answer_close


def _check_question(question: Any) -> str:
    if not isinstance(question, str):
        raise TypeError(f"question must be a string, got {type(question).__name__}")
    return question


def _check_chat_tokenizer(template: PromptTemplate, tokenizer: Any) -> None:
    """Fail early, naming the template, when a chat template cannot be rendered."""
    if tokenizer is None:
        raise ValueError(
            f"template {template.name!r} renders with the model's chat template: pass the tokenizer"
        )
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            f"template {template.name!r} needs a chat template, but this tokenizer "
            f"({type(tokenizer).__name__}, {getattr(tokenizer, 'name_or_path', '?')}) has none; "
            "base models without one should use template r1 or none (params key `template`)"
        )


def _render_chat(template: PromptTemplate, question: str, tokenizer: Any) -> str:
    messages = []
    if template.system is not None:
        messages.append({"role": "system", "content": template.system})
    if template.example is not None:
        messages += [{"role": "user", "content": template.example[0]},
                     {"role": "assistant", "content": template.example[1]}]
    messages.append({"role": "user", "content": question})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # Prefill goes after the generation prompt: the assistant turn is opened, then already begun.
    return text + template.prefill


def render_prompt(template: str, question: str, tokenizer: Any = None) -> str:
    """The exact prompt string the model is given, for generation and training alike.

    Args:
        template: a key of `TEMPLATES` (params key `template`).
        question: the problem text, inserted verbatim (braces and all).
        tokenizer: a Hugging Face tokenizer; required only for chat templates.

    Returns:
        The prompt, ending with `prefill(template)`.

    Raises:
        ValueError: unknown template, or a chat template with no tokenizer / no chat template.
        TypeError: question is not a string.
    """
    entry = get_template(template)
    question = _check_question(question)
    if entry.uses_chat_template:
        _check_chat_tokenizer(entry, tokenizer)
        return _render_chat(entry, question, tokenizer)
    if entry.name == "r1":
        # Concatenation, not str.format: a question holding "{...}" must come through unchanged.
        return R1_INSTRUCTIONS + "\nUser: " + question + "\nAssistant: " + entry.prefill
    return question


def end_of_turn(template: str, tokenizer: Any) -> str:
    """The string a response must end with so that generation stops there.

    For plain-text templates this is `tokenizer.eos_token`. For chat templates it is the marker the
    chat template closes an assistant turn with (`<|im_end|>` for ChatML), found by rendering a
    probe conversation, because some base tokenizers (Qwen2.5-Math) have an eos that differs from
    the end-of-turn marker. The generation backend must stop on this token too.

    Args:
        template: a key of `TEMPLATES`.
        tokenizer: a Hugging Face tokenizer.

    Returns:
        The end-of-turn / EOS string.

    Raises:
        ValueError: the tokenizer has no eos token and no end-of-turn marker can be found.
    """
    entry = get_template(template)
    eos = getattr(tokenizer, "eos_token", None)
    if entry.uses_chat_template:
        _check_chat_tokenizer(entry, tokenizer)
        marker = _chat_turn_end_marker(tokenizer)
        if marker:
            return marker
    if not eos:
        raise ValueError(
            f"template {template!r}: the tokenizer has no eos_token, so a trained model could not "
            "learn where to stop; set tokenizer.eos_token"
        )
    return eos


def _chat_turn_end_marker(tokenizer: Any) -> str | None:
    """The special token the chat template writes right after an assistant message, if any."""
    sentinel = "R1REPRO_SENTINEL_7f3a"
    messages = [{"role": "user", "content": "q"}, {"role": "assistant", "content": sentinel}]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template that rejects this shape falls back to eos
        return None
    if not isinstance(text, str) or sentinel not in text:
        return None
    suffix = text[text.rindex(sentinel) + len(sentinel):]
    eos = getattr(tokenizer, "eos_token", None)
    if eos and suffix.startswith(eos):
        return eos
    specials = sorted(_special_strings(tokenizer), key=len, reverse=True)
    return next((s for s in specials if suffix.startswith(s)), None)


def _special_strings(tokenizer: Any) -> set[str]:
    found = set(getattr(tokenizer, "all_special_tokens", []) or [])
    try:
        found |= set(tokenizer.get_added_vocab())
    except Exception:  # noqa: BLE001 - tokenizers without an added vocabulary
        pass
    return {s for s in found if isinstance(s, str) and s}


def render_training_example(template: str, question: str, response: str, tokenizer: Any) -> dict[str, str]:
    """A prompt/completion pair for SFT, with the same prompt string generation uses.

    Args:
        template: a key of `TEMPLATES`.
        question: the problem text.
        response: the full response; a leading copy of the prefill (e.g. "<think>") is dropped,
            since the prompt already ends with it. A trailing end-of-turn marker is not doubled.
        tokenizer: a Hugging Face tokenizer (for the chat template and the eos string).

    Returns:
        {"prompt": render_prompt(...), "completion": response-without-prefill + end-of-turn}.

    Raises:
        ValueError: the response holds the end-of-turn marker before its end (the model would
            learn to stop mid-answer), or see `render_prompt` / `end_of_turn`.
        TypeError: response is not a string.
    """
    if not isinstance(response, str):
        raise TypeError(f"response must be a string, got {type(response).__name__}")
    prompt = render_prompt(template, question, tokenizer)
    eos = end_of_turn(template, tokenizer)
    body = response
    head = prefill(template)
    if head and body.lstrip().startswith(head):
        body = body.lstrip()[len(head):]
    if body.endswith(eos):
        body = body[: -len(eos)]
    if eos in body:
        raise ValueError(
            f"response contains the end-of-turn marker {eos!r} before its end; clean the data first"
        )
    return {"prompt": prompt, "completion": body + eos}
