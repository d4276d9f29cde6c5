"""Run logs: one JSON object per line in metrics.jsonl, and TensorBoard scalars."""

from __future__ import annotations

import json
import math
from pathlib import Path


class Logbook:
    def __init__(self, run_dir: Path, tensorboard: bool = True):
        self.path = run_dir / "metrics.jsonl"
        self.writer = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(run_dir / "tensorboard"))

    def log(self, kind: str, step: int, values: dict) -> None:
        record = {"kind": kind, "step": step, **values}
        with open(self.path, "a") as f:  # appended line by line: a crash loses at most one record
            f.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                    self.writer.add_scalar(f"{kind}/{key}", value, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
