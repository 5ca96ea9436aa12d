"""The faster transformers backends give the plain backend's records (tests/test_generation.py).

`transformers_static` (static KV cache, torch.compile on CUDA) keeps the plain backend's per-sample
seeds, so greedy and sampled records must both match. `transformers_continuous` (generate_batch)
matches greedily; its samples come from one seeded stream, so only their shape and conventions are
checked. Run on the embedded SmolLM2-135M; continuous batching is slow on CPU (~10 s a call).

    pytest tests/test_generation_fast.py -q
"""

from __future__ import annotations

from pathlib import Path

import pytest

from r1repro import bench
from r1repro.config import CommonParams
from r1repro.generation import (ContinuousBatchingGenerator, StaticCacheGenerator, TransformersGenerator,
                                load_generator)

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
needs_base = pytest.mark.skipif(
    not (BASE / "config.json").is_file(), reason="models/base missing: run `dvc repro import_model`"
)
QUESTIONS = ["What is 2+2?", "Write a long poem about the sea.", "Say hi"]


def records(rows):
    return [[(c.text, c.num_tokens, c.finish_reason, c.prompt_index, c.sample_index) for c in row]
            for row in rows]


@pytest.fixture(scope="module")
def plain() -> TransformersGenerator:
    return load_generator("transformers", str(BASE), device="cpu", batch_size=4, progress=False)


@pytest.fixture(scope="module")
def prompts(plain) -> list[str]:
    return [plain.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                add_generation_prompt=True) for q in QUESTIONS]


def test_backends_are_registered_and_accepted_by_params():
    for name in ("transformers_static", "transformers_continuous"):
        assert CommonParams(backend=name).backend == name


def test_static_widths_round_up_to_the_multiple():
    gen = StaticCacheGenerator.__new__(StaticCacheGenerator)
    gen.width_multiple = 64
    assert [gen._padded_width(n) for n in (1, 64, 65, 130)] == [64, 64, 128, 192]
    with pytest.raises(ValueError, match="width_multiple"):
        StaticCacheGenerator(None, bench.word_tokenizer(8), width_multiple=0)


@needs_base
def test_static_cache_gives_the_plain_records_greedy_and_sampled(plain, prompts):
    fast = load_generator("transformers_static", (plain.model, plain.tokenizer), batch_size=4,
                          progress=False)
    assert isinstance(fast, StaticCacheGenerator)
    for request in ({"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "seed": 0, "stop": ["\n"]},
                    {"n": 2, "temperature": 1.0, "top_p": 0.95, "max_tokens": 8, "seed": 5}):
        assert records(fast.generate(prompts, **request)) == records(plain.generate(prompts, **request))


@needs_base
def test_continuous_batching_matches_greedily_and_keeps_the_conventions(plain, prompts):
    fast = load_generator("transformers_continuous", (plain.model, plain.tokenizer), batch_size=4,
                          progress=False)
    assert isinstance(fast, ContinuousBatchingGenerator)
    # Greedy with a stop string and n=2: EOS ends, stop-string cuts and replication in one call.
    request = {"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "seed": 0, "stop": ["\n"]}
    assert records(fast.generate(prompts, **request)) == records(plain.generate(prompts, **request))
    assert plain.model.training is False and fast.generate([], 2, 1.0, 1.0, 4, 0) == []
    sampled = fast.generate(prompts, n=3, temperature=1.0, top_p=0.95, max_tokens=6, seed=1)
    assert [[(c.prompt_index, c.sample_index) for c in row] for row in sampled] == \
           [[(i, j) for j in range(3)] for i in range(len(prompts))]
    for c in (c for row in sampled for c in row):
        assert 1 <= c.num_tokens <= 6 and (c.finish_reason == "stop" or c.num_tokens == 6)


def test_compiled_static_cache_matches_plain_on_a_toy_model():
    """torch.compile forced on the CPU (off there by default): ~15 s, mostly compiling."""
    import torch

    arch = bench.architecture(tiny=True)
    tokenizer = bench.word_tokenizer(arch["vocab_size"])
    model = bench.random_model(arch, tokenizer, dtype="float32", device="cpu")
    prompts = bench.random_prompts(3, 10, arch["vocab_size"], seed=1)
    request = {"n": 1, "temperature": 0.0, "top_p": 1.0, "max_tokens": 12, "seed": 0}
    reference = records(TransformersGenerator(model, tokenizer, batch_size=4, progress=False)
                        .generate(prompts, **request))
    torch._dynamo.reset()
    compiled = StaticCacheGenerator(model, tokenizer, batch_size=4, progress=False, compile=True,
                                    width_multiple=16)
    assert records(compiled.generate(prompts, **request)) == reference
    assert all(c[1] == 12 and c[2] == "length" for row in reference for c in row)  # EOS impossible


@needs_base
@pytest.mark.slow
def test_the_fast_backend_agrees_with_transformers_on_the_probe_questions():
    """Issue 32's check, on the base model under the probe's template (it answers ~40% of these):
    64 word_ops test rows, greedy, 128 tokens.

    float32: the fast path (grouped decode attention, static cache; nothing is prepacked) must give
    transformers' texts exactly. bfloat16 (where the CPU has it natively, as the pipeline runs): the
    prepacked matmuls and the attention round in another order, so near-ties flip. How often is a
    property of bf16, not of the engine: transformers' own bf16 answers agreed with its float32
    ones on 58 of these 64 (55 of 64 for the cold-start model; LOG.md, 2026-12-06), so issue 32's
    95% cannot be met by any bf16 engine here. We require >= 52 of 64 (81%: a broken engine, e.g.
    one that attends to padding, agrees on far fewer) and the same accuracy within 4 questions."""
    from r1repro import synthetic_tasks
    from r1repro.grading import extract_answer
    from r1repro.modeling import native_bf16
    from r1repro.stops import stop_policy_for
    from r1repro.templates import render_prompt

    rows = synthetic_tasks.generate("word_ops", 1800, 0)[600:664]
    gold = [row["answer"] for row in rows]

    def answers(backend: str, dtype: str) -> tuple[list[str], list[str | None]]:
        with load_generator(backend, str(BASE), dtype=dtype, device="cpu", batch_size=64, progress=False) as gen:
            prompts = [render_prompt("r1_chat_1shot", row["problem"], gen.tokenizer) for row in rows]
            policy = stop_policy_for(CommonParams(), "r1_chat_1shot", gen.tokenizer)
            texts = [row[0].text for row in gen.generate(prompts, n=1, temperature=0.0, top_p=1.0,
                                                         max_tokens=128, seed=0, stop_policy=policy)]
        return texts, [extract_answer(t) for t in texts]

    plain_texts, plain = answers("transformers", "float32")
    fast_texts, _ = answers("transformers_fast", "float32")
    assert sum(a is not None for a in plain) >= 32  # answers to compare, not blanks
    assert fast_texts == plain_texts
    if native_bf16("cpu"):
        _, plain16 = answers("transformers", "bfloat16")
        _, fast16 = answers("transformers_fast", "bfloat16")
        agree = sum(a == b for a, b in zip(plain16, fast16))
        assert agree >= 52, f"{agree} of 64 answers agree"
        correct = [sum(str(a) == g for a, g in zip(got, gold)) for got in (plain16, fast16)]
        assert abs(correct[0] - correct[1]) <= 4, correct
