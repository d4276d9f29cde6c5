"""The after-install check names the torch build and warns when it does not suit the machine."""

from types import SimpleNamespace

import torch

from coars_fast.install_check import report


def fake_torch(version, cuda, available=False):
    return SimpleNamespace(
        __version__=version,
        version=SimpleNamespace(cuda=cuda),
        cuda=SimpleNamespace(is_available=lambda: available, get_device_name=lambda i: "NVIDIA H200"),
    )


def test_cuda_build_without_a_gpu_is_warned_about():
    lines, warnings = report(fake_torch("2.13.0", "12.8"), gpu_visible=False)
    assert lines == ["torch 2.13.0: CUDA 12.8 build"]
    assert len(warnings) == 1 and "no GPU" in warnings[0] and "setup.sh --cpu" in warnings[0]


def test_matching_builds_are_quiet():
    assert report(fake_torch("2.13.0+cpu", None), gpu_visible=False) == (["torch 2.13.0+cpu: CPU-only build"], [])
    lines, warnings = report(fake_torch("2.13.0", "12.8", available=True), gpu_visible=True)
    assert lines == ["torch 2.13.0: CUDA 12.8 build", "GPU: NVIDIA H200"] and warnings == []


def test_cpu_build_on_a_gpu_machine_is_warned_about():
    _, warnings = report(fake_torch("2.13.0+cpu", None), gpu_visible=True)
    assert warnings and "CPU build" in warnings[0]


def test_this_machine():
    lines, _ = report(torch, gpu_visible=False)
    assert lines[0].startswith(f"torch {torch.__version__}: ")
