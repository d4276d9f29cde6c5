"""A run folder is never lost: one run at a time (lock), an earlier run is never written over unless
asked, checkpoints survive a kill at any point, metrics hold valid JSON and one record per step."""

import json
import math
import os
import subprocess
import sys
import time

import pytest
import yaml

from coars_fast.errors import ConfigError
from coars_fast.train import checkpoint as ckpt
from coars_fast.train.logbook import Logbook
from coars_fast.train.run_folder import RunFolder


def _fake_checkpoint(folder):
    (folder / "adapters").mkdir(parents=True)
    (folder / ckpt.STATE_FILE).write_bytes(b"state")
    return folder


def test_latest_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    folder = tmp_path / "checkpoints"
    two = _fake_checkpoint(folder / "step-000002")
    (folder / "latest").write_text("step-000004")  # named, but gone (killed mid re-save)
    assert ckpt.latest_checkpoint(tmp_path) == two
    aside = _fake_checkpoint(folder / ".step-000004.old")  # the earlier save of step 4, moved aside
    assert ckpt.latest_checkpoint(tmp_path) == aside
    (folder / "step-000006").mkdir()  # incomplete: no state file
    (folder / ".step-000008.tmp").mkdir()
    assert ckpt.latest_checkpoint(tmp_path) == aside
    four = _fake_checkpoint(folder / "step-000004")
    assert ckpt.latest_checkpoint(tmp_path) == four  # a renamed step-N wins over its .old
    (folder / "latest").write_text("../../elsewhere")
    assert ckpt.latest_checkpoint(tmp_path) == four


def test_metrics_are_valid_json_with_non_finite_values_flagged(tmp_path):
    book = Logbook(tmp_path, tensorboard=False)
    book.log("train", 1, {"loss_rec": float("nan"), "grad_norm_rec": float("inf"), "reward_rec": 0.5})
    record = json.loads((tmp_path / "metrics.jsonl").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert record == {
        "kind": "train",
        "step": 1,
        "loss_rec": None,
        "grad_norm_rec": None,
        "reward_rec": 0.5,
        "nonfinite": ["loss_rec", "grad_norm_rec"],
    }


def test_a_resumed_logbook_drops_what_came_after_the_checkpoint(tmp_path):
    book = Logbook(tmp_path, tensorboard=False)
    book.log("train", 1, {"x": 1.0})
    at_checkpoint = book.size()
    book.log("train", 2, {"x": 2.0})  # logged, then killed before the next checkpoint
    Logbook(tmp_path, tensorboard=False, keep_bytes=at_checkpoint).log("train", 2, {"x": 2.5})
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]
    Logbook(tmp_path, tensorboard=False, keep_bytes=None)  # a checkpoint that predates the record: keep all
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 2


def test_a_held_folder_refuses_a_second_run_and_names_the_holder(tmp_path):
    first = RunFolder(tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"is in use by another run \(pid {os.getpid()}\)"):
        RunFolder(tmp_path / "run")
    first.release()
    RunFolder(tmp_path / "run").release()  # free again once released


def test_overwrite_starts_again_and_keeps_foreign_files(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints" / "step-000002").mkdir(parents=True)
    (run / "eval-final").mkdir()
    (run / "metrics.jsonl").write_text("{}\n")
    (run / "config.yaml").write_text("{}\n")
    (run / "notes.txt").write_text("mine\n")
    with pytest.raises(ConfigError, match="holds an earlier run"):
        RunFolder(run)
    RunFolder(run, overwrite=True).release()
    assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt"]


# -- two processes on one folder (acceptance: the second exits at once, the first finishes unharmed) --


def tiny_run_config(folder, tiny_model_dir, data_dir, steps=4):
    """A YAML config for a tiny-model CLI run in a subprocess."""
    config = {
        "model": {"name": str(tiny_model_dir)},
        "data": {"dataset": "jsonl", "data_dir": str(data_dir)},
        "train": {"minutes": None, "steps": steps, "users_per_step": 2},
        "rollout": {"group_size": 2, "max_turns": 2},
        "generation": {"max_new_tokens": 6},
        "eval": {"initial": False, "num_users": 1, "f1_users": 0},
        "checkpoint": {"every": 2},
        "optim": {"lr": 0.01},
        "tensorboard": False,
    }
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def cli(*args, env=None):
    return subprocess.Popen(
        [sys.executable, "-m", "coars_fast.cli", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_a_second_run_on_a_busy_folder_exits_at_once_and_the_first_finishes(tiny_model_dir, cyclic_dataset, tmp_path):
    config = tiny_run_config(tmp_path, tiny_model_dir, tmp_path / "cyclic", steps=6)
    run = tmp_path / "run"
    first = cli("train", "--config", config, "--out", run)
    deadline = time.monotonic() + 120
    while not (run / "config.yaml").exists():  # written once the first run has loaded everything
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.2)
    started = time.monotonic()
    second = cli("train", "--resume", run)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 2 and time.monotonic() - started < 30
    assert f"is in use by another run (pid {first.pid})" in err and len(err.strip().splitlines()) == 1
    out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert ckpt.latest_checkpoint(run).name == "step-000006" and all(
        math.isfinite(r.get("reward_rec", 0.0) or 0.0) for r in records
    )
