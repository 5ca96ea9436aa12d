"""Shared fixtures: the repository, its data folder and the embedded base model, all local files; and
the tiny random-weight model and worked examples that the training tests use."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from tiny_models import TINY_SIZE, save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = ROOT.parent / "shared" / "datasets"

# Tools the tests start (dvc, papermill, jupyter) must be this interpreter's, whether pytest was
# started through `make test` or as `.venv/bin/python -m pytest`; and no test may reach the hub.
os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """data/ restored by `make data`; the mirror in ../shared/datasets if this checkout has none yet."""
    for folder in (ROOT / "data", SHARED_DATASETS):
        if (folder / "eval").is_dir():
            return folder
    pytest.fail("no data: run `make data` (restores data/ from ../shared/datasets or a DVC remote)")


@pytest.fixture(scope="session")
def base_model_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as safetensors; `make test` imports it first."""
    folder = ROOT / "models" / "base"
    if not (folder / "config.json").is_file():
        pytest.fail("models/base missing: run `make model` (dvc repro import_model)")
    return folder


# ---------------------------------------------------------------------------------------------------
# Tiny random-weight models and a few worked examples, for tests that train
# ---------------------------------------------------------------------------------------------------

WORKED_QUESTIONS = [("Tom has 3 apples and buys 4 more. How many apples?", "3 + 4 = 7", "7"),
                    ("A box holds 12 pens. 5 are taken. How many are left?", "12 - 5 = 7", "7"),
                    ("Each bag has 6 eggs. How many eggs are in 2 bags?", "6 * 2 = 12", "12"),
                    ("Split 20 sweets among 4 kids. How many each?", "20 / 4 = 5", "5")]


@pytest.fixture(scope="session")
def tiny_size() -> dict[str, int]:
    """The tiny models' dimensions (also a distill student's `config`: a Qwen2 of that size)."""
    return dict(TINY_SIZE)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, base_model_dir: Path) -> Path:
    """models/base's Llama config scaled down to `TINY_SIZE` (head_dim 8), random weights (seed 0),
    saved with the embedded tokenizer and generation config. Tests only read it."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny_llama"), base_model_dir)


@pytest.fixture(scope="session")
def worked_traces() -> list:
    """The worked questions as R1-format examples (working in <think>, boxed answer), as a teacher's."""
    from r1repro.sft_examples import ColdStartExample

    return [ColdStartExample(str(i), q, a, f"<think>\n{work}.\n</think>\n<answer>\\boxed{{{a}}}</answer>",
                             "teacher") for i, (q, work, a) in enumerate(WORKED_QUESTIONS)]


@pytest.fixture(scope="session")
def sft_rows(tiny_model: Path, worked_traces) -> list[dict]:
    """The worked examples as r1_chat prompt/completion rows, rendered with the tiny model's tokenizer."""
    from r1repro.modeling import load_tokenizer
    from r1repro.templates import render_training_example

    tokenizer = load_tokenizer(str(tiny_model))
    return [render_training_example("r1_chat", e.problem, e.response, tokenizer) for e in worked_traces]


# ---------------------------------------------------------------------------------------------------
# Hand-made checkpoint folders
# ---------------------------------------------------------------------------------------------------


def _fake_checkpoint(folder: Path, step: int, state_step: int | None = None,
                     files=("model.safetensors", "optimizer.pt", "scheduler.pt"),
                     state_text: str | None = None) -> Path:
    """A checkpoint-N folder holding `files` (a byte each) and, when given, a trainer_state.json
    naming `state_step` (or holding `state_text`)."""
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(b"x")
    if state_text is None and state_step is not None:
        state_text = json.dumps({"global_step": state_step})
    if state_text is not None:
        (path / "trainer_state.json").write_text(state_text, encoding="utf-8")
    return path


@pytest.fixture
def fake_checkpoint():
    """`fake_checkpoint(folder, step, state_step=None, files=..., state_text=None)` (`_fake_checkpoint`)."""
    return _fake_checkpoint
