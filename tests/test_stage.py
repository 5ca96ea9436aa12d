"""The stage runner: bad params stop it before any work, a failing notebook leaves good results alone.

Each test runs `python -m r1repro.stage` in a scratch checkout (params.yaml, dvc.yaml and one
stand-in notebook), so the real results/ are never touched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from r1repro import config, stage
from r1repro.pipeline import stage as pipeline_stage

PROBE_NOTEBOOK = pipeline_stage("probe").notebook


def _notebook(*cells: str) -> str:
    """A notebook with a `parameters` cell (as papermill expects) followed by `cells`."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("common = None\nprobe = None\nout_dir = None")
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, *(nbformat.v4.new_code_cell(c) for c in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nbformat.writes(nb)


@pytest.fixture
def scratch(tmp_path: Path, repo_root: Path) -> Path:
    """A checkout with the real params.yaml and dvc.yaml and good results from an earlier run."""
    for name in ("params.yaml", "dvc.yaml"):
        shutil.copy(repo_root / name, tmp_path / name)
    (tmp_path / "notebooks").mkdir()
    good = tmp_path / "results" / "probe"
    good.mkdir(parents=True)
    (good / "metrics.json").write_text('{"good": 1}')
    config.write_resolved(tmp_path)  # what dvc.yaml's params stage does before every other stage
    return tmp_path


def _run_stage(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "r1repro.stage", "probe"], cwd=root,
                          capture_output=True, text=True, timeout=300)


def test_failing_notebook_keeps_previous_results(scratch: Path) -> None:
    (scratch / "notebooks" / PROBE_NOTEBOOK).write_text(
        _notebook("raise RuntimeError('the model exploded')"))
    (scratch / "results" / ".probe.stale.tmp").mkdir()  # left by a run that was killed
    result = _run_stage(scratch)
    assert result.returncode == 1
    assert "RuntimeError: the model exploded" in result.stderr
    assert json.loads((scratch / "results" / "probe" / "metrics.json").read_text()) == {"good": 1}
    failed = scratch / stage.FAILED_DIR / PROBE_NOTEBOOK
    assert "the model exploded" in failed.read_text()
    assert not list((scratch / "results").glob(".probe.*.tmp"))


def test_successful_notebook_replaces_results(scratch: Path) -> None:
    (scratch / "notebooks" / PROBE_NOTEBOOK).write_text(_notebook(
        "import json, pathlib\n"
        "pathlib.Path(out_dir, 'metrics.json').write_text(json.dumps({'seed': common['seed']}))"))
    # The process that starts the stage (pytest here, dvc or an IDE for users) holds 1.3 GB: exec
    # hands its high-water mark to the stage's RUSAGE_SELF, which must not be counted as the stage's.
    ballast = bytearray(b"\x01") * 1_300_000_000
    result = _run_stage(scratch)
    del ballast
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((scratch / "results" / "probe" / "metrics.json").read_text())
    assert metrics == {"seed": 1234}
    executed = json.loads((scratch / "results" / "probe" / PROBE_NOTEBOOK).read_text())
    assert any("injected-parameters" in c["metadata"].get("tags", []) for c in executed["cells"])
    assert (scratch / "results" / "probe" / PROBE_NOTEBOOK).with_suffix(".html").is_file()
    # the control for the test below: a notebook that holds nothing stays well under 1.2 GB, even
    # when the process that started the stage held more
    assert 0 < json.loads((scratch / "results" / "probe" / "protocol.json").read_text())["peak_rss_gb"] < 1.2


def test_the_kernels_peak_memory_is_recorded(scratch: Path) -> None:
    (scratch / "notebooks" / PROBE_NOTEBOOK).write_text(_notebook(
        "block = bytearray(b'\\x01') * 1_200_000_000  # 1.2 GB held by the kernel, not the stage's process"))
    result = _run_stage(scratch)
    assert result.returncode == 0, result.stderr[-2000:]
    protocol = json.loads((scratch / "results" / "probe" / "protocol.json").read_text())
    assert protocol["peak_rss_gb"] >= 1.2 and protocol["wall_s"] > 0


def test_params_edited_since_they_were_resolved_stop_the_stage(scratch: Path) -> None:
    params = scratch / "params.yaml"
    params.write_text(params.read_text().replace("  seed: 1234", "  seed: 4321"))
    (scratch / "notebooks" / PROBE_NOTEBOOK).write_text(_notebook("raise SystemExit(9)"))
    result = _run_stage(scratch)
    assert result.returncode == 2
    assert "results/params.yaml is missing or out of date with params.yaml" in result.stderr
    assert json.loads((scratch / "results" / "probe" / "metrics.json").read_text()) == {"good": 1}


def test_bad_params_stop_before_any_work(scratch: Path) -> None:
    params = scratch / "params.yaml"
    params.write_text(params.read_text().replace("  seed: 1234", "  seed: 1234\n  sede: 1"))
    (scratch / "notebooks" / PROBE_NOTEBOOK).write_text(_notebook("raise SystemExit(9)"))
    result = _run_stage(scratch)
    assert result.returncode == 2
    assert "common.sede" in result.stderr
    assert not (scratch / stage.FAILED_DIR).exists()
    assert json.loads((scratch / "results" / "probe" / "metrics.json").read_text()) == {"good": 1}
