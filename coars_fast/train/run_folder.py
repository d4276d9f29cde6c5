"""A run folder belongs to one run at a time: an exclusive lock for the life of the run, and a new run
never writes into a folder that holds an earlier one unless told to continue it or start again."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from coars_fast.errors import ConfigError

LOCK_FILE = ".lock"
# What a run writes: a folder holding any of these holds a run.
RUN_FILES = ("config.yaml", "metrics.jsonl", "checkpoints", "summary.json")
RUN_OUTPUTS = RUN_FILES + ("tensorboard", "validation", "report")


class RunFolder:
    """Opens (creates) `path` for a run and holds its lock until `release()` or process exit.

    resume: continue the run there (it must hold one); overwrite: delete what an earlier run wrote
    and start again; neither: the folder must be new or empty of runs.
    """

    def __init__(self, path: Path, resume: bool = False, overwrite: bool = False):
        self.path = Path(path)
        if resume and overwrite:
            raise ConfigError("--resume continues a run and --overwrite deletes it: give one of them")
        if self.path.exists() and not self.path.is_dir():
            raise ConfigError(f"run folder {self.path} is a file; name a folder")
        holds_run = self.path.is_dir() and any((self.path / name).exists() for name in RUN_FILES)
        if resume and not holds_run:
            raise ConfigError(f"--resume {self.path}: no run there (no config.yaml, metrics or checkpoints)")
        if holds_run and not resume and not overwrite:
            raise ConfigError(
                f"{self.path} holds an earlier run: pass --resume {self.path} to continue it, "
                "--overwrite to start again there, or another --out"
            )
        self.path.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(self._fd)
            raise ConfigError(
                f"{self.path} is in use by another run (pid {holder}); wait for it to end or choose another --out"
            ) from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)
        if overwrite and holds_run:
            for name in RUN_OUTPUTS:
                target = self.path / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
            for old in list(self.path.glob("eval-*")):
                shutil.rmtree(old, ignore_errors=True)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
