"""Safe file output: nothing half-written is ever taken for a finished file.

Every result and checkpoint goes to a temporary name beside its target and is renamed into place only
once complete (a rename within one filesystem is atomic), so a crash, a full disk or an exception leaves
the previous good file or folder untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


def atomic_write_text(path: Path | str, text: str) -> None:
    """Write `text` to `path` through a temporary file and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.filename is None:  # e.g. a full disk: say which file
            raise type(err)(err.errno, f"{err.strerror or err} (the previous file is unchanged; free "
                            "space or fix permissions, then rerun)", str(path)) from err
        raise


def _json_ready(value: Any) -> Any:
    """Replace NaN and infinities (not valid JSON) by None, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def atomic_write_json(path: Path | str, data: Any) -> None:
    """Write `data` as stable, sorted, indented JSON (so equal results are equal bytes)."""
    text = json.dumps(_json_ready(data), indent=2, sort_keys=True, ensure_ascii=False)
    atomic_write_text(path, text + "\n")


def write_jsonl(path: Path | str, rows: list[dict]) -> None:
    """Write rows as JSON lines, atomically."""
    lines = [json.dumps(_json_ready(row), sort_keys=True, ensure_ascii=False) for row in rows]
    atomic_write_text(path, "".join(line + "\n" for line in lines))


@contextlib.contextmanager
def staged_dir(target: Path | str) -> Iterator[Path]:
    """Yield an empty temporary folder beside `target`; on success it replaces `target`.

    On an exception the temporary folder is removed and `target` keeps its previous contents.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; results are meant to be shared
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, target)


def replace_dir(new: Path, target: Path) -> None:
    """Move folder `new` to `target`, replacing what was there with as short a gap as renames allow."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(new, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_json_or_none(path: Path | str) -> Any:
    """The JSON in `path`, or None when the file is missing or unreadable (a cache that must be rebuilt)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# Files whose bytes define a model's behaviour; tokenizer and generation files are small, so included.
_MODEL_FILE_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def weights_digest(model: str | Path) -> str:
    """An MD5 over a local model folder's weight, config and tokenizer files; a hub id is returned as is.

    Checkpoints and caches are keyed by it, so a retrained starting model (same path, new weights)
    is never mistaken for the one they were made from. Reading a 135M model's 540 MB takes ~1 s.

    Args:
        model: a local folder or a hub id.

    Returns:
        "md5:<hex>" for a folder, else `model` unchanged.
    """
    folder = Path(model)
    if not folder.is_dir():
        return str(model)
    digest = hashlib.md5()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in _MODEL_FILE_SUFFIXES):
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
    return "md5:" + digest.hexdigest()


def source_digest(*modules: str) -> str:
    """An MD5 over the source files of the named r1repro modules (e.g. "rl", "rewards").

    Training checkpoints record it: after a code change, DVC reruns the stage, and resuming a
    checkpoint made by the old code (a finished run would resume at its last step and train nothing)
    would present old results as new. A crash leaves the code unchanged, so resuming still works.
    """
    package = Path(__file__).parent
    digest = hashlib.md5()
    for name in sorted(modules):
        digest.update(name.encode() + b"\0" + (package / f"{name}.py").read_bytes())
    return "md5:" + digest.hexdigest()


def text_digest(items: Iterable[str]) -> str:
    """An MD5 over strings in order (e.g. the ids of the rows a run trains on)."""
    digest = hashlib.md5()
    for item in items:
        digest.update(item.encode() + b"\0")
    return "md5:" + digest.hexdigest()
