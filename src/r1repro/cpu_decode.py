"""Decoding speed on a CPU: grouped-query attention for one-token steps, and prepacked linear weights.

Both plug into transformers through its own extension points; neither changes what is computed.

* `grouped_decode` (an attention implementation, `attn_implementation="grouped_decode"`): for a
  one-token query (a decode step) each key/value head is multiplied with its group of query heads in
  one batched matmul, without copying the cache per query head; any other call (prefill, training)
  is transformers' own SDPA with SDPA's mask, so training computes exactly what `sdpa` computes.
  Why: SDPA's CPU flash kernel took 1.6 ms per layer for a one-token query (SmolLM2-135M, batch 64,
  context 160, bf16, 2-core AMD EPYC), 57% of a decode step; eager attention copies the KV cache
  for every query head (`repeat_kv`), 36% of its step. Measured step: 281 ms (sdpa) -> 128 ms.
* `prepack_linear_weights`: every `nn.Linear` of a model whose weights stay fixed computes through
  oneDNN with its weight reordered once into oneDNN's blocked layout (`torch.ops.mkldnn`), instead
  of being reordered at each call: 128 -> 99 ms a step above. bfloat16 on a CPU with native bf16
  only (AMX or avx512_bf16), where that kernel exists; elsewhere nothing changes.

Greedy float32 tokens match `sdpa` exactly (tests/test_cpu_decode.py); in bfloat16 the matmuls
round in a different order, so logits differ in their last bits and a near-tie can flip a token
(the agreement test on answers is in tests/test_generation_fast.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

GROUPED_DECODE = "grouped_decode"


def grouped_decode_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                             value: torch.Tensor, attention_mask: torch.Tensor | None,
                             dropout: float = 0.0, scaling: float | None = None,
                             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: (batch, q_len, heads, head_dim) output, no weights.

    Query heads sharing a key/value head are consecutive (transformers' `repeat_kv` layout), so the
    query (batch, heads, 1, d) viewed as (batch * kv_heads, group, d) meets the cache viewed as
    (batch * kv_heads, context, d) with no copy.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, heads, q_len, dim = query.shape
    if q_len != 1 or (module.training and dropout > 0):
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    kv_heads, context = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim ** -0.5 if scaling is None else scaling
    keys = key.reshape(batch * kv_heads, context, dim)
    # In the cache's own dtype, autocast off: under bf16 autocast a float32 cache (rotary embeddings
    # promote keys to float32) would otherwise be cast whole at every step, 23% of an RL rollout step.
    with torch.autocast(query.device.type, enabled=False):
        queries = query.to(key.dtype).reshape(batch * kv_heads, group, dim)
        scores = torch.bmm(queries, keys.transpose(1, 2)).view(batch, kv_heads, group, context) * scale
        if attention_mask is not None:  # SDPA's mask: (batch, 1, 1, >= context), bool or additive
            mask = attention_mask[..., :context].reshape(batch, 1, 1, context)
            scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
        # softmax in float32, as SDPA's CPU kernel accumulates it
        probs = scores.float().softmax(dim=-1).to(value.dtype).view(batch * kv_heads, group, context)
        out = torch.bmm(probs, value.reshape(batch * kv_heads, context, dim))
    return out.view(batch, heads, 1, dim).transpose(1, 2).to(query.dtype), None


def register_attention() -> None:
    """Make `attn_implementation="grouped_decode"` known to transformers (idempotent).

    The mask function is SDPA's: without one registered, transformers passes no mask at all to a
    custom attention, and padded rows would attend to their padding.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(GROUPED_DECODE, grouped_decode_attention)
    AttentionMaskInterface.register(GROUPED_DECODE, sdpa_mask)


def attention_argument(attention: str) -> dict[str, str]:
    """`from_pretrained`'s keyword for params `common.attention`, registering ours first."""
    if attention == GROUPED_DECODE:
        register_attention()
    return {"attn_implementation": attention}


def can_prepack(model: torch.nn.Module) -> bool:
    """Whether `prepack_linear_weights` would change `model`: bf16 weights on a CPU with native bf16."""
    from r1repro.cpu import native_bf16_cpu

    param = next(model.parameters())
    return param.device.type == "cpu" and param.dtype == torch.bfloat16 and native_bf16_cpu()


class _PackedLinear(torch.nn.Module):
    """A fixed `nn.Linear` computed by oneDNN from a weight reordered once (inference only)."""

    def __init__(self, linear: torch.nn.Linear, batch_hint: int):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), batch_hint)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        if flat.dtype != torch.bfloat16:
            flat = flat.to(torch.bfloat16)
        out = torch.ops.mkldnn._linear_pointwise(flat, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)


def prepack_linear_weights(model: torch.nn.Module, batch_hint: int) -> int:
    """Replace every `nn.Linear` of `model` by its prepacked form; returns how many were replaced.

    For a model whose weights never change afterwards (a generator that loaded them itself): the
    packed copy does not follow later updates. Tied weights (SmolLM2's embedding and head) are
    packed for the head only; the embedding stays a lookup of the original tensor.

    Args:
        model: a bf16 model on a CPU with native bf16 (`can_prepack`); anything else is left as is.
        batch_hint: rows per decode step, oneDNN's hint for the layout.
    """
    if not can_prepack(model):
        return 0
    targets = [(name, module) for name, module in model.named_modules()
               if isinstance(module, torch.nn.Linear)]
    for name, module in targets:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _PackedLinear(module, batch_hint))
    return len(targets)


def _select_rows(cache: Any, keep: torch.Tensor) -> None:
    """Keep only rows `keep` of a static KV cache (the tensors shrink; nothing is reallocated later)."""
    for layer in cache.layers:
        if getattr(layer, "is_initialized", False):
            layer.keys = layer.keys.index_select(0, keep)
            layer.values = layer.values.index_select(0, keep)
            layer.batch_size = int(keep.numel())


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Leading tokens every prompt shares, leaving each at least one token of its own."""
    first, shortest = prompts[0], min(len(p) for p in prompts)
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def left_padded(rows: Sequence[Sequence[int]], pad: int, device: torch.device,
                width: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids left-padded to `width` (default: the longest row), and their attention mask."""
    width = max(len(r) for r in rows) if width is None else width
    ids = [[pad] * (width - len(r)) + list(r) for r in rows]
    mask = [[0] * (width - len(r)) + [1] * len(r) for r in rows]
    return torch.tensor(ids, device=device), torch.tensor(mask, device=device)


def length_chunks(lengths: Sequence[int], min_fill: float = 0.85, min_rows: int = 4) -> list[list[int]]:
    """Rows grouped for a padded forward, longest first: a row joins the current group while its
    length is at least `min_fill` of the group's longest (or the group has fewer than `min_rows`).

    One left-padded forward over prompts of 29-88 tokens computed 5,632 positions for 3,103 real ones
    (evaluation's 64 ASDiv questions behind r1_chat's shared prefix: 5.8 s). Grouped, padding is
    under 15% of a group and the prefill took 3.3 s (0.75: 4.2 s, 0.9: 3.4 s; AMD EPYC, bf16).
    """
    order = sorted(range(len(lengths)), key=lambda k: -lengths[k])
    groups: list[list[int]] = []
    for k in order:
        head = lengths[groups[-1][0]] if groups else 0
        if groups and (lengths[k] >= min_fill * head or len(groups[-1]) < min_rows):
            groups[-1].append(k)
        else:
            groups.append([k])
    return groups


def _prefill_in_chunks(model: torch.nn.Module, cache: Any, suffixes: Sequence[Sequence[int]], shared: int,
                       pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's own prompt tokens into `cache` after the shared prefix, left-padded to the longest.

    Columns and positions are those of one left-padded forward over every row; rows of similar
    length run together (`length_chunks`), each group writing its tokens into its rows' last
    columns, so padding a short row to the longest costs no forward. The pad columns a group skips
    stay masked, as padding is.

    Returns:
        the last position's logits (rows, vocab), the attention mask over the filled columns
        (rows, shared + longest) and the positions of the rows' suffix columns.
    """
    ids, suffix_mask = left_padded(suffixes, pad_token_id, device)
    width = ids.shape[1]
    full_mask = torch.cat([suffix_mask.new_ones(len(suffixes), shared), suffix_mask], dim=-1)
    positions = (full_mask.cumsum(-1) - 1).masked_fill(full_mask == 0, 0)[:, shared:]
    groups = length_chunks([len(s) for s in suffixes]) if shared else [list(range(len(suffixes)))]
    if len(groups) == 1:  # one forward over every row (and the cache's first write when no prefix ran)
        output = model(input_ids=ids, attention_mask=full_mask, position_ids=positions, past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
        return output.logits[:, -1, :], full_mask, positions
    logits = None
    whole = [(layer.keys, layer.values) for layer in cache.layers]
    for rows in groups:
        index = torch.tensor(rows, device=device)
        group_width = max(len(suffixes[k]) for k in rows)
        for layer, (keys, values) in zip(cache.layers, whole):
            layer.keys, layer.values = keys.index_select(0, index), values.index_select(0, index)
            layer.cumulative_length.fill_(shared + width - group_width)  # where this group's columns start
        output = model(input_ids=ids[index, width - group_width:], attention_mask=full_mask[index],
                       position_ids=positions[index, width - group_width:], past_key_values=cache,
                       use_cache=True, logits_to_keep=1)
        for layer, (keys, values) in zip(cache.layers, whole):
            keys.index_copy_(0, index, layer.keys)
            values.index_copy_(0, index, layer.values)
        if logits is None:
            logits = output.logits.new_empty(len(suffixes), output.logits.shape[-1])
        logits[index] = output.logits[:, -1, :]
    for layer, (keys, values) in zip(cache.layers, whole):
        layer.keys, layer.values = keys, values
        layer.cumulative_length.fill_(shared + width)
    return logits, full_mask, positions


def prefill_shared(model: torch.nn.Module, prompts: Sequence[Sequence[int]], max_new_tokens: int,
                   pad_token_id: int, device: torch.device) -> tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Prompts into a static KV cache, each distinct token computed once.

    A batch's prompts repeat: the samples of one question are the same prompt, and every prompt of
    a template begins with the same instructions (r1_chat_1shot: 163 of ~194 tokens). So the common
    prefix runs once (batch 1) and is copied to the distinct prompts, their own suffixes run after
    it (`_prefill_in_chunks`: grouped by length, placed as left padding places them), and the cache
    is copied to the rows. Each row's positions count its real tokens, as left padding gives them,
    so the cache holds what a padded prefill would compute.

    Returns:
        the cache, the last position's logits (rows, vocab), the attention mask over the cache's
        filled columns (rows, prefix + suffix width) and each row's last position (rows, 1).
    """
    from transformers import StaticCache

    unique = list(dict.fromkeys(tuple(p) for p in prompts))
    index = {p: k for k, p in enumerate(unique)}
    which = torch.tensor([index[tuple(p)] for p in prompts], device=device)
    shared = shared_prefix_length(unique)
    suffixes = [p[shared:] for p in unique]
    cache = StaticCache(config=model.config, max_cache_len=shared + max(len(s) for s in suffixes) + max_new_tokens)
    if shared:
        model(input_ids=torch.tensor([unique[0][:shared]], device=device),
              position_ids=torch.arange(shared, device=device)[None], past_key_values=cache, use_cache=True,
              logits_to_keep=1)
        _select_rows(cache, torch.zeros(len(unique), dtype=torch.long, device=device))
    logits, mask, position = _prefill_in_chunks(model, cache, suffixes, shared, pad_token_id, device)
    _select_rows(cache, which)
    return cache, logits[which], mask[which], position[which, -1:]


@torch.inference_mode()
def decode_dropping_finished(model: torch.nn.Module, prompts: Sequence[Sequence[int]], *,
                             max_new_tokens: int, stop_token_ids: Sequence[int], pad_token_id: int,
                             processor: Any | None = None, stopping: Any | None = None,
                             drop_share: float = 0.125) -> list[list[int]]:
    """Decode a batch of prompts as left-padded `generate` would, each distinct prompt token computed
    once (`prefill_shared`) and rows leaving the batch once they end.

    `model.generate` keeps decoding a row after it has ended (feeding it pad tokens) until the last
    row ends, so a batch whose answers differ in length spends most steps on finished rows (47% of
    row-steps were real tokens in a greedy run here). This loop runs the same forward passes on a
    static KV cache, with the same positions, mask and token choice (the sampler's, or the argmax as
    `generate(do_sample=False)`), but once `drop_share` of the rows still in the batch have
    ended, it removes them from the cache and the batch (one copy of the cache, cheaper than the
    steps it saves). Rows compute independently, so the tokens are those of `generate` up to the
    rounding of other matrix shapes (in float32 they matched exactly: tests/test_cpu_decode.py).

    Args:
        model: a causal LM taking `past_key_values`, `position_ids` and `logits_to_keep`.
        prompts: token ids of each row (rows may repeat: the samples of one prompt).
        max_new_tokens: the most tokens a row decodes.
        stop_token_ids: a row ends on the step it emits one of these (the token is kept).
        pad_token_id: fills a row after its end, up to the longest row, as `generate` returns it.
        processor: a sampler of the rows in the batch: `choose(scores) -> token ids` on their float32
            scores, and `select_rows(indices)`, called when rows leave (a per-row sampler keeps its
            streams aligned with its rows); None decodes greedily.
        stopping: `(input_ids, scores) -> bool per row`, such as transformers' StopStringCriteria.
        drop_share: remove ended rows once they are at least this share of the batch (0 < x <= 1).

    Returns:
        the generated token ids of every row, in input order, all of the same length.
    """
    if not 0 < drop_share <= 1:
        raise ValueError(f"drop_share: expected a share in (0, 1], got {drop_share}")
    device = model.device
    cache, logits, mask, last_position = prefill_shared(model, prompts, max_new_tokens, pad_token_id, device)
    sequences, _ = left_padded(prompts, pad_token_id, device)  # what stop criteria and processors read
    rows = len(prompts)
    stop_ids = torch.tensor(list(stop_token_ids), dtype=torch.long, device=device)
    in_batch = torch.arange(rows, device=device)  # input row of each batch row
    ended = torch.zeros(rows, dtype=torch.bool, device=device)  # batch rows that have ended
    generated: list[list[int]] = [[] for _ in range(rows)]
    for step in range(max_new_tokens):
        scores = logits.to(dtype=torch.float32)
        tokens = scores.argmax(dim=-1) if processor is None else processor.choose(scores)
        tokens = tokens.masked_fill(ended, pad_token_id)  # an ended row gets pad
        for row, token in zip(in_batch.tolist(), tokens.tolist()):
            generated[row].append(token)
        sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
        ended = ended | torch.isin(tokens, stop_ids)
        if stopping is not None:
            ended = ended | stopping(sequences, scores)
        if bool(ended.all()) or step + 1 == max_new_tokens:
            break
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=-1)
        last_position = last_position + 1
        if int(ended.sum()) >= max(1, drop_share * ended.numel()):
            keep = (~ended).nonzero().squeeze(-1)
            _select_rows(cache, keep)
            in_batch, sequences, mask = in_batch[keep], sequences[keep], mask[keep]
            last_position, tokens, ended = last_position[keep], tokens[keep], ended[keep]
            if processor is not None:
                processor.select_rows(keep.tolist())
        logits = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=last_position,
                       past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1, :]
    longest = max(len(ids) for ids in generated)
    return [ids + [pad_token_id] * (longest - len(ids)) for ids in generated]
