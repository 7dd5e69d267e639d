"""Part 2 of the study, few-shot: each model trained further on every other corpus, from
its final checkpoint, an early one and from scratch.

``settings`` (what runs), ``jobs`` (planning, and one adaptation from start to finish),
``compute`` (every job, then the tables and figures), ``results`` (the stage's ``run``
and ``load``), ``summary`` (per pair
and over the source models: which start adapts better), ``claims``, ``section``, ``figures``.

Tables in ``adapt/``: ``curves``, ``final``, ``summary`` (per pair: loss by start point,
early − final, outcome and verdict), plus ``in_domain`` (each model on its own corpus).
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.adapt.claims import claims
from domaingpt.stages.adapt.compute import in_domain_losses
from domaingpt.stages.adapt.jobs import pick_early
from domaingpt.stages.adapt.results import TABLES, load, run
from domaingpt.stages.adapt.section import section
from domaingpt.stages.adapt.settings import START_POINTS, AdaptSettings, parse_pair
from domaingpt.stages.adapt.summary import (
    across_sources,
    outcome,
    per_source,
    sign_flip_p,
    summarize,
    summary_markdown,
    verdict,
)

stage = Stage(
    name="adapt",
    title="few-shot adaptation",
    settings=AdaptSettings,
    run=run,
    tables=TABLES,
    load=load,
    claims=claims,
    section=section,
    needs=("train",),
    help="few-shot adaptation of each model to each other corpus, from early, final and "
    "scratch starts",
    summary="summary_md",
    section_title="Cross-domain evaluation: few-shot adaptation",
)

__all__ = [
    "START_POINTS",
    "AdaptSettings",
    "across_sources",
    "in_domain_losses",
    "outcome",
    "parse_pair",
    "per_source",
    "pick_early",
    "sign_flip_p",
    "stage",
    "summarize",
    "summary_markdown",
    "verdict",
]
