"""What the samples show (the study's judgements by eye, as numbers): word formation,
layout, repetitiveness and style along training and after adaptation.

The package, by what each part does: :mod:`.settings` (what is generated, the claims'
thresholds), :mod:`.targets` (which checkpoints of the trained and adapted models are
sampled), :mod:`.generate` (sampling, with ``samples.jsonl`` as a cache),
:mod:`.textmetrics` (a text's measures) and :mod:`.profiles` (the same for each corpus),
:mod:`.milestones` (per-checkpoint means, milestones, adaptation before/after),
:mod:`.claims` (the study's judgements checked), :mod:`.figures`, :mod:`.section`, and
:mod:`.results` (the stage: run, load, ``summary.md``).
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.quality.claims import claims, quality_claims
from domaingpt.stages.quality.milestones import adapt_groups, checkpoint_summary, milestones
from domaingpt.stages.quality.profiles import corpus_profile, reference_table
from domaingpt.stages.quality.results import OPTIONAL, TABLES, load, run, summary_markdown
from domaingpt.stages.quality.section import section
from domaingpt.stages.quality.settings import QualitySettings, thresholds

stage = Stage(
    name="quality",
    title="sample quality metrics",
    settings=QualitySettings,
    run=run,
    tables=TABLES,
    optional=OPTIONAL,
    load=load,
    claims=claims,
    section=section,
    needs=("train",),
    uses=("adapt",),
    help="measure what the samples show (spelling, layout, repetitiveness, style) along "
    "training and after adaptation, and check the study's judgements",
    summary="summary",
    section_title="Sample quality",
)

__all__ = [
    "QualitySettings",
    "adapt_groups",
    "checkpoint_summary",
    "claims",
    "corpus_profile",
    "milestones",
    "quality_claims",
    "reference_table",
    "stage",
    "summary_markdown",
    "thresholds",
]
