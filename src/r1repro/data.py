"""The benchmark and training data: fetch it, verify it against `data.dvc`, and read it.

`data/` is tracked by `data.dvc`, which pins its exact bytes: the DVC directory hash, and, under `meta`,
the md5 of every file (so an error can name the file that is missing or altered) and where the data
comes from (`meta.upstream`: a git repository, a commit, a folder in it).

    python -m r1repro.data fetch     # restore data/ in a fresh clone, then verify it
    python -m r1repro.data verify    # check data/ against data.dvc

`fetch` tries three routes, in order, and takes the first that works:

1. a DVC remote, if one is configured (`dvc pull`);
2. a mirror: the folder (or `hf://datasets/OWNER/NAME` Hugging Face dataset) in the `R1REPRO_DATA_MIRROR`
   environment variable, else `../shared/datasets` beside the checkout;
3. the upstream: the public repository sail-sg/understand-r1-zero at the commit `meta.upstream` pins,
   read with DVC and converted to JSONL (`r1repro.upstream_data`; `R1REPRO_DATA_UPSTREAM` names a fork
   or a local clone instead). This is the route a fresh clone from GitHub takes.

Whatever the route, the copy is verified against `data.dvc` before it replaces `data/`, so a bad copy
changes nothing; when every route fails, the error names each one, why it failed and how to supply it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import yaml

from r1repro import upstream_data
from r1repro.config import ConfigError, DataError, repo_root  # noqa: F401  (DataError: data.DataError)
from r1repro.io import staged_dir

DVC_FILE = "data.dvc"
DEFAULT_MIRROR = "../shared/datasets"
MIRROR_ENV = "R1REPRO_DATA_MIRROR"
UPSTREAM_ENV = upstream_data.URL_ENV
REQUIRED_FIELDS = upstream_data.REQUIRED_FIELDS


# ---------------------------------------------------------------------------------------------------
# Hashes: the same directory hash DVC computes, so data.dvc is the one record of the bytes.
# ---------------------------------------------------------------------------------------------------


def file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def folder_manifest(folder: Path) -> dict[str, str]:
    """relpath -> md5 of every file under `folder` (posix relpaths, hidden files skipped)."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not any(part.startswith(".") for part in rel.split("/")):
            manifest[rel] = file_md5(path)
    return manifest


def dvc_dir_hash(manifest: dict[str, str]) -> str:
    """DVC 3's hash of a directory: md5 of the sorted JSON listing of its files, plus '.dir'."""
    listing = [{"md5": md5, "relpath": rel} for rel, md5 in sorted(manifest.items())]
    return hashlib.md5(json.dumps(listing, sort_keys=True).encode()).hexdigest() + ".dir"


def _read_record(root: Path) -> dict:
    """data.dvc as a mapping (errors name the file)."""
    dvc_path = root / DVC_FILE
    if not dvc_path.is_file():
        raise DataError(f"{DVC_FILE} not found in {root}: the checkout is incomplete")
    try:
        record = yaml.safe_load(dvc_path.read_text())
    except yaml.YAMLError as err:
        raise DataError(f"{dvc_path}: not valid YAML ({err}); "
                        f"restore it with `git checkout {DVC_FILE}`") from err
    return record if isinstance(record, dict) else {}


def expected_manifest(root: Path) -> tuple[str, dict[str, str]]:
    """(directory hash, per-file md5s) recorded in data.dvc."""
    record = _read_record(root)
    try:
        dir_hash = record["outs"][0]["md5"]
        files = dict(record["meta"]["files"])
    except (KeyError, IndexError, TypeError) as err:
        raise DataError(f"{DVC_FILE}: expected outs[0].md5 and meta.files ({err}); "
                        "regenerate it with `python -m r1repro.data record`") from err
    if dvc_dir_hash(files) != dir_hash:
        raise DataError(f"{DVC_FILE}: meta.files does not match outs[0].md5; "
                        "regenerate it with `python -m r1repro.data record`")
    return dir_hash, files


def upstream_pin(root: Path) -> upstream_data.Pin:
    """The origin of data/ recorded in data.dvc's `meta.upstream`."""
    meta = _read_record(root).get("meta")
    return upstream_data.Pin.from_meta(meta.get("upstream") if isinstance(meta, dict) else None,
                                       str(root / DVC_FILE))


def _manifest_problems(folder: Path, expected: dict[str, str]) -> list[str]:
    """One line per file of `folder` that is missing, altered or unexpected against `expected`."""
    actual = folder_manifest(folder)
    problems = [f"  missing: {rel}" for rel in expected if rel not in actual]
    problems += [f"  altered: {rel} (md5 {actual[rel]}, expected {md5})"
                 for rel, md5 in expected.items() if rel in actual and actual[rel] != md5]
    problems += [f"  unexpected: {rel}" for rel in actual if rel not in expected]
    return problems


def verify_folder(folder: Path, root: Path) -> None:
    """Raise DataError naming every missing, altered or unexpected file in `folder`."""
    _, expected = expected_manifest(root)
    if not folder.is_dir():
        raise DataError(f"{folder}: not found; run `python -m r1repro.data fetch` (or `make data`)")
    problems = _manifest_problems(folder, expected)
    if problems:
        raise DataError(f"{folder} does not match {DVC_FILE}:\n" + "\n".join(problems) +
                        "\nRestore it with `python -m r1repro.data fetch --force`; if the change is "
                        "intended, re-record with `python -m r1repro.data record`.")


def _verify_staged(staged: Path, root: Path, source: str) -> None:
    """Check a fetched copy before it replaces data/; the error names the source and every bad file."""
    _, expected = expected_manifest(root)
    problems = _manifest_problems(staged, expected)
    if problems:
        raise DataError(f"{source} does not give the files {DVC_FILE} pins (data/ left as it was):\n" +
                        "\n".join(problems))


# ---------------------------------------------------------------------------------------------------
# Fetching: routes tried in order, each verified before it replaces data/
# ---------------------------------------------------------------------------------------------------


DVC = [sys.executable, "-m", "dvc"]  # this interpreter's dvc, whatever PATH holds


@dataclass(frozen=True)
class Route:
    """A way to restore data/: `restore(root)` fills data/ and says from where, or raises DataError
    saying why it cannot; `supply` tells the user how to make it available."""

    name: str
    restore: Callable[[Path], str]
    supply: str


def _dvc_remote_configured(root: Path) -> bool:
    if not (root / ".dvc").is_dir():
        return False
    result = subprocess.run([*DVC, "remote", "list"], cwd=root, capture_output=True, text=True)
    return result.returncode == 0 and bool(result.stdout.strip())


def _record_in_dvc_cache(root: Path) -> None:
    """Put the verified data/ into DVC's cache, so `dvc status` agrees it matches data.dvc.

    `dvc commit` leaves data.dvc byte-identical when the hash matches (checked by
    verify_folder just before); without it DVC would report data/ as "not in cache".
    """
    if not (root / ".dvc").is_dir():
        return
    result = subprocess.run([*DVC, "commit", "--force", "--quiet", DVC_FILE], cwd=root,
                            capture_output=True, text=True)
    if result.returncode != 0:
        print(f"warning: `dvc commit {DVC_FILE}` failed; `dvc status` will show data/ as not in "
              f"cache until it succeeds:\n{result.stderr.strip()}", file=sys.stderr)


def _from_dvc_remote(root: Path) -> str:
    """`dvc pull data.dvc` from the project's DVC remote."""
    if not _dvc_remote_configured(root):
        raise DataError("no DVC remote configured (`dvc remote list` is empty)")
    result = subprocess.run([*DVC, "pull", DVC_FILE], cwd=root, capture_output=True, text=True)
    if result.returncode != 0:
        raise DataError(f"`dvc pull {DVC_FILE}` failed (exit {result.returncode}): "
                        f"{result.stderr.strip()[-2000:]}")
    verify_folder(root / "data", root)
    return "dvc remote"


def _mirror_location(root: Path) -> str:
    return os.environ.get(MIRROR_ENV) or str((root / DEFAULT_MIRROR).resolve())


def _materialize_hf(spec: str, dest: Path) -> Path:
    """Download a dataset repository `hf://datasets/OWNER/NAME` (needs network)."""
    from huggingface_hub import snapshot_download

    repo_id = spec.removeprefix("hf://datasets/")
    try:
        return Path(snapshot_download(repo_id=repo_id, repo_type="dataset", local_dir=dest))
    except (OSError, ValueError) as err:  # offline, unknown repository, bad id
        raise DataError(f"{spec}: download failed ({err})") from err


def _copy_expected(source: Path, dest: Path, expected: dict[str, str]) -> None:
    for rel in expected:
        src = source / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest / rel)


def _from_mirror(root: Path) -> str:
    """Copy the files from a mirror folder or Hugging Face dataset into a staged data/."""
    mirror = _mirror_location(root)
    is_hub = mirror.startswith("hf://")
    if not is_hub and not Path(mirror).is_dir():
        raise DataError(f"{mirror}: not found")
    _, expected = expected_manifest(root)
    with staged_dir(root / "data") as tmp:
        source = _materialize_hf(mirror, tmp / ".hf") if is_hub else Path(mirror)
        _copy_expected(source, tmp, expected)
        shutil.rmtree(tmp / ".hf", ignore_errors=True)
        _verify_staged(tmp, root, f"mirror {mirror}")  # a bad copy raises here and data/ is left as it was
    return f"mirror {mirror}"


def _from_upstream(root: Path) -> str:
    """Read the pinned commit of the upstream repository with DVC and convert it into a staged data/."""
    pin = upstream_pin(root)
    url = upstream_data.upstream_url(pin)
    with tempfile.TemporaryDirectory(prefix="r1repro-upstream-") as download_dir:
        upstream_data.download(pin, url, Path(download_dir))
        with staged_dir(root / "data") as tmp:
            upstream_data.convert(Path(download_dir), pin, tmp)
            _verify_staged(tmp, root, f"{url} at commit {pin.rev}")
    return f"upstream {url} at {pin.rev}"


ROUTES = (
    Route("DVC remote", _from_dvc_remote,
          "configure one that holds data/ (`dvc remote add -d NAME URL`, then `dvc push` from a machine "
          "that has data/)"),
    Route("mirror", _from_mirror,
          f"set {MIRROR_ENV} to a folder holding data/'s files (or to hf://datasets/OWNER/NAME when "
          f"online), or put them in {DEFAULT_MIRROR} beside the checkout"),
    Route("upstream", _from_upstream,
          f"give network access to the repository at the commit pinned in {DVC_FILE} (meta.upstream), "
          f"or set {UPSTREAM_ENV} to a fork or local clone that holds that commit"),
)


def fetch(root: Path | None = None, force: bool = False) -> str:
    """Make `data/` match data.dvc; return where it came from. Leaves a good data/ alone.

    Tries each of ROUTES in order; one that is unavailable or fails gives way to the next (and is named
    on stderr if a later one works). Raises DataError naming every route, why it failed and how to
    supply it, when none works.
    """
    root = root or repo_root()
    target = root / "data"
    if target.exists() and not force:
        verify_folder(target, root)
        _record_in_dvc_cache(root)
        return "already present"
    expected_manifest(root)  # a broken data.dvc is one error, not one per route
    failures = []
    for number, route in enumerate(ROUTES, start=1):
        try:
            source = route.restore(root)
        except (DataError, OSError, subprocess.CalledProcessError) as err:
            failures.append(f"{number}. {route.name}: {err}\n   to use it: {route.supply}")
            continue
        for failure in failures:  # a route that failed before this one worked: say so, once
            print(f"data/: skipped {failure.splitlines()[0]}", file=sys.stderr)
        _record_in_dvc_cache(root)
        return source
    raise DataError("no source for data/; tried, in order:\n" + "\n".join(failures))


def record(root: Path | None = None) -> str:
    """Write data.dvc for the current data/ (an intended data change): dir hash + per-file md5s.

    Keeps `meta.upstream`, the pin of where the data comes from: re-recording changes the bytes, not
    the origin (edit the pin by hand when the data moves to another upstream commit).
    """
    root = root or repo_root()
    files = folder_manifest(root / "data")
    dir_hash = dvc_dir_hash(files)
    size = sum((root / "data" / rel).stat().st_size for rel in files)
    meta = _read_record(root).get("meta") if (root / DVC_FILE).is_file() else None
    upstream = meta.get("upstream") if isinstance(meta, dict) else None
    record_yaml = {
        "outs": [{"md5": dir_hash, "size": size, "nfiles": len(files), "hash": "md5", "path": "data"}],
        "meta": {**({"upstream": upstream} if upstream else {}), "files": files},
    }
    from r1repro.io import atomic_write_text

    atomic_write_text(root / DVC_FILE, yaml.safe_dump(record_yaml, sort_keys=False))
    return dir_hash


# ---------------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------------


class _Source:
    """Names a dataset in error messages: the params key it was loaded for (when known), then the file.

    A stage reads each file through a params entry such as `rl.prompts: {file, limit, offset}`;
    naming that key tells the reader which line of params.yaml to fix, not only which file is bad.
    """

    def __init__(self, path: Path, key: str | None) -> None:
        self.path, self.key = path, key

    def error(self, problem: str, fix: str, field: str = "file", line: int | None = None) -> DataError:
        """A DataError `<key>.<field>: <path>[:<line>]: <problem> (fix: <fix>)`."""
        where = f"{self.path}:{line}" if line else str(self.path)
        head = f"{self.key}.{field}: {where}" if self.key else where
        return DataError(f"{head}: {problem} (fix: {fix})")

    def entry(self, field: str = "file") -> str:
        """The params entry to edit, for the fix text."""
        return f"`{self.key}.{field}`" if self.key else f"the `{field}:` entry"


def load_jsonl(path: Path | str, limit: int | None = None, offset: int = 0, *,
               key: str | None = None) -> list[dict]:
    """Read a question file; every row must be a JSON object with `problem` and `answer`.

    Args:
        path: the JSONL file.
        limit: at most this many rows (None: all).
        offset: rows to skip first (to keep training and held-out splits disjoint).
        key: the params entry the file was named by (e.g. "rl.prompts"), named first in errors.

    Raises DataError naming the params key (when given), the file (and line) and the fix when the
    file is missing, empty, not UTF-8, not JSON, or has rows without the required fields.
    """
    source = _Source(Path(path), key)
    if not source.path.is_file():
        raise source.error("dataset file not found", "run `python -m r1repro.data fetch`, or correct "
                           f"{source.entry()} in params.yaml")
    try:
        text = source.path.read_text(encoding="utf-8-sig")  # a byte-order mark (some editors add one) is fine
    except UnicodeDecodeError as err:
        raise source.error(f"not UTF-8 text ({err})", "re-save the file as UTF-8") from err
    rows = []
    # split on newlines only: str.splitlines would also split inside strings at U+2028 and friends
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise source.error(f"not valid JSON ({err.msg})", "one JSON object per line",
                               line=number) from err
        missing = [f for f in REQUIRED_FIELDS if not isinstance(row, dict) or f not in row]
        if missing:
            raise source.error(f"row lacks {', '.join(missing)}", "every row needs `problem` and `answer`",
                               line=number)
        rows.append(row)
        if limit is not None and len(rows) >= offset + limit:
            break
    if not rows:
        raise source.error("no rows; the file is empty", f"fill it, or point {source.entry()} at another file")
    if offset >= len(rows):
        raise source.error(f"offset {offset} is past its {len(rows)} rows", f"lower {source.entry('offset')}",
                           field="offset")
    return rows[offset:]


def load_subset(data_dir: Path | str, subset, key: str | None = None) -> list[dict]:
    """The rows a params entry `{file | hub | synthetic, limit, offset}` selects (a file under
    `data_dir`, a dataset, or a generated task's pool).

    Args:
        data_dir: the data folder (params `common.data_dir`).
        subset: the entry (a `config.BenchmarkSubset`).
        key: its dotted params key (e.g. "rl.prompts"), so that errors say which entry to fix.

    Returns:
        The selected rows; for a `hub` entry a `hub_data.HubRows`, whose `skipped` counts the dataset's
        rows dropped before the window (no boxed answer), for the stage's protocol.
    """
    if subset.hub is not None:
        from r1repro.hub_data import HubRows, load_hub_questions

        try:
            rows = load_hub_questions(subset.hub, key=key)
        except DataError as err:
            raise DataError(f"{key}.{err}" if key else str(err)) from err
        window = _window(rows, subset.limit, subset.offset, f"{key}.offset" if key else subset.source)
        return HubRows(window, rows.skipped)
    if subset.synthetic is not None:
        from r1repro.synthetic_tasks import generate

        spec = subset.synthetic
        rows = generate(spec.task, spec.size, spec.seed)
        return _window(rows, subset.limit, subset.offset, f"{key}.offset" if key else subset.source)
    return load_jsonl(Path(data_dir) / subset.file, subset.limit, subset.offset, key=key)


def _window(rows: list[dict], limit: int | None, offset: int, source: str) -> list[dict]:
    """Rows offset .. offset + limit, with the same error as load_jsonl for an offset past the end."""
    if offset >= len(rows):
        raise DataError(f"{source}: offset {offset} is past its {len(rows)} rows; lower the `offset`")
    return rows[offset:offset + limit if limit is not None else None]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv[:1] == ["fetch"]:
            print(f"data/: ok ({fetch(force='--force' in argv)})")
        elif argv[:1] == ["verify"]:
            root = repo_root()
            verify_folder(root / "data", root)
            print("data/: matches data.dvc")
        elif argv[:1] == ["record"]:
            print(f"data.dvc: recorded {record()}")
        else:
            print("usage: python -m r1repro.data fetch [--force] | verify | record", file=sys.stderr)
            return 2
    except (ConfigError, subprocess.CalledProcessError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
