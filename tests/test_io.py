"""Atomic writes: a failure leaves the previous good file or folder as it was."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from r1repro.io import atomic_write_json, atomic_write_text, staged_dir


def test_atomic_write_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    atomic_write_json(target, {"b": 1, "a": math.nan})
    assert json.loads(target.read_text()) == {"a": None, "b": 1}
    assert target.read_text().index('"a"') < target.read_text().index('"b"')  # sorted keys
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_failed_write_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "m.txt"
    atomic_write_text(target, "good")

    def disk_full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("os.fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        atomic_write_text(target, "partial")
    assert target.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["m.txt"]


def test_staged_dir_swaps_only_on_success(tmp_path: Path) -> None:
    target = tmp_path / "results"
    with staged_dir(target) as tmp:
        (tmp / "metrics.json").write_text("1")
    assert (target / "metrics.json").read_text() == "1"
    with pytest.raises(RuntimeError):
        with staged_dir(target) as tmp:
            (tmp / "metrics.json").write_text("half")
            raise RuntimeError("stage crashed")
    assert (target / "metrics.json").read_text() == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]
