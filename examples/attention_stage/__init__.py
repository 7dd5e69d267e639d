"""A user's own stage: mean attention distance per layer and head along training.

Not part of domaingpt: a study file adds it with ::

    [study]
    stages = ["attention_stage:stage"]     # module:attribute, relative to the study file
    [attention]                             # its settings (AttentionSettings' fields)
    prompts_per_corpus = 8

It then runs after the built-in analyses, is skipped when nothing it depends on changed
(its settings, the trained models, this package's source), and its tables, claims and
report section appear in ``Study.load(run)`` and ``report.html`` like a built-in stage's.
"""

from __future__ import annotations

from domaingpt.core.stage import Stage

from .claims import claims
from .compute import AttentionSettings, load, run
from .section import section

stage = Stage(
    name="attention",
    title="mean attention distance",
    settings=AttentionSettings,
    run=run,
    load=load,
    claims=claims,
    section=section,
    needs=("train",),  # reads the trained models' checkpoint histories
    help="how far back each attention head looks, per layer and head, along training",
    section_title="Attention: how far back each head looks",
)

__all__ = ["AttentionSettings", "claims", "load", "run", "section", "stage"]
