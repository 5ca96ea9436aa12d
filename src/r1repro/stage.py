"""Run one pipeline stage: its notebook, through papermill, with its parameters from params.yaml.

    python -m r1repro.stage probe        # what `dvc repro` runs for the probe stage

The settings come from results/params.yaml (params.yaml merged with the active profile by the
pipeline's `params` stage) and are validated first, so a bad key stops the run before any work. The notebook
runs with the repository as its working directory and writes everything into a staging folder; only a
run that finishes replaces `results/<stage>/`, so a failed run never overwrites good results. The
executed notebook is saved there too (and as HTML, for reading without Jupyter).
"""

from __future__ import annotations

import json
import resource
import shutil
import sys
import time
from pathlib import Path

from r1repro.config import STAGES, ConfigError, load_resolved, repo_root
from r1repro.io import atomic_write_json, read_json_or_none, staged_dir
from r1repro.pipeline import RESULTS_DIR, stage as pipeline_stage
# A failed run's executed notebook goes here (git-ignored), to read the traceback in context.
FAILED_DIR = "results/failed"


def notebook_parameters(stage: str, params, out_dir: Path) -> dict:
    """What papermill injects: the `common` section, the stage's own section, and the output folder."""
    return {
        "common": params.common.model_dump(mode="json"),
        stage: getattr(params, stage).model_dump(mode="json"),
        "out_dir": str(out_dir),
    }


def _export_html(notebook: Path) -> None:
    """Render the executed notebook to HTML beside it (plots embedded)."""
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_filename(str(notebook))
    notebook.with_suffix(".html").write_text(body, encoding="utf-8")


def summary_line(stage: str, out_dir: Path, seconds: float) -> str:
    """One line per stage: its time and the headline numbers the notebook chose to report."""
    metrics_path = out_dir / "metrics.json"
    headline = ""
    if metrics_path.is_file():
        metrics = json.loads(metrics_path.read_text())
        parts = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
                 for k, v in metrics.get("headline", {}).items()]
        headline = " ".join(parts)
    return f"[{stage}] done in {seconds:.0f} s {headline}".rstrip()


def remove_stale_staging(target: Path) -> None:
    """Delete staging folders a killed run left beside `target` (DVC runs one stage at a time)."""
    for stale in target.parent.glob(f".{target.name}.*.tmp"):
        shutil.rmtree(stale, ignore_errors=True)


def keep_failed_notebook(stage: str, executed: Path, root: Path) -> Path | None:
    """Copy a failed run's executed notebook to results/failed/ and return where it went."""
    if not executed.is_file():
        return None
    dest = root / FAILED_DIR / executed.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(executed, dest)
    return dest


def peak_rss_gb() -> float:
    """The largest resident set, in GB, of this process and of every child it has waited for (the
    notebook's kernel, once papermill has shut it down; and what the kernel waited for, such as
    grading workers): the memory the largest of them held at its peak, not their sum."""
    return round(max(_own_peak_kib(), _maxrss_kib(resource.RUSAGE_CHILDREN)) * 1024 / 1e9, 2)


def _maxrss_kib(who: int) -> int:
    maxrss = resource.getrusage(who).ru_maxrss
    return maxrss // 1024 if sys.platform == "darwin" else maxrss  # bytes on macOS, KiB on Linux


def _own_peak_kib() -> int:
    """This process's peak resident set since it started, in KiB.

    Not RUSAGE_SELF on Linux: exec keeps the high-water mark of the process that forked it, so a
    stage started from a 7 GB pytest or IDE process would report 7 GB. VmHWM belongs to the memory
    map exec created. A child forked from this process carries at most this process's resident set
    into its own count, so the maximum with RUSAGE_CHILDREN is still each process's own peak.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return _maxrss_kib(resource.RUSAGE_SELF)


def record_wall_time(protocol_path: Path, seconds: float, peak_gb: float | None = None) -> None:
    """Add the stage's wall time (the whole notebook, from kernel start to its last cell) and its
    peak memory (`peak_rss_gb`) to its protocol.json, beside the hardware the notebook recorded;
    written when the notebook wrote none.

    In protocol.json, not metrics.json: time and memory differ run to run, the metrics must not.
    """
    record = read_json_or_none(protocol_path) or {}
    peak = {} if peak_gb is None else {"peak_rss_gb": peak_gb}
    atomic_write_json(protocol_path, {**record, "wall_s": round(seconds, 1), **peak})


def run_stage(stage: str, root: Path | None = None, html: bool = True) -> Path:
    """Execute the stage's notebook; return the results folder it filled."""
    start = time.time()
    import papermill

    if stage not in STAGES:
        raise ConfigError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    root = root or repo_root()
    params = load_resolved(root)
    spec = pipeline_stage(stage)
    notebook = root / "notebooks" / spec.notebook
    target = root / RESULTS_DIR / spec.results
    remove_stale_staging(target)
    with staged_dir(target) as tmp:
        executed = tmp / spec.notebook
        try:
            papermill.execute_notebook(
                str(notebook), str(executed), parameters=notebook_parameters(stage, params, tmp),
                cwd=str(root), kernel_name="python3", progress_bar=False, log_output=True,
            )
        except papermill.PapermillExecutionError:
            kept = keep_failed_notebook(stage, executed, root)
            print(f"[{stage}] failed; {target.relative_to(root)} keeps its previous results. "
                  f"Executed notebook with the error: {kept}", file=sys.stderr)
            raise
        if html:
            _export_html(executed)
        record_wall_time(tmp / "protocol.json", time.time() - start, peak_rss_gb())
    print(summary_line(stage, target, time.time() - start))
    return target


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(f"usage: python -m r1repro.stage {{{','.join(STAGES)}}}", file=sys.stderr)
        return 2
    from papermill import PapermillExecutionError

    try:
        run_stage(argv[0])
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PapermillExecutionError as err:
        # The notebook's own error (e.g. a ConfigError raised in a cell) is the useful line.
        print(f"error: {argv[0]}: {err.ename}: {err.evalue}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
