"""Representation similarity (linear CKA, debiased) of each layer's residual stream:
along training, between domain models, and between a source model and its adapted
versions (which start, early or final, moves its representations more?).

Tables in ``similarity/``: ``cka``, ``jackknife`` and ``hardening`` (see :mod:`.compute`).
The forward passes are shared with the ``lens`` and ``attention`` stages.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.similarity.claims import claims
from domaingpt.stages.similarity.compute import TABLES, SimilaritySettings, hardening
from domaingpt.stages.similarity.results import run
from domaingpt.stages.similarity.section import section

stage = Stage(
    name="similarity",
    title="representation similarity",
    settings=SimilaritySettings,
    run=run,
    tables=TABLES,
    claims=claims,
    section=section,
    needs=("train",),
    uses=("adapt",),
    help="linear CKA of each layer: along training, across domains, before vs after adapting",
    section_title="Representation similarity: what training and adaptation change inside",
)

__all__ = ["SimilaritySettings", "claims", "hardening", "stage"]
