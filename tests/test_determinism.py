"""Determinism: the same params and seed give byte-identical results, and every result says how.

The probe and evaluate stages run twice each in a scratch copy on smoke params (evaluate on the base
model only, so no training is needed); metrics.json and the records must be equal bytes. Timings and
other run-specific facts belong in protocol.json, never in metrics.json. The committed results of the
training stages must record the seed and the library versions that made them.

Run: python -m pytest tests/test_determinism.py -q      (about 3-5 min on 2 cores; the last test: 1 s)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from repo_copy import make_copy, run

# Files each stage writes that must not change from one run to the next.
STAGE_FILES = {
    "probe": ("probe", ["metrics.json", "records_templates.jsonl", "records_exploration.jsonl",
                        "plots/answer_rate.csv", "plots/pass_at_k.csv"]),
    "evaluate": ("eval", ["metrics.json", "records.jsonl", "table.md", "plots/mean_at_k.csv"]),
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, data_dir: Path) -> Path:
    """A smoke copy whose evaluate stage reads only the base model (linked from this checkout)."""
    base = repo_root / "models" / "base"
    if not (base / "config.json").is_file():
        pytest.fail("models/base missing: run `make model` (dvc repro import_model)")
    overrides = {"evaluate": {"models": {"base": "models/base"}}}
    copy = make_copy(tmp_path_factory.mktemp("determinism") / "repo", repo_root, data_dir, overrides)
    (copy / "models").mkdir()
    (copy / "models" / "base").symlink_to(base, target_is_directory=True)  # read only
    return copy


def _run_twice(repo: Path, stage: str) -> list[dict[str, bytes]]:
    folder, names = STAGE_FILES[stage]
    outputs = []
    for _ in range(2):
        run([sys.executable, "-m", "r1repro.stage", stage], repo)
        out = repo / "results" / folder
        outputs.append({name: (out / name).read_bytes() for name in names})
        shutil.copytree(out, repo / "results" / f"{folder}-run{len(outputs)}")  # kept for debugging
    return outputs


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["probe", "evaluate"])
def test_same_seed_gives_identical_bytes(repo: Path, stage: str) -> None:
    first, second = _run_twice(repo, stage)
    for name in first:
        assert first[name], f"{stage}: {name} is empty"
        assert first[name] == second[name], f"{stage}: {name} differs between two runs with one seed"
    metrics = json.loads(first["metrics.json"])
    assert not _timing_keys(metrics), f"{stage}: timings in metrics.json (move them to protocol.json)"


def _timing_keys(value, prefix: str = "") -> list[str]:
    """Dotted keys that look like wall times or timestamps."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            lowered = str(key).lower()
            if lowered.endswith(("_s", "_sec", "_seconds", "time", "timestamp", "_at")) or "runtime" in lowered:
                found.append(name)
            found += _timing_keys(item, name)
    return found


@pytest.mark.parametrize("folder", ["probe", "sft", "rl", "distill", "eval"])
def test_committed_results_record_seed_and_versions(repo_root: Path, folder: str) -> None:
    protocol = json.loads((repo_root / "results" / folder / "protocol.json").read_text())
    assert isinstance(protocol["common"]["seed"], int)
    assert protocol["params"], f"{folder}: no stage params recorded"
    for library in ("python", "torch", "transformers", "trl", "math-verify", "r1repro"):
        assert protocol["libraries"].get(library), f"{folder}: no {library} version in protocol.json"
