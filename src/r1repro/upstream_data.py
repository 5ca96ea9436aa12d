"""data/ rebuilt from its origin: the `datasets/` folder of sail-sg/understand-r1-zero at a pinned commit.

The JSONL files under data/ are a conversion of that public repository's Hugging Face `datasets`
folders (MIT license). Where it comes from is pinned in one place, `data.dvc`'s `meta.upstream`:

    meta:
      upstream: {url: https://github.com/sail-sg/understand-r1-zero, rev: <commit>, path: datasets,
                 license: LICENSE.txt}

`python -m r1repro.data fetch` uses this route when no DVC remote or mirror is at hand: DVC reads the
pinned commit of that git repository (no DVC is needed upstream), `convert` writes the files, and
data.py verifies them against data.dvc before they replace data/. The environment variable
`R1REPRO_DATA_UPSTREAM` names another copy of the repository (a fork, a local clone or mirror) that
holds the same commit, for machines without access to GitHub.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from r1repro.config import DataError

REQUIRED_FIELDS = ("problem", "answer")  # every question row, upstream and in data/ (r1repro.data)

URL_ENV = "R1REPRO_DATA_UPSTREAM"
# Each split is one Arrow file inside its `save_to_disk` folder.
ARROW_FILE = "data-00000-of-00001.arrow"
LICENSE_OUT = "LICENSE-understand-r1-zero.txt"
README_OUT = "README.md"
# data/README.md is this project's text (what the files are), not upstream's: shipped in this package.
README_RESOURCE = "data_readme.md"


@dataclass(frozen=True)
class Conversion:
    """One JSONL file of data/: the upstream split it comes from and how its rows are numbered."""

    out: str  # path under data/
    split: str  # folder under the pinned `path` holding ARROW_FILE
    prefix: str  # row ids are `<prefix>-<index>`, zero-padded to `width` digits
    width: int


CONVERSIONS = (
    Conversion("eval/aime24.jsonl", "evaluation_suite/aime", "aime24", 4),
    Conversion("eval/amc23.jsonl", "evaluation_suite/amc", "amc23", 4),
    Conversion("eval/math500.jsonl", "evaluation_suite/math", "math500", 4),
    Conversion("eval/minerva_math.jsonl", "evaluation_suite/minerva", "minerva_math", 4),
    Conversion("eval/olympiadbench.jsonl", "evaluation_suite/olympiad_bench", "olympiadbench", 4),
    Conversion("train/asdiv.jsonl", "train/asdiv_2k/train", "asdiv", 5),
    Conversion("train/gsm8k.jsonl", "train/gsm_8k/train", "gsm8k", 5),
)


@dataclass(frozen=True)
class Pin:
    """Where data/ comes from: a git repository `url`, a commit `rev`, the datasets folder `path` and
    the `license` file in it (both relative to the repository root)."""

    url: str
    rev: str
    path: str
    license: str

    @classmethod
    def from_meta(cls, entry: object, source: str) -> "Pin":
        """Read `meta.upstream` of data.dvc (`source` names the file in errors)."""
        fields = ("url", "rev", "path", "license")
        missing = [f for f in fields if not isinstance(entry, dict) or not isinstance(entry.get(f), str)]
        if missing:
            raise DataError(f"{source}: meta.upstream lacks {', '.join(missing)} (fix: restore it from "
                            f"git, e.g. `git checkout {Path(source).name}`; it needs {', '.join(fields)})")
        return cls(**{f: entry[f] for f in fields})

    def sources(self) -> list[str]:
        """The files the conversion reads, relative to the repository root."""
        return [f"{self.path}/{c.split}/{ARROW_FILE}" for c in CONVERSIONS] + [self.license]


def upstream_url(pin: Pin) -> str:
    """The repository to read: the override in URL_ENV (a fork, clone or mirror), else the pinned url."""
    return os.environ.get(URL_ENV) or pin.url


def download(pin: Pin, url: str, dest: Path) -> None:
    """Copy the pinned commit's source files from the git repository `url` into `dest` (same layout).

    This is `dvc get --rev <rev> <url> <file>` for each source file, through the `DVCFileSystem` that
    `dvc get` runs on, so that one clone serves them all. It reads only the files the conversion needs:
    `dvc get <url> datasets` would also copy the training sets this project does not use (orz_57k,
    math_12k, ...), and fail on a partial mirror that lacks them.
    """
    from dvc.api import DVCFileSystem
    from dvc.exceptions import DvcException
    from dvc.repo.open_repo import clean_repos

    if _is_local(url) and not Path(url).exists():
        raise DataError(f"{url}: not found")
    try:
        fs = DVCFileSystem(url, rev=pin.rev)
        for rel in pin.sources():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            fs.get_file(rel, str(dest / rel))
    except (DvcException, OSError) as err:
        raise DataError(f"{url} at commit {pin.rev}: {_reason(err)}") from err
    finally:
        clean_repos()  # DVC's temporary clones; its own CLI removes them the same way on exit


def _reason(err: BaseException) -> str:
    """What went wrong, in words: DVC's own message is often a bare "SCM error", the cause (an unknown
    commit, a failed clone, no network) sits further down the exception chain."""
    chain: list[BaseException] = []
    while err is not None and len(chain) < 20:
        chain.append(err)
        err = err.__cause__ or err.__context__
    messages = [str(e) for e in chain if str(e) and str(e) != "SCM error"]
    return ": ".join(dict.fromkeys([messages[0], messages[-1]])) if messages else type(chain[0]).__name__


def _is_local(url: str) -> bool:
    """A filesystem path rather than a URL (`https://...`) or an scp-like `git@host:owner/name`."""
    return "://" not in url and ":" not in url.split("/")[0]


def convert(source: Path, pin: Pin, dest: Path) -> None:
    """Write data/'s files into `dest` from the upstream files downloaded into `source`.

    Rows keep their upstream order; answers are written as `str()` of the upstream value, which is how
    data.dvc was recorded (AMC's float answers read `142.0`, Minerva's and OlympiadBench's lists
    `['...']`), so the output matches it byte for byte.
    """
    for conversion in CONVERSIONS:
        arrow = source / pin.path / conversion.split / ARROW_FILE
        text = jsonl_text(read_arrow_rows(arrow), conversion.prefix, conversion.width)
        (dest / conversion.out).parent.mkdir(parents=True, exist_ok=True)
        (dest / conversion.out).write_text(text, encoding="utf-8")
    shutil.copyfile(source / pin.license, dest / LICENSE_OUT)
    (dest / README_OUT).write_bytes(resources.files("r1repro").joinpath(README_RESOURCE).read_bytes())


def read_arrow_rows(path: Path) -> list[dict]:
    """The rows of a `datasets` Arrow file (an Arrow IPC stream), in order."""
    import pyarrow as pa
    import pyarrow.ipc

    try:
        with pa.OSFile(str(path)) as handle, pa.ipc.open_stream(handle) as reader:
            rows = reader.read_all().to_pylist()
    except (OSError, pa.ArrowInvalid) as err:
        raise DataError(f"{path}: not a readable Arrow stream ({err}); the upstream copy is incomplete "
                        f"or not the pinned commit (fix: check {URL_ENV} or the pin in data.dvc)") from err
    missing = [f for f in REQUIRED_FIELDS if rows and f not in rows[0]]
    if missing:
        raise DataError(f"{path}: rows lack {', '.join(missing)}; not the pinned upstream layout")
    return rows


def jsonl_text(rows: list[dict], prefix: str, width: int) -> str:
    """Rows as JSON lines `{id, problem, answer, difficulty?}`, non-ASCII kept, newline-terminated."""
    lines = []
    for index, row in enumerate(rows):
        record = {"id": f"{prefix}-{index:0{width}d}", "problem": row["problem"],
                  "answer": str(row["answer"])}
        if row.get("difficulty") is not None:
            record["difficulty"] = row["difficulty"]
        lines.append(json.dumps(record, ensure_ascii=False))
    return "".join(line + "\n" for line in lines)
