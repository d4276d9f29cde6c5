"""Runs the Triton kernels on CPU through the interpreter: TRITON_INTERPRET=1 must be set before
triton is imported, so the Triton cases run in a pytest subprocess (the correctness suite, whose
backend list is then Triton alone, plus Triton-only cases)."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_helpers import interpreting

HERE = Path(__file__).parent


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.skipif(interpreting(), reason="already inside the interpreter run")
def test_triton_kernels_under_the_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1")
    env.pop("COARS_FAST_BACKEND", None)
    files = [HERE / "test_kernel_correctness.py", HERE / "triton_interpreter_cases.py"]
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-W",
            "error::RuntimeWarning",
            *map(str, files),
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=HERE.parents[1],
    )
    print(result.stdout[-6000:], result.stderr[-3000:])
    assert result.returncode == 0, "Triton interpreter run failed (output above)"
    assert " passed" in result.stdout and " skipped" not in result.stdout
