#!/usr/bin/env bash
# The GPU checks of one device session, in priority order, each under its own time limit, logs to
# $OUT: the Triton kernels against the reference on CUDA, the kernel benchmarks against naive /
# Liger / CCE, the training-step benchmark, rollout throughput (growing vs static KV cache), a short
# `coars-fast train` on a random-init model, the update's peak memory with checkpointed layers and with
# Liger's patches, and Liger's GRPO chunk-size sweep. All steps' limits add up to more than one device
# call allows: split them over calls with ONLY="name name ..." (make-model is needed by the rest).
#
# Expects, carried beside the tree (both git-ignored):
#   .whl/  pip download --no-deps --only-binary=:all: --python-version 3.12 --platform manylinux2014_x86_64
#          -d .whl transformers==5.24.0 peft==0.21.2 liger-kernel==0.8.5 cut-cross-entropy==25.1.1
#   .gpu/  data/lastfm (the dataset folder), tokenizer/ (the embedded model's tokenizer files from
#          the coars_fast cache), cache/sasrec/ (the trained LastFM SASRec, so peers need no training)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site
if ! python3 -c "import coars_fast.kernels" 2>/dev/null; then
  # Not installed (a bare device machine): the package from source, mapped as setup.py does (kernels/
  # is coars_fast.kernels), without the C++ CPU extension.
  [ -e coars_fast/kernels ] || ln -s ../kernels coars_fast/kernels
  export PYTHONPATH=$PWD:/tmp/site
fi

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv
  python3 -c "import sys, torch, triton, transformers, peft, liger_kernel, cut_cross_entropy as c
print(sys.version.split()[0], 'torch', torch.__version__, 'triton', triton.__version__, 'transformers',
      transformers.__version__, 'peft', peft.__version__, 'sms', torch.cuda.get_device_properties(0).multi_processor_count)
import importlib.util; print('flash_attn installed:', importlib.util.find_spec('flash_attn') is not None)
from coars_fast.models.packed_attention import varlen_kernel; print('torch varlen attention:', varlen_kernel(torch.device('cuda')))"
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step() {  # step NAME SECONDS COMMAND... (skipped when $ONLY lists other steps)
  local name=$1 limit=$2; shift 2
  if [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $name "* ]]; then return 0; fi
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$OUT/$name.log"
  echo "== $name rc=$rc in $((SECONDS - start))s"
}

pytest="python3 -m pytest -p no:cacheprovider -s"
step kernel-tests "${KERNEL_TESTS_S:-100}" $pytest -q tests/kernels/test_kernel_correctness.py \
  tests/kernels/test_kernel_gradcheck.py -k triton
step bench-kernels "${BENCH_KERNELS_S:-180}" $pytest bench/test_bench_kernels.py -k cuda
step bench-train-step "${BENCH_TRAIN_S:-130}" $pytest bench/test_bench_train_step.py -k cuda
step make-model 40 python3 scripts/random_model.py .gpu/tokenizer /tmp/random-qwen2.5-0.5b
export COARS_FAST_CACHE=$PWD/.gpu/cache
# rollouts of the preset's wave: the growing KV cache, then the static one with the compiled decode step
# (each wave played once untimed first, so compilation is not timed)
rollouts=(python3 scripts/rollout_throughput.py --data-dir .gpu/data --config gpu-qwen2.5-0.5b --turns 3 --warm
  --set model.name=/tmp/random-qwen2.5-0.5b --waves 32 128)
step rollout-growing "${ROLLOUT_S:-120}" "${rollouts[@]}" --label growing
step rollout-static "${ROLLOUT_S:-120}" "${rollouts[@]}" --label static --set generation.static_cache=true
step train "${TRAIN_S:-90}" python3 -m coars_fast.cli train --dataset lastfm \
  --data-dir .gpu/data --model /tmp/random-qwen2.5-0.5b --config gpu-qwen2.5-0.5b --steps 2 \
  --set train.users_per_step=8 --eval-users 16 --set eval.f1_users=4 --set eval.initial=false --out /tmp/gpu-run
cp /tmp/gpu-run/metrics.jsonl /tmp/gpu-run/summary.json "$OUT/" 2>/dev/null
# the update's peak memory and time, one step each: as is, checkpointed decoder layers, Liger's patches
memory_arm() {  # NAME [OVERRIDES...]
  local name=$1; shift
  python3 -m coars_fast.cli train --dataset lastfm --data-dir .gpu/data --model /tmp/random-qwen2.5-0.5b \
    --config gpu-qwen2.5-0.5b --steps 1 --set train.users_per_step=8 --eval-users 1 --set eval.f1_users=0 \
    --set eval.initial=false --out "/tmp/gpu-memory-$name" "$@" > "/tmp/gpu-memory-$name.log" 2>&1
  python3 - "$name" <<'PY'
import json, sys
name = sys.argv[1]
steps = [r for r in map(json.loads, open(f"/tmp/gpu-memory-{name}/metrics.jsonl")) if r.get("kind") == "train"]
m = steps[-1]
print(f"{name}: update peak {m['update_peak_memory_gb']:.2f} GiB, update {m['time_step'] - m['time_rollout']:.2f} s")
PY
}
export -f memory_arm
step train-memory "${MEMORY_S:-240}" bash -c "memory_arm plain; memory_arm checkpointed --set \
  train.checkpoint_activations=true; memory_arm liger --set model.liger_patches=true"
# last, as time allows: Liger's GRPO chunk size on CUDA (cases.LIGER_CHUNK_SIZE["cuda"] is 1 until then)
step liger-chunk "${LIGER_CHUNK_S:-60}" bash -c "cd bench && python3 tune_liger_chunk.py --shape gpu-896 --rounds 1"
exit 0
