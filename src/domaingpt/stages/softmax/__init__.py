"""Part 3 of the study: the softmax output layer of every model at every checkpoint, on
prompts from every corpus (entropy, p(true), top-k, where probabilities harden).

Earlier versions called this stage ``probe``; the name is still accepted for its command
and study-file table, and old run directories' ``probe/`` folders are read.

Tables in ``softmax/``: ``last``, ``topk``, ``positions``, ``summary``, ``js``,
``hardening``, ``overpredicted`` and ``prompts``. The numbers are defined in
:mod:`.compute` (next-character statistics) and :mod:`.hardening` (divergence between
checkpoints); :mod:`.results` inspects the checkpoints and writes the tables, :mod:`.claims`
checks the study's statements on them.
"""

from __future__ import annotations

from domaingpt.context.stage import Stage
from domaingpt.stages.softmax.claims import claims
from domaingpt.stages.softmax.compute import NextCharStats, next_char_stats, summarise
from domaingpt.stages.softmax.hardening import hardening
from domaingpt.stages.softmax.results import TABLES, load, run, summary
from domaingpt.stages.softmax.section import section
from domaingpt.stages.softmax.settings import SoftmaxSettings

stage = Stage(
    name="softmax",
    title="softmax inspection",
    settings=SoftmaxSettings,
    run=run,
    tables=TABLES,
    load=load,
    claims=claims,
    section=section,
    needs=("train",),
    aliases=("probe",),
    help="softmax inspection: entropy, p(true), top-k at every checkpoint, in vs out of domain",
    summary=summary,
    section_title="Softmax inspection",
)

__all__ = [
    "NextCharStats",
    "SoftmaxSettings",
    "hardening",
    "next_char_stats",
    "stage",
    "summarise",
]
