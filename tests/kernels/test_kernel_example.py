"""The documented example (examples/rl_loop_with_fused_loss.py) runs as a user would run it, and learns."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from kernel_helpers import BACKEND_ENV, cpu_extension_built, interpreting

EXAMPLE = Path(__file__).parents[2] / "examples" / "rl_loop_with_fused_loss.py"


@pytest.mark.skipif(interpreting(), reason="normal run only")
def test_example_rl_loop_runs():
    env = {k: v for k, v in os.environ.items() if k != BACKEND_ENV}
    env["OMP_NUM_THREADS"] = "1"  # tiny tensors: threads only add overhead (and stall on a busy machine)
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), "--steps", "60", "--batch", "32"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    expected_backend = "cpu" if cpu_extension_built() else "torch"
    assert f"backend on cpu: {expected_backend}" in result.stdout
    assert "step  59" in result.stdout, result.stdout
    first, last = map(
        float, re.search(r"first 10 steps ([\d.]+), over the last 10 steps ([\d.]+)", result.stdout).groups()
    )
    print(result.stdout)
    assert last > first + 0.15, f"the example's policy did not learn: hit rate {first} -> {last}"
