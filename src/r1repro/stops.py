"""Where a response ends: one stop policy for every model and every stage.

A response ends at the tokenizer's EOS, at the template's end-of-turn marker, and (with
`common.stop_at_answer_close`, for the r1 family of templates) right after the string `</answer>`,
which stays in the text so that the format reward and the grader see it. The policy depends only on
the template and the tokenizer, never on the loaded model's own generation_config, so a base model,
its SFT model and its RL model (whose saved generation_configs may differ) all stop at the same place:

    from r1repro.stops import stop_policy_for
    stops = stop_policy_for(common, "r1_chat", tokenizer)    # StopPolicy(token_ids=(2,), strings=())
    gen.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=64, seed=0, stop_policy=stops)

The generation backends (`r1repro.generation`) take it per call; TRL's rollouts take it through
`GRPOConfig.generation_kwargs` (`trl_generation_kwargs`).

Why these stops. The Dr. GRPO paper's code (sail-sg/understand-r1-zero, train_zero_math.py) stops at
the end of text for its qwen_math and no templates, and also at `</answer>` (kept in the output) for
its r1 template, in rollouts and evaluation alike. We add the end-of-turn marker for every template:
SFT and distillation teach it as a response's end (`templates.render_training_example`), and a chat
model whose marker differs from its EOS (Qwen2.5-Math's `<|im_end|>` vs `<|endoftext|>`) would
otherwise run on past its answer. For qwen_math this departs from the paper, which relies on the
model's own EOS there.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from r1repro import templates
from r1repro.config import ConfigError
from r1repro.modeling import end_of_turn_id


@dataclass(frozen=True)
class StopPolicy:
    """The token ids and strings that end a response.

    Attributes:
        token_ids: the tokenizer's EOS id and the template's end-of-turn marker id, deduplicated,
            sorted. The token is part of the response's token count, not of its text.
        strings: ("</answer>",) for the r1 family when `common.stop_at_answer_close` is on, else ().
            A stop string is kept at the end of the text.
    """

    token_ids: tuple[int, ...]
    strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.token_ids:
            raise ValueError("StopPolicy.token_ids: at least the tokenizer's EOS id is needed")
        object.__setattr__(self, "token_ids", tuple(sorted({int(i) for i in self.token_ids})))
        object.__setattr__(self, "strings", tuple(dict.fromkeys(s for s in self.strings if s)))

    def as_dict(self) -> dict[str, list]:
        """JSON-ready form, for cache keys and records."""
        return {"token_ids": list(self.token_ids), "strings": list(self.strings)}


def stop_policy(template: str, tokenizer: Any, *, answer_close: bool) -> StopPolicy:
    """The stops of `template` with `tokenizer`.

    Args:
        template: a key of `r1repro.templates.TEMPLATES`.
        tokenizer: the tokenizer of the model that answers.
        answer_close: also stop after the template's closing tag (`</answer>` for the r1 family;
            other templates have none, so this changes nothing for them).

    Returns:
        The policy.

    Raises:
        ConfigError: the tokenizer has no EOS id, or the end-of-turn marker is not one token.
    """
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise ConfigError(f"template {template!r}: the tokenizer has no eos_token_id, so generation "
                          "could not stop; set tokenizer.eos_token")
    close = templates.answer_close(template)
    return StopPolicy(token_ids=(eos, end_of_turn_id(template, tokenizer)),
                      strings=(close,) if answer_close and close else ())


def stop_policy_for(common: Any, template: str, tokenizer: Any) -> StopPolicy:
    """`stop_policy` with `common.stop_at_answer_close` from params.yaml's `common` section.

    Args:
        common: the validated `common` section.
        template: a key of `r1repro.templates.TEMPLATES`.
        tokenizer: the tokenizer of the model that answers.
    """
    return stop_policy(template, tokenizer, answer_close=common.stop_at_answer_close)


def trl_generation_kwargs(policy: StopPolicy, *, use_vllm: bool) -> dict[str, Any]:
    """What `GRPOConfig.generation_kwargs` needs for TRL's rollouts to stop as `policy` says.

    TRL 1.16 passes generation_kwargs to vLLM's `SamplingParams` (colocate and server mode) or, for
    transformers rollouts, merges them into the `GenerationConfig` it builds (overriding its
    `eos_token_id`, which it takes from the model's generation_config and the tokenizer).

    Stop strings cannot work on the transformers rollout path: TRL calls `model.generate` without a
    tokenizer, and transformers refuses `stop_strings` without one; continuous batching
    (`generate_batch`) has no stopping criteria at all; and TRL cuts each completion's mask at the
    first EOS id only, so a row that stopped on a string would keep its padding.

    Args:
        policy: the stops.
        use_vllm: rollouts by vLLM (`SamplingParams` keys) rather than transformers (`GenerationConfig`).

    Returns:
        For vLLM: stop_token_ids, stop and include_stop_str_in_output=True (`</answer>` stays in the
        completion, as in the paper's code). For transformers: eos_token_id, the list of stop ids.

    Raises:
        ConfigError: stop strings with transformers rollouts.
    """
    if use_vllm:
        return {"stop_token_ids": list(policy.token_ids), "stop": list(policy.strings),
                "include_stop_str_in_output": True}
    if policy.strings:
        raise ConfigError(
            f"common.stop_at_answer_close is on, so rollouts of this template must stop at "
            f"{' or '.join(map(repr, policy.strings))}, but TRL's transformers rollouts cannot stop on a "
            "string (no tokenizer reaches generate, and completions are cut at EOS ids only); generate "
            "rollouts with vLLM (common.backend: vllm on a GPU) or set common.stop_at_answer_close: false")
    return {"eos_token_id": list(policy.token_ids)}


def is_truncated(completion_ids: Sequence[int], text: str, policy: StopPolicy, max_tokens: int) -> bool:
    """Whether a completion was cut at the length cap rather than stopped.

    Cut: it holds at least `max_tokens` tokens and ends neither in a stop token id nor in a stop
    string. A stop string counts as the end when the text, trailing whitespace aside, ends with it
    (vLLM keeps the whole token that completed the string, which may carry a newline after it).

    Args:
        completion_ids: the completion's token ids (stop token included, padding excluded).
        text: its decoded text.
        policy: the stops it was generated with.
        max_tokens: the length cap (max_completion_length / max_new_tokens).
    """
    if len(completion_ids) < max_tokens:
        return False
    if completion_ids and completion_ids[-1] in policy.token_ids:
        return False
    end = text.rstrip()
    return not any(end.endswith(s) for s in policy.strings)
