"""The CPU decode path computes what transformers' own SDPA path computes (r1repro.cpu_decode).

Toy Llama models with grouped-query attention (4 query heads, 2 key/value heads), float32, CPU:
a few seconds in all. The embedded model's agreement is in tests/test_generation_fast.py.
"""

from __future__ import annotations

import pytest
import torch

from r1repro import cpu_decode
from r1repro.cpu import native_bf16_cpu
from r1repro.generation import FastCpuGenerator, TransformersGenerator, load_generator
from r1repro import bench


class _Module(torch.nn.Module):
    """What an attention function reads from its layer."""

    num_key_value_groups = 2
    is_causal = True


def _toy_llama(attention: str, seed: int = 0):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cpu_decode.register_attention()
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, eos_token_id=None,
                         bos_token_id=None)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation=attention).eval()


def _qkv(q_len: int, context: int):
    torch.manual_seed(1)
    return (torch.randn(3, 4, q_len, 8), torch.randn(3, 2, context, 8), torch.randn(3, 2, context, 8))


@pytest.mark.parametrize("mask_kind", ["none", "bool", "additive"])
def test_a_decode_step_equals_sdpa(mask_kind):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value = _qkv(1, 7)
    keep = torch.ones(3, 1, 1, 7, dtype=torch.bool)
    keep[0, ..., :3] = False  # a left-padded row
    mask = {"none": None, "bool": keep,
            "additive": torch.zeros(3, 1, 1, 7).masked_fill(~keep, torch.finfo(torch.float32).min)}[mask_kind]
    expected, _ = sdpa_attention_forward(_Module(), query, key, value, mask, scaling=0.3, is_causal=False)
    got, weights = cpu_decode.grouped_decode_attention(_Module(), query, key, value, mask, scaling=0.3)
    assert weights is None and got.shape == expected.shape == (3, 1, 4, 8)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    if mask is not None:  # the mask is applied: without it row 0 comes out different
        unmasked, _ = cpu_decode.grouped_decode_attention(_Module(), query, key, value, None, scaling=0.3)
        assert not torch.allclose(unmasked[0], expected[0], atol=1e-3)


def test_longer_queries_go_to_sdpa_unchanged():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    query, key, value = _qkv(5, 5)
    expected, _ = sdpa_attention_forward(_Module(), query, key, value, None, scaling=0.3)
    got, _ = cpu_decode.grouped_decode_attention(_Module(), query, key, value, None, scaling=0.3)
    assert torch.equal(got, expected)


def test_under_bf16_autocast_a_decode_step_stays_close_to_float32():
    query, key, value = _qkv(1, 7)
    reference, _ = cpu_decode.grouped_decode_attention(_Module(), query, key, value, None, scaling=0.3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, _ = cpu_decode.grouped_decode_attention(_Module(), query, key, value, None, scaling=0.3)
    assert got.dtype == query.dtype  # computed in the cache's dtype, returned in the query's
    torch.testing.assert_close(got, reference)


def test_greedy_tokens_with_left_padding_match_sdpa_exactly():
    """Fails without SDPA's mask registered for the custom attention (padding would be attended)."""
    ids = torch.randint(1, 64, (3, 9), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0
    mask[1, :2] = 0
    runs = {}
    for attention in ("sdpa", cpu_decode.GROUPED_DECODE):
        model = _toy_llama(attention)
        with torch.inference_mode():
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=12, do_sample=False,
                                 pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        runs[attention] = out
    assert torch.equal(runs["sdpa"].sequences, runs[cpu_decode.GROUPED_DECODE].sequences)
    torch.testing.assert_close(torch.stack(runs[cpu_decode.GROUPED_DECODE].logits),
                               torch.stack(runs["sdpa"].logits), rtol=1e-4, atol=1e-5)


def test_training_loss_and_gradients_are_sdpa_s():
    ids = torch.randint(1, 64, (2, 10), generator=torch.Generator().manual_seed(3))
    grads = {}
    for attention in ("sdpa", cpu_decode.GROUPED_DECODE):
        model = _toy_llama(attention).train()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        grads[attention] = (loss.detach(), [p.grad.clone() for p in model.parameters()])
    assert torch.equal(grads["sdpa"][0], grads[cpu_decode.GROUPED_DECODE][0])
    for a, b in zip(grads["sdpa"][1], grads[cpu_decode.GROUPED_DECODE][1]):
        assert torch.equal(a, b)


def test_prepacking_leaves_float32_models_alone():
    model = _toy_llama("sdpa")
    assert not cpu_decode.can_prepack(model)
    assert cpu_decode.prepack_linear_weights(model, batch_hint=4) == 0
    assert all(type(m) is not cpu_decode._PackedLinear for m in model.modules())


@pytest.mark.skipif(not native_bf16_cpu(),
                    reason="this CPU has no native bf16 (AMX or avx512_bf16): nothing is prepacked")
def test_prepacked_bf16_layers_compute_the_same_logits():
    model = _toy_llama("sdpa").to(torch.bfloat16)
    ids = torch.randint(1, 64, (4, 6), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        expected = model(input_ids=ids).logits.float()
        linears = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
        assert cpu_decode.prepack_linear_weights(model, batch_hint=4) == linears > 0
        assert not any(isinstance(m, torch.nn.Linear) for m in model.modules())
        got = model(input_ids=ids).logits.float()
    torch.testing.assert_close(got, expected, rtol=0.02, atol=0.02)  # bf16: last bits round differently


def test_the_fast_backend_gives_the_plain_records_in_float32():
    """Greedy and sampled records equal token for token (float32: nothing prepacked, exact kernels)."""
    arch = bench.architecture(tiny=True)
    tokenizer = bench.word_tokenizer(arch["vocab_size"])
    model = bench.random_model(arch, tokenizer, dtype="float32", device="cpu")
    prompts = bench.random_prompts(3, 10, arch["vocab_size"], seed=1) + ["t5 t6"]  # padded rows
    plain = TransformersGenerator(model, tokenizer, batch_size=4, progress=False)
    cpu_decode.register_attention()
    model.set_attn_implementation(cpu_decode.GROUPED_DECODE)
    fast = load_generator("transformers_fast", (model, tokenizer), batch_size=4, progress=False)
    assert isinstance(fast, FastCpuGenerator)
    for request in ({"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 12, "seed": 0},
                    {"n": 3, "temperature": 1.0, "top_p": 0.9, "max_tokens": 8, "seed": 5}):
        model.set_attn_implementation("sdpa")
        expected = plain.generate(prompts, **request)
        model.set_attn_implementation(cpu_decode.GROUPED_DECODE)
        got = fast.generate(prompts, **request)
        assert [[(c.text, c.num_tokens, c.finish_reason) for c in row] for row in got] == \
               [[(c.text, c.num_tokens, c.finish_reason) for c in row] for row in expected]


def _prompts(shared: int = 0):
    """Six prompts of 4-9 tokens, rows 2 and 5 the same prompt, the first `shared` tokens common;
    with the left-padded ids and mask `generate` takes."""
    rng = torch.Generator().manual_seed(5)
    prefix = torch.randint(1, 64, (shared,), generator=rng).tolist()
    prompts = [prefix + torch.randint(1, 64, (n,), generator=rng).tolist() for n in (9, 6, 8, 4, 9, 7)]
    prompts[5] = prompts[2]
    ids, mask = cpu_decode.left_padded(prompts, 0, torch.device("cpu"))
    return prompts, ids, mask


def test_length_chunks_group_similar_lengths_longest_first():
    assert cpu_decode.length_chunks([9, 6, 8, 4, 9]) == [[0, 4, 2, 1], [3]]
    # 80 and 76 join for want of rows, 39 and 38 are 85% of 40, 30 joins for want of rows, 20 starts anew
    assert cpu_decode.length_chunks([100, 90, 80, 76, 40, 39, 38, 30, 20]) == [[0, 1, 2, 3], [4, 5, 6, 7], [8]]
    assert cpu_decode.length_chunks([10, 2, 2], min_rows=1) == [[0], [1, 2]]
    assert cpu_decode.length_chunks([5]) == [[0]]


def test_the_shared_prefix_leaves_every_prompt_a_token():
    assert cpu_decode.shared_prefix_length([[1, 2, 3], [1, 2, 4]]) == 2
    assert cpu_decode.shared_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2
    assert cpu_decode.shared_prefix_length([[1, 2], [1, 2, 3]]) == 1
    assert cpu_decode.shared_prefix_length([[5], [1, 2]]) == 0


def _stops_that_end_rows_early(model, ids, mask, steps):
    """Tokens that some rows emit before the last step (so rows end at different steps)."""
    with torch.inference_mode():
        free = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=steps, do_sample=False,
                              pad_token_id=0)[:, ids.shape[1]:]
    return sorted({int(free[0, 2]), int(free[3, 6])})


class _BatchSizes:
    """Rows of every decode step (a forward hook on the model)."""

    def __init__(self, model):
        self.sizes = []
        model.register_forward_pre_hook(lambda _, args, kwargs: self.sizes.append(kwargs["input_ids"].shape[0]),
                                        with_kwargs=True)


@pytest.mark.parametrize("sampled", [False, True])
@pytest.mark.parametrize("shared", [0, 5])
def test_dropping_finished_rows_decodes_what_generate_decodes(sampled, shared):
    """Greedy and sampled (RowSampler), float32, with and without a common prefix, a repeated prompt
    among them: the same tokens and padding as left-padded `generate`, while the prefill runs on
    fewer tokens and the batch shrinks as rows end (without either this test checks nothing new)."""
    from r1repro.generation import RowSampler

    model = _toy_llama(cpu_decode.GROUPED_DECODE)
    prompts, ids, mask = _prompts(shared)
    stops = _stops_that_end_rows_early(model, ids, mask, steps=14)

    def sampler():
        return RowSampler(list(range(10, 16)), temperature=1.3, top_p=0.9) if sampled else None

    with torch.inference_mode():
        expected = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=14, do_sample=False,
                                  pad_token_id=0, eos_token_id=stops,
                                  logits_processor=[sampler()] if sampled else None)[:, ids.shape[1]:]
    sizes = _BatchSizes(model)
    got = cpu_decode.decode_dropping_finished(model, prompts, max_new_tokens=14, stop_token_ids=stops,
                                              pad_token_id=0, processor=sampler(), drop_share=0.1)
    assert got == expected.tolist()
    ends = {next((k for k, t in enumerate(row) if t in stops), None) for row in got}
    assert len(ends) >= 2  # rows ended at different steps
    # the prefix once, then each distinct prompt once: with a prefix, in groups of similar length
    # (suffixes of 9, 9, 8, 6 and 4 tokens: the 4 runs apart, padded by no forward)
    prefill = sizes.sizes[:3] if shared else sizes.sizes[:1]
    assert prefill == ([1, 4, 1] if shared else [5])
    decode = sizes.sizes[len(prefill):]
    assert max(decode) <= 6 and min(decode) < 6  # then rows left the batch


def test_stop_strings_end_rows_and_bad_shares_are_refused():
    model = _toy_llama(cpu_decode.GROUPED_DECODE)
    prompts, _, _ = _prompts()
    with pytest.raises(ValueError, match="drop_share"):
        cpu_decode.decode_dropping_finished(model, prompts, max_new_tokens=4, stop_token_ids=[1],
                                            pad_token_id=0, drop_share=0)
    first = cpu_decode.decode_dropping_finished(model, prompts, max_new_tokens=8, stop_token_ids=[],
                                                pad_token_id=0)
    target = first[1][3]  # row 1's fourth token, as a "stop string" criterion

    def stopping(sequences, scores):
        return sequences[:, -1] == target

    got = cpu_decode.decode_dropping_finished(model, prompts, max_new_tokens=8, stop_token_ids=[],
                                              pad_token_id=0, stopping=stopping)
    row = got[1]
    assert row[:4] == first[1][:4] and set(row[4:]) <= {0}  # ended at the criterion, padded after
