"""A user's own stage: the size of the residual stream per layer along training.

Not part of domaingpt: a study file adds it with ::

    [study]
    stages = ["norms_stage:stage"]         # module:attribute, relative to the study file
    [norms]                                 # its settings (NormSettings' fields)
    prompts_per_corpus = 8

It then runs after the built-in analyses, is skipped when nothing it depends on changed
(its settings, the trained models, this package's source), and its tables, claims and
report section appear in ``Study.load(run)`` and ``report.html`` like a built-in stage's.
"""

from __future__ import annotations

from domaingpt import api

from .claims import claims
from .compute import NormSettings, run
from .section import section

stage = api.Stage(
    name="norms",
    title="residual-stream norm",
    settings=NormSettings,
    run=run,
    tables=("per_prompt", "norms"),
    claims=claims,
    section=section,
    needs=("train",),  # reads the trained models' checkpoint histories
    help="the size of the residual stream per layer along training",
    section_title="The residual stream: how large it grows, layer by layer",
)

__all__ = ["NormSettings", "claims", "run", "section", "stage"]
