#!/usr/bin/env bash
# Wall time of `coars-fast eval --dataset lastfm --num-users 10 --turns 2` (the quick look the
# usability issue asks to halve), today's code against an older commit, on the same machine.
#
#   bash scripts/eval_wall_time.sh [OLD_COMMIT]     (default 93a8567, the code when it was asked)
#
# Each side runs once to fill its caches, then REPEATS times (default 3) timed, alternating; the
# medians and their ratio are printed. The old commit runs from a git worktree under $TMPDIR with
# PYTHONPATH (no install), its kernels/ folder linked as coars_fast.kernels, its C++ extension not
# built (eval does not use it).
# Run on a quiet machine: the figure is wall time.
set -euo pipefail
cd "$(dirname "$0")/.."
old=${1:-93a8567}
data=${COARS_FAST_DATA:-../shared/data}
work=${TMPDIR:-/tmp}/coars-eval-wall-$old
args=(eval --dataset lastfm --data-dir "$(realpath "$data")" --num-users 10 --turns 2)

if [ ! -d "$work" ]; then
    git worktree add --detach -f "$work" "$old" >/dev/null
    ln -sfn ../kernels "$work/coars_fast/kernels"
fi

run() {  # label, out suffix, command...: wall seconds of one run
    local label=$1 suffix=$2
    shift 2
    local start end
    start=$(date +%s.%N)
    "$@" --out "$work/out-$label$suffix" >"$work/$label.log" 2>&1
    end=$(date +%s.%N)
    echo "$end - $start" | bc
}

old_cli=(env PYTHONPATH="$work" python -P -c "import sys; from coars_fast.cli import main; sys.exit(main(sys.argv[1:]))")
new_cli=(coars-fast)
# the first run of each fills its caches (SASRec, the converted model, peer representations)
run before -warm "${old_cli[@]}" "${args[@]}" >/dev/null
run after -warm "${new_cli[@]}" "${args[@]}" >/dev/null
# then REPEATS timed runs of each, alternating, so that a drift of the machine's speed hits both
befores=() afters=()
for i in $(seq "${REPEATS:-3}"); do
    befores+=("$(run before "-$i" "${old_cli[@]}" "${args[@]}")")
    afters+=("$(run after "-$i" "${new_cli[@]}" "${args[@]}")")
    printf 'run %d: before %6.1f s  after %6.1f s\n' "$i" "${befores[-1]}" "${afters[-1]}"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
b=$(median "${befores[@]}") a=$(median "${afters[@]}")
printf 'median: before %.1f s, after %.1f s, after/before %.2f (logs: %s)\n' "$b" "$a" "$(echo "$a / $b" | bc -l)" "$work"
