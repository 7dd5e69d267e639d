"""Part 3 of the study: the softmax output layer of every model at every checkpoint, on
prompts from every corpus (entropy, p(true), top-k, where probabilities harden).

Tables in ``probe/``: ``last``, ``topk``, ``positions``, ``summary``, ``js``,
``hardening``, ``overpredicted`` and ``prompts``. The numbers are defined in
:mod:`.compute` (next-character statistics) and :mod:`.hardening` (divergence between
checkpoints); :mod:`.run` probes the checkpoints and writes the tables, :mod:`.claims`
checks the study's statements on them.
"""

from __future__ import annotations

from pathlib import Path

from domaingpt.context.stage import Stage, StageContext
from domaingpt.stages.probe.claims import claims
from domaingpt.stages.probe.compute import NextCharStats, next_char_stats, summarise
from domaingpt.stages.probe.hardening import hardening
from domaingpt.stages.probe.run import load_probe, probe_summary, run_probe
from domaingpt.stages.probe.section import section
from domaingpt.stages.probe.settings import ProbeSettings


def run(ctx: StageContext, settings: ProbeSettings) -> dict[str, Path]:
    return run_probe(ctx.run, settings, progress=ctx.progress, log=ctx.log, ranks=ctx.ranks)


stage = Stage(
    name="probe",
    title="softmax inspection",
    settings=ProbeSettings,
    run=run,
    load=load_probe,
    claims=claims,
    section=section,
    needs=("train",),
    help="softmax inspection: entropy, p(true), top-k at every checkpoint, in vs out of domain",
    summary=probe_summary,
    section_title="Softmax inspection",
)

__all__ = [
    "NextCharStats",
    "ProbeSettings",
    "hardening",
    "load_probe",
    "next_char_stats",
    "run_probe",
    "stage",
    "summarise",
]
