"""`coars-fast report`: figures and tables from run folders, clear messages for broken ones.
(A report of a real two-step tiny-model run is checked in tests/test_training.py.)"""

import json

import numpy as np
import pytest

from coars_fast.cli import main
from coars_fast.report import load_run, write_report
from coars_fast.report.plots import running_mean


def _fake_run(folder, steps=6, seed=0):
    """A run folder as the trainer writes it, with made-up but plausible values."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    for step in range(1, steps + 1):
        lines.append(
            {
                "kind": "train",
                "step": step,
                "reward_rec": float(rng.normal()),
                "reward_user": float(rng.normal()),
                "train_hit_at_1": float(rng.random()),
                "valid_ratio": 1.0,
                "credit_abs_rec": 0.1,
                "credit_abs_user": 0.2,
                "credit_clip_frac_rec": 0.0,
                "credit_clip_frac_user": 0.01,
                "grad_norm_rec": 1.0,
                "grad_norm_user": 2.0,
                "tokens_per_s": 300.0,
                "time_rollout": 50.0,
                "time_step": 80.0,
                "train_minutes": step * 1.3,
            }
        )
    for step in (0, 3, 6):
        lines.append(
            {
                "kind": "val",
                "step": step,
                "hit_at_1": 0.1 + step / 60,
                "hit_ci_low": 0.05,
                "hit_ci_high": 0.3,
                "valid_ratio": 1.0,
                "user_f1": 0.5,
                "episodes": 100,
            }
        )
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    (folder / "config.yaml").write_text("data: {dataset: synthetic}\nloss: {distill_coef: 0.1}\ntrain: {seed: 0}\n")
    for label, hit in (("initial", 0.12), ("final", 0.31)):
        (folder / f"eval-{label}").mkdir()
        (folder / f"eval-{label}" / "summary.json").write_text(
            json.dumps(
                {
                    "agents": {
                        "episodes": 200,
                        "hit_at_1": hit,
                        "ci95": [hit - 0.05, hit + 0.06],
                        "valid_ratio": 1.0,
                        "mean_turns": 3.0,
                    },
                    "user_f1": {"f1": 0.6, "users": 20},
                    "baselines": {
                        "random": {"hit_at_1": 0.05, "ci95": [0.05, 0.05]},
                        "sasrec": {"hit_at_1": 0.9, "ci95": [0.85, 0.93]},
                    },
                }
            )
        )
    return folder


def test_report_overlays_runs_and_tabulates_before_and_after(tmp_path):
    a, b = _fake_run(tmp_path / "coars"), _fake_run(tmp_path / "no-distill", seed=1)
    path = write_report([a, b], tmp_path / "out", names=["CoARS", "lambda=0"])
    text = path.read_text()
    assert "| CoARS | zero-shot (before training) | 200 | 0.120 | [0.070, 0.180] |" in text
    assert "| lambda=0 | trained (after) | 200 | 0.310 |" in text
    assert "| CoARS | 6 | 7.8 | 0.200 |" in text  # validation curve: step 6, 7.8 training minutes
    assert "| CoARS | 200 | sasrec | 0.900 |" in text
    for name in ("report_by_step.png", "report_by_minutes.png"):
        assert f"![{name}]({name})" in text
        assert (tmp_path / "out" / name).stat().st_size > 20_000


def test_a_resumed_run_that_logged_a_step_twice_keeps_the_later_record(tmp_path):
    run = _fake_run(tmp_path / "r")
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"kind": "train", "step": 6, "reward_rec": 9.0, "train_minutes": 8.0}) + "\n")
    xs, ys = load_run(run).series("train", "reward_rec")
    assert xs == [1, 2, 3, 4, 5, 6] and ys[-1] == 9.0


def test_missing_metrics_is_one_clear_line(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no metrics.jsonl" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "no such run folder" in capsys.readouterr().err


def test_a_cut_short_last_line_is_skipped_with_a_warning_and_a_bad_middle_line_is_an_error(tmp_path, capsys):
    run = _fake_run(tmp_path / "cut")
    text = (run / "metrics.jsonl").read_text()
    (run / "metrics.jsonl").write_text(text + '{"kind": "train", "step": 7, "rew')
    with pytest.warns(UserWarning, match="line 10 is cut short"):
        assert load_run(run).records["train"][-1]["step"] == 6
    lines = text.splitlines()
    (run / "metrics.jsonl").write_text("\n".join(lines[:2] + ["garbage"] + lines[2:]) + "\n")
    assert main(["report", str(run)]) == 2
    assert "line 3 is not a metrics record" in capsys.readouterr().err


def test_running_mean_matches_a_plain_loop():
    values = [3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0]
    expected = [sum(values[max(0, i - 4) : i + 1]) / len(values[max(0, i - 4) : i + 1]) for i in range(len(values))]
    assert np.allclose(running_mean(values, 5), expected)
