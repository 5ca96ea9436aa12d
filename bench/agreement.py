"""Do two generation engines give the same answers? (issue 32, item 3; a script, not a test)

The cold-start check the pipeline itself makes: SFT's held-out questions (`sft.heldout`) under SFT's
template and token budget, greedy, through a reference engine and each other engine, every response
graded by the project's grader. Per engine (and for every pair of engines) it counts the questions with the same greedy text, the same
extracted final answer and the same verdict as the reference, and it samples the first
--sample-questions questions --samples times (T=0.6, top-p 0.95 by default: the evaluation protocol)
for an accuracy with its bootstrap interval, which is the comparison sampling allows (two engines
draw different random streams). An engine is given as backend:dtype, so the same backend in another
precision shows what rounding alone changes:

    python bench/agreement.py --model models/sft --reference transformers_fast:bfloat16 \
        --engines openvino:bfloat16,transformers_fast:float32

Everything goes to --out as JSON. The exit status is 1 when an engine's share of same final answers
is under --require (default 0.95, the issue's bar), else 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from r1repro import bench, config, data, evaluation, generation, modeling, templates
from r1repro.io import atomic_write_json
from r1repro.stops import stop_policy_for


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="models/sft", help="model folder (default: the cold-start model)")
    parser.add_argument("--reference", default="transformers_fast:bfloat16", help="backend:dtype")
    parser.add_argument("--engines", default="openvino:bfloat16", help="comma-separated backend:dtype")
    parser.add_argument("--questions", type=int, default=None, help="first N of sft.heldout (default all)")
    parser.add_argument("--sample-questions", type=int, default=32)
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--temperature", type=float, default=0.6)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--require", type=float, default=0.95, help="least share of same final answers")
    parser.add_argument("--out", type=Path, default=Path("results/bench/agreement.json"))
    return parser.parse_args(argv)


def parse_engine(text: str) -> tuple[str, str]:
    """'backend:dtype' as a pair; a clear error for anything else."""
    backend, sep, dtype = text.partition(":")
    if not sep or not backend or dtype not in ("float32", "bfloat16", "float16"):
        raise SystemExit(f"error: engine {text!r}: expected backend:dtype, e.g. openvino:bfloat16")
    return backend, dtype


def answers(engine: str, model: str, rows: list[dict], prompts: list[str], common: Any, sft: Any,
            args: argparse.Namespace, tokenizer: Any) -> dict[str, Any]:
    """One engine's graded greedy records, sampled records and the seconds each took."""
    backend, dtype = parse_engine(engine)
    policy = stop_policy_for(common, sft.template, tokenizer)
    budget = sft.eval_sampling.max_new_tokens
    # The pipeline's own way to open an engine, with only the backend and precision changed.
    engine_common = common.model_copy(update={"backend": backend, "inference_dtype": dtype, "device": "cpu"})
    generator = generation.generator_for(engine_common, model)
    try:
        started = time.perf_counter()
        greedy = generator.generate(prompts, 1, 0.0, 1.0, budget, common.seed, stop_policy=policy)
        greedy_s = time.perf_counter() - started
        few = args.sample_questions
        started = time.perf_counter()
        sampled = generator.generate(prompts[:few], args.samples, args.temperature, args.top_p, budget,
                                     common.seed, stop_policy=policy)
        sampled_s = time.perf_counter() - started
    finally:
        generator.close()

    def graded(completions: list, some: list[dict]) -> list[dict]:
        return evaluation.graded_heldout_records(engine, some, prompts[:len(some)], completions, sft.template,
                                                 common.grading_workers, common.grading_timeout_s)

    return {"greedy": graded(greedy, rows), "sampled": graded(sampled, rows[:few]),
            "greedy_s": greedy_s, "sampled_s": sampled_s}


def compare(reference: list[dict], other: list[dict]) -> dict[str, int]:
    """Questions on which `other`'s greedy record equals the reference's: text, final answer, verdict."""
    same = {"same_text": 0, "same_final_answer": 0, "same_verdict": 0}
    for ref, rec in zip(reference, other, strict=True):
        same["same_text"] += ref["response"] == rec["response"]
        same["same_final_answer"] += ref["extracted"] == rec["extracted"]
        same["same_verdict"] += ref["correct"] == rec["correct"]
    return same


def summary(result: dict[str, Any], seed: int) -> dict[str, Any]:
    """Accuracies with their intervals, tokens and seconds of one engine's result."""
    return {"greedy": evaluation.heldout_summary(result["greedy"], seed=seed),
            "sampled": evaluation.heldout_summary(result["sampled"], seed=seed),
            "greedy_s": round(result["greedy_s"], 1), "sampled_s": round(result["sampled_s"], 1)}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    params = config.load_params()
    common, sft = params.common, params.sft
    rows = data.load_subset(common.data_dir, sft.heldout, key="sft.heldout")[:args.questions]
    tokenizer = modeling.load_tokenizer(args.model, trust_remote_code=common.trust_remote_code)
    prompts = [templates.render_prompt(sft.template, row["problem"], tokenizer) for row in rows]
    engines = [args.reference] + [e for e in args.engines.split(",") if e]
    for engine in engines:
        parse_engine(engine)
    results = {e: answers(e, args.model, rows, prompts, common, sft, args, tokenizer) for e in engines}
    reference = results[args.reference]["greedy"]
    report: dict[str, Any] = {
        "model": args.model, "reference": args.reference, "questions": len(rows),
        "template": sft.template, "max_new_tokens": sft.eval_sampling.max_new_tokens,
        "sampled": {"questions": min(args.sample_questions, len(rows)), "n": args.samples,
                    "temperature": args.temperature, "top_p": args.top_p},
        "require_same_final_answer": args.require,
        "environment": bench.environment("cpu"),
        "engines": {e: summary(r, common.seed) for e, r in results.items()},
        "agreement": {e: compare(reference, results[e]["greedy"]) for e in engines[1:]},
        # Every other pair too: what precision alone changes within one engine, and across engines.
        "pairs": {f"{a} vs {b}": compare(results[a]["greedy"], results[b]["greedy"])
                  for i, a in enumerate(engines) for b in engines[i + 1:]},
    }
    atomic_write_json(args.out, report)
    failed = []
    print(f"reference {args.reference}: greedy accuracy "
          f"{report['engines'][args.reference]['greedy']['accuracy']:.3f}")
    for engine, same in report["agreement"].items():
        share = same["same_final_answer"] / len(rows)
        sampled = report["engines"][engine]["sampled"]
        print(f"{engine}: same text {same['same_text']}/{len(rows)}, same final answer "
              f"{same['same_final_answer']}/{len(rows)} ({share:.1%}), same verdict {same['same_verdict']}; "
              f"sampled accuracy {sampled['accuracy']:.3f} [{sampled['accuracy_low']:.3f}, "
              f"{sampled['accuracy_high']:.3f}]")
        if share < args.require:
            failed.append(engine)
    for pair, same in report["pairs"].items():
        print(f"  {pair}: same text {same['same_text']}, final answer {same['same_final_answer']}, "
              f"verdict {same['same_verdict']} of {len(rows)}")
    ref = report["engines"][args.reference]["sampled"]
    print(f"reference sampled accuracy {ref['accuracy']:.3f} [{ref['accuracy_low']:.3f}, {ref['accuracy_high']:.3f}]")
    print(f"written to {args.out}")
    if failed:
        print(f"under {args.require:.0%} same final answers: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
