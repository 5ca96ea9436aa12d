"""data/ is pinned by data.dvc: restored with one command, verified file by file, read with clear errors."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from r1repro import data
from r1repro.data import DataError, load_jsonl


def _checkout_copy(repo_root: Path, tmp_path: Path) -> Path:
    """A minimal checkout (dvc.yaml + data.dvc) to fetch into."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("dvc.yaml", "data.dvc"):
        shutil.copy(repo_root / name, copy / name)
    return copy


def test_our_dir_hash_is_dvcs(repo_root: Path, data_dir: Path) -> None:
    expected_hash, files = data.expected_manifest(repo_root)
    assert data.dvc_dir_hash(data.folder_manifest(data_dir)) == expected_hash
    assert "eval/aime24.jsonl" in files and "LICENSE-understand-r1-zero.txt" in files


def test_dvc_itself_agrees(repo_root: Path) -> None:
    if not (repo_root / "data").is_dir():
        pytest.skip("data/ not restored in this checkout")
    result = subprocess.run(["dvc", "status", "data.dvc"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "changed" not in result.stdout and "deleted" not in result.stdout


def test_fetch_from_mirror_then_verify(repo_root: Path, data_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.setenv(data.MIRROR_ENV, str(data_dir))
    assert data.fetch(copy).startswith("mirror")
    data.verify_folder(copy / "data", copy)
    assert data.fetch(copy) == "already present"


def test_altered_and_missing_files_are_named(repo_root: Path, data_dir: Path, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.setenv(data.MIRROR_ENV, str(data_dir))
    data.fetch(copy)
    (copy / "data" / "eval" / "aime24.jsonl").write_text("{}\n")
    (copy / "data" / "train" / "asdiv.jsonl").unlink()
    with pytest.raises(DataError) as err:
        data.verify_folder(copy / "data", copy)
    assert "altered: eval/aime24.jsonl" in str(err.value)
    assert "missing: train/asdiv.jsonl" in str(err.value)


def test_bad_mirror_leaves_good_data(repo_root: Path, data_dir: Path, tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.setenv(data.MIRROR_ENV, str(data_dir))
    data.fetch(copy)
    bad_mirror = tmp_path / "bad"
    shutil.copytree(data_dir, bad_mirror)
    (bad_mirror / "eval" / "amc23.jsonl").write_text('{"problem": "x", "answer": "1"}\n')
    monkeypatch.setenv(data.MIRROR_ENV, str(bad_mirror))
    with pytest.raises(DataError, match="altered: eval/amc23.jsonl"):
        data.fetch(copy, force=True)
    data.verify_folder(copy / "data", copy)  # the good copy is untouched


def test_no_source_is_a_clear_error(repo_root: Path, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no source for data/"):
        data.fetch(copy)


def test_load_jsonl_reads_real_rows(data_dir: Path) -> None:
    rows = load_jsonl(data_dir / "eval" / "aime24.jsonl")
    assert len(rows) == 30 and rows[0]["answer"] == "204"
    assert len(load_jsonl(data_dir / "eval" / "math500.jsonl", limit=5)) == 5


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"", "empty"),
        (b'{"problem": "1+1"\n', "not valid JSON"),
        (b'{"problem": "1+1"}\n', "lacks answer"),
        (b'["problem", "answer"]\n', "lacks problem, answer"),
        (b'{"problem": "caf\xe9", "answer": "1"}\n', "not UTF-8"),
        (b"\n\n  \n", "no rows; the file is empty"),
        (b'"just a string"\n', "lacks problem, answer"),
        (b'{"answer": "1"}\n', "lacks problem"),
        (b'{"problem": "1+1", "answer": "2"}\n{"problem": \n', ":2: not valid JSON"),
        ('{"problem": "1+1", "answer": "2"}\n'.encode("utf-16"), "not UTF-8"),
        (b'{"problem": "1+1", "answer": "2"}\n\xc3\x28\n', "not UTF-8"),
    ],
)
def test_load_jsonl_bad_files(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=expected) as err:
        load_jsonl(path)
    assert "bad.jsonl" in str(err.value)


def test_load_jsonl_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_every_shipped_file_has_the_fields(data_dir: Path) -> None:
    for path in sorted(data_dir.rglob("*.jsonl")):
        rows = load_jsonl(path)
        assert all(isinstance(r["problem"], str) and r["problem"] for r in rows), path
        assert json.dumps(rows[0])  # plain JSON types only
