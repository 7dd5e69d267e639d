"""The report stage's settings."""

from __future__ import annotations

from dataclasses import dataclass

from domaingpt.core.settings import StageSettings, setting


@dataclass(frozen=True)
class ReportSettings(StageSettings):
    """``embed``: every figure inside ``report.html`` (one self-contained file, the
    default), or, false, as files in ``report_files/`` beside it, each PNG with its
    SVG (a report of many figures stays small, and a paper can take the vectors)."""

    embed: bool = setting(True, "embed the figures in report.html (false: files beside it)")
