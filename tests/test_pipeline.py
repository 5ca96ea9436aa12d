"""The whole pipeline, smoke-sized: `dvc repro` in a temporary copy of the repository.

Checks what the foundation promises: every stage fills its results folder, a second `dvc repro` is a
no-op, `dvc status` is clean, and a change reruns exactly the stages it touches.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from repo_copy import make_copy, run, stages_run as _stages_run

from r1repro import deps
from r1repro.pipeline import PIPELINE, result_folders

pytestmark = pytest.mark.slow

RESULT_FOLDERS = result_folders()


_run = run  # fails the test with the command's output


@pytest.fixture(scope="module")
def smoke_repo(tmp_path_factory: pytest.TempPathFactory, repo_root: Path, data_dir: Path) -> Path:
    """A copy of the checkout (tracked and new files, no results), on smoke params, after `dvc repro`."""
    copy = make_copy(tmp_path_factory.mktemp("smoke") / "repo", repo_root, data_dir)
    result = _run(["dvc", "repro"], copy)
    assert _stages_run(result.stdout) == {s.name for s in PIPELINE}, result.stdout[-3000:]
    return copy


def test_every_stage_fills_its_results(smoke_repo: Path) -> None:
    for stage, folder in RESULT_FOLDERS.items():
        out = smoke_repo / "results" / folder
        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics, f"{stage}: empty metrics"
        protocol = json.loads((out / "protocol.json").read_text())
        assert protocol["stage"] == stage and "torch" in protocol["libraries"]
        executed = next(out.glob("0*.ipynb"))
        notebook = json.loads(executed.read_text())
        assert any(cell.get("outputs") for cell in notebook["cells"]), f"{stage}: notebook has no outputs"
        assert executed.with_suffix(".html").is_file()
    assert (smoke_repo / "results" / "REPORT.md").is_file()


def _stale_stages(repo: Path) -> set[str]:
    status = json.loads(_run(["dvc", "status", "--json"], repo).stdout or "{}")
    return set(status)


def test_editing_a_lazily_imported_module_makes_every_stage_that_reaches_it_stale(smoke_repo: Path) -> None:
    """hub_data.py is imported only inside a function of data.py (the GPU profile's path): the stages
    that load data must still list it, so `dvc status` flags them after an edit."""
    hub_data = smoke_repo / "src" / "r1repro" / "hub_data.py"
    original = hub_data.read_text()
    users = {s.name for s in PIPELINE if "hub_data" in deps.code_closure(s, smoke_repo)}
    assert users >= {"probe", "sft", "rl", "distill", "evaluate"}
    try:
        hub_data.write_text(original + "\n# touched by test_pipeline\n")
        assert _stale_stages(smoke_repo) == users
    finally:
        hub_data.write_text(original)
    assert _stale_stages(smoke_repo) == set()


def test_the_report_is_stale_after_one_stage_reruns(smoke_repo: Path) -> None:
    """The report's deps are every stage's metrics.json and protocol.json: after the probe stage alone
    reruns, `dvc status` lists the report (and nothing else)."""
    _run(["dvc", "repro", "-f", "-s", "probe"], smoke_repo)
    assert _stale_stages(smoke_repo) == {"report"}
    _run(["dvc", "repro"], smoke_repo)


def test_second_repro_is_a_noop_and_status_clean(smoke_repo: Path) -> None:
    start = time.time()
    result = _run(["dvc", "repro"], smoke_repo)
    assert time.time() - start < 20
    assert _stages_run(result.stdout) == set()
    status = _run(["dvc", "status"], smoke_repo)
    assert "up to date" in status.stdout


def test_editing_a_module_reruns_its_stage_and_descendants_only(smoke_repo: Path) -> None:
    rewards = smoke_repo / "src" / "r1repro" / "rewards.py"
    rewards.write_text(rewards.read_text() + "\n# touched by test_pipeline\n")
    result = _run(["dvc", "repro"], smoke_repo)
    ran = _stages_run(result.stdout)
    # sft reads rewards too (format checks on its held-out responses), so it may rerun; probe may not.
    assert "rl" in ran and "probe" not in ran and "import_model" not in ran
    assert ran <= {"sft", "rl", "distill", "evaluate", "report"}


def _touch_notebook(repo: Path, name: str) -> None:
    notebook = repo / "notebooks" / name
    content = json.loads(notebook.read_text())
    content["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["Edited by a test."]})
    notebook.write_text(json.dumps(content, indent=1))


def test_editing_the_last_notebook_reruns_only_that_stage(smoke_repo: Path) -> None:
    _touch_notebook(smoke_repo, "05_evaluate.ipynb")
    assert _stages_run(_run(["dvc", "repro"], smoke_repo).stdout) == {"evaluate", "report"}


def test_editing_a_notebook_reruns_that_stage_and_what_it_feeds(smoke_repo: Path) -> None:
    # probe feeds nothing; sft feeds rl, distill and evaluate through models/sft. Training is seeded,
    # so a rerun can leave a model byte-identical and DVC then rightly stops early: only the edited
    # stage is certain to run, and nothing upstream of it may.
    _touch_notebook(smoke_repo, "01_probe_base_models.ipynb")
    assert _stages_run(_run(["dvc", "repro"], smoke_repo).stdout) == {"probe", "report"}
    _touch_notebook(smoke_repo, "02_cold_start_sft.ipynb")
    ran = _stages_run(_run(["dvc", "repro"], smoke_repo).stdout)
    assert "sft" in ran and ran <= {"sft", "rl", "distill", "evaluate", "report"}


def test_an_experiment_on_one_rl_param_shows_in_exp_diff(smoke_repo: Path) -> None:
    """`dvc exp run -S rl.<key>=...` reruns rl and what follows it, and `dvc exp diff` shows the change.

    The smoke models answer nothing right either way, so the param changed is one whose effect shows
    in the metrics at any size: the number of RL steps.
    """
    git = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com"]
    _run([*git, "add", "-A"], smoke_repo)
    _run([*git, "commit", "-q", "-m", "baseline results"], smoke_repo)
    before = json.loads((smoke_repo / "results" / "rl" / "metrics.json").read_text())["runs"]["grpo"]["steps"]
    result = _run(["dvc", "exp", "run", "-S", f"rl.max_steps={before + 1}", "--name", "more-steps"], smoke_repo)
    ran = _stages_run(result.stdout)
    assert "rl" in ran and ran <= {"params", "rl", "distill", "evaluate", "report"}, result.stdout[-2000:]
    diff = json.loads(_run(["dvc", "exp", "diff", "HEAD", "more-steps", "--json"], smoke_repo).stdout)
    assert diff["params"]["results/params.yaml"]["rl.max_steps"]["new"] == before + 1
    steps = diff["metrics"]["results/rl/metrics.json"]["runs.grpo.steps"]
    assert (steps["old"], steps["new"]) == (before, before + 1)
