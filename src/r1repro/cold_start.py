"""Cold-start examples for stage 2: short, checked reasoning in DeepSeek-R1's readable format.

DeepSeek-R1 (Sec. 2.3.1) fine-tunes the base model on a few thousand long chain-of-thought examples
before RL, written in a readable pattern: the reasoning, then a summary, inside the R1 tags. Two
sources, both built only from training questions, chosen by params `sft.source`:

* "worked" (the CPU default): checked worked solutions from a solver for arithmetic word problems
  (`r1repro.worked_solutions`).
* "teacher": R1's own recipe, a teacher answering with a few-shot prompt of long-CoT demonstrations,
  only correct, well formed, one-language, complete and new responses kept
  (`r1repro.rejection_sampling`).

This module is the stage's entry point: `build_from_params` makes the examples the params ask for,
`check_no_overlap` refuses training questions that appear (after text normalization) in any
benchmark under data/eval or in a held-out slice, and `to_sft_dataset` (`r1repro.sft_examples`)
turns examples into TRL's prompt/completion dataset.

    rows = data.load_jsonl("data/train/asdiv.jsonl", limit=1500)
    check_no_overlap(rows, "data", heldout_rows=heldout)
    examples, stats = build_from_params(rows, cfg, common, tokenizer)    # cfg: the `sft` section
    dataset = to_sft_dataset(examples, "r1_chat", tokenizer)
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1repro.data import DataError, load_jsonl
from r1repro.rejection_sampling import RejectionFilter, rejection_sample
# Re-exported: the sft notebook calls cold_start.to_sft_dataset.
from r1repro.sft_examples import ColdStartExample, to_sft_dataset  # noqa: F401
from r1repro.worked_solutions import build_worked_examples


# ---------------------------------------------------------------------------------------------------
# Never from evaluation questions
# ---------------------------------------------------------------------------------------------------


class ContaminationError(DataError):
    """Training questions that also appear in an evaluation set."""


def normalize_question(text: str) -> str:
    """Text for overlap checks: Unicode-normalized, lowercased, punctuation and spacing removed."""
    text = unicodedata.normalize("NFKC", str(text)).lower()
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


@dataclass
class _Overlap:
    source: str
    hits: list[tuple[str, str]] = field(default_factory=list)  # (train id, eval id)


def _overlaps(train: dict[str, str], source: str, rows: Sequence[dict]) -> _Overlap:
    found = _Overlap(source)
    for row in rows:
        key = normalize_question(row["problem"])
        if key in train:
            found.hits.append((train[key], str(row.get("id", "?"))))
    return found


def check_no_overlap(train_rows: Sequence[dict], data_dir: Path | str,
                     heldout_rows: Sequence[dict] = ()) -> int:
    """Refuse training questions that appear in any benchmark file under `data_dir/eval` or the held-out rows.

    Args:
        train_rows: the questions examples will be made from.
        data_dir: the data folder (params `common.data_dir`); every `eval/*.jsonl` in it is read.
        heldout_rows: rows held out for this stage's own evaluation.

    Returns:
        How many evaluation questions were compared.

    Raises:
        ContaminationError: naming each file with overlapping questions and a few of their ids.
        DataError: no benchmark files were found (a check of nothing would pass silently).
    """
    train = {normalize_question(r["problem"]): str(r.get("id", "?")) for r in train_rows}
    files = sorted((Path(data_dir) / "eval").glob("*.jsonl"))
    if not files:
        raise DataError(f"{Path(data_dir) / 'eval'}: no benchmark files to check training questions against")
    sources = [(f.name, load_jsonl(f)) for f in files] + [("held-out rows", list(heldout_rows))]
    found = [_overlaps(train, name, rows) for name, rows in sources]
    bad = [o for o in found if o.hits]
    if bad:
        lines = [f"  {o.source}: {len(o.hits)} shared, e.g. " +
                 ", ".join(f"{t} = {e}" for t, e in o.hits[:5]) for o in bad]
        raise ContaminationError("training questions overlap evaluation questions:\n" + "\n".join(lines) +
                                 "\nChoose training rows (file, limit, offset) disjoint from them.")
    return sum(len(rows) for _, rows in sources)


# ---------------------------------------------------------------------------------------------------
# The stage's examples
# ---------------------------------------------------------------------------------------------------


def build_from_params(rows: Sequence[dict], cfg: Any, common: Any, tokenizer: Any) -> tuple[list[ColdStartExample], Any]:
    """Cold-start examples as params.yaml's `sft` section asks: worked solutions or a teacher's.

    Args:
        rows: training question rows (already checked with `check_no_overlap`).
        cfg: the validated `sft` section (source, train_examples, teacher, teacher_sampling, ...).
        common: the validated `common` section (seed, backend, grading settings).
        tokenizer: the student's tokenizer; worked answers longer than the stage's generation
            budget are dropped, so the model never learns an answer it could not finish.

    Returns:
        (examples, stats): `WorkedStats` or `RejectionStats`.
    """
    budget = cfg.eval_sampling.max_new_tokens
    if cfg.source == "worked":
        return build_worked_examples(rows, count=cfg.train_examples, seed=common.seed,
                                     tokenizer=tokenizer, max_tokens=budget)
    from r1repro import generation, modeling
    from r1repro.stops import stop_policy_for

    demos, _ = build_worked_examples(rows, count=cfg.few_shot, seed=common.seed)
    teacher_tokenizer = modeling.load_tokenizer(cfg.teacher, trust_remote_code=common.trust_remote_code)
    s = cfg.teacher_sampling
    rule = RejectionFilter.from_params(cfg.min_language, common)
    with generation.generator_for(common, cfg.teacher) as teacher:  # released before SFT trains
        examples, stats = rejection_sample(
            teacher, rows, cfg.template, teacher_tokenizer,
            demos=demos, n=s.n, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_new_tokens,
            seed=common.seed, rule=rule, stop_policy=stop_policy_for(common, cfg.template, teacher_tokenizer))
    return examples[: cfg.train_examples], stats
