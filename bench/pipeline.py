"""Where the pipeline's time went, against this machine's physical limits (a script, not a test).

Reads each stage's results/<stage>/protocol.json (written by `dvc repro`: `wall_s`, and the tokens its
generators produced with the seconds they took), measures this machine in the same run (matmul FLOP/s
in float32 and bfloat16, memory bandwidth of a large copy), and prints per stage: wall time, tokens
generated, tokens/s, and the fraction of the compute and bandwidth rooflines that generation reached
(the model's FLOPs and bytes per token from its config.json). The total is the sum of the stages'
wall times, set against this kind of CPU's budget, and the largest stage's peak memory against 8 GB
(`roofline.stage_time_budget`). Everything goes to results/bench/pipeline.json too.

    python bench/pipeline.py                      # after `make repro`
    python bench/pipeline.py --results results --model models/base --seconds 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from r1repro import roofline
from r1repro.io import atomic_write_json
from r1repro.cpu import cpu_info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=Path("results"), help="the results folder")
    parser.add_argument("--model", type=Path, default=Path("models/base"), help="model folder (config.json)")
    parser.add_argument("--context", type=int, default=256, help="typical context per token (prompt + half the answer)")
    parser.add_argument("--batch", type=int, default=64, help="rows per decode step (common.generation_batch_size)")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds each machine probe runs")
    parser.add_argument("--out", type=Path, default=Path("results/bench/pipeline.json"))
    return parser.parse_args(argv)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config_path = args.model / "config.json"
    if not config_path.is_file():
        print(f"error: {config_path} not found: pass --model a model folder (make model imports models/base)",
              file=sys.stderr)
        return 2
    config = json.loads(config_path.read_text())
    machine = {**cpu_info(), **roofline.measure_machine(args.seconds)}
    rows = roofline.stage_rows(args.results, config, machine, context=args.context, batch=args.batch)
    total = sum(r["wall_s"] or 0 for r in rows)
    budget, budget_for = roofline.stage_time_budget(machine["cpu_flags"])
    peaks = [r["peak_rss_gb"] for r in rows if r.get("peak_rss_gb") is not None]
    print(f"machine: {machine['cpu_model']}, torch threads {machine['torch_threads']}; matmul "
          f"{machine['matmul_gflops']['float32']:.0f} GFLOP/s float32, {machine['matmul_gflops']['bfloat16']:.0f} "
          f"bfloat16; copy bandwidth {machine['bandwidth_gbs']:.1f} GB/s")
    print(f"model: {roofline.parameter_count(config) / 1e6:.1f}M parameters, "
          f"{roofline.flops_per_token(config, args.context) / 1e9:.2f} GFLOP per token at context {args.context}")
    print(f"{'stage':<24}{'wall s':>8}{'peak GB':>8}{'tokens':>10}{'gen s':>8}{'tok/s':>8}{'compute':>9}"
          f"{'bandwidth':>10}")
    for r in rows:
        wall = "-" if r["wall_s"] is None else f"{r['wall_s']:.0f}"
        peak = "-" if r.get("peak_rss_gb") is None else f"{r['peak_rss_gb']:.1f}"
        rate = "-" if not r["tokens_per_s"] else f"{r['tokens_per_s']:.0f}"
        print(f"{r['title']:<24}{wall:>8}{peak:>8}{r['tokens']:>10}{r['generation_s']:>8.0f}{rate:>8}"
              f"{_pct(r.get('compute_fraction')):>9}{_pct(r.get('bandwidth_fraction')):>10}")
    line = f"total stage time: {total:.0f} s ({total / 60:.1f} min)"
    if budget is None:
        print(f"{line}; {budget_for}")
    else:
        verdict = "under" if total <= budget else "over"
        print(f"{line}, {verdict} the {budget} s budget for {budget_for} (ratio {total / budget:.2f})")
    if peaks:
        verdict = "under" if max(peaks) < roofline.PEAK_RSS_BUDGET_GB else "over"
        print(f"peak memory of the largest process: {max(peaks):.1f} GB, {verdict} the "
              f"{roofline.PEAK_RSS_BUDGET_GB:.0f} GB budget")
    atomic_write_json(args.out, {"machine": machine, "stages": rows, "total_s": total,
                                 "budget_s": budget, "budget_for": budget_for,
                                 "peak_rss_gb": max(peaks) if peaks else None,
                                 "model": {"parameters": roofline.parameter_count(config),
                                           "flops_per_token": roofline.flops_per_token(config, args.context),
                                           "context": args.context, "batch": args.batch}})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
