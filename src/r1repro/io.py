"""Safe file output: nothing half-written is ever taken for a finished file.

Every result and checkpoint goes to a temporary name beside its target and is renamed into place only
once complete (a rename within one filesystem is atomic), so a crash, a full disk or an exception leaves
the previous good file or folder untouched.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator


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
