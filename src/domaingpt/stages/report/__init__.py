"""The report stage: ``report.html`` (one self-contained file), ``report.md`` and
``report/conclusions.csv``, assembled from the stages' own sections and claims.

The report leads with its findings (:mod:`.summary`: the verdict counts, the claims that
flipped, the headline figure of the study (the zero-shot matrix beside the study's), the
early-vs-final answer, links into the sections); the detailed sections follow the study's
stages in order, long tables collapsed. A stage that is missing, failed or blocked leaves
its section with a note saying so. The conclusions are every stage's claims, computed
from its tables now (so a run's verdicts always match its numbers).
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.report.compute import build_report
from domaingpt.stages.report.results import FILES_DIR, run
from domaingpt.stages.report.settings import ReportSettings

stage = Stage(
    name="report",
    title="report",
    settings=ReportSettings,
    run=run,
    tables=("conclusions",),
    uses=("*",),  # every stage before it, a user's own too
    help="write report.html and report.md from the stages' results",
    command=False,
)

__all__ = ["FILES_DIR", "ReportSettings", "build_report", "stage"]
