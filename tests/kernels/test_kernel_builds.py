"""The C++ library builds with CMake against the installed torch and its ctest passes, and the
benchmarks run in smoke mode (tiny shapes, correctness only): both as CI runs them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from kernel_helpers import interpreting

ROOT = Path(__file__).parents[2]
pytestmark = pytest.mark.skipif(interpreting(), reason="normal run only")


def _run(cmd, **kwargs):
    result = subprocess.run(cmd, capture_output=True, text=True, **kwargs)
    command = " ".join(map(str, cmd))
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.mark.skipif(shutil.which("cmake") is None or shutil.which("ctest") is None, reason="cmake not installed")
def test_cmake_build_and_ctest(tmp_path):
    build = tmp_path / "build"
    _run(["cmake", "-S", str(ROOT), "-B", str(build), f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"])
    _run(["cmake", "--build", str(build), "-j", str(os.cpu_count() or 1)])
    out = _run(["ctest", "--test-dir", str(build), "--output-on-failure"])
    assert "100% tests passed" in out


def test_bench_smoke():
    env = {k: v for k, v in os.environ.items() if k != "COARS_FAST_BACKEND"}
    out = _run(
        [sys.executable, "-m", "pytest", "bench", "--bench-smoke", "-q", "-p", "no:cacheprovider"], cwd=ROOT, env=env
    )
    assert " passed" in out and " failed" not in out
