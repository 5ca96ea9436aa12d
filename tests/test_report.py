"""results/REPORT.md (r1repro.report): built from the committed results of a real run, and from a
smoke-like set where stages are missing. Every expected number is read from the input files."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from r1repro import report
from r1repro.io import atomic_write_json
from r1repro.pipeline import result_folders, stage as pipeline_stage
from r1repro.stage_metrics import RlRunMetrics

RESULT_FOLDERS = result_folders()

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "results"
LINK = re.compile(r"\]\(([^)\s]+)\)")
needs_results = pytest.mark.skipif(not (RESULTS / "eval" / "metrics.json").is_file(),
                                   reason="no committed results/eval in this checkout")


def copy_results(tmp_path: Path) -> Path:
    """The committed stage folders, copied (results/dev and results/failed are not a run's results)."""
    dest = tmp_path / "results"
    for folder in RESULT_FOLDERS.values():
        if (RESULTS / folder).is_dir():
            shutil.copytree(RESULTS / folder, dest / folder)
    return dest


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the markdown table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        # A label may carry a note after it, e.g. "qwen2_scratch_not_pretrained (random init, ...)".
        if line.startswith("|") and (cells[0] == first_cell or cells[0].startswith(f"{first_cell} (")):
            return cells
    raise AssertionError(f"no table row {first_cell!r}")


def section(text: str, title: str) -> str:
    """The body of the `## title` section."""
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, flags=re.M | re.S)
    assert match, f"no section {title!r}"
    return match.group(1)


def links(text: str) -> list[str]:
    return LINK.findall(text)


def p1(x: float) -> str:
    return f"{100 * x:.1f}"


@needs_results
def test_headline_table_has_every_model_and_benchmark_from_eval_metrics(tmp_path):
    results = copy_results(tmp_path)
    text = report.write_report(results).read_text()
    m = load(results / "eval" / "metrics.json")
    body = section(text, "Evaluation: pass@1 by model and benchmark")
    header = table_row(body, "model")[1:]
    benches = [h.split(" (n=")[0] for h in header]
    assert sorted(benches) == sorted(next(iter(m["mean@k"].values())))
    for h, b in zip(header, benches):
        assert h == f"{b} (n={max(int(v[b]) for v in m['n_questions'].values())})"
    for model, per_bench in m["mean@k"].items():
        cells = table_row(body, model)[1:]
        for cell, b in zip(cells, benches):
            expected = (f"{p1(per_bench[b])}% [{p1(m['mean@k_low'][model][b])}, {p1(m['mean@k_high'][model][b])}]"
                        f"; cons {p1(m['cons@k'][model][b])}%")
            assert cell == expected, (model, b)
    k = next(iter(next(iter(m["k"].values())).values()))
    assert f"k={k:.0f} samples" in body


@needs_results
def test_a_changed_metric_changes_the_report(tmp_path):
    results = copy_results(tmp_path)
    path = results / "eval" / "metrics.json"
    m = load(path)
    model = next(iter(m["mean@k"]))
    bench = next(iter(m["mean@k"][model]))
    m["mean@k"][model][bench] = 0.4321
    atomic_write_json(path, m)
    text = report.build_report(results)
    column = 1 + report.benchmark_order(m["n_questions"]).index(bench)
    assert table_row(text, model)[column].startswith("43.2% [")


@needs_results
def test_rl_section_states_each_run_from_rl_metrics(tmp_path):
    results = copy_results(tmp_path)
    text = report.build_report(results)
    m = load(results / "rl" / "metrics.json")
    body = section(text, "GRPO vs Dr. GRPO")
    assert report.NOT_RUN not in body
    start = m["start"]
    for run, r in m["runs"].items():
        row = table_row(body, run)
        assert row[1:4] == [f"`{r['loss_type']}`", f"`{r['scale_rewards']}`", str(r["steps"])]
        h = r["heldout"]
        assert row[4] == f"{p1(start['accuracy'])}% [{p1(start['accuracy_low'])}, {p1(start['accuracy_high'])}]"
        assert row[5] == f"{p1(h['accuracy'])}% [{p1(h['accuracy_low'])}, {p1(h['accuracy_high'])}]"
        assert row[7] == f"{r['late_training']['mean_length_incorrect']:.1f}"
        assert row[8] == f"{p1(r['late_training']['zero_std_share'])}%"
        assert f"{run} {r['late_training']['mean_length_incorrect']:.1f} tokens" in body


@needs_results
def test_distill_section_and_links_and_versions(tmp_path):
    results = copy_results(tmp_path)
    dest = report.write_report(results)
    text = dest.read_text()
    d = load(results / "distill" / "metrics.json")
    body = section(text, "Distillation")
    assert f"{d['traces']['kept']} of {d['traces']['sampled']} samples kept" in body
    for label, s in d["students"].items():
        row = table_row(body, label)
        assert row[5].startswith(f"{p1(s['after']['accuracy'])}% [")
    # Every link resolves, and every plot and executed notebook is linked.
    targets = {(dest.parent / t).resolve() for t in links(text)}
    assert targets and all(t.is_file() for t in targets), [t for t in targets if not t.is_file()]
    for png in results.glob("*/plots/*.png"):
        assert png.resolve() in targets, png
    for stage, folder in RESULT_FOLDERS.items():
        notebook = results / folder / pipeline_stage(stage).notebook
        if notebook.is_file():
            assert notebook.resolve() in targets and notebook.with_suffix(".html").resolve() in targets
    for folder in RESULT_FOLDERS.values():
        for lib, version in load(results / folder / "protocol.json")["libraries"].items():
            assert re.search(rf"^\| {re.escape(lib)} \|.*\b{re.escape(version)}\b", text, flags=re.M), lib
    assert '{"' not in text and "{'" not in text  # tables, not JSON dumps


@needs_results
def test_distill_vs_rl_file_is_included_when_present(tmp_path):
    results = copy_results(tmp_path)
    (results / "eval" / report.DISTILL_VS_RL).unlink(missing_ok=True)  # a run from before the table
    assert report.NOT_RUN in section(report.build_report(results), "Distill vs RL")
    (results / "eval" / report.DISTILL_VS_RL).write_text(
        "# Distillation vs RL\n\n| benchmark | x |\n|---|---|\n| asdiv | 12.5 |\n\n"
        "## Per benchmark\n\n### Detail\n\nVerdict: tie.\n")
    body = section(report.build_report(results), "Distill vs RL")
    assert report.NOT_RUN not in body
    assert "| asdiv | 12.5 |" in body and "Verdict: tie." in body
    # Its title gives way to the section's; its headings nest under it.
    assert "Distillation vs RL" not in body
    assert "\n### Per benchmark\n" in body and "\n#### Detail\n" in body


def smoke_results(root: Path) -> Path:
    """A smoke-like run: evaluation of one model, distillation with no student, no probe, SFT or RL."""
    results = root / "results"
    ev = {"mean@k": {"base": {"asdiv_heldout": 0.25}}, "mean@k_low": {"base": {"asdiv_heldout": 0.0}},
          "mean@k_high": {"base": {"asdiv_heldout": 0.5}}, "cons@k": {"base": {"asdiv_heldout": 0.5}},
          "n_questions": {"base": {"asdiv_heldout": 2.0}}, "k": {"base": {"asdiv_heldout": 2.0}},
          "headline": {}}
    atomic_write_json(results / "eval" / "metrics.json", ev)
    atomic_write_json(results / "distill" / "metrics.json",
                      {"traces": {"sampled": 16, "kept": 0, "acceptance_rate": 0.0}, "students": {},
                       "headline": {}})
    (results / "eval" / "plots").mkdir(parents=True)
    (results / "eval" / "plots" / "mean_at_k.png").write_bytes(b"png")
    return results


def test_smoke_like_results_say_not_run(tmp_path):
    results = smoke_results(tmp_path)
    dest = report.write_report(results)
    text = dest.read_text()
    assert table_row(text, "base")[1] == "25.0% [0.0, 50.0]; cons 50.0%"
    assert "asdiv_heldout (n=2)" in text
    for title in ("GRPO vs Dr. GRPO", "Distill vs RL", "How it was made"):
        assert report.NOT_RUN in section(text, title), title
    distill = section(text, "Distillation")
    assert "0 of 16 samples kept" in distill and "Students: _not run_" in distill
    probe_sft = section(text, "Probe and cold start")
    assert probe_sft.count(report.NOT_RUN) == 2
    files = section(text, "Plots and executed notebooks")
    assert table_row(files, pipeline_stage("rl").title)[1:] == [report.NOT_RUN, report.NOT_RUN]
    assert all((dest.parent / t).is_file() for t in links(text))


def test_a_failed_build_keeps_the_previous_report(tmp_path):
    results = smoke_results(tmp_path)
    dest = report.write_report(results)
    before = dest.read_text()
    (results / "eval" / "metrics.json").write_text('{"mean@k": ')  # a half-written file
    with pytest.raises(json.JSONDecodeError):
        report.write_report(results)
    assert dest.read_text() == before
    assert sorted(p.name for p in results.iterdir() if p.is_file()) == [report.REPORT_NAME]


def test_dev_run_writes_beside_the_dev_folders(tmp_path):
    results = smoke_results(tmp_path)
    dev = results / "dev"
    shutil.copytree(results / "eval", dev / "eval")
    dest = report.write_report(dev)
    assert dest == dev / report.REPORT_NAME
    assert "eval/plots/mean_at_k.png" in links(dest.read_text())


def rl_run(heldout: dict, change: float, paired: dict | None = None) -> RlRunMetrics:
    """One run's metrics as the RL stage writes them, with only what the report reads filled in."""
    return RlRunMetrics(loss_type="dr_grpo", scale_rewards="none", seeds=[0], steps=2, heldout=heldout,
                        heldout_by_seed={"0": heldout}, heldout_change=change,
                        heldout_change_paired=paired or {}, late_training={})


def test_rl_change_reads_with_its_paired_interval_and_verdict():
    from r1repro import report

    runs = {"dr_grpo": rl_run({"accuracy": 0.3}, 0.125,
                              {"change": 0.125, "change_low": 0.03125, "change_high": 0.21875,
                               "fixed": 5, "broke": 1, "sign_test_p": 0.21875}),
            "grpo": rl_run({"accuracy": 0.2}, 0.0)}
    assert report.change_text(runs["dr_grpo"]) == "+12.5 pts [+3.1, +21.9] (5/1), sign test p=0.22"
    assert report.change_text(runs["grpo"]) == "+0.0 pts"
    assert report.change_text(rl_run({}, float("nan"))) == "n/a"
    findings = "\n".join(report.rl_findings({"accuracy": 0.2, "n": 32}, runs))
    assert "excludes 0 for dr_grpo" in findings
    runs["dr_grpo"].heldout_change_paired["change_low"] = -0.03
    assert "Every interval includes 0" in "\n".join(report.rl_findings({"accuracy": 0.2}, runs))
    line = report.prompt_filter_line({"kept": 29, "candidates": 128, "mean_pass_rate_candidates": 0.127,
                                      "mean_pass_rate_kept": 0.45})
    assert line == ["- Training prompts: 29 of 128 candidates kept by the pass-rate filter "
                    "(mean pass rate 12.7% over candidates, 45.0% over kept ones)."]
    assert report.prompt_filter_line(None) == []


def test_the_report_opens_with_the_findings_and_times_every_stage(tmp_path):
    from r1repro import findings
    from test_findings import make_results

    results = make_results(tmp_path)
    for stage, folder in RESULT_FOLDERS.items():
        protocol = results / folder / "protocol.json"
        record = load(protocol) if protocol.is_file() else {}
        atomic_write_json(protocol, {**_protocol(stage, 60.0 * (list(RESULT_FOLDERS).index(stage) + 1)), **record})
    rows = findings.write_findings(results, n_boot=300)
    text = report.write_report(results).read_text()
    headings = re.findall(r"^## (.*)$", text, flags=re.M)
    assert headings[0].startswith("Findings")
    body = section(text, headings[0])
    for row in rows:  # every claim with its verdict, as findings.json has it
        assert re.search(rf"^\| {re.escape(row.claim)} \|.*\*\*{re.escape(row.verdict)}\*\* \|$", body, flags=re.M)
    times = section(text, "Stage times")
    assert table_row(times, pipeline_stage("probe").title)[1:] == ["60", "1.0", "1.5"]
    assert table_row(times, pipeline_stage("sft").title)[1:] == ["120", "2.0", "n/a"]  # recorded no peak
    assert table_row(times, "Import the base model")[1] == "n/a"  # not in this made-up run
    assert table_row(times, "**total**")[1:] == [f"**{60 * (1 + 2 + 3 + 4 + 5)}**", "**15.0**", "**4.5** (largest)"]
    assert "Test CPU, 2 cores" in times and "native bf16 False" in times


def _protocol(stage: str, wall_s: float) -> dict:
    peak = {"probe": {"peak_rss_gb": 1.5}, "rl": {"peak_rss_gb": 4.5}}.get(stage, {})
    return {"stage": stage, "params": {}, "common": {"seed": 1, "dtype": "float32"}, "libraries": {}, **peak,
            "wall_s": wall_s, "hardware": {"cpu_model": "Test CPU", "cpu_count": 2, "torch_threads": 2,
                                           "cpu_native_bf16": False, "cpu_flags": {"avx2": True, "amx_bf16": False}}}


def test_a_metrics_file_missing_a_field_is_named_with_the_fix(tmp_path):
    results = smoke_results(tmp_path)
    atomic_write_json(results / "rl" / "metrics.json", {"start": {"accuracy": 0.1}, "headline": {}})
    with pytest.raises(ValueError, match=r"rl/metrics.json: not a RlMetrics .*'runs'.*dvc repro rl"):
        report.build_report(results)
