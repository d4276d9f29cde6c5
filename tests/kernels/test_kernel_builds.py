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


def test_the_folder_imported_as_a_top_level_package_says_why():
    """From the repository root, `kernels` is the folder, not the Hugging Face package that
    transformers >= 5.25 imports: a name only that package has gets one clear line, while probing the
    folder (transformers < 5.25 does, for a version) still works."""
    probe = "import kernels; print(getattr(kernels, '__version__', 'N/A'))"
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "N/A", result.stderr[-2000:]
    wanted = "from kernels import CUDAProperties"
    result = subprocess.run([sys.executable, "-c", wanted], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: coars-fast: `from kernels import CUDAProperties` found the kernels/"), last
    assert "python -P" in last, last


def test_transformers_in_use_does_not_import_the_hub_kernels_package():
    """The pin in setup.py: a transformers that imports `kernels` at import time breaks every
    `python -m pytest` run from the repository root (the folder shadows the package)."""
    import transformers
    from packaging.version import Version

    assert Version(transformers.__version__) < Version("5.25"), transformers.__version__
