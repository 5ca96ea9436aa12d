#!/usr/bin/env bash
# One prepared GPU check, for a lent device (one H100/H200, no network, < 8 minutes):
#   1. install the wheels it carries (bench/wheels/*.whl: trl, datasets, ...) over the image's torch,
#      transformers, accelerate and peft, without touching those;
#   2. bench/rollout.py: plain `generate` against every generation backend that runs there
#      (vLLM when importable), 256 prompts x 512 new tokens on a random Qwen2.5-Math-1.5B-shaped
#      model: tokens/s, ratio to plain, fraction of the bandwidth roofline;
#   3. bench/grpo_step.py, GRPO then Dr. GRPO, 5 steps each: plain TRL settings against
#      rl.grpo_config (with vLLM colocated, which syncs the bf16 policy's weights into the engine
#      every step, when vLLM is there);
#   4. every result as JSON in $OUT (default results/bench/), and a summary line per file.
#
#   bash bench/device_check.sh              # on the device
#   bash bench/device_check.sh --dry-run    # on a CPU: every step, toy sizes, same code path
set -euo pipefail
cd "$(dirname "$0")/.."

DRY=0
[[ "${1:-}" == "--dry-run" ]] && DRY=1
OUT="${OUT:-results/bench}"
[[ $DRY == 1 ]] && OUT="${DRY_OUT:-results/bench/dry-run}"
mkdir -p "$OUT"
PY="${PYTHON:-python}"
export HF_HUB_OFFLINE=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
started=$(date +%s)
step() { echo "== [$(( $(date +%s) - started )) s] $*"; }

step "wheels"
if compgen -G "bench/wheels/*.whl" > /dev/null; then
    # --no-deps: the image's torch/transformers stay; the wheels were chosen to match them.
    if [[ $DRY == 1 ]]; then
        ls bench/wheels/*.whl
    else
        "$PY" -m pip install --quiet --no-index --no-deps bench/wheels/*.whl
    fi
else
    echo "no bench/wheels/*.whl: using what is installed"
fi
"$PY" - <<'EOF'
import importlib.util
for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "vllm"):
    found = importlib.util.find_spec(name) is not None
    version = __import__(name).__version__ if found else "missing"
    print(f"  {name}: {version}")
import torch
print(f"  cuda: {torch.cuda.is_available()} {torch.cuda.get_device_name(0) if torch.cuda.is_available() else ''}")
EOF

if [[ $DRY == 1 ]]; then
    SIZE=(--tiny --device cpu --dtype float32)
    ROLLOUT=(--prompts 4 --new-tokens 8 --prompt-tokens 16 --repeats 1)
    GRPO=(--prompts 2 --samples 2 --new-tokens 8 --prompt-tokens 16 --steps 2)
else
    SIZE=(--device cuda --dtype bfloat16)
    ROLLOUT=(--prompts 256 --new-tokens 512 --prompt-tokens 128 --repeats 2)
    GRPO=(--prompts 16 --samples 8 --new-tokens 256 --prompt-tokens 128 --steps 5)
fi

step "rollout throughput"
"$PY" bench/rollout.py "${SIZE[@]}" "${ROLLOUT[@]}" --out "$OUT/rollout.json"

for run in grpo dr_grpo; do
    step "GRPO step, run $run"
    "$PY" bench/grpo_step.py "${SIZE[@]}" "${GRPO[@]}" --run "$run" --out "$OUT/grpo_step_$run.json"
done

step "summary"
"$PY" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for path in sorted(Path(sys.argv[1]).glob("*.json")):
    data = json.loads(path.read_text())
    if "results" in data:  # rollout: each backend against plain generate and the roofline
        for name, r in data["results"].items():
            print(f"  {path.name} {name}: {r['tokens_per_s']:.0f} tok/s, x{r['ratio_vs_plain']:.2f} vs plain, "
                  f"{100 * r['roofline_fraction']:.1f}% of the bandwidth roofline")
    if "speedup_project_vs_plain" in data:
        print(f"  {path.name}: project settings x{data['speedup_project_vs_plain']:.2f} vs plain TRL")
EOF
step "done"
