"""Attention along training: per layer and head, attention entropy, how far back it looks
and its share on the current word, the previous word and further back, per checkpoint and
domain — the mechanism behind the study's stronger gradients on the previous word.

Tables in ``attention/``: ``per_prompt``, ``heads`` and ``prompts`` (see :mod:`.compute`).
The forward passes are shared with the ``lens`` and ``similarity`` stages.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.attention.claims import claims
from domaingpt.stages.attention.compute import (
    TABLES,
    AttentionSettings,
    head_summary,
    per_prompt_frame,
)
from domaingpt.stages.attention.results import run
from domaingpt.stages.attention.section import section

stage = Stage(
    name="attention",
    title="attention along training",
    settings=AttentionSettings,
    run=run,
    tables=TABLES,
    claims=claims,
    section=section,
    needs=("train",),
    help="attention per layer and head along training: entropy, distance, which words",
    section_title="Attention: where each head looks, along training",
)

__all__ = [
    "AttentionSettings",
    "claims",
    "head_summary",
    "per_prompt_frame",
    "stage",
]
