"""Build `results/REPORT.md`: one page that reviews a pipeline run, read from its result folders.

    python -m r1repro.report             # rebuild results/REPORT.md from results/<stage>/

It is the pipeline's last stage (`report` in dvc.yaml), whose deps are every stage's `metrics.json`
and `protocol.json`: rerunning any stage makes the report stale, and `dvc repro` rebuilds it. Every
number is read from a stage's `metrics.json` (the training stages' through the typed classes of
`r1repro.stage_metrics` that wrote them), every setting and library version from its
`protocol.json`; nothing is recomputed here. A stage whose folder or numbers are missing (a stage not
run yet, a smoke run with no distillation student) reads "not run" instead of failing.

The report is built in memory and written through a temporary file and a rename, so a failed run
leaves the previous report whole.
"""

from __future__ import annotations

import json
import math
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from r1repro.io import atomic_write_text
from r1repro.metrics import interval_text
from r1repro.pipeline import RESULTS_DIR, result_folders, stage as pipeline_stage
from r1repro.stage_metrics import DistillMetrics, RlMetrics, RlRunMetrics, SftMetrics, StageMetrics

M = TypeVar("M", bound=StageMetrics)

REPORT_NAME = "REPORT.md"
NOT_RUN = "not run"
# Written by the evaluate notebook beside its tables; included as the "Distill vs RL" section.
DISTILL_VS_RL = "distill_vs_rl.md"


@dataclass(frozen=True)
class StageFolder:
    """One stage's results folder."""

    stage: str
    path: Path

    def json(self, name: str) -> dict | None:
        """A JSON file of the folder, or None when it is missing."""
        file = self.path / name
        return json.loads(file.read_text(encoding="utf-8")) if file.is_file() else None

    def metrics(self, cls: type[M]) -> M | None:
        """The stage's metrics.json as the `stage_metrics` class that wrote it; None when missing.

        Raises:
            ValueError: the file lacks a field of `cls` (written by older code: rerun the stage).
        """
        data = self.json("metrics.json")
        if data is None:
            return None
        try:
            return cls.from_json(data)
        except (KeyError, TypeError) as err:
            raise ValueError(f"{self.path / 'metrics.json'}: not a {cls.__name__} ({err}); rerun the "
                             f"{self.stage} stage (dvc repro {self.stage})") from err


def stage_folders(results_dir: Path) -> dict[str, StageFolder]:
    """Each notebook stage's folder under `results_dir`, in pipeline order."""
    return {stage: StageFolder(stage, results_dir / name) for stage, name in result_folders().items()}


# --- formatting -----------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and not math.isfinite(value))


def pct(value: Any) -> str:
    """A share as a percentage with one decimal; missing values read n/a."""
    return "n/a" if _missing(value) else f"{100 * value:.1f}%"


def pct_ci(summary: dict, key: str = "accuracy") -> str:
    """`21.9% [9.4, 37.5]`: a share with its interval (`<key>_low`, `<key>_high`) from a summary dict."""
    text = pct(summary.get(key))
    bracket = interval_text(summary.get(f"{key}_low"), summary.get(f"{key}_high"))
    return f"{text} {bracket}" if text != "n/a" and bracket else text


def num(value: Any, digits: int = 1) -> str:
    """A plain number; missing values read n/a."""
    if _missing(value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def md_table(header: list[str], rows: list[list[str]]) -> str:
    """A markdown table (pipes in cells escaped)."""
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"
    return "\n".join([line(header), "|" + "---|" * len(header)] + [line(r) for r in rows])


def link(folder: StageFolder, file: Path, report_dir: Path, text: str | None = None) -> str:
    """A markdown link from the report to `file` of `folder`."""
    rel = Path(os.path.relpath(file, report_dir)).as_posix()
    return f"[{text or file.name}]({rel})"


def not_run(what: str) -> str:
    """What a section says when its stage left nothing to report, and why."""
    return f"_{NOT_RUN}_ ({what})."


# --- sections -------------------------------------------------------------------------------------

def benchmark_order(n_questions: dict[str, dict[str, float]]) -> list[str]:
    """Benchmarks, largest subset first (the ones with the tightest intervals), then by name."""
    sizes: dict[str, float] = {}
    for per_benchmark in n_questions.values():
        for bench, n in per_benchmark.items():
            sizes[bench] = max(sizes.get(bench, 0), n or 0)
    return sorted(sizes, key=lambda b: (-sizes[b], b))


def _eval_protocol_line(protocol: dict | None) -> str:
    params = (protocol or {}).get("params", {})
    s = params.get("sampling")
    if not s:
        return ""
    confidence = params.get("confidence")
    level = f"{confidence:.0%} " if isinstance(confidence, (int, float)) else ""
    return (f"Template `{params.get('template')}`; k={s['n']} samples per question at T={s['temperature']}, "
            f"top-p={s['top_p']}, at most {s['max_new_tokens']} new tokens. Cells: pass@1 as the mean over "
            f"the k samples, {level}bootstrap interval over questions in brackets, then cons@k (majority "
            "vote). n: questions used from each benchmark (subsets on the CPU default).")


def eval_section(folder: StageFolder, report_dir: Path) -> list[str]:
    """Headline table: models x benchmarks, mean@k with its interval and cons@k, subset sizes."""
    lines = ["## Evaluation: pass@1 by model and benchmark", ""]
    m = folder.json("metrics.json")
    if not m or not m.get("mean@k"):
        return lines + [not_run(f"no evaluation metrics in {folder.path.name}/")]
    benches = benchmark_order(m.get("n_questions", {}))
    sizes = {b: max(int(m["n_questions"][mod].get(b) or 0) for mod in m["n_questions"]) for b in benches}
    rows = []
    for model in m["mean@k"]:
        cells = []
        for b in benches:
            summary = {k: m.get(f"mean@k{s}", {}).get(model, {}).get(b) for s, k in
                       (("", "accuracy"), ("_low", "accuracy_low"), ("_high", "accuracy_high"))}
            cons = m.get("cons@k", {}).get(model, {}).get(b)
            cells.append(f"{pct_ci(summary)}; cons {pct(cons)}" if b in m["mean@k"][model] else "")
        rows.append([model] + cells)
    header = ["model"] + [f"{b} (n={sizes[b]})" for b in benches]
    lines += [_eval_protocol_line(folder.json("protocol.json")), "", md_table(header, rows), ""]
    extra = [link(folder, folder.path / name, report_dir, text) for name, text in
             (("table.md", "all evaluation tables"), ("metrics.json", "metrics.json"),
              ("records.jsonl", "per-response records")) if (folder.path / name).is_file()]
    return lines + ["More: " + " · ".join(extra) + "."]


def _overlap(summaries: list[dict]) -> bool:
    """Whether the accuracy intervals of all summaries share a point."""
    lows = [s.get("accuracy_low") for s in summaries]
    highs = [s.get("accuracy_high") for s in summaries]
    if any(_missing(v) for v in lows + highs):
        return False
    return max(lows) <= min(highs)


def rl_findings(start: dict, runs: dict[str, RlRunMetrics], heldout_set: str | None = None) -> list[str]:
    """The bullet points of the GRPO vs Dr. GRPO comparison, worded from the numbers."""
    heldout = [r.heldout for r in runs.values()]
    n = start.get("n", heldout[0].get("n") if heldout else "?")
    n = f"{n}, {heldout_set}" if heldout_set else n
    after = "; ".join(f"{name} {pct_ci(r.heldout)}" for name, r in runs.items())
    verdict = (" The intervals overlap: no difference is resolved at this size."
               if _overlap([start] + heldout) else "")
    late = [(name, r.late_training) for name, r in runs.items()]
    paired = [(name, r.heldout_change_paired) for name, r in runs.items() if r.heldout_change_paired]
    resolved = [name for name, c in paired if not _missing(c.get("change_low")) and
                (c["change_low"] > 0 or c.get("change_high", 0) < 0)]
    change = ([f"- Change from the start, paired over the same questions: "
               + "; ".join(f"{name} {change_text(runs[name])}" for name, _ in paired)
               + (f". The interval excludes 0 for {', '.join(resolved)}." if resolved
                  else ". Every interval includes 0.")] if paired else [])
    return [
        f"- Held-out accuracy (greedy, n={n}): start {pct_ci(start)}; after {after}.{verdict}", *change,
        "- Length of incorrect responses, second half of training: "
        + ", ".join(f"{name} {num(lt.get('mean_length_incorrect'))} tokens" for name, lt in late)
        + ". The paper's claim: GRPO's per-response length normalization lets incorrect responses grow "
          "longer; Dr. GRPO removes it.",
        "- Groups whose rewards all tie (zero std, no gradient), second half of training: "
        + ", ".join(f"{name} {pct(lt.get('zero_std_share'))}" for name, lt in late) + ".",
    ]


def rl_section(folder: StageFolder) -> list[str]:
    """GRPO vs Dr. GRPO: each run's knobs, held-out accuracy before and after, late-training diagnostics."""
    lines = ["## GRPO vs Dr. GRPO", ""]
    m = folder.metrics(RlMetrics)
    if not m or not m.runs:
        return lines + [not_run(f"no runs in {folder.path.name}/metrics.json" if m else
                                f"no {folder.path.name}/metrics.json")]
    start, runs = m.start, m.runs
    rows = []
    for name, r in runs.items():
        late = r.late_training
        rows.append([name, f"`{r.loss_type}`", f"`{r.scale_rewards}`", num(r.steps),
                     pct_ci(start), pct_ci(r.heldout), change_text(r),
                     num(late.get("mean_length_incorrect")), pct(late.get("zero_std_share")),
                     num(late.get("reward"), 2)])
    header = ["run", "loss_type", "scale_rewards", "steps", "held-out before", "held-out after",
              "change [paired 95% interval] (fixed/broke), sign test", "late len. incorrect (tokens)",
              "late zero-std share", "late reward"]
    return lines + rl_findings(start, runs, m.heldout_set) + prompt_filter_line(m.prompt_filter) + [
        "", md_table(header, rows), "", "Late: mean over the second half of training steps."]


def change_text(run: RlRunMetrics) -> str:
    """`+9.4 pts [+3.1, +15.6] (3/0), sign test p=0.25`: the held-out change, its paired interval,
    answers fixed/broken, and the sign test of fixed against broken (when recorded)."""
    paired = run.heldout_change_paired or {}
    change = paired.get("change", run.heldout_change)
    if _missing(change):
        return "n/a"
    text = f"{100 * change:+.1f} pts"
    bracket = interval_text(paired.get("change_low"), paired.get("change_high"), lambda v: f"{100 * v:+.1f}")
    text += f" {bracket}" if bracket else ""
    if paired.get("fixed") is not None:
        text += f" ({paired['fixed']}/{paired.get('broke')})"
    if not _missing(paired.get("sign_test_p")):
        text += f", sign test p={paired['sign_test_p']:.2g}"
    return text


def prompt_filter_line(summary: dict | None) -> list[str]:
    """How many training prompts the pass-rate filter kept, when it ran."""
    if not summary:
        return []
    return [f"- Training prompts: {num(summary.get('kept'))} of {num(summary.get('candidates'))} candidates "
            f"kept by the pass-rate filter (mean pass rate {pct(summary.get('mean_pass_rate_candidates'))} "
            f"over candidates, {pct(summary.get('mean_pass_rate_kept'))} over kept ones)."]


def distill_section(folder: StageFolder) -> list[str]:
    """Rejection-sampled traces (the funnel) and each student's held-out accuracy before and after."""
    lines = ["## Distillation", ""]
    m = folder.metrics(DistillMetrics)
    if not m:
        return lines + [not_run(f"no {folder.path.name}/metrics.json")]
    t = m.traces
    teacher = (folder.json("protocol.json") or {}).get("teacher")
    if t:
        who = f"Teacher `{teacher}`" if teacher else "Teacher"
        rejected = ", ".join(f"{num(t.get(key))} {what}" for key, what in (
            ("incorrect", "incorrect"), ("bad_format", "badly formatted"), ("truncated", "truncated"),
            ("mixed_language", "mixed-language"), ("duplicate", "duplicates"),
            ("surplus", "over the per-question cap")))
        lines += [f"{who}: {num(t.get('kept'))} of {num(t.get('sampled'))} samples kept "
                  f"({pct(t.get('acceptance_rate'))}), covering {num(t.get('questions_kept'))} questions, "
                  f"{num(t.get('mean_tokens'))} tokens on average. Rejected: {rejected}.", ""]
    students = m.students
    if not students:
        return lines + ["Students: " + not_run("no student in this run's params")]
    rows = [[label + (f" ({s['note']})" if s.get("note") else ""), f"`{s.get('start')}`",
             num(s.get("steps")), num(s.get("train_loss"), 3),
             pct_ci(s.get("before", {})), pct_ci(s.get("after", {})),
             f"{pct(s.get('before', {}).get('format_rate'))} -> {pct(s.get('after', {}).get('format_rate'))}"]
            for label, s in students.items()]
    n = next(iter(students.values())).get("after", {}).get("n")
    header = ["student", "start", "steps", "train loss", f"held-out before (n={n})", "held-out after",
              "format before -> after"]
    return lines + [md_table(header, rows)]


def nest_markdown(text: str, level: int = 3) -> str:
    """Drop a markdown file's leading title and move its headings so the highest becomes `level`."""
    text = re.sub(r"\A#{1,6} .*\n*", "", text.strip())
    found = [len(h) for h in re.findall(r"^(#{1,6}) ", text, flags=re.M)]
    if not found:
        return text
    shift = level - min(found)
    return re.sub(r"^(#{1,6}) ", lambda m: "#" * min(6, len(m.group(1)) + shift) + " ", text, flags=re.M)


def distill_vs_rl_section(folder: StageFolder) -> list[str]:
    """The comparison the evaluate notebook writes to `distill_vs_rl.md`, included as it is."""
    lines = ["## Distill vs RL", ""]
    file = folder.path / DISTILL_VS_RL
    if not file.is_file():
        return lines + [not_run(f"no {folder.path.name}/{DISTILL_VS_RL}")]
    return lines + [nest_markdown(file.read_text(encoding="utf-8"))]


def earlier_section(folders: dict[str, StageFolder]) -> list[str]:
    """Probe and cold-start SFT in one line each."""
    lines = ["## Probe and cold start", ""]
    probe = folders["probe"].json("metrics.json")
    if probe and probe.get("answer_rate"):
        for model, rates in probe["answer_rate"].items():
            ordered = sorted(rates.items(), key=lambda kv: -(kv[1] or 0))
            lines.append(f"- Probe, {model}: answer rate by template "
                         + ", ".join(f"{t} {pct(v)}" for t, v in ordered)
                         + f" (n={probe.get('n_questions')} questions).")
    else:
        lines.append("- Probe: " + not_run("no probe metrics"))
    sft = folders["sft"].metrics(SftMetrics)
    if sft:
        b, a = sft.before, sft.after
        lines.append(f"- Cold-start SFT on {sft.training.get('examples')} examples: format "
                     f"{pct(b.get('format_rate'))} -> {pct(a.get('format_rate'))}, held-out accuracy "
                     f"{pct_ci(b)} -> {pct_ci(a)} (greedy, n={a.get('n')}).")
    else:
        lines.append("- Cold-start SFT: " + not_run("no SFT metrics"))
    return lines


def files_section(folders: dict[str, StageFolder], report_dir: Path) -> list[str]:
    """Per stage: its plots (PNG) and its executed notebook (.ipynb, .html)."""
    rows = []
    for stage, folder in folders.items():
        if not folder.path.is_dir():
            rows.append([pipeline_stage(stage).title, NOT_RUN, NOT_RUN])
            continue
        plots = [link(folder, p, report_dir, p.stem) for p in sorted(folder.path.glob("plots/*.png"))]
        rows.append([pipeline_stage(stage).title, ", ".join(plots) or "none", notebook_links(folder, report_dir)])
    return ["## Plots and executed notebooks", "", md_table(["stage", "plots", "notebook"], rows)]


def notebook_links(folder: StageFolder, report_dir: Path) -> str:
    """Links to the stage's executed notebook and its HTML rendering."""
    name = pipeline_stage(folder.stage).notebook
    notebook = folder.path / name
    if not notebook.is_file():
        return "none"
    parts = [link(folder, notebook, report_dir, name)]
    html = notebook.with_suffix(".html")
    if html.is_file():
        parts.append(link(folder, html, report_dir, "html"))
    return " (".join(parts) + ")" * (len(parts) - 1)


# --- protocol -------------------------------------------------------------------------------------

def flatten(value: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested params as `a.b.c = value` pairs, lists joined by commas."""
    if isinstance(value, dict) and value:
        return [pair for k, v in value.items() for pair in flatten(v, f"{prefix}{k}.")]
    if isinstance(value, list):
        value = ", ".join(str(v) for v in value)
    elif value == {}:
        value = "(none)"
    return [(prefix.rstrip("."), f"`{value}`")]


def rollout_notes(protocols: dict[str, dict]) -> list[str]:
    """A line for each RL run whose rollouts came from another engine than common.backend names."""
    notes = [f"{stage} {run}: rollouts generated with `{choice.get('engine')}`, not "
             f"`{choice.get('requested')}`: {choice.get('reason')}."
             for stage, p in protocols.items() for run, choice in (p.get("rollout") or {}).items()
             if choice and choice.get("engine") != choice.get("requested")]
    return [*notes, ""] if notes else []


def protocol_section(folders: dict[str, StageFolder]) -> list[str]:
    """What made the numbers: each stage's params (folded) and the library versions of every stage."""
    lines = ["## How it was made", ""]
    protocols = {s: f.json("protocol.json") for s, f in folders.items()}
    protocols = {s: p for s, p in protocols.items() if p}
    if not protocols:
        return lines + [not_run("no protocol.json in any result folder")]
    common = next(iter(protocols.values())).get("common", {})
    lines += [f"Seed {common.get('seed')}, backend `{common.get('backend')}`, device `{common.get('device')}`, "
              f"training dtype `{common.get('dtype')}`, inference dtype "
              f"`{common.get('inference_dtype') or common.get('dtype')}` (the `common` params; each stage's "
              "own params are folded below).", ""]
    lines += rollout_notes(protocols)
    libraries = sorted({lib for p in protocols.values() for lib in p.get("libraries", {})})
    rows = [[lib] + [protocols[s].get("libraries", {}).get(lib, "-") for s in protocols] for lib in libraries]
    lines += [md_table(["library"] + list(protocols), rows), ""]
    for stage, p in protocols.items():
        # `common` only where it differs from the line above (it is the same section for every stage).
        pairs = flatten(p.get("params", {})) + (flatten(p.get("common", {}), "common.")
                                                if p.get("common", {}) != common else [])
        lines += [f"<details><summary>{stage}: {len(pairs)} settings</summary>", "",
                  md_table(["setting", "value"], [list(pair) for pair in pairs]), "", "</details>", ""]
    missing = [s for s in folders if s not in protocols]
    if missing:
        lines.append("No protocol (" + NOT_RUN + "): " + ", ".join(missing) + ".")
    return lines


# --- the report -----------------------------------------------------------------------------------

def findings_section(results_dir: Path) -> list[str]:
    """The findings table (findings.md, written just before the report), first on the page."""
    from r1repro.findings import FINDINGS_MD

    file = results_dir / FINDINGS_MD
    if not file.is_file():
        return ["## Findings", "", not_run(f"no {FINDINGS_MD}: `python -m r1repro.report` writes it")]
    return ["## Findings: the papers' claims, checked", "", nest_markdown(file.read_text(encoding="utf-8")),
            "", f"From [{FINDINGS_MD}]({FINDINGS_MD}) and findings.json."]


def stage_times_section(results_dir: Path) -> list[str]:
    """How long each stage took (protocol.json `wall_s`), its peak memory (`peak_rss_gb`) and on what machine."""
    from r1repro.pipeline import timed_folders

    lines = ["## Stage times", ""]
    protocols = {s: StageFolder(s, results_dir / name).json("protocol.json") or {}
                 for s, name in timed_folders().items()}
    rows, total = [], 0.0
    for stage, p in protocols.items():
        wall, peak = p.get("wall_s"), p.get("peak_rss_gb")
        total += wall or 0.0
        rows.append([pipeline_stage(stage).title, "n/a" if wall is None else f"{wall:.0f}",
                     "n/a" if wall is None else f"{wall / 60:.1f}", "n/a" if peak is None else f"{peak:.1f}"])
    peaks = [p["peak_rss_gb"] for p in protocols.values() if p.get("peak_rss_gb") is not None]
    rows.append(["**total**", f"**{total:.0f}**", f"**{total / 60:.1f}**",
                 f"**{max(peaks):.1f}** (largest)" if peaks else "n/a"])
    hardware = next((p.get("hardware") for p in protocols.values() if p.get("hardware")), None)
    if hardware:
        flags = [f for f, present in (hardware.get("cpu_flags") or {}).items() if present]
        lines += [f"Machine: {hardware.get('cpu_model')}, {hardware.get('cpu_count')} cores, torch threads "
                  f"{hardware.get('torch_threads')}, native bf16 {hardware.get('cpu_native_bf16')}"
                  + (f", GPU {hardware['gpu']}" if hardware.get("gpu") else "")
                  + f" (flags: {', '.join(flags) or 'none of interest'}). Training dtype "
                  f"`{protocols.get('sft', {}).get('common', {}).get('dtype')}`.", ""]
    return lines + [md_table(["stage", "wall time (s)", "(min)", "peak memory (GB)"], rows), "",
                    "Wall time of each stage from start to its last cell (`wall_s` in its protocol.json; "
                    "the params and report stages take seconds) and the peak resident memory of its largest "
                    "process, the notebook's kernel (`peak_rss_gb`); `python bench/pipeline.py` sets them "
                    "beside this machine's roofline and budgets."]


def build_report(results_dir: Path, report_dir: Path | None = None) -> str:
    """The report's markdown text.

    Args:
        results_dir: the folder holding one subfolder per stage (`probe`, `sft`, `rl`, `distill`, `eval`).
        report_dir: the folder the report will be written to (links are relative to it).
    Returns:
        Markdown: intro, findings, headline table, RL, distillation, distill vs RL, earlier stages,
        stage times, files, protocol.
    """
    results_dir = Path(results_dir)
    report_dir = Path(report_dir or results_dir)
    folders = stage_folders(results_dir)
    intro = ["# Results report", "",
             "A review of one `dvc repro` run, built by `r1repro.report` from the result folders beside "
             "this file: every number comes from a stage's records and `metrics.json`, every setting from "
             "its `protocol.json`. Accuracies are in %, with bootstrap intervals in brackets."]
    sections = [intro, findings_section(results_dir), eval_section(folders["evaluate"], report_dir),
                rl_section(folders["rl"]), distill_section(folders["distill"]),
                distill_vs_rl_section(folders["evaluate"]), earlier_section(folders),
                stage_times_section(results_dir), files_section(folders, report_dir), protocol_section(folders)]
    return "\n\n".join("\n".join(s).strip() for s in sections) + "\n"


def write_report(results_dir: Path | str, dest: Path | str | None = None) -> Path:
    """Build the report and write it atomically (temporary file, then rename).

    Args:
        results_dir: the folder holding the stage folders (usually `results/`).
        dest: where to write; default `results_dir/REPORT.md`.
    Returns:
        The path written.
    """
    results_dir = Path(results_dir)
    dest = Path(dest) if dest else results_dir / REPORT_NAME
    text = build_report(results_dir, dest.parent)
    atomic_write_text(dest, text)
    missing = text.count(f"_{NOT_RUN}_")
    print(f"[report] {dest}: {len(text.splitlines())} lines, {missing} part(s) not run")
    return dest


def main(argv: list[str] | None = None) -> int:
    """`python -m r1repro.report [RESULTS_DIR]`: the findings (findings.md, findings.json), then REPORT.md.

    The report section of results/params.yaml (the resolved params) sets the intervals; a folder
    given on the command line is read with the defaults instead.
    """
    argv = sys.argv[1:] if argv is None else argv
    from r1repro.config import ConfigError, ReportParams, load_resolved, repo_root
    from r1repro.findings import write_findings

    if argv:
        results_dir, cfg, split, seed = Path(argv[0]), ReportParams(), "test", 0
    else:
        try:
            params = load_resolved()
        except ConfigError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        results_dir, cfg, seed = repo_root() / RESULTS_DIR, params.report, params.common.seed
        split = params.splits.report_on if params.splits else "test"
    rows = write_findings(results_dir, confidence=cfg.confidence, n_boot=cfg.bootstrap_samples, seed=seed,
                          split=split)
    print(f"[findings] {len(rows)} rows, {sum(r.counted for r in rows)} counted claims: "
          + ", ".join(f"{r.id} ({r.kind}) {r.verdict}" for r in rows))
    write_report(results_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
