"""The episodes an evaluation has finished, kept on disk so that a killed `coars-fast eval` continues
where it stopped (rerun it with the same --out): a 200-user MovieLens evaluation takes hours on a CPU.

One JSON line per finished episode, each turn's two answers (text, token ids, whether they finished)
and the peer evidence the User saw, after a first line naming the evaluation it belongs to. Replaying
the answers through fresh episode states rebuilds the same states, so nothing else is stored. A file
of another evaluation (other settings, model or adapters) is set aside, never mixed in.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from coars_fast.cache import atomic_write
from coars_fast.env import EpisodeState
from coars_fast.env.episode import PeerEvidence
from coars_fast.models.generation import Generated

FILE = "played.partial.jsonl"


def _answer(output) -> dict:
    return {"text": output.text, "ids": list(output.ids), "finished": output.finished}


def _generated(record: dict) -> Generated:
    return Generated(
        prompt_ids=(), ids=tuple(record["ids"]), logprobs=(), text=record["text"], finished=record["finished"]
    )


def record(state: EpisodeState) -> dict:
    turns = []
    for t in state.turns:
        turns.append(
            {
                "rec": _answer(t.rec_output),
                "user": _answer(t.user_output) if t.user_output is not None else None,
                "peers": asdict(t.peers) if t.peers is not None else None,
            }
        )
    return {"episode_id": state.episode_id, "turns": turns}


def replay(state: EpisodeState, saved: dict) -> None:
    for turn in saved["turns"]:
        state.give_recommendation(_generated(turn["rec"]))
        if turn["user"] is not None:
            state.give_reply(_generated(turn["user"]), PeerEvidence(**turn["peers"]) if turn["peers"] else None)
    if not state.done:
        raise ValueError(f"episode {state.episode_id}: the saved turns do not finish it")


class PlayedEpisodes:
    """Finished episodes of the evaluation named by `key` (any JSON-able value), in `folder`."""

    def __init__(self, folder: Path, key, name: str = FILE):
        self.path = Path(folder) / name
        self.header = json.dumps({"evaluation": key}, sort_keys=True)

    def load(self) -> dict[str, dict]:
        """episode id -> saved record; {} without a file, or with one of another evaluation (renamed
        aside). A last line cut short by a kill is dropped."""
        if not self.path.exists():
            return {}
        text = self.path.read_text()
        lines = text.split("\n")
        if lines[0] != self.header:
            self.path.replace(self.path.with_name(self.path.name + ".other"))
            return {}
        if not text.endswith("\n"):  # cut short by a kill: keep the whole lines, so appends start clean
            text = text[: text.rfind("\n") + 1]
            atomic_write(self.path, lambda tmp: tmp.write_text(text))
        saved = {}
        for line in text.split("\n")[1:]:
            if line:
                entry = json.loads(line)
                saved[entry["episode_id"]] = entry
        return saved

    def add(self, states: Sequence[EpisodeState]) -> None:
        """Append finished episodes, synced to disk before returning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        with open(self.path, "a") as f:
            if new:
                f.write(self.header + "\n")
            for state in states:
                f.write(json.dumps(record(state)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
