"""Bad input: each case stops with a message that names the key or file and the fix, a non-zero exit
from the command-line entry points, and the previous results left as they were.

Covered elsewhere, not repeated here:
- unknown params key: test_config.test_unknown_key_is_named, test_stage.test_bad_params_stop_before_any_work
- wrong type: test_config.test_bad_value_is_named, test_config.test_cli_check_exits_nonzero_before_work
- k > n: test_metrics (pass_at_k names k and n and says to draw at least k samples)
- temperature < 0: test_config.test_bad_value_is_named, test_negative_sampling_temperature_is_refused
- missing model folder, hub id with HF_HUB_OFFLINE=1 (loaders): test_modeling
- dataset file missing / empty / not JSON / rows lacking fields / not UTF-8 (loader): test_data;
  here, that each names the params key it was loaded for
- chat template missing on a tokenizer: test_templates.test_chat_template_missing_is_explained
- a failed atomic write (fsync): test_io.test_failed_write_keeps_old_file

Here: the same mistakes through the command-line entry points (`python -m r1repro.config check`,
`python -m r1repro.stage STAGE`, `python -m r1repro.model_import`) in scratch copies, a full disk in
the middle of writing, and `trust_remote_code` staying off unless params turn it on.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1repro import config, io, modeling
from r1repro.config import BenchmarkSubset, CommonParams, load_params
from r1repro.data import DataError, load_jsonl, load_subset
from r1repro.pipeline import PIPELINE

GOOD_METRICS = '{"good": 1}'


def _cli(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})


@pytest.fixture
def scratch(tmp_path: Path, repo_root: Path) -> Path:
    """params.yaml, dvc.yaml, the notebooks and earlier good results; nothing of the real checkout."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    shutil.copytree(repo_root / "notebooks", tmp_path / "notebooks")
    for folder in ("probe", "eval"):
        (tmp_path / "results" / folder).mkdir(parents=True)
        (tmp_path / "results" / folder / "metrics.json").write_text(GOOD_METRICS)
    return tmp_path


def _edit_params(root: Path, edit) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    edit(params)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _use_params(root: Path, edit) -> None:
    """Edit valid params and resolve them as dvc.yaml's params stage (which runs first) would, for
    tests that start a stage by hand."""
    _edit_params(root, edit)
    config.write_resolved(root)


def _results_untouched(root: Path) -> None:
    for folder in ("probe", "eval"):
        assert (root / "results" / folder / "metrics.json").read_text() == GOOD_METRICS
    assert not list((root / "results").glob(".*.tmp"))


# --- params, through the command-line entry points ------------------------------------------------

BAD_PARAMS = [
    # (what is wrong, edit, text the message must hold)
    ("unknown key", lambda p: p["probe"].update(temperture=0.5), "probe.temperture: unknown key"),
    ("wrong type", lambda p: p["probe"].update(k="four"), "probe.k"),
    ("negative temperature", lambda p: p["evaluate"]["sampling"].update(temperature=-0.5),
     "evaluate.sampling.temperature"),
    ("negative probe temperature", lambda p: p["probe"].update(temperatures=[0.0, -1.0]),
     "probe.temperatures: every temperature must be >= 0"),
    ("unknown template", lambda p: p["sft"].update(template="r2"), "unknown template 'r2'; valid:"),
    ("missing section", lambda p: p.pop("evaluate"), "evaluate: Field required"),
]


@pytest.mark.parametrize(("what", "edit", "expected"), BAD_PARAMS, ids=[case[0] for case in BAD_PARAMS])
def test_config_check_names_the_key(scratch: Path, what: str, edit, expected: str) -> None:
    _edit_params(scratch, edit)
    result = _cli(["r1repro.config", "check"], scratch)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "params.yaml" in result.stderr


@pytest.mark.parametrize(("what", "edit", "expected"), BAD_PARAMS[1:3], ids=[c[0] for c in BAD_PARAMS[1:3]])
def test_stage_stops_before_any_work(scratch: Path, what: str, edit, expected: str) -> None:
    _edit_params(scratch, edit)
    result = _cli(["r1repro.stage", "probe"], scratch)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr
    assert not (scratch / "results" / "failed").exists()  # the notebook never started
    _results_untouched(scratch)


def test_unreadable_params_file_is_named(scratch: Path) -> None:
    (scratch / "params.yaml").write_bytes(b"common: {seed: 1\n\xff\xfe")
    result = _cli(["r1repro.config", "check"], scratch)
    assert result.returncode == 2
    assert "params.yaml: not valid YAML" in result.stderr and "fix the syntax" in result.stderr


# --- models ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("pretrained", "expected"), [
    ("r1repro-tests/no-such-model", "HF_HUB_OFFLINE is set"),
    ("/nonexistent/r1repro-model", "does not exist; check the path"),
])
def test_model_import_names_the_model_and_the_fix(scratch: Path, tmp_path_factory, pretrained: str,
                                                  expected: str) -> None:
    _use_params(scratch, lambda p: p["model"].update(source="pretrained", pretrained=pretrained))
    good = scratch / "models" / "base"
    good.mkdir(parents=True)
    (good / "config.json").write_text('{"good": 1}')
    result = _cli(["r1repro.model_import"], scratch, HF_HOME=str(tmp_path_factory.mktemp("hf_home")))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "model.pretrained" in result.stderr and repr(pretrained) in result.stderr
    assert expected in result.stderr
    assert (good / "config.json").read_text() == '{"good": 1}'
    assert sorted(p.name for p in good.parent.iterdir()) == ["base"]


@pytest.mark.slow
def test_stage_with_a_missing_model_keeps_results(scratch: Path, data_dir: Path) -> None:
    _use_params(scratch, lambda p: p["probe"].update(models={"ghost": "models/ghost"}))
    shutil.copytree(data_dir, scratch / "data")
    result = _cli(["r1repro.stage", "probe"], scratch)
    assert result.returncode == 1
    assert "models/ghost" in result.stderr and "dvc repro import_model" in result.stderr
    _results_untouched(scratch)


# --- datasets ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_stage_with_a_missing_dataset_file_keeps_results(scratch: Path, data_dir: Path) -> None:
    _use_params(scratch, lambda p: p["probe"].update(questions={"file": "train/nope.jsonl", "limit": 2}))
    shutil.copytree(data_dir, scratch / "data")
    result = _cli(["r1repro.stage", "probe"], scratch)
    assert result.returncode == 1
    assert "probe.questions.file: data/train/nope.jsonl: dataset file not found" in result.stderr
    assert "python -m r1repro.data fetch" in result.stderr and "params.yaml" in result.stderr
    _results_untouched(scratch)


@pytest.mark.slow
def test_stage_with_rows_lacking_a_field_names_the_key(scratch: Path, data_dir: Path) -> None:
    """Through the rl notebook: the error says which params entry (rl.prompts) points at the bad file."""
    shutil.copytree(data_dir, scratch / "data")
    (scratch / "data" / "train" / "no_answers.jsonl").write_text('{"problem": "1 + 1?"}\n')
    _use_params(scratch, lambda p: p["rl"].update(prompts={"file": "train/no_answers.jsonl"}))
    result = _cli(["r1repro.stage", "rl"], scratch)
    assert result.returncode == 1
    assert ("rl.prompts.file: data/train/no_answers.jsonl:1: row lacks answer "
            "(fix: every row needs `problem` and `answer`)") in result.stderr, result.stderr[-3000:]
    _results_untouched(scratch)


def _subset_entries(params) -> dict[str, BenchmarkSubset]:
    """Every file-based dataset entry of the params, by dotted key (`evaluate.benchmarks.<name>` included).

    Entries that name a `hub` dataset (the GPU profile's MATH questions) are tested in test_hub_data.py.
    """
    entries = {}
    for stage in config.STAGES:
        for name, value in getattr(params, stage):
            found = value.items() if isinstance(value, dict) else [(None, value)]
            for label, subset in found:
                if isinstance(subset, BenchmarkSubset) and subset.file is not None:
                    entries[".".join(filter(None, [stage, name, label]))] = subset
    return entries


BAD_DATASETS = [
    # (what is wrong, file content or None for no file, what the message says after the key and path)
    ("missing", None, ": dataset file not found (fix: run `python -m r1repro.data fetch`, or correct "
                      "`{key}.file` in params.yaml)"),
    ("empty", b"", ": no rows; the file is empty (fix: fill it, or point `{key}.file` at another file)"),
    ("not JSON", b'{"problem": "1+1"\n', ":1: not valid JSON"),
    ("lacking fields", b'{"problem": "1+1"}\n', ":1: row lacks answer (fix: every row needs `problem` and "
                                                "`answer`)"),
]


@pytest.mark.parametrize(("what", "content", "expected"), BAD_DATASETS, ids=[case[0] for case in BAD_DATASETS])
def test_every_dataset_entry_is_named_in_data_errors(tmp_path: Path, repo_root: Path, what: str,
                                                     content: bytes | None, expected: str) -> None:
    entries = {}
    for profile in (None, "smoke", "gpu"):
        entries.update(_subset_entries(load_params(repo_root, profile=profile)))
    assert {key.split(".")[0] for key in entries} == set(config.STAGES)  # every dataset-using section
    for key, subset in entries.items():
        data_dir = tmp_path / key
        path = data_dir / subset.file
        if content is not None:
            path.parent.mkdir(parents=True)
            path.write_bytes(content)
        with pytest.raises(DataError) as err:
            load_subset(data_dir, subset, key=key)
        assert str(err.value).startswith(f"{key}.file: {path}{expected.format(key=key)}"), str(err.value)


@pytest.mark.parametrize("profile", [None, "smoke", "gpu"])
def test_every_dataset_entry_of_each_profile_selects_rows_of_the_real_data(repo_root: Path, data_dir: Path,
                                                                          profile: str | None) -> None:
    # Profiles merge into params.yaml, so an entry can inherit an offset meant for another file (the GPU
    # profile's MATH500 held-out once inherited ASDiv's offset 1500, past MATH500's 500 rows).
    for key, subset in _subset_entries(load_params(repo_root, profile=profile)).items():
        assert load_subset(data_dir, subset, key=key), f"{profile or 'params.yaml'}: {key} selects no rows"


def test_offset_past_the_end_names_the_offset_key(tmp_path: Path) -> None:
    (tmp_path / "rows.jsonl").write_text('{"problem": "1+1", "answer": "2"}\n')
    subset = BenchmarkSubset(file="rows.jsonl", limit=2, offset=5)
    with pytest.raises(DataError) as err:
        load_subset(tmp_path, subset, key="sft.heldout")
    assert str(err.value) == (f"sft.heldout.offset: {tmp_path / 'rows.jsonl'}: offset 5 is past its 1 rows "
                              "(fix: lower `sft.heldout.offset`)")


def _loader_calls(path: Path) -> list[str]:
    """The argument lists of `load_subset(...)` calls in a module or a notebook's code cells."""
    import json
    import re

    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        text = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    else:
        text = path.read_text()
    return re.findall(r"(?<!def )\bload_subset\(([^()]*)\)", text)


def test_every_stage_loads_its_datasets_under_their_params_key(repo_root: Path) -> None:
    """Each call passes `key=` naming the entry it loads: `cfg.prompts` in the rl stage is `rl.prompts`."""
    import re

    sources = {repo_root / "notebooks" / s.notebook: s.name for s in PIPELINE if s.notebook}
    sources[repo_root / "src" / "r1repro" / "rl.py"] = "rl"
    checked = 0
    for path, stage in sources.items():
        for args in _loader_calls(path):
            key = re.search(r"key=f?\"([^\"]+)\"", args)
            assert key, f"{path.name}: load_subset({args}) does not name its params key"
            field = re.search(r"\bcfg\.(\w+)", args)
            expected = f"{stage}.{field.group(1)}" if field else f"{stage}."
            assert key.group(1).startswith(expected), f"{path.name}: {key.group(1)!r} for {args!r}"
            checked += 1
    assert checked >= 10
    others = [p for p in (repo_root / "src" / "r1repro").glob("*.py") if p.name not in ("rl.py", "data.py")]
    assert not [p.name for p in others if _loader_calls(p)]  # a new caller must be added above


def test_offset_past_the_end_and_byte_order_mark(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"problem": "1+1", "answer": "2"}\n')  # a BOM, as some editors write
    assert load_jsonl(path) == [{"problem": "1+1", "answer": "2"}]
    with pytest.raises(DataError, match=r"offset 5 is past its 1 rows \(fix: lower the `offset:` entry\)"):
        load_jsonl(path, offset=5)


# --- a full disk ------------------------------------------------------------------------------------


class _FullDisk:
    """A file handle that takes `room` characters and then fails as a full disk does."""

    def __init__(self, handle, room: int) -> None:
        self._handle, self._room = handle, room

    def write(self, text: str) -> int:
        if len(text) > self._room:
            self._handle.write(text[: self._room])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._room -= len(text)
        return self._handle.write(text)

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return self._handle.__exit__(*exc)


@pytest.fixture
def full_disk(monkeypatch: pytest.MonkeyPatch):
    real_fdopen = os.fdopen
    monkeypatch.setattr(os, "fdopen", lambda *a, **k: _FullDisk(real_fdopen(*a, **k), room=10))


@pytest.mark.parametrize("writer", [
    lambda path: io.atomic_write_text(path, "new " * 100),
    lambda path: io.atomic_write_json(path, {"new": list(range(100))}),
    lambda path: io.write_jsonl(path, [{"new": i} for i in range(100)]),
], ids=["text", "json", "jsonl"])
def test_full_disk_keeps_the_previous_file(tmp_path: Path, full_disk, writer) -> None:
    target = tmp_path / "metrics.json"
    target.write_text(GOOD_METRICS)
    with pytest.raises(OSError) as err:
        writer(target)
    assert err.value.errno == errno.ENOSPC
    assert str(target) in str(err.value) and "previous file is unchanged" in str(err.value)
    assert target.read_text() == GOOD_METRICS
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # the temporary file is gone


def test_full_disk_while_resolving_the_params(scratch: Path, repo_root: Path, full_disk, capsys,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(scratch)
    resolved = scratch / config.RESOLVED_FILE
    resolved.parent.mkdir(parents=True, exist_ok=True)
    resolved.write_text("# the previous run's\n")
    before = (scratch / "params.yaml").read_bytes()
    assert config.main(["resolve"]) == 1
    message = capsys.readouterr().err
    assert "No space left on device" in message and config.RESOLVED_FILE in message
    assert (scratch / "params.yaml").read_bytes() == before
    assert resolved.read_text() == "# the previous run's\n"
    assert not list(resolved.parent.glob(".params.yaml.*"))


def test_full_disk_in_a_stage_keeps_the_previous_results(tmp_path: Path, full_disk) -> None:
    target = tmp_path / "results" / "probe"
    target.mkdir(parents=True)
    (target / "metrics.json").write_text(GOOD_METRICS)
    with pytest.raises(OSError):
        with io.staged_dir(target) as staging:
            io.atomic_write_json(staging / "metrics.json", {"new": list(range(100))})
    assert (target / "metrics.json").read_text() == GOOD_METRICS
    assert sorted(p.name for p in target.parent.iterdir()) == ["probe"]


# --- trust_remote_code ------------------------------------------------------------------------------


class _Seen(Exception):
    """Raised by the stub loaders once they have recorded their arguments."""


def test_trust_remote_code_is_off_unless_params_turn_it_on(tmp_path: Path, repo_root: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "config.json").write_text("{}")
    seen: list[bool] = []

    class Stub:
        @staticmethod
        def from_pretrained(source, **kwargs):
            seen.append(kwargs["trust_remote_code"])
            raise _Seen()

    monkeypatch.setattr("transformers.AutoModelForCausalLM", Stub)
    monkeypatch.setattr("transformers.AutoTokenizer", Stub)
    for loader in (modeling.load_model, modeling.load_tokenizer):
        with pytest.raises(_Seen):
            loader(str(tmp_path))  # no trust_remote_code argument: the default
    from r1repro import model_import

    params = load_params(repo_root).model.model_copy(update={"source": "pretrained", "pretrained": str(tmp_path)})
    with pytest.raises(_Seen):
        model_import.import_model(params, tmp_path / "root")
    assert seen == [False, False, False]
    assert CommonParams().trust_remote_code is False
    for profile in (None, "smoke", "gpu"):
        assert load_params(repo_root, profile=profile).common.trust_remote_code is False
    with pytest.raises(_Seen):
        modeling.load_model(str(tmp_path), trust_remote_code=True)
    assert seen[-1] is True  # turned on only when asked


def test_every_loader_call_passes_the_params_switch(repo_root: Path) -> None:
    """Outside modeling.py, every load_model / load_tokenizer call passes trust_remote_code on."""
    import re

    call = re.compile(r"(?<!def )\b(load_model|load_tokenizer)\((?:[^()]|\([^()]*\))*\)")
    found = 0
    for path in sorted((repo_root / "src" / "r1repro").glob("*.py")):
        if path.name == "modeling.py":
            continue
        for match in call.finditer(path.read_text()):
            found += 1
            assert "trust_remote_code" in match.group(), f"{path.name}: {match.group()!r}"
    assert found >= 5
