"""Evaluation of the agents (Hit@1, ValidRatio, user-agent F1) beside the classic baselines."""

from coars_fast.evaluation.evaluate import EvalSettings, evaluate, format_report, write_result

__all__ = ["EvalSettings", "evaluate", "format_report", "write_result"]
