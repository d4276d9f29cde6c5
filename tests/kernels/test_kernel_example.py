"""The documented example (examples/rl_loop_with_fused_loss.py) runs as a user would run it."""
import os
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
    result = subprocess.run([sys.executable, str(EXAMPLE), "--steps", "12", "--batch", "16"], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    expected_backend = "cpu" if cpu_extension_built() else "torch"
    assert f"backend on cpu: {expected_backend}" in result.stdout
    assert "step  11" in result.stdout, result.stdout
