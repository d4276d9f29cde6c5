"""Run logs: one JSON object per line in metrics.jsonl, and TensorBoard scalars."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _json_safe(values: dict) -> dict:
    """Non-finite numbers become null (JSON has no NaN), named under "nonfinite"."""
    bad = [k for k, v in values.items() if isinstance(v, float) and not math.isfinite(v)]
    if not bad:
        return values
    return {**{k: (None if k in bad else v) for k, v in values.items()}, "nonfinite": bad}


class Logbook:
    """`keep_bytes`: on resume, metrics.jsonl is cut back to its size at the checkpoint (the steps after
    it are replayed and logged again); TensorBoard events from `purge_step` on are dropped likewise."""

    def __init__(
        self, run_dir: Path, tensorboard: bool = True, keep_bytes: int | None = 0, purge_step: int | None = None
    ):
        self.path = run_dir / "metrics.jsonl"
        if keep_bytes is not None and self.path.exists() and self.path.stat().st_size > keep_bytes:
            os.truncate(self.path, keep_bytes)
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(
                log_dir=str(run_dir / "tensorboard"), purge_step=purge_step if keep_bytes else None
            )

    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def log(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": step, **_json_safe(values)}
        with open(self.path, "a") as f:  # appended line by line: a crash loses at most one record
            f.write(json.dumps(record, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class NullLogbook:
    """What ranks other than 0 log to: nothing (rank 0 logs the metrics merged over ranks)."""

    def size(self) -> int:
        return 0

    def log(self, kind: str, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass
