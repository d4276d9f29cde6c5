#!/usr/bin/env bash
# Wall time of `coars-fast eval --dataset lastfm --num-users 10 --turns 2` (the quick look the
# usability issue asks to halve), today's code against an older commit, on the same machine.
#
#   bash scripts/eval_wall_time.sh [OLD_COMMIT]     (default 93a8567, the code when it was asked)
#
# Each side runs twice; the first run fills its caches (SASRec, the converted model), the second is
# timed. The old commit runs from a git worktree under $TMPDIR with PYTHONPATH (no install), its
# kernels/ folder linked as coars_fast.kernels, its C++ extension not built (eval does not use it).
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

timed() {  # label, command...: prints the label and the wall seconds of the second run
    local label=$1
    shift
    "$@" --out "$work/out-$label-warm" >/dev/null 2>&1
    local start end
    start=$(date +%s.%N)
    "$@" --out "$work/out-$label" >"$work/$label.log" 2>&1
    end=$(date +%s.%N)
    printf '%-8s %7.1f s  (%s)\n' "$label" "$(echo "$end - $start" | bc)" "$work/$label.log"
}

old_cli=(env PYTHONPATH="$work" python -P -c "import sys; from coars_fast.cli import main; sys.exit(main(sys.argv[1:]))")
timed "before" "${old_cli[@]}" "${args[@]}"
timed "after" coars-fast "${args[@]}"
