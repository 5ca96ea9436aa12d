"""The device check's wheel list (bench/device_wheels.py) and script (bench/device_check.sh), offline.

What a lent GPU machine lacks is computed here from this venv: the third-party imports of the bench
scripts and of every r1repro module they reach, the declared dependencies of the carried packages,
and what dvclive imports when it runs; each must be in the image (torch, transformers, accelerate,
peft and their dependencies), carried, or named as deliberately left out. This venv's versions
stand in for requirements-gpu.lock's (`make device-check-dry` runs the real thing).

    pytest tests/test_device_check.py -q                # ~10 s
    pytest tests/test_device_check.py -q -m slow        # the whole dry run on this venv (~3 min)
"""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from r1repro.deps import import_closure, known_modules

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("rollout", "grpo_step", "two_runs")
# The device's interpreter, for evaluating requirement markers.
DEVICE = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
          "platform_system": "Linux", "platform_machine": "x86_64", "os_name": "posix",
          "implementation_name": "cpython", "platform_python_implementation": "CPython", "extra": ""}


def load_wheels_module():
    spec = importlib.util.spec_from_file_location("device_wheels", ROOT / "bench" / "device_wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


dw = load_wheels_module()


def declared_closure(roots) -> set[str]:
    """Canonical names of `roots` and everything they require on the device, by this venv's metadata."""
    seen, todo = set(), [dw.canonical(r) for r in roots]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for text in metadata.requires(name) or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate(DEVICE):
                todo.append(dw.canonical(req.name))
    return seen


def third_party_imports(tree: ast.AST) -> set[str]:
    """Top-level names of the modules a file imports anywhere, less the stdlib and r1repro."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n not in ("r1repro", "__future__")}


def bench_imports() -> set[str]:
    """Third-party modules the bench scripts and the r1repro modules they reach import."""
    package = ROOT / "src" / "r1repro"
    sources = {s: (ROOT / "bench" / f"{s}.py").read_text(encoding="utf-8") for s in SCRIPTS}
    modules = import_closure(set(), sources) - {"__init__"}
    assert {"rl", "generation", "bench"} <= modules <= known_modules()
    trees = [ast.parse(src) for src in sources.values()]
    trees += [ast.parse((package / f"{m}.py").read_text(encoding="utf-8")) for m in modules]
    return set().union(*(third_party_imports(t) for t in trees))


def distributions_of(modules: set[str]) -> set[str]:
    """Canonical distribution names providing top-level `modules` (the module name if none is installed)."""
    provided = metadata.packages_distributions()
    return {dw.canonical(d) for m in modules for d in provided.get(m, [m])}


@pytest.fixture(scope="module")
def image() -> set[str]:
    return declared_closure(dw.IMAGE)


def test_every_module_the_bench_scripts_import_is_in_the_image_or_accounted_for():
    """Imported directly, so in the image only as one of the four or a direct dependency of theirs:
    a package further down (pydantic under transformers' typer) comes and goes with their versions."""
    needed = distributions_of(bench_imports())
    assert {"trl", "datasets", "pydantic", "math-verify", "dvclive", "torch", "vllm"} <= needed
    direct = {dw.canonical(n) for n in dw.IMAGE} | {
        dw.canonical(Requirement(t).name) for n in dw.IMAGE for t in metadata.requires(n) or []
        if Requirement(t).marker is None or Requirement(t).marker.evaluate(DEVICE)}
    accounted = direct | {dw.canonical(n) for n in (*dw.CARRIED, *dw.IMAGE_PROVIDED, *dw.NOT_CARRIED)}
    assert needed - accounted == set()


def test_the_carried_roots_bring_their_whole_declared_closure(image):
    closure = declared_closure(dw.ROOTS) - image - {dw.canonical(n) for n in dw.IMAGE_PROVIDED}
    assert closure - {dw.canonical(n) for n in dw.CLOSURE} == set()


def test_what_dvclive_imports_when_it_runs_is_carried(image, tmp_path):
    """dvclive's declared closure (dvc's) is not carried; what Live() imports from it must be."""
    probe = f"""
import json, sys
before = set(sys.modules)
from dvclive import Live
live = Live(dir={str(tmp_path)!r}, resume=False, save_dvc_exp=False, dvcyaml=None)
live.log_metric("x", 1.0); live.next_step(); live.make_summary(); live.end()
print(json.dumps(sorted({{m.split(".")[0] for m in set(sys.modules) - before}})))
"""
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    modules = {m for m in json.loads(out.stdout.splitlines()[-1])
               if m not in sys.stdlib_module_names and not m.startswith("_")}
    used = distributions_of(modules) & declared_closure(["dvclive"])  # optional imports left out
    assert "dvc" in used
    assert used - image - {dw.canonical(n) for n in dw.CARRIED} == set()


def test_every_carried_package_is_pinned_in_the_gpu_lock_and_none_replaces_the_image():
    pins = dw.lock_pins()
    assert [n for n in dw.CARRIED if dw.canonical(n) not in pins] == []
    assert len(set(map(dw.canonical, dw.CARRIED))) == len(dw.CARRIED)
    carried = set(map(dw.canonical, dw.CARRIED))
    assert carried.isdisjoint(map(dw.canonical, (*dw.IMAGE, *dw.IMAGE_PROVIDED, *dw.NOT_CARRIED)))
    assert set(dw.BUILT_FROM_SDIST) <= set(dw.CARRIED)
    assert dw.pinned(("trl", "flufl.lock"), pins) == [f"trl=={pins['trl']}", f"flufl.lock=={pins['flufl-lock']}"]


def test_lock_pins_and_wheel_names_are_read_canonically(tmp_path):
    lock = tmp_path / "lock.txt"
    lock.write_text("# comment\nFlufl.Lock==9.2.0\nruamel.yaml==0.19.1  # why\nnot-pinned>=1\n")
    assert dw.lock_pins(lock) == {"flufl-lock": "9.2.0", "ruamel-yaml": "0.19.1"}
    assert dw.wheel_name_version(Path("ruamel_yaml-0.19.1-py3-none-any.whl")) == ("ruamel-yaml", "0.19.1")


def test_size_check_refuses_more_than_56_mib(tmp_path):
    assert dw.LIMIT_MIB == 56
    assert dw.check_size(56 * dw.MIB) == "wheels: 56.0 MiB of 56 MiB"
    with pytest.raises(SystemExit, match=r"56.0 MiB, over the 56 MiB"):
        dw.check_size(56 * dw.MIB + 1)
    (tmp_path / "a-1-py3-none-any.whl").write_bytes(b"x" * 300)
    (tmp_path / "b-2-py3-none-any.whl").write_bytes(b"x" * 200)
    (tmp_path / "notes.txt").write_bytes(b"x" * 1000)
    assert dw.total_bytes(tmp_path) == 500


def test_device_check_has_a_dry_run_path_that_wants_its_wheels(tmp_path):
    script = ROOT / "bench" / "device_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    env = dict(os.environ, WHEELS=str(tmp_path / "none"), DRY_OUT=str(tmp_path / "out"), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(script), "--dry-run"], env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert "no wheels in" in run.stdout and "make device-wheels" in run.stdout
    assert (tmp_path / "out" / "device_check.log").is_file()


@pytest.mark.slow
def test_dry_run_runs_every_step_on_this_venv(tmp_path):
    """Every step at toy sizes, on what this venv has installed (make device-check-dry uses the wheels)."""
    env = dict(os.environ, WHEELS="installed", DRY_OUT=str(tmp_path), PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "bench" / "device_check.sh"), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=1200)
    assert run.returncode == 0, run.stdout[-3000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "device_check.log", "grpo_step.json", "rollout.json", "two_runs.json", "versions.json"]
    grpo = json.loads((tmp_path / "grpo_step.json").read_text())
    for r in (grpo["plain"], grpo["runs"]["grpo"], grpo["runs"]["dr_grpo"]):
        assert r["optimizer_steps_per_rollout"] == [2, 2] == [r["configured_steps_per_rollout"]] * 2
    two = json.loads((tmp_path / "two_runs.json").read_text())
    assert [r["run"] for r in two["runs"]] == ["grpo", "dr_grpo"]
