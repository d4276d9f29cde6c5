#!/usr/bin/env bash
# The learnability benchmark's comparison (docs/RESULTS.md): CoARS and its three ablations at the
# preset's budget (14 steps) and seed, then CoARS and --distill-coef 0 at a second training seed.
# Runs one after another; a stopped arm continues where it stopped when the script is run again.
# The first arm measures the untrained agents (before-training evaluations and the step-0 curve
# point); the others skip that, it is the same for every arm (LoRA starts at zero, same users).
set -euo pipefail
cd "$(dirname "$0")/.."
skip_zero_shot=(--set eval.initial=false --set eval.curve_start=false)
arm() {
    local name=$1
    shift
    if [ -f "runs/$name/summary.json" ]; then
        echo "arms: $name done"
    elif [ -f "runs/$name/config.yaml" ]; then
        coars-fast train --resume "runs/$name"
    else
        coars-fast train --config synthetic "$@" --out "runs/$name"
    fi
}
arm syn-coars-s0
arm syn-distill0-s0 --distill-coef 0 "${skip_zero_shot[@]}"
arm syn-outcome-s0 --reward outcome "${skip_zero_shot[@]}"
arm syn-reconly-s0 --train-agents rec "${skip_zero_shot[@]}"
arm syn-coars-s1 --set train.seed=1 "${skip_zero_shot[@]}"
arm syn-distill0-s1 --distill-coef 0 --set train.seed=1 "${skip_zero_shot[@]}"
coars-fast report runs/syn-coars-s0 runs/syn-distill0-s0 runs/syn-outcome-s0 runs/syn-reconly-s0 \
    runs/syn-coars-s1 runs/syn-distill0-s1 --names coars,distill0,outcome,rec-only,coars-s1,distill0-s1 \
    --out docs/figures/synthetic-arms
