"""Tests of r1repro.stops: one stop policy for every model and stage, and the code paths that use it.

The Qwen2.5-Math case (a base tokenizer whose EOS, <|endoftext|>, is not its chat template's
end-of-turn marker, <|im_end|>) is rebuilt from the embedded SmolLM2 tokenizer, which holds both
tokens: only its eos_token is changed.

    pytest tests/test_stops.py -q
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from transformers import AutoTokenizer, GenerationConfig

from r1repro import rl, templates
from r1repro.answer_cache import AnswerCache
from r1repro.config import BenchmarkSubset, CommonParams, ConfigError, RlParams, load_params
from r1repro.generation import Completion, VllmGenerator, load_generator, text_end
from r1repro.stops import StopPolicy, is_truncated, stop_policy, stop_policy_for, trl_generation_kwargs
from tiny_models import save_tiny_model

ENDOFTEXT, IM_END = 0, 2  # ids of <|endoftext|> and <|im_end|> in the embedded tokenizer


@pytest.fixture(scope="module")
def eos_apart(base_model_dir: Path) -> AutoTokenizer:
    """The embedded tokenizer with EOS <|endoftext|>: its chat template still ends a turn with <|im_end|>."""
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    tokenizer.eos_token = "<|endoftext|>"
    return tokenizer


@pytest.fixture(scope="module")
def eos_apart_model(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path,
                    eos_apart: AutoTokenizer) -> Path:
    """A tiny random model saved with that tokenizer and a generation_config declaring its EOS only,
    as Qwen2.5-Math-1.5B's does."""
    folder = save_tiny_model(tmp_path_factory.mktemp("eos_apart"), base_model_dir)
    eos_apart.save_pretrained(folder)
    config = GenerationConfig.from_pretrained(folder)
    config.eos_token_id = ENDOFTEXT
    config.save_pretrained(folder)
    return folder


# --- the policy -----------------------------------------------------------------------------------


def test_chat_templates_stop_at_eos_and_at_the_end_of_turn_marker(eos_apart):
    assert (eos_apart.eos_token_id, eos_apart.convert_tokens_to_ids("<|im_end|>")) == (ENDOFTEXT, IM_END)
    for template in ("r1_chat", "qwen_math", "chat"):
        assert stop_policy(template, eos_apart, answer_close=False) == StopPolicy((ENDOFTEXT, IM_END), ())
    for template in ("r1", "none"):  # plain text: the end-of-turn marker is the EOS itself
        assert stop_policy(template, eos_apart, answer_close=False).token_ids == (ENDOFTEXT,)


R1_FAMILY = {"r1", "r1_chat", "r1_chat_1shot"}


def test_answer_close_stops_only_the_r1_family_and_only_when_on(eos_apart):
    assert {name for name in templates.TEMPLATES if templates.answer_close(name)} == R1_FAMILY
    for name in templates.TEMPLATES:
        on = stop_policy(name, eos_apart, answer_close=True)
        assert on.strings == (("</answer>",) if name in R1_FAMILY else ())
        assert stop_policy(name, eos_apart, answer_close=False).strings == ()
        assert on.token_ids == stop_policy(name, eos_apart, answer_close=False).token_ids
    common = CommonParams(stop_at_answer_close=True)
    assert stop_policy_for(common, "r1_chat", eos_apart).strings == ("</answer>",)
    assert stop_policy_for(CommonParams(), "r1_chat", eos_apart).strings == ()


def test_the_policy_is_sorted_deduplicated_and_never_empty():
    assert StopPolicy((5, 2, 5), ("</answer>", "</answer>", "")) == StopPolicy((2, 5), ("</answer>",))
    assert StopPolicy((2, 5)).as_dict() == {"token_ids": [2, 5], "strings": []}
    with pytest.raises(ValueError, match="EOS"):
        StopPolicy(())
    with pytest.raises(ConfigError, match="eos_token_id"):
        stop_policy("r1", SimpleNamespace(eos_token_id=None, eos_token=None), answer_close=False)


def test_the_cpu_default_stops_where_smollm2_always_did(base_model_dir):
    """SmolLM2's tokenizer EOS and its generation_config EOS are both <|im_end|>, which is also r1_chat's
    end-of-turn marker: the policy of the CPU default is that one id, with no stop string, so its
    generation is unchanged by the policy."""
    params = load_params()
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    configured = GenerationConfig.from_pretrained(base_model_dir).eos_token_id
    assert params.common.stop_at_answer_close is False
    assert (tokenizer.eos_token, tokenizer.eos_token_id, configured) == ("<|im_end|>", IM_END, IM_END)
    for template in {params.sft.template, params.rl.template, params.evaluate.template, params.distill.template}:
        assert stop_policy_for(params.common, template, tokenizer) == StopPolicy((IM_END,), ())


def test_is_truncated_only_at_the_cap_and_without_a_stop():
    plain, closing = StopPolicy((ENDOFTEXT, IM_END)), StopPolicy((ENDOFTEXT, IM_END), ("</answer>",))
    assert not is_truncated([5, 6], "ab", plain, max_tokens=4)            # stopped short of the cap
    assert not is_truncated([5, 6, 7, IM_END], "abc", plain, max_tokens=4)  # its last token is a stop
    assert is_truncated([5, 6, 7, 8], "abcd", plain, max_tokens=4)
    assert is_truncated([5, 6, 7, 8, 9], "abcd", plain, max_tokens=4)
    assert not is_truncated([5, 6, 7, 8], "x</answer>", closing, max_tokens=4)
    assert not is_truncated([5, 6, 7, 8], "x</answer>\n", closing, max_tokens=4)  # the token ran on past it
    assert is_truncated([5, 6, 7, 8], "x</answer>", plain, max_tokens=4)    # not a stop of this policy
    assert is_truncated([5, 6, 7, 8], "</answer> and more", closing, max_tokens=4)


# --- TRL's rollouts --------------------------------------------------------------------------------


def test_trl_generation_kwargs_for_vllm_and_transformers(tmp_path):
    closing = StopPolicy((ENDOFTEXT, IM_END), ("</answer>",))
    assert trl_generation_kwargs(closing, use_vllm=True) == {
        "stop_token_ids": [ENDOFTEXT, IM_END], "stop": ["</answer>"], "include_stop_str_in_output": True}
    plain = StopPolicy((ENDOFTEXT, IM_END))
    kwargs = trl_generation_kwargs(plain, use_vllm=False)
    assert kwargs == {"eos_token_id": [ENDOFTEXT, IM_END]}
    assert GenerationConfig(**kwargs).eos_token_id == [ENDOFTEXT, IM_END]  # what TRL builds from them
    with pytest.raises(ConfigError, match="common.stop_at_answer_close"):
        trl_generation_kwargs(closing, use_vllm=False)
    args = rl.grpo_config(RlParams(), "grpo", output_dir=tmp_path, seed=0, use_cpu=True, generation_kwargs=kwargs)
    assert args.generation_kwargs == kwargs


def _rl_params(model: Path, out: Path) -> RlParams:
    return RlParams(init_model=str(model), output_dir=str(out), template="r1_chat",
                    prompts=BenchmarkSubset(file="train/asdiv.jsonl", limit=2), max_steps=1, num_generations=2,
                    prompts_per_step=2, max_completion_length=4, save_steps=1)


ROWS = [{"id": "a", "problem": "What is 1 + 1?", "answer": "2"}, {"id": "b", "problem": "2 + 2?", "answer": "4"}]


def test_rl_stops_rollouts_by_the_policy_and_saves_the_model_unchanged(eos_apart_model, tmp_path):
    """TRL's rollouts and completion masks stop at EOS and <|im_end|>, while the model keeps the
    generation_config it was loaded with: the saved RL model stops where the base model does."""
    from r1repro.modeling import load_tokenizer
    from r1repro.resumable import write_final

    common = CommonParams(device="cpu", seed=3)
    trainer, diagnostics = rl.make_trainer(_rl_params(eos_apart_model, tmp_path), "grpo", common, rows=ROWS)
    assert trainer.generation_config.eos_token_id == [ENDOFTEXT, IM_END]
    assert trainer.eos_token_ids == [ENDOFTEXT, IM_END]
    assert diagnostics.stop_ids == {ENDOFTEXT, IM_END}
    assert trainer.model.generation_config.eos_token_id == ENDOFTEXT
    write_final(trainer, tmp_path / "final", {})
    saved = GenerationConfig.from_pretrained(tmp_path / "final")
    assert saved.eos_token_id == GenerationConfig.from_pretrained(eos_apart_model).eos_token_id == ENDOFTEXT
    base, trained = load_tokenizer(str(eos_apart_model)), load_tokenizer(str(tmp_path / "final"))
    assert stop_policy_for(common, "r1_chat", base) == stop_policy_for(common, "r1_chat", trained) \
        == StopPolicy((ENDOFTEXT, IM_END))


def test_rl_refuses_answer_close_with_transformers_rollouts(eos_apart_model, tmp_path):
    common = CommonParams(device="cpu", stop_at_answer_close=True)
    with pytest.raises(ConfigError, match="common.stop_at_answer_close"):
        rl.make_trainer(_rl_params(eos_apart_model, tmp_path), "grpo", common, rows=ROWS)


# --- generation ------------------------------------------------------------------------------------


def test_text_end_cuts_stop_strings_and_keeps_policy_strings():
    text = "<think>2+2=4</think> <answer>4</answer>\nmore"
    assert text[:text_end(text, None, ["</answer>"])] == "<think>2+2=4</think> <answer>4</answer>"
    assert text[:text_end(text, ["\n"], ["</answer>"])] == "<think>2+2=4</think> <answer>4</answer>"
    assert text[:text_end(text, ["</think>"], ["</answer>"])] == "<think>2+2=4"  # the earliest wins
    assert text_end(text, ["@@"], ["</x>"]) is None


@pytest.fixture(scope="module")
def gen(base_model_dir):
    return load_generator("transformers", str(base_model_dir), device="cpu", batch_size=2, progress=False)


@pytest.fixture(scope="module")
def prompt(gen) -> str:
    return gen.tokenizer.apply_chat_template([{"role": "user", "content": "What is 2+2?"}], tokenize=False,
                                             add_generation_prompt=True)


def greedy(gen, prompt, **kwargs) -> Completion:
    ((done,),) = gen.generate([prompt], n=1, temperature=0.0, top_p=1.0, max_tokens=20, seed=0, **kwargs)
    return done


def test_generation_stops_at_the_callers_ids_not_the_models(gen, prompt):
    # Greedy SmolLM2 answers "The answer to this classic math problem is 4." (tests/test_generation.py).
    full = greedy(gen, prompt, stop_policy=StopPolicy((IM_END,)))
    assert full.text == "The answer to this classic math problem is 4." and full.finish_reason == "stop"
    ids = gen.tokenizer(full.text, add_special_tokens=False)["input_ids"]
    early = greedy(gen, prompt, stop_policy=StopPolicy((IM_END, ids[2])))  # the third token now ends it
    assert early.text == gen.tokenizer.decode(ids[:2]) and early.num_tokens == 3 and early.finish_reason == "stop"
    assert greedy(gen, prompt) == full  # no policy: the tokenizer's EOS


def test_a_policy_stop_string_stays_in_the_text_and_its_token_is_counted(gen, prompt):
    done = greedy(gen, prompt, stop_policy=StopPolicy((IM_END,), ("classic",)))
    assert done.text == "The answer to this classic" and done.finish_reason == "stop"
    assert done.num_tokens == len(gen.tokenizer(done.text, add_special_tokens=False)["input_ids"])
    cut = greedy(gen, prompt, stop=["classic"])  # a stop= string is cut out, as before
    assert cut.text == "The answer to this " and cut.num_tokens == done.num_tokens


def test_the_generator_ignores_the_models_generation_config(eos_apart_model, eos_apart):
    """The model declares only <|endoftext|>; the caller's policy decides, <|im_end|> included."""
    from r1repro.generation import TransformersGenerator
    from r1repro.modeling import load_model

    generator = TransformersGenerator(load_model(str(eos_apart_model), device="cpu"), eos_apart, progress=False)
    policy = stop_policy("r1_chat", eos_apart, answer_close=False)
    assert generator._generation_config(8, policy).eos_token_id == [ENDOFTEXT, IM_END]
    assert generator.stops(None) == StopPolicy((ENDOFTEXT,))
    generator.close()


def test_vllm_records_keep_policy_strings_and_cut_stop_strings():
    """`VllmGenerator._records` with vLLM's output shape (include_stop_str_in_output was on)."""
    def output(text, reason):
        return SimpleNamespace(outputs=[SimpleNamespace(index=0, text=text, token_ids=[1, 2, 3],
                                                        finish_reason="stop", stop_reason=reason)])

    (kept,) = VllmGenerator._records(0, output("x</answer>", "</answer>"), ["\n"])
    (cut,) = VllmGenerator._records(0, output("x\n", "\n"), ["\n"])
    (eos,) = VllmGenerator._records(0, output("x", None), ["\n"])
    assert (kept.text, cut.text, eos.text) == ("x</answer>", "x", "x")
    assert kept.num_tokens == cut.num_tokens == 3


# --- the answer cache ------------------------------------------------------------------------------


class RecordingGenerator:
    def __init__(self):
        self.policies = []

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed, stop=None, stop_policy=None):
        self.policies.append(stop_policy)
        return [[Completion(p, 1, "stop", i, 0)] for i, p in enumerate(prompts)]


def test_the_answer_cache_keys_and_generates_with_the_policy(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    plain, closing = StopPolicy((IM_END,)), StopPolicy((IM_END,), ("</answer>",))
    gen = RecordingGenerator()
    caches = [AnswerCache.for_model(tmp_path / "c", str(model), CommonParams(), max_tokens=8, stop_policy=p)
              for p in (plain, closing, None)]
    assert len({c.path for c in caches}) == 3
    caches[0].generate(["q"], lambda: gen)
    caches[1].generate(["q"], lambda: gen)  # another policy: not served from the first's answers
    assert gen.policies == [plain, closing]
    again = AnswerCache.for_model(tmp_path / "c", str(model), CommonParams(), max_tokens=8, stop_policy=closing)
    again.generate(["q"], lambda: pytest.fail("cached under the same policy"))
    assert again.hits == 1
