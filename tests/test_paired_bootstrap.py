"""scripts/paired_bootstrap.py on hand-made transcripts: point estimates counted by hand, the same
intervals for the same seed, and a clear stop when the two evaluations played different episodes."""

import json
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "paired_bootstrap.py"


def _write(folder: Path, episodes: dict[str, tuple[list[bool], bool]]) -> Path:
    folder.mkdir()
    lines = [
        json.dumps({"episode_id": eid, "hit": hit, "turns": [{"item": 7 if ok else None} for ok in valid]})
        for eid, (valid, hit) in episodes.items()
    ]
    (folder / "transcripts.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True)


def test_points_by_hand_and_seeded_intervals(tmp_path):
    # A: valid 1+2+0+2 of 8 turns = 0.625, hits 1 of 4; B: every turn valid, hits 3 of 4
    a = _write(
        tmp_path / "a",
        {
            "u1": ([True, False], False),
            "u2": ([True, True], True),
            "u3": ([False, False], False),
            "u4": ([True, True], False),
        },
    )
    b = _write(
        tmp_path / "b",
        {
            "u1": ([True, True], True),
            "u2": ([True, True], True),
            "u3": ([True, True], False),
            "u4": ([True, True], True),
        },
    )
    done = _run(a, b, "--resamples", "500", "--seed", "3")
    assert done.returncode == 0, done.stderr
    rows = {
        tuple(line.split()[:2]): float(line.split()[2]) for line in done.stdout.splitlines()[1:] if "B - A" not in line
    }
    diffs = {line.split()[0]: float(line.split()[4]) for line in done.stdout.splitlines() if "B - A" in line}
    assert rows[("ValidRatio", "A")] == 0.625 and rows[("ValidRatio", "B")] == 1.0
    assert rows[("Hit@1", "A")] == 0.25 and rows[("Hit@1", "B")] == 0.75
    assert diffs == {"Hit@1": 0.5, "ValidRatio": 0.375}
    assert _run(a, b, "--resamples", "500", "--seed", "3").stdout == done.stdout  # seeded


def test_different_episodes_stop_with_one_line(tmp_path):
    a = _write(tmp_path / "a", {"u1": ([True], True)})
    b = _write(tmp_path / "b", {"u2": ([True], True)})
    done = _run(a, b)
    assert (
        done.returncode == 1
        and done.stderr.strip() == "paired_bootstrap: the two evaluations did not play the same episodes"
    )
