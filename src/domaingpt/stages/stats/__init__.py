"""Part 1 of the study: character statistics of each corpus.

Tables in ``stats/``: ``char_counts``, ``class_shares``, ``category_shares``, ``summary``,
``notable`` (see :mod:`domaingpt.stages.stats.compute`), the study's table as
``summary.md``, and a distribution figure per corpus.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.stats.claims import claims
from domaingpt.stages.stats.results import run
from domaingpt.stages.stats.section import section
from domaingpt.stages.stats.settings import StatsSettings

stage = Stage(
    name="stats",
    title="character statistics",
    settings=StatsSettings,
    run=run,
    tables=("char_counts", "class_shares", "summary", "notable"),
    optional=("category_shares",),
    claims=claims,
    read_unfinished=True,
    section=section,
    help="character statistics of corpora (tables and figures)",
    summary="summary_md",
    section_title="Corpora: character statistics",
)
