"""README.md stays a manual (issue 31): at most 15,000 bytes, its results table holds only numbers the
committed results hold, and every relative link in README.md, LOG.md and docs/*.md resolves."""

import json
import re
from pathlib import Path

README_MAX_BYTES = 15_000
# README's short stage names -> the stage names results/bench/pipeline.json records.
STAGE_NAMES = {"import": "import_model", "probe": "probe", "sft": "sft", "rl": "rl", "distill": "distill",
               "evaluate": "evaluate"}


def _results_table(repo_root: Path) -> list[list[str]]:
    section = (repo_root / "README.md").read_text().split("## Results of the CPU default", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [[cell.strip() for cell in line.strip().strip("|").split("|")]
            for line in section.splitlines() if line.startswith("| ")]
    return [row for row in rows[1:] if not set(row[0]) <= set("-")]


def test_readme_is_at_most_15_kb(repo_root: Path) -> None:
    size = len((repo_root / "README.md").read_bytes())
    assert size <= README_MAX_BYTES, f"README.md is {size} bytes; history goes to LOG.md, GPU matters to docs/gpu.md"


def test_readme_results_table_is_small_and_every_number_is_in_the_results(repo_root: Path) -> None:
    rows = _results_table(repo_root)
    assert 0 < len(rows) <= 8
    findings = set(re.findall(r"\d+\.\d+", (repo_root / "results" / "findings.md").read_text()))
    for row in rows:
        if "bench/pipeline.py" in row[-1]:  # stage times: the run bench/pipeline.py recorded, and its total
            # Not each stage's protocol.json: `make test` reimports the model on a fresh clone (models/ is not
            # in git), which rewrites results/import_model/protocol.json with this machine's time.
            times = dict(re.findall(r"(\w+) (\d+)", row[1].replace(",", "")))
            bench = json.loads((repo_root / "results" / "bench" / "pipeline.json").read_text())
            walls = {stage["stage"]: stage["wall_s"] for stage in bench["stages"]}
            for name, stage in STAGE_NAMES.items():
                assert int(times[name]) == round(walls[stage]), (name, times[name], walls[stage])
            assert row[1].endswith(f"{round(bench['total_s']):,}"), (row[1], bench["total_s"])
        else:
            missing = set(re.findall(r"\d+\.\d+", row[1])) - findings
            assert not missing, f"README row {row[0]!r}: {sorted(missing)} not in results/findings.md"


def test_relative_links_in_the_docs_resolve(repo_root: Path) -> None:
    pages = [repo_root / "README.md", repo_root / "LOG.md", *sorted((repo_root / "docs").glob("*.md"))]
    broken = []
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue
            if not (page.parent / target.split("#", 1)[0]).exists():
                broken.append(f"{page.relative_to(repo_root)}: {target}")
    assert not broken, broken
