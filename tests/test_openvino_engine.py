"""The openvino backend (r1repro.openvino_engine): the same greedy tokens as transformers in float32,
seeded samples that depend only on (seed, prompt, sample), stops as every backend keeps them, and a
conversion cache that converts once and never keeps a failed conversion, and other weights of a graph
already converted put into its constants (the same IR as the exporter's, without tracing again).

Runs on the embedded SmolLM2-135M (a random tiny model only repeats one token, which would make the
comparison empty), converted once with the exporter venv (`make venv-openvino`; `make test` sets
R1REPRO_OPENVINO_EXPORT_PYTHON), on the pipeline's own prompts: word_ops test questions under
r1_chat_1shot, whose 163 shared tokens are not a whole number of KV-cache blocks.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from r1repro import openvino_engine, synthetic_tasks
from r1repro.config import CommonParams, ConfigError
from r1repro.generation import load_generator
from r1repro.modeling import load_tokenizer
from r1repro.stops import StopPolicy
from r1repro.templates import render_prompt

pytestmark = pytest.mark.skipif(
    not (os.environ.get(openvino_engine.EXPORT_PYTHON_ENV)
         or (openvino_engine.DEFAULT_EXPORT_VENV / "bin" / "python").is_file()),
    reason="no OpenVINO exporter venv: run `make venv-openvino` (make test builds it)")

TEMPLATE = "r1_chat_1shot"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("openvino_cache")


@pytest.fixture(scope="module")
def engine(base_model_dir, cache_dir):
    with load_generator("openvino", str(base_model_dir), dtype="float32", device="cpu", batch_size=16,
                        cache_dir=cache_dir) as generator:
        yield generator


@pytest.fixture(scope="module")
def plain(base_model_dir):
    with load_generator("transformers", str(base_model_dir), dtype="float32", device="cpu", batch_size=8,
                        progress=False) as generator:
        yield generator


@pytest.fixture(scope="module")
def prompts(base_model_dir) -> list[str]:
    tokenizer = load_tokenizer(str(base_model_dir))
    rows = synthetic_tasks.generate("word_ops", 1800, 0)[600:606]  # the pipeline's test rows
    prompts = [render_prompt(TEMPLATE, row["problem"], tokenizer) for row in rows]
    shared = len(openvino_engine.shared_prefix(tokenizer(prompts)["input_ids"]))
    assert shared > openvino_engine.BLOCK_TOKENS and shared % openvino_engine.BLOCK_TOKENS, shared
    return prompts


def test_greedy_tokens_equal_transformers_in_float32(engine, plain, prompts):
    """Token for token, every row, twice (the second call finds its prompts in the prefix cache)."""
    expected = plain.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_tokens=32, seed=0)
    for _ in range(2):
        got = engine.generate(prompts, n=2, temperature=0.0, top_p=1.0, max_tokens=32, seed=0)
        assert [[(c.text, c.num_tokens, c.finish_reason, c.sample_index) for c in row] for row in got] == \
            [[(c.text, c.num_tokens, c.finish_reason, c.sample_index) for c in row] for row in expected]
    assert len({row[0].text for row in got}) == len(prompts)  # real, different answers
    assert {row[0].finish_reason for row in got} == {"stop", "length"}  # some end at EOS, some at the budget


def test_samples_are_seeded_by_prompt_and_sample(engine, prompts):
    """The same seed gives the same samples; a prompt's samples do not depend on n or the other prompts."""
    kwargs = dict(temperature=1.0, top_p=0.95, max_tokens=16)
    first = engine.generate(prompts, n=3, seed=11, **kwargs)
    again = engine.generate(prompts, n=3, seed=11, **kwargs)
    fewer = engine.generate(prompts[:2], n=2, seed=11, **kwargs)
    other = engine.generate(prompts, n=3, seed=12, **kwargs)
    texts = lambda rows: [[c.text for c in row] for row in rows]  # noqa: E731
    assert texts(first) == texts(again)
    assert texts(fewer) == [row[:2] for row in texts(first)[:2]]
    assert texts(other) != texts(first)
    assert len({c.text for row in first for c in row}) > len(prompts)  # samples differ within a prompt
    assert [[(c.prompt_index, c.sample_index) for c in row] for row in first] == \
        [[(i, j) for j in range(3)] for i in range(len(prompts))]


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_a_call_does_not_depend_on_the_engine_s_earlier_calls(base_model_dir, cache_dir, prompts, dtype):
    """An engine that answered other calls before samples and answers what a fresh one does.

    Its earlier calls filled the prefix cache with these prompts' blocks, computed in other batches. In
    bf16 such blocks round differently from blocks computed afresh: before each call started on an
    empty cache, 12 of 16 samples and 1 of 8 greedy answers differed on an AMD EPYC with avx512_bf16
    (LOG.md, 2026-12-07: OpenVINO's calls independent). On a CPU without native bf16 both precisions
    compute in float32, where this held before too.
    """
    def calls(engine, history: bool) -> list[list[str]]:
        if history:
            engine.generate(prompts[3:], n=1, temperature=0.0, top_p=1.0, max_tokens=16, seed=0)
            engine.generate(prompts, n=1, temperature=0.0, top_p=1.0, max_tokens=8, seed=0)
        sampled = engine.generate(prompts[:4], n=2, temperature=1.0, top_p=0.95, max_tokens=16, seed=5)
        greedy = engine.generate(prompts[2:], n=1, temperature=0.0, top_p=1.0, max_tokens=16, seed=0)
        return [[c.text for c in row] for row in sampled + greedy]

    outputs = []
    for history in (True, False):
        with load_generator("openvino", str(base_model_dir), dtype=dtype, device="cpu", batch_size=16,
                            cache_dir=cache_dir) as engine:
            outputs.append(calls(engine, history))
    assert outputs[0] == outputs[1]


def test_stops_follow_the_policy(engine, plain, prompts):
    """A kept stop string stays in the text, a stop id ends the row, and tokens count as transformers counts."""
    tokenizer = engine.tokenizer
    eos_only = StopPolicy(token_ids=(tokenizer.eos_token_id,))
    request = openvino_engine.token_tensor(tokenizer(prompts[0])["input_ids"])
    config = engine._config(24, eos_only, [], 0.0, 1.0, seed=0, prompt_index=0, sample_index=0)
    ids = list(engine.pipeline.generate([request], [config])[0].m_generation_ids[0])  # the row's own tokens
    stop_id = ids[5]
    word = tokenizer.decode(ids[8:10])
    for policy in (StopPolicy(token_ids=(tokenizer.eos_token_id, stop_id)),
                   StopPolicy(token_ids=(tokenizer.eos_token_id,), strings=(word,))):
        want = plain.generate(prompts[:2], n=1, temperature=0.0, top_p=1.0, max_tokens=24, seed=0,
                              stop_policy=policy)
        got = engine.generate(prompts[:2], n=1, temperature=0.0, top_p=1.0, max_tokens=24, seed=0,
                              stop_policy=policy)
        assert [(c.text, c.num_tokens, c.finish_reason) for (c,) in got] == \
            [(c.text, c.num_tokens, c.finish_reason) for (c,) in want]
        assert got[0][0].finish_reason == "stop" and got[0][0].num_tokens < 24
    assert got[0][0].text.endswith(word)


def test_conversion_is_cached_by_weights(engine, base_model_dir, tiny_model, cache_dir, monkeypatch, tmp_path):
    """An unchanged model is never converted again; changed weights are another model."""
    from r1repro.io import weights_digest

    record = json.loads((engine.folder / openvino_engine.DONE_FILE).read_text())
    assert engine.folder == cache_dir / weights_digest(base_model_dir).split(":")[1]
    assert record["weights"] == weights_digest(base_model_dir) and record["exporter"]["optimum-intel"]

    def no_exporter() -> str:
        raise AssertionError("converted again")

    monkeypatch.setattr(openvino_engine, "export_python", no_exporter)
    assert openvino_engine.converted_model(base_model_dir, cache_dir) == engine.folder
    changed = tmp_path / "changed"
    shutil.copytree(tiny_model, changed)
    config = json.loads((changed / "config.json").read_text())
    config["rms_norm_eps"] = config.get("rms_norm_eps", 1e-5) * 2
    (changed / "config.json").write_text(json.dumps(config))
    with pytest.raises(AssertionError, match="converted again"):
        openvino_engine.converted_model(changed, cache_dir)


@pytest.fixture(scope="module")
def perturbed_model(base_model_dir, tmp_path_factory) -> Path:
    """The base model with every weight changed a little: the same graph, other answers."""
    import torch
    from safetensors.torch import load_file, save_file

    folder = tmp_path_factory.mktemp("perturbed")
    for path in base_model_dir.iterdir():
        if path.is_file() and path.suffix != ".safetensors":
            shutil.copy(path, folder / path.name)
    generator = torch.Generator().manual_seed(0)
    weights = load_file(base_model_dir / "model.safetensors")
    save_file({name: (value.float() * (1 + 0.05 * torch.randn(value.shape, generator=generator))).contiguous()
               for name, value in weights.items()}, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def test_other_weights_go_into_the_converted_graph(engine, plain, prompts, perturbed_model, cache_dir,
                                                   monkeypatch):
    """A model of the base's graph is not traced again, and its IR generates its own answers, token for
    token those of transformers on its weights."""
    def no_exporter() -> str:
        raise AssertionError("traced again")

    monkeypatch.setattr(openvino_engine, "export_python", no_exporter)
    assert (engine.folder / openvino_engine.WEIGHT_MAP_FILE).is_file()
    with load_generator("openvino", str(perturbed_model), dtype="float32", device="cpu", batch_size=16,
                        cache_dir=cache_dir) as other, \
            load_generator("transformers", str(perturbed_model), dtype="float32", device="cpu", batch_size=8,
                           progress=False) as reference:
        record = json.loads((other.folder / openvino_engine.DONE_FILE).read_text())
        assert record["weights_put_into"] == engine.folder.name and other.folder != engine.folder
        kwargs = dict(n=1, temperature=0.0, top_p=1.0, max_tokens=24, seed=0)
        got = [c.text for (c,) in other.generate(prompts, **kwargs)]
        assert got == [c.text for (c,) in reference.generate(prompts, **kwargs)]
    assert got != [c.text for (c,) in plain.generate(prompts, **kwargs)]  # the weights did change


@pytest.mark.slow
def test_weights_put_into_a_graph_give_the_exporters_ir(engine, perturbed_model, cache_dir, tmp_path):
    """Byte for byte: the weights file written into the base's graph is the one the exporter writes."""
    put = openvino_engine.converted_model(perturbed_model, cache_dir)
    traced = openvino_engine.converted_model(perturbed_model, tmp_path / "fresh_cache")
    assert "weights_put_into" in json.loads((put / openvino_engine.DONE_FILE).read_text())
    assert "weights_put_into" not in json.loads((traced / openvino_engine.DONE_FILE).read_text())
    assert (put / "openvino_model.bin").read_bytes() == (traced / "openvino_model.bin").read_bytes()


def test_weight_map_matches_constants_to_tensors_one_to_one():
    import numpy as np

    rng = np.random.default_rng(0)
    tensors = {"a.weight": rng.standard_normal((4, 8), dtype=np.float32),
               "norm.weight": rng.standard_normal(8, dtype=np.float32)}
    constants = {"self.a.weight": tensors["a.weight"], "Constant_7": tensors["norm.weight"].reshape(1, 1, 8),
                 "Constant_9": np.ones(3, dtype=np.float32)}  # a small constant of the graph itself
    assert openvino_engine.weight_map(constants, tensors) == {"self.a.weight": "a.weight",
                                                              "Constant_7": "norm.weight"}
    twins = {**tensors, "b.weight": tensors["a.weight"].copy()}  # equal values: told apart by name only
    assert openvino_engine.weight_map({**constants, "self.b.weight": twins["b.weight"]}, twins) == \
        {"self.a.weight": "a.weight", "self.b.weight": "b.weight", "Constant_7": "norm.weight"}
    ones = {**tensors, "norm2.weight": tensors["norm.weight"].copy()}
    assert openvino_engine.weight_map({**constants, "Constant_8": ones["norm2.weight"]}, ones) is None
    assert openvino_engine.weight_map({"self.a.weight": tensors["a.weight"]}, tensors) is None  # norm lost
    folded = {**constants, "Constant_10": tensors["a.weight"].T.copy()}  # a weight in another form
    assert openvino_engine.weight_map(folded, tensors) is None


def test_graph_key_ignores_only_what_does_not_reach_the_graph(tiny_model, tmp_path):
    def variant(name: str, change) -> str:
        folder = tmp_path / name
        shutil.copytree(tiny_model, folder)
        change(folder)
        return openvino_engine.graph_key(folder)

    def set_config(**fields):
        def change(folder: Path) -> None:
            config = json.loads((folder / "config.json").read_text())
            (folder / "config.json").write_text(json.dumps({**config, **fields}))
        return change

    base = openvino_engine.graph_key(tiny_model)
    assert variant("neutral", set_config(use_cache=False, transformers_version="0")) == base
    assert variant("records", lambda f: (f / "r1repro_training.json").write_text("{}")) == base
    assert variant("eps", set_config(rms_norm_eps=0.5)) != base
    assert variant("tokenizer", lambda f: (f / "tokenizer_config.json").write_text("{}")) != base


def test_failed_conversion_keeps_nothing(tiny_model, tmp_path):
    """The exporter's failure is an error with its output; the cache holds no folder for the model."""
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    (broken / "config.json").write_text(json.dumps({"model_type": "no_such_architecture"}))
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="converting .* to OpenVINO IR failed"):
        openvino_engine.converted_model(broken, cache)
    assert list(cache.iterdir()) == []


def test_clear_errors(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv(openvino_engine.EXPORT_PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    with pytest.raises(ConfigError, match="make venv-openvino"):
        openvino_engine.converted_model(tiny_model, tmp_path / "cache")
    with pytest.raises(ConfigError, match="not one"):
        openvino_engine.converted_model("HuggingFaceTB/SmolLM2-135M-Instruct", tmp_path / "cache")
    with pytest.raises(ConfigError, match="model object"):
        load_generator("openvino", (object(), object()), device="cpu")
    with pytest.raises(ConfigError, match="inference_dtype"):
        openvino_engine.openvino_precision("int8")


def test_work_folders_of_killed_processes_are_removed(tmp_path):
    import subprocess
    import sys

    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True).stdout.strip()
    stale, live = tmp_path / f".rollouts-ab_1-{ended}", tmp_path / f".converting-0f-{os.getpid()}"
    kept = [live, tmp_path / "0123abcd", tmp_path / ".rollouts-no-pid"]
    for folder in (stale, *kept):
        folder.mkdir()
    openvino_engine.remove_stale_folders(tmp_path)
    assert not stale.exists() and all(folder.exists() for folder in kept)


def test_shared_prefix_and_whole_blocks():
    assert openvino_engine.shared_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == [1, 2]
    assert openvino_engine.shared_prefix([[7, 8]]) == [7, 8]
    assert openvino_engine.shared_prefix([]) == []
    block = openvino_engine.BLOCK_TOKENS
    assert openvino_engine.whole_blocks(list(range(2 * block + 5))) == tuple(range(2 * block))
    assert openvino_engine.whole_blocks(list(range(block - 1))) == ()


def test_answer_cache_key_names_the_engine(tiny_model):
    from r1repro.answer_cache import protocol_key

    ov = protocol_key(str(tiny_model), 16, None, CommonParams(backend="openvino", dtype="float32"))
    tf = protocol_key(str(tiny_model), 16, None, CommonParams(backend="transformers_fast", dtype="float32"))
    assert ov["backend"] == "openvino" and {"openvino", "openvino-genai"} <= set(ov["libraries"])
    assert "openvino" not in tf["libraries"]
