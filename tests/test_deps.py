"""dvc.yaml's code deps are the import closure of each stage's code, computed, never kept by hand."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from r1repro import deps
from r1repro.pipeline import PIPELINE


def test_dvc_yaml_deps_are_the_computed_import_closure(repo_root: Path) -> None:
    assert deps.differences(repo_root) == [], "run `make deps` (python -m r1repro.deps --write)"


def _package(folder: Path, modules: dict[str, str]) -> Path:
    package = folder / "r1repro"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    for name, source in modules.items():
        (package / f"{name}.py").write_text(source)
    return package


def test_closure_follows_lazy_imports_module_strings_and_from_imports(tmp_path: Path) -> None:
    package = _package(tmp_path, {
        "a": "from r1repro import b\n",
        "b": "def load():\n    from r1repro.c import thing\n    return thing\n",   # inside a function
        "c": "thing = 1\nJOBS = {'x': 'r1repro.d'}\n",                        # a module named in a string
        "d": "import r1repro.e as e\n",
        "e": '"""Mentions r1repro.f in prose, which imports nothing."""\n',
        "f": "",
        "unused": "import r1repro.a\n",
    })
    assert deps.import_closure({"a"}, package_dir=package) == {"__init__", "a", "b", "c", "d", "e"}
    notebook = "from r1repro import c\nimport pandas\n"
    assert deps.import_closure(set(), {"nb": notebook}, package_dir=package) == {"__init__", "c", "d", "e"}
    with pytest.raises(ValueError, match="not modules of r1repro: nope"):
        deps.import_closure({"nope"}, package_dir=package)


def test_the_hub_loader_counts_for_every_stage_that_loads_data(repo_root: Path) -> None:
    """data.py imports hub_data only on the hub path (the GPU profile's), inside a function."""
    closures = {s.name: deps.code_closure(s, repo_root) for s in PIPELINE}
    for name in ("probe", "sft", "rl", "distill", "evaluate"):
        assert {"data", "hub_data"} <= closures[name], name
    assert "rl" in closures["rl"] and "report" in closures["report"]


def test_check_fails_on_drift_and_write_repairs_it(tmp_path: Path, repo_root: Path) -> None:
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    shutil.copytree(repo_root / "notebooks", tmp_path / "notebooks")
    text = (tmp_path / "dvc.yaml").read_text()
    drifted = text.replace("      - src/r1repro/hub_data.py\n", "", 1)
    assert drifted != text
    (tmp_path / "dvc.yaml").write_text(drifted)
    check = subprocess.run([sys.executable, "-m", "r1repro.deps", "--check"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert check.returncode == 1
    assert "missing src/r1repro/hub_data.py" in check.stderr and "make deps" in check.stderr
    write = subprocess.run([sys.executable, "-m", "r1repro.deps", "--write"], cwd=tmp_path,
                           capture_output=True, text=True)
    assert write.returncode == 0, write.stderr
    assert (tmp_path / "dvc.yaml").read_text() == text  # comments and layout kept


def test_the_package_has_no_import_cycle() -> None:
    """Imports inside functions count: a lazy import that closes a cycle still ties two modules together."""
    assert deps.import_cycles() == []


def test_import_cycles_are_found(tmp_path: Path) -> None:
    package = _package(tmp_path, {"a": "from r1repro import b\n", "b": "def f():\n    import r1repro.c\n",
                                  "c": "from r1repro.a import x\n", "d": "import r1repro.a\n"})
    assert deps.import_cycles(package) == [["a", "b", "c"]]


def test_readme_lists_every_module_of_the_package(repo_root) -> None:
    """README's "What is where" names each module of src/r1repro, and no module that is gone."""
    import re

    readme = (repo_root / "README.md").read_text()
    section = readme.split("## What is where", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"^\s{2}(\w+\.py)\s", section, flags=re.M))
    present = {p.name for p in (repo_root / "src" / "r1repro").glob("*.py")} - {"__init__.py"}
    assert listed == present, f"missing from README: {sorted(present - listed)}; gone: {sorted(listed - present)}"
