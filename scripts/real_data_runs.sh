#!/usr/bin/env bash
# The real-data runs of the learning evidence (docs/RESULTS.md): CoARS on LastFM (all 122 validation
# users, one episode each) and MovieLens (200 validation users), the embedded model, seed 0, with the
# learning knobs chosen on the synthetic benchmark's validation users (turn baseline, balanced User,
# lr 3e-4, 4 users x G = 4 per step, 8 reason tokens) and the protocol's 5 turns, for 95 training
# minutes (the issue asks for >= 90). The User pays for accepting a wrong item (reward.exclude_from:
# rec): under the paper's rule (both agents leave such a turn out) the LastFM run's User learnt to
# accept every first item within 10 steps and nothing was learnt after (runs/lastfm-coars-s0,
# docs/RESULTS.md). Each run evaluates the untrained agents first (LastFM: not again; the paper-rule
# run's zero-shot evaluation is the same 122 users, candidates and greedy agents), draws a validation
# curve every 25 steps and writes its report. A stopped run continues where it stopped when the script
# is run again.
#
#   bash scripts/real_data_runs.sh [lastfm|movielens ...]    (default: both, one after another)
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${MINUTES:-95}
run() {
    local dataset=$1 users=$2 curve=$3 out=runs/$1-coars-fp-s0
    shift 3
    if [ -f "$out/summary.json" ]; then
        echo "$out done"
    elif [ -f "$out/config.yaml" ]; then
        coars-fast train --resume "$out"
    else
        coars-fast train --dataset "$dataset" --steps 100000 --set train.minutes="$minutes" \
            --set train.users_per_step=4 --set rollout.group_size=4 --baseline turn \
            --set rollout.balance_user=true --set optim.lr=3e-4 --set generation.reason_tokens=8 \
            --set reward.exclude_from=[rec] \
            --set eval.num_users="$users" --set eval.f1_users=30 --set eval.every=25 \
            --set eval.curve_users="$curve" --set eval.curve_f1_users=10 "$@" --out "$out"
    fi
}
datasets=("$@")
[ ${#datasets[@]} -gt 0 ] || datasets=(lastfm movielens)
for dataset in "${datasets[@]}"; do
    case $dataset in
        lastfm) run lastfm 122 61 --set eval.initial=false --set eval.curve_start=false ;;
        movielens) run movielens 200 100 ;;
        *) echo "unknown dataset $dataset (lastfm or movielens)" >&2; exit 2 ;;
    esac
done
