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
    param = next(model.parameters())
    return (param.device.type == "cpu" and param.dtype == torch.bfloat16
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


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
