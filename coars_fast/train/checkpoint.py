"""Checkpoints: adapters in the PEFT layout plus optimizer, scheduler and step, written atomically.

A checkpoint is assembled in a temporary folder, flushed to disk and renamed into place; `latest` then
names it (replaced atomically), and only after that are older checkpoints pruned. Re-saving a step
(every run re-saves its last step after the final evaluation) first moves the earlier save aside and
deletes it last. A kill at any moment leaves at least one complete checkpoint, and `latest_checkpoint`
falls back to the newest complete one when `latest` names a folder that is gone or incomplete.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import torch

from coars_fast.cache import atomic_write
from coars_fast.errors import ConfigError
from coars_fast.models.lora import save_agent_adapters
from coars_fast.train import faults

STATE_FILE = "trainer_state.pt"
_NAME = re.compile(r"^(?:step-(\d{6})|\.step-(\d{6})\.old)$")


def _sync_tree(folder: Path) -> None:
    for root, _, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    extra: dict,
    keep: int = 2,
    whole: tuple[dict, dict] | None = None,
) -> Path:
    """`whole`: (LoRA weights, optimizer state) gathered from a sharded model, written in place of
    the model's and optimizer's own, so that any world size, sharded or not, resumes from them."""
    folder = run_dir / "checkpoints"
    final = folder / f"step-{step:06d}"
    tmp = folder / f".step-{step:06d}.tmp"
    old = folder / f".step-{step:06d}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    adapters, optimizer_state = whole if whole is not None else (None, optimizer.state_dict())
    save_agent_adapters(model, tmp / "adapters", adapters)
    state = {"step": step, "optimizer": optimizer_state, "scheduler": scheduler.state_dict(), **extra}
    faults.point("checkpoint.adapters_written")
    torch.save(state, tmp / STATE_FILE)
    _sync_tree(tmp)
    faults.point("checkpoint.tmp_complete")
    if final.exists():  # re-saving a step: the earlier save stays complete (as .old) until the new one is
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
        faults.point("checkpoint.moved_aside")
    os.replace(tmp, final)
    faults.point("checkpoint.renamed")
    atomic_write(folder / "latest", lambda path: path.write_text(final.name))
    faults.point("checkpoint.latest_written")
    shutil.rmtree(old, ignore_errors=True)
    for stale in sorted(p for p in folder.glob("step-*") if p.is_dir())[:-keep]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def is_complete(checkpoint: Path) -> bool:
    return (checkpoint / STATE_FILE).is_file() and (checkpoint / "adapters").is_dir()


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint `latest` names when it is complete, else the newest complete one (a `step-N`
    before a moved-aside `.step-N.old` of the same step), else None."""
    folder = run_dir / "checkpoints"
    pointer = folder / "latest"
    if pointer.is_file():
        named = folder / pointer.read_text().strip()
        if named.parent == folder and is_complete(named):
            return named
    found = []
    for path in folder.glob("*step-*") if folder.is_dir() else ():
        match = _NAME.match(path.name)
        if match and is_complete(path):
            found.append((int(match.group(1) or match.group(2)), match.group(1) is not None, path))
    return max(found)[2] if found else None


def load_state(checkpoint: Path, optimizer, scheduler) -> dict:
    try:
        # on the CPU first: every rank of a run would otherwise load rank 0's tensors onto its GPU;
        # load_state_dict moves each value to its parameter's device
        state = torch.load(checkpoint / STATE_FILE, weights_only=False, map_location="cpu")
    except (OSError, RuntimeError) as err:
        raise ConfigError(f"cannot read checkpoint {checkpoint}: {err}") from None
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    return state
