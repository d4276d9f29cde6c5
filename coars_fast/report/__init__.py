"""`coars-fast report RUN [RUN ...]`: PNG figures of one or several runs overlaid, and a markdown summary
(settings, the before/after table with 95% CIs beside the classic baselines, the validation curve)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from coars_fast.report.plots import plot_runs
from coars_fast.report.runs import ReportError, Run, load_run
from coars_fast.report.tables import markdown


def write_report(folders: Sequence[Path], out: Path, names: Sequence[str] | None = None) -> Path:
    """Figures and REPORT.md for the runs in `folders` (shown as `names`, default the folder names),
    written into `out`; returns the markdown's path."""
    if not folders:
        raise ReportError("report: name at least one run folder")
    if names is not None and len(names) != len(folders):
        raise ReportError(f"report: {len(names)} names for {len(folders)} runs")
    runs = [load_run(Path(f), n) for f, n in zip(folders, names or [None] * len(folders))]
    out.mkdir(parents=True, exist_ok=True)
    figures = [plot_runs(runs, out, x).name for x in ("step", "minutes")]
    path = out / "REPORT.md"
    path.write_text(markdown(runs, figures))
    return path


__all__ = ["ReportError", "Run", "load_run", "write_report"]
