"""Scoring text with a model: exact per-window losses, on the fastest engine available."""

from domaingpt.scoring.windows import ENGINES, WindowScores, score_windows

__all__ = ["ENGINES", "WindowScores", "score_windows"]
