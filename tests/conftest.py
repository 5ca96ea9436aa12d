"""Shared fixtures: the repository, its data folder and the embedded base model, all local files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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
