"""Checkpoints: adapters in the PEFT layout plus optimizer, scheduler and step, written atomically.

A checkpoint is assembled in a temporary folder and renamed into place; `latest` names the newest
complete one and is itself replaced atomically. A crash or kill at any moment leaves the previous
checkpoint intact and `latest` pointing at it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from coars_fast.cache import atomic_write
from coars_fast.errors import ConfigError
from coars_fast.models.lora import save_agent_adapters

STATE_FILE = "trainer_state.pt"


def save_checkpoint(run_dir: Path, step: int, model, optimizer, scheduler, extra: dict, keep: int = 2) -> Path:
    folder = run_dir / "checkpoints"
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_agent_adapters(model, tmp / "adapters")
    state = {"step": step, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **extra}
    torch.save(state, tmp / STATE_FILE)
    if final.exists():  # re-saving the same step (after a resume)
        shutil.rmtree(final)
    os.replace(tmp, final)
    atomic_write(folder / "latest", lambda path: path.write_text(final.name))
    for old in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    pointer = run_dir / "checkpoints" / "latest"
    if not pointer.is_file():
        return None
    path = run_dir / "checkpoints" / pointer.read_text().strip()
    return path if (path / STATE_FILE).is_file() else None


def load_state(checkpoint: Path, optimizer, scheduler) -> dict:
    try:
        state = torch.load(checkpoint / STATE_FILE, weights_only=False)
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"cannot read checkpoint {checkpoint}: {err}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state
