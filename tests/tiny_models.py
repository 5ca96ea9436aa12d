"""Tiny random causal LMs with the embedded model's tokenizer, for tests that need real weights fast."""
from __future__ import annotations

from pathlib import Path

# Small enough that a forward pass is instant; four heads and two KV heads keep grouped-query attention.
TINY_SIZE = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2}


def save_tiny_model(folder: Path, base_model_dir: Path, family: str = "llama",
                    size: dict | None = None) -> Path:
    """A random model (seed 0) at `size` saved with models/base's tokenizer and generation config.

    Args:
        folder: where to save it.
        base_model_dir: the embedded model (its tokenizer; its config too for the llama family).
        family: "llama" (models/base's own config, scaled down) or another transformers model type
            (e.g. "qwen2": that type's config at `size`, vocabulary and special tokens from the tokenizer).
        size: config values (default TINY_SIZE); head_dim follows from hidden size and heads.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    size = dict(size or TINY_SIZE)
    size["head_dim"] = size["hidden_size"] // size["num_attention_heads"]
    tokenizer = AutoTokenizer.from_pretrained(base_model_dir)
    if family == "llama":
        config = AutoConfig.from_pretrained(base_model_dir)
        config.update(size)
    else:
        config = AutoConfig.for_model(family, **size, vocab_size=len(tokenizer), tie_word_embeddings=True,
                                      bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                      pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    GenerationConfig.from_pretrained(base_model_dir).save_pretrained(folder)
    return Path(folder)
