"""Shared pieces of the benchmarks in bench/: a random model of a known architecture, a tokenizer
that maps words to ids one to one, the weights' bytes and peak memory. The decode memory model (bytes
per dtype, KV per token, the bandwidth roofline) is `r1repro.roofline`'s; JSON goes through
`r1repro.io.atomic_write_json`.

The benchmarks time rollouts (bench/rollout.py) and GRPO steps (bench/grpo_step.py) at the Dr. GRPO
paper's scale without fetching weights: speed depends on the architecture, not on what the weights
say. Two things follow from random weights, and both are handled here:

* EOS must never end a row early, or the runs would compare different amounts of work. The
  tokenizer's EOS id is one past the model's vocabulary, so the model cannot sample it: every row
  decodes exactly `new_tokens` tokens in every engine, without per-engine "ignore EOS" switches.
* Prompts are strings of words `t<id>` that the tokenizer maps to exactly those ids.

    from r1repro import bench
    arch = bench.architecture(tiny=True)
    tokenizer = bench.word_tokenizer(arch["vocab_size"])
    model = bench.random_model(arch, tokenizer, dtype="float32", device="cpu")
"""

from __future__ import annotations

import random
import resource
import sys
from pathlib import Path
from typing import Any

import torch

# Qwen2.5-Math-1.5B, the Dr. GRPO paper's model (its config.json): 1.54B parameters.
QWEN25_MATH_1_5B = {
    "hidden_size": 1536, "num_hidden_layers": 28, "num_attention_heads": 12, "num_key_value_heads": 2,
    "intermediate_size": 8960, "vocab_size": 151936, "tie_word_embeddings": True,
    "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
}
# The same shape of model at toy size, for CPU smoke runs and tests (head_dim 32, as vLLM's CPU
# attention supports).
TINY = {
    "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 256, "vocab_size": 512, "tie_word_embeddings": True,
    "max_position_embeddings": 4096, "rope_theta": 10000.0, "rms_norm_eps": 1e-6,
}
H200_BANDWIDTH_GBS = 4800.0  # HBM3e, NVIDIA's data sheet


def architecture(tiny: bool = False) -> dict[str, Any]:
    """The Qwen2 config values of the benchmarked model (a copy)."""
    return dict(TINY if tiny else QWEN25_MATH_1_5B)


def word_tokenizer(vocab_size: int) -> Any:
    """A fast tokenizer mapping the words `t2`..`t<vocab_size - 1>` to ids 2..vocab_size - 1.

    id 0 is the pad token, id 1 stands for any other word; EOS is id `vocab_size`, outside the
    model's vocabulary, so a model of that vocabulary never ends a row early (module docstring).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<unk>": 1, **{f"t{i}": i for i in range(2, vocab_size)}, "<eos>": vocab_size}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", eos_token="<eos>",
                                   unk_token="<unk>", padding_side="left")


def random_prompts(count: int, length: int, vocab_size: int, seed: int = 0) -> list[str]:
    """`count` prompts of exactly `length` random words of `word_tokenizer` (ids 2..vocab_size - 1)."""
    rng = random.Random(seed)
    return [" ".join(f"t{rng.randrange(2, vocab_size)}" for _ in range(length)) for _ in range(count)]


def random_model(arch: dict[str, Any], tokenizer: Any, *, dtype: str, device: str,
                 seed: int = 0) -> Any:
    """A randomly initialised Qwen2ForCausalLM of `arch`, in eval mode, on `device` in `dtype`.

    Built on the device directly: a 1.5B model initialised on the CPU first takes minutes.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    # EOS lives in the generation config only: the model config rejects an id outside the vocabulary.
    config = Qwen2Config(**arch, bos_token_id=None, eos_token_id=None, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(config).to(getattr(torch, dtype))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.bos_token_id = None
    return model.eval()


def save_random_model(folder: Path, arch: dict[str, Any], *, dtype: str, seed: int = 0,
                      tokenizer: Any = None) -> Path:
    """Write a random model of `arch` and its tokenizer to `folder` (for vLLM and TRL to load).

    With the default word tokenizer a second copy of it goes to `folder/tokenizer`: beside a
    qwen2 config.json, AutoTokenizer loads Qwen2Tokenizer, which cannot read a word-level
    tokenizer.json (every prompt becomes empty; its EOS id survives); alone in a folder it loads
    as saved. Point vLLM's `tokenizer=` there.

    Args:
        folder: created if missing.
        arch: the Qwen2 config values; vocab_size must cover the tokenizer.
        dtype: the weights' dtype.
        seed: initialisation seed.
        tokenizer: any tokenizer (default: `word_tokenizer(arch["vocab_size"])`).

    Returns:
        `folder`.
    """
    words = tokenizer is None
    tokenizer = word_tokenizer(arch["vocab_size"]) if words else tokenizer
    model = random_model(arch, tokenizer, dtype=dtype, device="cpu", seed=seed)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if words:
        tokenizer.save_pretrained(Path(folder) / "tokenizer")
    return Path(folder)


def weight_bytes(model: Any) -> int:
    """Bytes of the model's parameters (a tied embedding counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def reset_peak_memory(device: str) -> None:
    """Start a new peak-memory window (CUDA only; the CPU figure is the process's peak so far)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gb(device: str) -> dict[str, float]:
    """Peak memory since `reset_peak_memory`: torch's allocations on CUDA; the process RSS on CPU.

    On CUDA `device_used_gb` adds what the whole device holds now (other processes included, such
    as a vLLM engine core), since torch's counter sees only this process.
    """
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        free, total = torch.cuda.mem_get_info()
        return {"torch_peak_gb": torch.cuda.max_memory_allocated() / 1e9,
                "device_used_gb": (total - free) / 1e9}
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return {"process_peak_rss_gb": rss_kb * 1024 / 1e9}


def environment(device: str) -> dict[str, Any]:
    """What the numbers were measured on: device name, torch and library versions, argv."""
    from r1repro.runtime import hardware, library_versions

    return {"device": device, "hardware": hardware(), "libraries": library_versions(),
            "argv": sys.argv}
