"""Fault injection: a tiny-model training run killed with SIGKILL at a named point (during rollouts,
during the update, at each stage of writing a checkpoint, during the final evaluation and the final
re-save) or after a random delay, then continued with `--resume`, must end with adapter weights
bit-identical to an uninterrupted run and one metrics record per step.

CI runs a few kill points; `pytest -m soak tests/test_faults.py` runs every one (the figures in
docs/RESULTS.md)."""

import json
import os
import random
import subprocess
import sys
import time

import pytest
import yaml
from test_run_folder import tiny_run_config

STEPS = 4  # checkpoints at steps 2 and 4, then the end-of-run save and the final re-save of step 4
# (point, n): killed the n-th time the run reaches the point (coars_fast/train/faults.py)
CI_POINTS = [("rollout", 4), ("checkpoint.moved_aside", 1), ("checkpoint.renamed", 2)]
SOAK_POINTS = [
    ("rollout", 1),
    ("rollout", 2),
    ("update", 3),
    ("update", 1),
    ("update", 2),
    ("update", 4),
    ("checkpoint.adapters_written", 1),
    ("checkpoint.adapters_written", 3),
    ("checkpoint.tmp_complete", 1),
    ("checkpoint.tmp_complete", 2),
    ("checkpoint.tmp_complete", 4),
    ("checkpoint.moved_aside", 2),
    ("checkpoint.renamed", 1),
    ("checkpoint.renamed", 4),
    ("checkpoint.latest_written", 1),
    ("checkpoint.latest_written", 3),
    ("final_eval", 1),
    ("final_resave", 1),
]
RANDOM_DELAYS = [1, 2, 3, 4]  # seeds of kills after a random delay


def _run(config, run, *extra, env=None, timeout=900):
    args = [sys.executable, "-m", "coars_fast", "train", *extra]
    args += ["--resume", str(run)] if (run / "config.yaml").exists() else ["--config", str(config), "--out", str(run)]
    return subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)


def _outcome(run):
    """The final adapters' bytes and the (kind, step) of every metrics record."""
    adapters = run / "checkpoints" / f"step-{STEPS:06d}" / "adapters"
    weights = {p.relative_to(adapters): p.read_bytes() for p in sorted(adapters.rglob("*.safetensors"))}
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return weights, [(r["kind"], r["step"]) for r in records]


@pytest.fixture(scope="module")
def reference(tiny_model_dir, tmp_path_factory):
    """An uninterrupted run: its outcome and how long it took."""
    from conftest import make_cyclic

    folder = tmp_path_factory.mktemp("faults")
    data = make_cyclic(folder / "cyclic")
    config = tiny_run_config(folder, tiny_model_dir, data, steps=STEPS)
    started = time.monotonic()
    done = _run(config, folder / "reference")
    assert done.returncode == 0, done.stderr
    return config, _outcome(folder / "reference"), time.monotonic() - started


def _check(reference, run):
    _, (weights, records), _ = reference
    got_weights, got_records = _outcome(run)
    assert got_weights.keys() == weights.keys() and len(weights) == 2
    assert all(got_weights[k] == weights[k] for k in weights), "adapter weights differ from the uninterrupted run"
    assert got_records == records  # one record per step (and per evaluation), in order


def _killed_then_resumed(reference, run, env):
    config = reference[0]
    killed = _run(config, run, env=env)
    assert killed.returncode == -9, f"the kill point was not reached: rc {killed.returncode}\n{killed.stderr[-2000:]}"
    resumed = _run(config, run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _check(reference, run)


@pytest.fixture(scope="module")
def reference_with_curve(tiny_model_dir, tmp_path_factory):
    """An uninterrupted run with a validation curve: points at steps 0 and 3 (eval.every) and 4 (the
    last); checkpoints every 2 steps."""
    from conftest import make_cyclic

    folder = tmp_path_factory.mktemp("faults-curve")
    data = make_cyclic(folder / "cyclic")
    config = tiny_run_config(folder, tiny_model_dir, data, steps=STEPS)
    settings = yaml.safe_load(config.read_text())
    settings["eval"].update(every=3, curve_users=1, curve_f1_users=0)
    config.write_text(yaml.safe_dump(settings))
    done = _run(config, folder / "reference")
    assert done.returncode == 0, done.stderr
    return config, _outcome(folder / "reference"), None


def test_killed_during_a_curve_point_loses_no_training(reference_with_curve, tmp_path):
    """Killed while validating at step 3 (not a checkpoint step): the run restarts from step 3, not 2,
    plays the interrupted point again and ends bit-identical to the uninterrupted run."""
    from coars_fast.train.checkpoint import latest_checkpoint

    run = tmp_path / "run"
    killed = _run(reference_with_curve[0], run, env={"COARS_FAST_KILL_AT": "validation:2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert latest_checkpoint(run).name == "step-000003", "step 3's training was lost with its curve point"
    resumed = _run(reference_with_curve[0], run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "at step 3" in resumed.stderr
    _check(reference_with_curve, run)
    assert [r for r in _outcome(run)[1] if r[0] == "val"] == [("val", 0), ("val", 3), ("val", 4)]


@pytest.mark.parametrize("point, n", CI_POINTS)
def test_killed_at_a_point_then_resumed_is_bit_identical(reference, tmp_path, point, n):
    _killed_then_resumed(reference, tmp_path / "run", {"COARS_FAST_KILL_AT": f"{point}:{n}"})


@pytest.mark.soak
@pytest.mark.parametrize("point, n", SOAK_POINTS)
def test_soak_killed_at_every_point(reference, tmp_path, point, n):
    _killed_then_resumed(reference, tmp_path / "run", {"COARS_FAST_KILL_AT": f"{point}:{n}"})


@pytest.mark.soak
def test_soak_killed_twice(reference, tmp_path):
    """Killed in the first attempt's update and again in the resumed run's final re-save."""
    run = tmp_path / "run"
    assert _run(reference[0], run, env={"COARS_FAST_KILL_AT": "update:3"}).returncode == -9
    _killed_then_resumed(reference, run, {"COARS_FAST_KILL_AT": "final_resave:1"})


@pytest.mark.soak
@pytest.mark.parametrize("seed", RANDOM_DELAYS)
def test_soak_killed_after_a_random_delay(reference, tmp_path, seed):
    config, _, duration = reference
    delay = random.Random(seed).uniform(0.3, 0.95) * duration
    print(f"seed {seed}: SIGKILL after {delay:.1f} s of a {duration:.1f} s run")
    run = tmp_path / "run"
    process = subprocess.Popen(
        [sys.executable, "-m", "coars_fast", "train", "--config", str(config), "--out", str(run)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(delay)
    process.kill()
    process.wait()
    resumed = _run(config, run)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    _check(reference, run)
