"""Question sets loaded through `datasets`: by hub id online, or from a local dataset folder or file.

The CPU default reads JSONL files pinned by `data.dvc`; the GPU profile trains on MATH levels 3-5,
which is not in that copy, so a params subset may name a dataset instead of a file:

    prompts: {hub: {id: DigitalLearningGmbH/MATH-lighteval, answer: solution, answer_in_boxed: true,
                    where: {level: [Level 3, Level 4, Level 5]}}}

Without network the id can be a local path: a folder saved with `Dataset.save_to_disk`, a folder of
parquet/JSON files, or one such file. Rows come out as `{id, problem, answer}` like the JSONL files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1repro import grading
from r1repro.config import DataError, HubQuestions

# `datasets` builders for a single local file, by suffix.
_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def _open(spec: HubQuestions) -> Any:
    """The dataset split named by `spec`, from a local path or the hub."""
    import datasets

    path = Path(spec.id)
    try:
        if path.is_dir() and any((path / name).is_file() for name in ("dataset_dict.json", "state.json")):
            loaded = datasets.load_from_disk(str(path))
            return loaded[spec.split] if isinstance(loaded, datasets.DatasetDict) else loaded
        if path.is_file():
            builder = _FILE_BUILDERS.get(path.suffix)
            if builder is None:
                raise DataError(f"hub.id: {path}: unknown file type; use .parquet, .json, .jsonl or .csv")
            return datasets.load_dataset(builder, data_files={spec.split: str(path)}, split=spec.split)
        return datasets.load_dataset(spec.id, spec.config, split=spec.split)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types: offline, missing split, bad config, ...
        raise DataError(f"hub.id: could not load {spec.id!r} (config {spec.config!r}, split {spec.split!r}): "
                        f"{type(err).__name__}: {err}. Offline, download it once elsewhere and give a "
                        "local path (a save_to_disk folder or a parquet/JSON file) as `id`") from err


def _answer(row: dict, spec: HubQuestions, number: int) -> str:
    value = row[spec.answer]
    if not spec.answer_in_boxed:
        return str(value)
    boxed = grading.extract_answer(str(value))
    if boxed is None:
        raise DataError(f"hub.id {spec.id}: row {number} has no \\boxed{{}} answer in column "
                        f"{spec.answer!r}; set answer_in_boxed: false or map `answer` to another column")
    return boxed


def load_hub_questions(spec: HubQuestions) -> list[dict]:
    """`{id, problem, answer}` rows of the dataset `spec` names, filtered by `spec.where`.

    Raises:
        DataError: the dataset cannot be loaded, lacks a named column, a kept row has no boxed answer,
            or no row is left; the message names the key to change.
    """
    table = _open(spec)
    missing = [c for c in (spec.problem, spec.answer, *spec.where) if c not in table.column_names]
    if missing:
        raise DataError(f"hub.id {spec.id}: no column {', '.join(map(repr, missing))} (columns: "
                        f"{', '.join(table.column_names)}); fix hub.problem / hub.answer / hub.where")
    rows = []
    for number, row in enumerate(table):
        if any(row[column] not in allowed for column, allowed in spec.where.items()):
            continue
        rows.append({"id": str(row.get("id", f"{Path(spec.id).name}-{spec.split}-{number:05d}")),
                     "problem": str(row[spec.problem]), "answer": _answer(row, spec, number)})
    if not rows:
        raise DataError(f"hub.id {spec.id}: no rows left after hub.where {spec.where}")
    return rows
