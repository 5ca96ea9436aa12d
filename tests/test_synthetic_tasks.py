"""Generated question pools (r1repro.synthetic_tasks) and their params entries (`synthetic:` subsets)."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter

import pytest
import yaml

from r1repro import config, data, synthetic_tasks
from r1repro.config import BenchmarkSubset, ConfigError, validate
from r1repro.synthetic_tasks import generate

WORD_OPS = {"synthetic": {"task": "word_ops", "seed": 0, "size": 1800}}

# The operation each phrasing names, read back from the text by a pattern of its own.
PHRASINGS = [
    (re.compile(r"has (\d+) \w+\. \w+ gets (\d+) more \w+\. How many"), lambda a, b: a + b),
    (re.compile(r"has (\d+) \w+\. \w+ gives away (\d+) \w+\. How many"), lambda a, b: a - b),
    (re.compile(r"has (\d+) boxes with (\d+) \w+ in each box\. How many"), lambda a, b: a * b),
    (re.compile(r"shares (\d+) \w+ equally among (\d+) friends\. How many"), lambda a, b: a / b),
]


@pytest.fixture
def params_dict(repo_root) -> dict:
    return yaml.safe_load((repo_root / "params.yaml").read_text())


def _solve(problem: str) -> tuple[int, float]:
    """(which phrasing, the answer it implies) for one generated problem."""
    for index, (pattern, apply) in enumerate(PHRASINGS):
        found = pattern.search(problem)
        if found:
            return index, apply(int(found.group(1)), int(found.group(2)))
    raise AssertionError(f"no known phrasing in {problem!r}")


def test_the_same_seed_gives_the_same_pool_and_another_seed_another() -> None:
    assert generate("word_ops", 300, seed=0) == generate("word_ops", 300, seed=0)
    other = generate("word_ops", 300, seed=1)
    assert [r["problem"] for r in other] != [r["problem"] for r in generate("word_ops", 300, seed=0)]


def test_a_larger_pool_starts_with_the_smaller_one() -> None:
    """Row ranges are splits: growing `size` must not move the rows that training and checks used."""
    assert generate("word_ops", 2000, seed=0)[:1800] == generate("word_ops", 1800, seed=0)


def test_each_problem_is_distinct_and_its_answer_is_what_its_phrasing_says() -> None:
    rows = generate("word_ops", 1800, seed=0)
    assert len({r["problem"] for r in rows}) == len(rows) == 1800
    assert [r["id"] for r in rows[:3]] == ["word_ops-00000", "word_ops-00001", "word_ops-00002"]
    kinds = Counter()
    for row in rows:
        kind, answer = _solve(row["problem"])
        kinds[kind] += 1
        assert answer == int(answer) and answer > 0, row  # exact, positive: no fractions or negatives
        assert row["answer"] == str(int(answer)), row
    # all four operations, none rare: choosing the operation is what the task tests
    assert set(kinds) == {0, 1, 2, 3} and min(kinds.values()) > 0.2 * len(rows), kinds


def test_the_default_pool_is_the_one_the_settings_were_measured_on() -> None:
    """LOG.md (2026-12-04, the RL task) quotes a dev-row result on this exact pool; a generator change
    that alters it must be seen (and the measurement redone), not slip in."""
    rows = generate("word_ops", 1800, seed=0)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()
    assert rows[1200]["problem"] == "Kim shares 32 marbles equally among 4 friends. How many marbles does each friend get?"
    assert digest == "90b3ca8ce8ca486b128fd9faa6b67796e90d5f42db8624ccb38bfee6b3d7dcc5"


def test_unknown_task_and_unfillable_size_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match=r"unknown synthetic task 'countdown'; valid: word_ops"):
        generate("countdown", 10, seed=0)
    monkeypatch.setitem(synthetic_tasks.TASKS, "two_only", lambda rng: (f"q{rng.randint(0, 1)}", 1))
    with pytest.raises(ValueError, match=r"made only 2 distinct problems of the 5 asked; lower its `size`"):
        generate("two_only", 5, seed=0)


def test_a_synthetic_subset_loads_its_row_range(tmp_path) -> None:
    subset = BenchmarkSubset(**WORD_OPS, limit=5, offset=600)
    assert data.load_subset(tmp_path, subset, key="rl.heldout") == generate("word_ops", 1800, 0)[600:605]
    assert subset.source == "synthetic:word_ops"
    with pytest.raises(config.DataError, match=r"rl\.heldout\.offset: offset 1800 is past its 1800 rows"):
        data.load_subset(tmp_path, BenchmarkSubset(**WORD_OPS, offset=1800), key="rl.heldout")


def test_a_subset_names_exactly_one_source() -> None:
    with pytest.raises(ValueError, match="give exactly one of `file`"):
        BenchmarkSubset(file="train/asdiv.jsonl", **WORD_OPS)
    with pytest.raises(ValueError, match="give exactly one of `file`"):
        BenchmarkSubset(limit=3)
    with pytest.raises(ValueError, match=r"unknown synthetic task 'nope'; valid: word_ops"):
        BenchmarkSubset(synthetic={"task": "nope"})


def test_synthetic_subsets_clash_only_on_the_same_pool() -> None:
    train = BenchmarkSubset(**WORD_OPS, limit=600)
    assert train.shares_rows_with(BenchmarkSubset(**WORD_OPS, limit=5, offset=599))
    assert not train.shares_rows_with(BenchmarkSubset(**WORD_OPS, limit=5, offset=600))
    reseeded = {"synthetic": {**WORD_OPS["synthetic"], "seed": 1}}
    assert not train.shares_rows_with(BenchmarkSubset(**reseeded, limit=5))
    assert not train.shares_rows_with(BenchmarkSubset(file="train/asdiv.jsonl", limit=5))


def test_the_splits_divide_the_generated_pool_too(params_dict: dict) -> None:
    params_dict["rl"]["heldout"] = {**WORD_OPS, "limit": 256, "offset": 1200}   # dev rows of the pool
    with pytest.raises(ConfigError, match=r"rl\.heldout \(rows 1200-1455\) lies outside splits\.test "
                                          r"\(rows 600-1199\) of synthetic:word_ops"):
        validate(params_dict)
    params_dict["rl"]["heldout"] = {**WORD_OPS, "limit": 256, "offset": 600}
    params_dict["rl"]["prompts"] = {**WORD_OPS, "limit": 700}
    with pytest.raises(ConfigError, match=r"rl\.prompts \(rows 0-699\) lies outside splits\.train"):
        validate(params_dict)
    params_dict["rl"]["prompts"] = {**WORD_OPS, "limit": 601}
    params_dict["splits"]["tasks"] = []          # a pool the splits do not divide: only overlap is refused
    with pytest.raises(ConfigError, match=r"rl\.prompts \(rows 0-600\) and rl\.heldout \(rows 600-855\) share rows"):
        validate(params_dict)


def test_a_profile_subset_that_names_a_source_replaces_the_entry_whole() -> None:
    base = {"rl": {"prompts": {**WORD_OPS, "limit": 600}, "max_steps": 8}}
    swapped = config.deep_merge(base, {"rl": {"prompts": {"file": "train/asdiv.jsonl", "limit": 4}}})
    assert swapped["rl"]["prompts"] == {"file": "train/asdiv.jsonl", "limit": 4}
    assert swapped["rl"]["max_steps"] == 8
    narrowed = config.deep_merge(base, {"rl": {"prompts": {"limit": 4}}})
    assert narrowed["rl"]["prompts"] == {**WORD_OPS, "limit": 4}   # no source named: merged key by key


def test_every_profile_trains_rl_on_one_source(repo_root) -> None:
    for profile in (None, "smoke", "gpu", "gpu1"):
        params = config.load_params(repo_root, profile=profile)
        for subset in (params.rl.prompts, params.rl.heldout):
            assert sum(getattr(subset, k) is not None for k in config.SUBSET_SOURCES) == 1


def test_generator_draws_only_from_its_own_random_state() -> None:
    """The global random state (seeded by stages) must not change a pool."""
    random.seed(1)
    first = generate("word_ops", 50, seed=0)
    random.seed(2)
    assert generate("word_ops", 50, seed=0) == first
