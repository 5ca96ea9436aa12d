#!/usr/bin/env bash
# One prepared GPU check, for a lent device (one H100/H200, CPython 3.12 with torch, transformers,
# accelerate and peft, no network). The whole run stays under 8 minutes (the device lends ~15 in all,
# start-up included): every step has a time budget, is stopped past it, and the next step starts.
#   1. wheels: bench/wheels/*.whl (`make device-wheels`; bench/device_wheels.py says what and why)
#      installed with --no-deps into a temporary folder put on PYTHONPATH, so the image's own
#      packages are never touched; r1repro itself comes from src/;
#   2. versions: every module the steps import, the carried versions, vLLM absent or not, a smoke
#      test of math-verify and dvclive (versions.json; stops here if anything is missing);
#   3. rollout: bench/rollout.py, plain `generate` against each generation backend that runs there
#      (vLLM only when installed: it is not carried) on a random Qwen2.5-Math-1.5B-shaped model;
#   4. grpo_step: bench/grpo_step.py, GRPO and Dr. GRPO with the paper's mini-batch structure (a
#      rollout of 16 prompts x 8 samples split into 4 optimiser steps), plain TRL against the project's
#      settings: step times, optimiser steps per rollout, the clip ratio;
#   5. two_runs: bench/two_runs.py, rl.train_run for grpo then dr_grpo with common.isolate_training:
#      wall time, and this process's GPU memory before and after each run (it must come back);
#   6. summary: a line per result.
# Each step writes its JSON into $OUT (default results/bench/; the dry run's results/bench/dry-run/),
# beside device_check.log: five files.
#
#   bash bench/device_check.sh              # on the device; the call carries bench/wheels
#   bash bench/device_check.sh --dry-run    # on a CPU at toy sizes, all steps: make device-check-dry
#
# Environment: PYTHON (default python3), WHEELS (default bench/wheels; "installed" installs nothing
# and runs on what PYTHON has), OUT, DRY_OUT.
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT="${OUT:-results/bench}"
[[ $DRY == 1 ]] && OUT="${DRY_OUT:-results/bench/dry-run}"
mkdir -p "$OUT"
exec > >(tee "$OUT/device_check.log") 2>&1
PY="${PYTHON:-python3}"
WHEELS="${WHEELS:-bench/wheels}"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
started=$(date +%s)
elapsed() { echo $(( $(date +%s) - started )); }
failures=()
declare -A BUDGET

if [[ $DRY == 1 ]]; then
    TOTAL=3600  # the CPU is slow and lends no device time: budgets only against hangs
    BUDGET=([versions]=300 [rollout]=900 [grpo_step]=900 [two_runs]=900)
    SIZE=(--tiny --device cpu --dtype float32)
    # Not transformers_continuous: under transformers 5.17 (the GPU lock's and the image's) it takes
    # most of the CPU's memory (22 GB for the toy model) whatever cache size r1repro.generation asks.
    ROLLOUT=(--prompts 4 --new-tokens 8 --prompt-tokens 16 --repeats 1 --backends transformers,transformers_static)
    GRPO=(--prompts 2 --samples 4 --updates 2 --rollouts 2 --new-tokens 8 --prompt-tokens 16 --learning-rate 1e-2)
    TWO=(--steps 2 --updates 2 --new-tokens 8)
else
    TOTAL=470  # seconds, the install included: leaves the 15 minutes room for start-up and a rerun
    BUDGET=([versions]=40 [rollout]=140 [grpo_step]=170 [two_runs]=100)
    SIZE=(--device cuda --dtype bfloat16)
    ROLLOUT=(--prompts 128 --new-tokens 256 --prompt-tokens 128 --repeats 2)
    GRPO=(--prompts 16 --samples 8 --updates 4 --rollouts 2 --new-tokens 128 --prompt-tokens 128)
    TWO=(--steps 2 --updates 2 --new-tokens 64)
fi

# step NAME COMMAND...: run under the smaller of its budget and what is left of TOTAL; report.
step() {
    local name=$1 t0 left limit rc
    shift
    t0=$(elapsed)
    left=$(( TOTAL - t0 ))
    limit=$(( ${BUDGET[$name]} < left ? ${BUDGET[$name]} : left ))
    if (( limit < 10 )); then
        echo "== [${t0} s] $name: SKIPPED, ${left} s of the ${TOTAL} s left"
        failures+=("$name skipped")
        return
    fi
    echo "== [${t0} s] $name (budget ${limit} s)"
    # INT first: Python unwinds (a launched training process's group is stopped with it); KILL later.
    timeout --signal=INT --kill-after=15 "$limit" "$@"
    rc=$?
    if (( rc == 124 || (rc == 137 && $(elapsed) - t0 >= limit) )); then
        echo "== [$(elapsed) s] $name: STOPPED at its ${limit} s budget"
        failures+=("$name over budget")
    elif (( rc == 137 )); then
        echo "== [$(elapsed) s] $name: KILLED before its budget (out of memory?)"
        failures+=("$name killed")
    elif (( rc != 0 )); then
        echo "== [$(elapsed) s] $name: FAILED (exit $rc)"
        failures+=("$name failed")
    else
        echo "== [$(elapsed) s] $name: done in $(( $(elapsed) - t0 )) s"
    fi
}

echo "== [0 s] wheels from $WHEELS"
SITE=""
if [[ "$WHEELS" != installed ]]; then
    shopt -s nullglob
    wheels=("$WHEELS"/*.whl)
    shopt -u nullglob
    if (( ${#wheels[@]} == 0 )); then
        echo "error: no wheels in $WHEELS: run make device-wheels here and carry bench/wheels" \
             "(or WHEELS=installed to use what $PY has)"
        exit 2
    fi
    SITE=$(mktemp -d "${TMPDIR:-/tmp}/r1repro-site.XXXXXX")
    trap 'rm -rf "$SITE"' EXIT
    # --no-deps: nothing of the image is upgraded or replaced; the wheels were chosen to fit it.
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
        "${wheels[@]}" || { echo "error: installing the wheels failed"; exit 2; }
    echo "   ${#wheels[@]} wheels into $SITE in $(elapsed) s"
fi
export PYTHONPATH="$PWD/src${SITE:+:$SITE}${PYTHONPATH:+:$PYTHONPATH}"

step versions "$PY" bench/device_wheels.py check --wheels "$WHEELS" --out "$OUT/versions.json"
if (( ${#failures[@]} )); then
    echo "== the versions step failed: the other steps would too; stopping"
    exit 1
fi
"$PY" - <<'EOF'
import torch
name = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
print(f"   python {__import__('sys').version.split()[0]}, torch {torch.__version__}, cuda device: {name}")
EOF

step rollout "$PY" bench/rollout.py "${SIZE[@]}" "${ROLLOUT[@]}" --out "$OUT/rollout.json"
step grpo_step "$PY" bench/grpo_step.py "${SIZE[@]}" "${GRPO[@]}" --out "$OUT/grpo_step.json"
step two_runs "$PY" bench/two_runs.py "${SIZE[@]}" "${TWO[@]}" --out "$OUT/two_runs.json"

echo "== [$(elapsed) s] summary"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path

folder = Path(sys.argv[1])
def load(name):
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else None

rollout = load("rollout.json")
if rollout:
    for name, r in rollout["results"].items():
        print(f"  rollout {name}: {r['tokens_per_s']:.0f} tok/s, x{r['ratio_vs_plain']:.2f} vs plain, "
              f"{100 * r['roofline_fraction']:.1f}% of the bandwidth roofline")
    print(f"  rollout vLLM: {rollout['vllm']}" + ("" if rollout["complete"] else "; INCOMPLETE"))
    for name, error in rollout["errors"].items():
        print(f"  rollout {name}: FAILED: {error[:200]}")
grpo = load("grpo_step.json") or {}
for name, r in [("plain TRL", grpo.get("plain")), *grpo.get("runs", {}).items()]:
    if r:
        speed = f", x{r['speedup_vs_plain']:.2f} vs plain" if "speedup_vs_plain" in r else ""
        print(f"  grpo_step {name}: {r['seconds']:.2f} s per step (last rollout){speed}; optimiser steps per "
              f"rollout {r['optimizer_steps_per_rollout']} (config {r['configured_steps_per_rollout']}); "
              f"max clip ratio {max(r['clip_ratio'], default=0.0):.3f}")
two = load("two_runs.json")
for r in (two or {}).get("runs", []):
    memory = (f"free {r['memory_before']['free_mib']:.0f} -> {r['memory_after']['free_mib']:.0f} MiB, "
              f"returned: {r['memory_returned']}") if r["memory_after"] else "memory not measured (CPU)"
    print(f"  two_runs {r['run']}: {r['seconds']:.1f} s, {r['global_step']} steps, {memory}")
EOF
echo "== [$(elapsed) s] done; JSON in $OUT"
if (( ${#failures[@]} )); then
    printf '== not all well: %s\n' "${failures[@]}"
    exit 1
fi
