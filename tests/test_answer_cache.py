"""The greedy answer cache: the same model, prompt and decoding setup are answered once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1repro.answer_cache import AnswerCache
from r1repro.config import CommonParams
from r1repro.generation import Completion


class CountingGenerator:
    """Answers each prompt with its reversed text; remembers every prompt it was asked."""

    def __init__(self):
        self.asked: list[str] = []

    def generate(self, prompts, n, temperature, top_p, max_tokens, seed, stop=None, stop_policy=None):
        assert temperature == 0.0 and n == 1
        self.asked += prompts
        return [[Completion(p[::-1], len(p), "stop", i, 0)] for i, p in enumerate(prompts)]


@pytest.fixture
def model(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text('{"weights": 1}')
    return folder


def _cache(folder: Path, model: Path, common: CommonParams, max_tokens: int = 16) -> AnswerCache:
    return AnswerCache.for_model(folder, str(model), common, max_tokens=max_tokens)


def test_a_second_request_is_served_without_loading_the_model(tmp_path: Path, model: Path) -> None:
    common, gen = CommonParams(), CountingGenerator()
    first = _cache(tmp_path / "c", model, common).generate(["a", "bb", "a"], lambda: gen)
    assert gen.asked == ["a", "bb"]  # the repeated prompt is generated once
    assert [g[0].text for g in first] == ["a", "bb", "a"]
    assert [g[0].prompt_index for g in first] == [0, 1, 2]

    def refuse():
        raise AssertionError("the model was loaded although every answer was cached")

    later = _cache(tmp_path / "c", model, common)  # another stage, another process
    again = later.generate(["bb", "a"], refuse)
    assert [(g[0].text, g[0].num_tokens, g[0].finish_reason) for g in again] == [("bb", 2, "stop"), ("a", 1, "stop")]
    assert (later.hits, later.misses) == (2, 0)
    mixed = later.generate(["a", "ccc"], lambda: gen)
    assert gen.asked[-1:] == ["ccc"] and mixed[1][0].text == "ccc"
    assert (later.hits, later.misses) == (3, 1)


@pytest.mark.parametrize("change", ["weights", "budget", "dtype", "batch_size"])
def test_anything_that_decides_the_answer_misses_the_cache(tmp_path: Path, model: Path, change: str) -> None:
    common, gen = CommonParams(), CountingGenerator()
    _cache(tmp_path / "c", model, common).generate(["a"], lambda: gen)
    max_tokens = 16
    if change == "weights":
        (model / "config.json").write_text('{"weights": 2}')  # retrained at the same path
    elif change == "budget":
        max_tokens = 32
    elif change == "dtype":
        common = CommonParams(inference_dtype="bfloat16")
    else:
        common = CommonParams(generation_batch_size=7)
    _cache(tmp_path / "c", model, common, max_tokens).generate(["a"], lambda: gen)
    assert gen.asked == ["a", "a"]


def test_no_folder_keeps_nothing(tmp_path: Path, model: Path) -> None:
    gen = CountingGenerator()
    for _ in range(2):
        AnswerCache.for_model(None, str(model), CommonParams(), max_tokens=8).generate(["a"], lambda: gen)
    assert gen.asked == ["a", "a"]
    assert [p.name for p in tmp_path.rglob("*.json")] == ["config.json"]  # the model's own file only
