"""Question sets loaded through `datasets`: by hub id online, or from a local dataset folder or file.

The CPU default reads JSONL files pinned by `data.dvc`; the GPU profile trains on MATH levels 3-5,
which is not in that copy, so a params subset may name a dataset instead of a file:

    prompts: {hub: {id: DigitalLearningGmbH/MATH-lighteval, answer: solution, answer_in_boxed: true,
                    where: {level: [Level 3, Level 4, Level 5]}}}

Without network the id can be a local path: a folder saved with `Dataset.save_to_disk` (a DatasetDict's
folder is read by `split`), a folder of parquet/JSON files, or one such file. The Dr. GRPO paper's own
MATH level 3-5 set is such a folder (`datasets/train/math_lvl3to5_8k` in sail-sg/understand-r1-zero,
splits train and eval, a bare final answer in `answer`):

    prompts: {hub: {id: /path/to/math_lvl3to5_8k, split: train, problem: problem, answer: answer}}

Rows come out as `{id, problem, answer}` like the JSONL files. With `answer_in_boxed`, a row whose
solution has no `\\boxed{}` answer cannot be graded: it is skipped, counted in the returned rows'
`skipped` (for the stage's protocol) and named in a warning, instead of stopping a run mid-way.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from r1repro import grading
from r1repro.config import DataError, HubQuestions
from r1repro.modeling import looks_local

# `datasets` builders for a single local file, by suffix.
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}
# The reason a row without a boxed answer is dropped, as `HubRows.skipped` and the protocol record it.
NO_BOXED_ANSWER = "no_boxed_answer"
log = logging.getLogger(__name__)


class HubRows(list):
    """The `{id, problem, answer}` rows of a dataset (a plain list to every caller), and `skipped`:
    the rows dropped before any training, by reason, e.g.
    `{"no_boxed_answer": {"rows": 3, "example": "math-train-00042"}}`, for the stage's protocol."""

    def __init__(self, rows: Any = (), skipped: dict[str, dict] | None = None) -> None:
        super().__init__(rows)
        self.skipped = dict(skipped or {})


def _open_saved(path: Path, spec: HubQuestions) -> Any:
    """A `save_to_disk` folder: a Dataset, or the `spec.split` of a DatasetDict (the paper's files)."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if not isinstance(loaded, datasets.DatasetDict):
        return loaded
    if spec.split not in loaded:
        raise DataError(f"hub.split: {path} has no split {spec.split!r} (splits: {', '.join(loaded)}); "
                        "set hub.split to one of them")
    return loaded[spec.split]


def _open(spec: HubQuestions) -> Any:
    """The dataset split named by `spec`, from a local path or the hub."""
    import datasets

    path = Path(spec.id).expanduser()
    if looks_local(spec.id) and not path.exists():
        raise DataError(f"hub.id: {spec.id!r} looks like a local path, but {path.resolve()} does not exist; "
                        "fix the path, or give a hub id (owner/name)")
    try:
        if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
            return _open_saved(path, spec)
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise DataError(f"hub.id: {path}: unknown file type; use .parquet, .json, .jsonl or .csv")
            return datasets.load_dataset(builder, data_files={spec.split: str(path)}, split=spec.split)
        return datasets.load_dataset(str(path) if path.is_dir() else spec.id, spec.config, split=spec.split)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types: offline, missing split, bad config, ...
        raise DataError(f"hub.id: could not load {spec.id!r} (config {spec.config!r}, split {spec.split!r}): "
                        f"{type(err).__name__}: {err}. Offline, download it once elsewhere and give a "
                        "local path (a save_to_disk folder or a parquet/JSON file) as `id`") from err


def _answer(row: dict, spec: HubQuestions) -> str | None:
    """The row's answer; None where `answer_in_boxed` finds no `\\boxed{}` in the solution."""
    value = row[spec.answer]
    if not spec.answer_in_boxed:
        return str(value)
    return grading.extract_answer(str(value)) or None


def load_hub_questions(spec: HubQuestions, key: str | None = None) -> HubRows:
    """`{id, problem, answer}` rows of the dataset `spec` names, filtered by `spec.where`.

    Rows kept by `where` whose solution has no `\\boxed{}` answer (with `answer_in_boxed`) are skipped:
    a warning gives their count and one id, and the result's `skipped` records both.

    Args:
        spec: the subset's `hub` entry.
        key: its params key (e.g. "rl.prompts"), for the warning.

    Returns:
        The rows (a `HubRows`: a list with `skipped`).

    Raises:
        DataError: the dataset cannot be loaded, lacks a named column, or no row is left; the message
            names the key to change.
    """
    table = _open(spec)
    missing = [c for c in (spec.problem, spec.answer, *spec.where) if c not in table.column_names]
    if missing:
        raise DataError(f"hub.id {spec.id}: no column {', '.join(map(repr, missing))} (columns: "
                        f"{', '.join(table.column_names)}); fix hub.problem / hub.answer / hub.where")
    rows, unboxed = [], []
    for number, row in enumerate(table):
        if any(row[column] not in allowed for column, allowed in spec.where.items()):
            continue
        row_id = str(row.get("id", f"{Path(spec.id).name}-{spec.split}-{number:05d}"))
        answer = _answer(row, spec)
        if answer is None:
            unboxed.append(row_id)
            continue
        rows.append({"id": row_id, "problem": str(row[spec.problem]), "answer": answer})
    no_boxed = (f"; {len(unboxed)} rows had no \\boxed{{}} answer in column {spec.answer!r} (set "
                "answer_in_boxed: false or map `answer` to another column)" if unboxed else "")
    if not rows:
        raise DataError(f"hub.id {spec.id}: no rows left after hub.where {spec.where}{no_boxed}")
    skipped = {}
    if unboxed:
        skipped[NO_BOXED_ANSWER] = {"rows": len(unboxed), "example": unboxed[0]}
        log.warning("%shub.id %s: skipped %d of %d rows with no \\boxed{} answer in column %r (e.g. %s); "
                    "they cannot be graded", f"{key}." if key else "", spec.id, len(unboxed),
                    len(rows) + len(unboxed), spec.answer, unboxed[0])
    return HubRows(rows, skipped)
