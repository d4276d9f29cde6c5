"""Which torch build is installed, and whether it suits this machine: run after install
(`python -m coars_fast.install_check`, the last step of scripts/setup.sh)."""

from __future__ import annotations

import shutil
import sys


def report(torch_module, gpu_visible: bool) -> tuple[list[str], list[str]]:
    """(lines, warnings) about `torch_module`'s build on a machine where a GPU is or is not visible."""
    cuda = getattr(torch_module.version, "cuda", None)
    build = f"CUDA {cuda}" if cuda else "CPU-only"
    lines = [f"torch {torch_module.__version__}: {build} build"]
    warnings = []
    if cuda and not gpu_visible:
        warnings.append(
            "a CUDA build of torch is installed but this machine shows no GPU: it runs on the CPU, and its "
            "CUDA libraries take several GB; `bash scripts/setup.sh --cpu` installs the CPU build"
        )
    elif cuda:
        lines.append(
            f"GPU: {torch_module.cuda.get_device_name(0)}" if torch_module.cuda.is_available() else "GPU: none usable"
        )
    elif gpu_visible:
        warnings.append("this machine has an NVIDIA GPU but torch is the CPU build: training will not use the GPU")
    return lines, warnings


def gpu_visible() -> bool:
    """An NVIDIA driver answers (nvidia-smi on the PATH), whatever torch was built for."""
    return shutil.which("nvidia-smi") is not None


def main() -> int:
    import torch

    lines, warnings = report(torch, gpu_visible())
    for line in lines:
        print(line)
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
