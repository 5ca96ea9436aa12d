"""data/ is pinned by data.dvc: restored with one command, verified file by file, read with clear errors.

The upstream route is tested offline against a local git repository standing in for
sail-sg/understand-r1-zero: Arrow files in its layout, made from the rows of the real data/.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc
import pytest
import yaml

from r1repro import data, upstream_data
from r1repro.data import DataError, load_jsonl

# A clone or mirror of the real upstream repository, if the person running the tests names one: then
# test_real_upstream_pin converts the pinned commit itself (read before the fixture below resets it).
REAL_UPSTREAM = os.environ.get(data.UPSTREAM_ENV)
# How upstream stores the answers the JSONL files hold as strings (str() of these gives them back).
UPSTREAM_ANSWER_TYPES = {"eval/amc23.jsonl": float, "eval/minerva_math.jsonl": ast.literal_eval,
                         "eval/olympiadbench.jsonl": ast.literal_eval}


@pytest.fixture(autouse=True)
def _offline_routes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test here reaches GitHub or ../shared/datasets unless it says so."""
    monkeypatch.setenv(data.UPSTREAM_ENV, str(tmp_path / "no-upstream"))
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "no-mirror"))


def _checkout_copy(repo_root: Path, tmp_path: Path, rev: str | None = None) -> Path:
    """A minimal checkout (dvc.yaml + data.dvc) to fetch into; `rev` replaces the upstream commit pin."""
    copy = tmp_path / "repo"
    copy.mkdir()
    for name in ("dvc.yaml", "data.dvc"):
        shutil.copy(repo_root / name, copy / name)
    if rev is not None:
        record = yaml.safe_load((copy / "data.dvc").read_text())
        record["meta"]["upstream"]["rev"] = rev
        (copy / "data.dvc").write_text(yaml.safe_dump(record, sort_keys=False))
    return copy


def _git(repo: Path, *args: str) -> str:
    result = subprocess.run(["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                            cwd=repo, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def _write_arrow(path: Path, rows: list[dict]) -> None:
    """Rows as a `datasets` Arrow file (an IPC stream), columns in first-seen order."""
    names = dict.fromkeys(name for row in rows for name in row)
    table = pa.table({name: [row.get(name) for row in rows] for name in names})
    path.parent.mkdir(parents=True, exist_ok=True)
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)


def _upstream_rows(jsonl: Path, out: str) -> list[dict]:
    """A JSONL file's rows as upstream holds them: no id, answers in upstream's type."""
    rows = []
    for row in load_jsonl(jsonl):
        answer = UPSTREAM_ANSWER_TYPES.get(out, str)(row["answer"])
        assert str(answer) == row["answer"], (out, row["id"])
        extra = {"difficulty": row["difficulty"]} if "difficulty" in row else {}
        rows.append({"problem": row["problem"], "answer": answer, **extra})
    return rows


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> tuple[Path, str, str]:
    """A git repository in upstream's layout: (path, good commit, a later commit with one row changed)."""
    repo = tmp_path_factory.mktemp("understand-r1-zero")
    _git(repo, "init", "-q")
    pin = upstream_data.Pin("unused", "unused", "datasets", "LICENSE.txt")
    for conversion in upstream_data.CONVERSIONS:
        rows = _upstream_rows(data_dir / conversion.out, conversion.out)
        _write_arrow(repo / pin.path / conversion.split / upstream_data.ARROW_FILE, rows)
    shutil.copy(data_dir / upstream_data.LICENSE_OUT, repo / pin.license)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "stand-in")
    good = _git(repo, "rev-parse", "HEAD")
    amc = next(c for c in upstream_data.CONVERSIONS if c.out == "eval/amc23.jsonl")
    rows = _upstream_rows(data_dir / amc.out, amc.out)
    rows[3]["problem"] += " (changed)"
    _write_arrow(repo / pin.path / amc.split / upstream_data.ARROW_FILE, rows)
    _git(repo, "commit", "-q", "-am", "one row changed")
    return repo, good, _git(repo, "rev-parse", "HEAD")


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


def test_dvc_remote_first_and_a_failing_one_gives_way(repo_root: Path, data_dir: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    (copy / ".dvc").mkdir()  # what `dvc init --no-scm` and `dvc remote add -d store DIR` write, minus 2 s
    (copy / ".dvc" / "config").write_text("[core]\n    no_scm = True\n    remote = store\n"
                                          f"['remote \"store\"']\n    url = {tmp_path / 'store'}\n")
    monkeypatch.setenv(data.MIRROR_ENV, str(data_dir))
    assert data.fetch(copy).startswith("mirror")  # the remote is empty: `dvc pull` fails, the mirror serves
    assert "skipped 1. DVC remote: `dvc pull data.dvc` failed" in capsys.readouterr().err
    subprocess.run([*data.DVC, "push", "-q", "data.dvc"], cwd=copy, check=True)
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "nowhere"))
    assert data.fetch(copy, force=True) == "dvc remote"
    data.verify_folder(copy / "data", copy)


def test_fetch_from_upstream_stand_in(repo_root: Path, tmp_path: Path, stand_in: tuple[Path, str, str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    repo, good, _ = stand_in
    copy = _checkout_copy(repo_root, tmp_path, rev=good)
    monkeypatch.setenv(data.UPSTREAM_ENV, str(repo))
    assert data.fetch(copy) == f"upstream {repo} at {good}"
    data.verify_folder(copy / "data", copy)
    assert not list(copy.glob(".data.*"))  # nothing staged is left behind


def test_bad_upstream_leaves_good_data(repo_root: Path, data_dir: Path, tmp_path: Path,
                                       stand_in: tuple[Path, str, str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _, changed = stand_in
    copy = _checkout_copy(repo_root, tmp_path, rev=changed)
    monkeypatch.setenv(data.MIRROR_ENV, str(data_dir))
    data.fetch(copy)
    monkeypatch.setenv(data.MIRROR_ENV, str(tmp_path / "nowhere"))
    monkeypatch.setenv(data.UPSTREAM_ENV, str(repo))
    with pytest.raises(DataError) as err:
        data.fetch(copy, force=True)
    assert f"{repo} at commit {changed} does not give the files" in str(err.value)
    assert "altered: eval/amc23.jsonl" in str(err.value) and "aime24" not in str(err.value)
    data.verify_folder(copy / "data", copy)  # the good copy is untouched


def test_upstream_commit_missing_is_named(repo_root: Path, tmp_path: Path, stand_in: tuple[Path, str, str],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    repo, _, _ = stand_in
    copy = _checkout_copy(repo_root, tmp_path)  # the real pin: a commit the stand-in lacks
    monkeypatch.setenv(data.UPSTREAM_ENV, str(repo))
    rev = data.upstream_pin(copy).rev
    with pytest.raises(DataError, match=f"3. upstream: {repo} at commit {rev}"):
        data.fetch(copy)
    assert not (copy / "data").exists()


def test_no_route_names_every_route(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.chdir(copy)
    assert data.main(["fetch"]) == 2
    message = capsys.readouterr().err
    assert "error: no source for data/; tried, in order:" in message
    assert "1. DVC remote: no DVC remote configured" in message and "dvc remote add -d" in message
    assert f"2. mirror: {tmp_path / 'no-mirror'}: not found" in message and data.MIRROR_ENV in message
    assert f"3. upstream: {tmp_path / 'no-upstream'}: not found" in message and data.UPSTREAM_ENV in message
    assert message.count("to use it:") == 3


@pytest.mark.skipif(not REAL_UPSTREAM, reason=f"set {data.UPSTREAM_ENV} to a clone of the upstream "
                    "repository to convert the pinned commit itself")
def test_real_upstream_pin(repo_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.setenv(data.UPSTREAM_ENV, REAL_UPSTREAM)
    assert data.fetch(copy).startswith("upstream")
    data.verify_folder(copy / "data", copy)


def test_record_keeps_the_upstream_pin(repo_root: Path, data_dir: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    monkeypatch.setenv(data.MIRROR_ENV, str(data_dir))
    data.fetch(copy)
    data.record(copy)
    assert (copy / "data.dvc").read_text() == (repo_root / "data.dvc").read_text()
    assert data.upstream_pin(copy).url == "https://github.com/sail-sg/understand-r1-zero"


def test_shipped_readme_is_the_pinned_one(repo_root: Path) -> None:
    _, files = data.expected_manifest(repo_root)
    readme = resources.files("r1repro").joinpath(upstream_data.README_RESOURCE).read_bytes()
    assert hashlib.md5(readme).hexdigest() == files[upstream_data.README_OUT]


def test_jsonl_text_is_the_recorded_format() -> None:
    rows = [{"problem": "Café?", "answer": 142.0, "difficulty": 2.0}, {"problem": "x", "answer": ["7"]},
            {"problem": "y", "answer": "3", "difficulty": None}]
    assert upstream_data.jsonl_text(rows, "amc23", 4) == (
        '{"id": "amc23-0000", "problem": "Café?", "answer": "142.0", "difficulty": 2.0}\n'
        '{"id": "amc23-0001", "problem": "x", "answer": "[\'7\']"}\n'
        '{"id": "amc23-0002", "problem": "y", "answer": "3"}\n')


def test_bad_pin_names_data_dvc(repo_root: Path, tmp_path: Path) -> None:
    copy = _checkout_copy(repo_root, tmp_path)
    record = yaml.safe_load((copy / "data.dvc").read_text())
    del record["meta"]["upstream"]["rev"]
    (copy / "data.dvc").write_text(yaml.safe_dump(record, sort_keys=False))
    with pytest.raises(DataError, match=r"data.dvc: meta.upstream lacks rev"):
        data.upstream_pin(copy)


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
