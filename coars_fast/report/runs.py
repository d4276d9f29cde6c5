"""Reading a run folder back: metrics.jsonl records, evaluation summaries, the config."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from coars_fast.errors import CoarsError


class ReportError(CoarsError):
    pass


@dataclass
class Run:
    folder: Path
    name: str
    records: dict[str, list[dict]]  # kind -> records by step, the last record of a step kept
    evals: dict[str, dict] = field(default_factory=dict)  # label -> eval-<label>/summary.json
    config: dict = field(default_factory=dict)

    def series(self, kind: str, key: str, x: str = "step") -> tuple[list[float], list[float]]:
        """(x, y) of `key` over the records of `kind` that have a finite value; x is the step or, with
        x="minutes", the training minutes at that step."""
        minutes = {r["step"]: r.get("train_minutes") for r in self.records.get("train", [])}
        minutes[0] = 0.0
        xs, ys = [], []
        for r in self.records.get(kind, []):
            value = r.get(key)
            position = r["step"] if x == "step" else minutes.get(r["step"])
            if _finite(value) and position is not None:
                xs.append(position)
                ys.append(float(value))
        return xs, ys


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_metrics(path: Path) -> dict[str, list[dict]]:
    """Records per kind, sorted by step. A resumed run may have logged a step twice: the later record
    wins. A last line cut short by a kill is skipped with a warning; a bad line elsewhere is an error."""
    if not path.is_file():
        raise ReportError(f"{path.parent}: no metrics.jsonl (not a coars-fast run folder, or no step logged yet)")
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    by_kind: dict[str, dict[int, dict]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            kind, step = record["kind"], int(record["step"])
        except (ValueError, KeyError, TypeError):
            if number == len(lines):
                warnings.warn(
                    f"{path}: line {number} is cut short (the run was stopped while writing it); skipped", stacklevel=2
                )
                continue
            raise ReportError(f"{path}: line {number} is not a metrics record: {line[:80]!r}") from None
        by_kind.setdefault(kind, {})[step] = record
    if not by_kind:
        raise ReportError(f"{path}: no records (the run has not logged a step yet)")
    return {kind: [steps[s] for s in sorted(steps)] for kind, steps in by_kind.items()}


def load_run(folder: Path, name: str | None = None) -> Run:
    folder = Path(folder)
    if not folder.is_dir():
        raise ReportError(f"{folder}: no such run folder")
    run = Run(folder, name or folder.name, read_metrics(folder / "metrics.jsonl"))
    for summary in sorted(folder.glob("eval-*/summary.json")):
        try:
            run.evals[summary.parent.name.removeprefix("eval-")] = json.loads(summary.read_text())
        except ValueError:
            warnings.warn(f"{summary}: not valid JSON; left out of the report", stacklevel=2)
    config = folder / "config.yaml"
    if config.is_file():
        try:
            run.config = yaml.safe_load(config.read_text()) or {}
        except yaml.YAMLError:
            warnings.warn(f"{config}: not valid YAML; the report shows no settings", stacklevel=2)
    return run
