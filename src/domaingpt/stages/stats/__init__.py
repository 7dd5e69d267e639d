"""Part 1 of the study: character statistics of each corpus.

Tables in ``stats/``: ``char_counts``, ``class_shares``, ``category_shares``, ``summary``,
``notable`` (see :mod:`domaingpt.stages.stats.compute`), the study's table as
``summary.md``, and a distribution figure per corpus.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Stage, StageContext, Tables
from domaingpt.core.progress import track
from domaingpt.core.settings import StageSettings, setting
from domaingpt.data.corpus import resolve_corpus
from domaingpt.errors import ConfigError
from domaingpt.stages.stats.claims import claims
from domaingpt.stages.stats.compute import compute_stats, load_stats, write_stats
from domaingpt.stages.stats.section import section


@dataclass(frozen=True)
class StatsSettings(StageSettings):
    SECTION = "stats"
    corpora: list[str] = setting(
        [], "built-in corpus names or paths to text files", flag="corpora", metavar="CORPUS"
    )


def run(ctx: StageContext, settings: StatsSettings) -> dict[str, Path]:
    """Count every character of every corpus; write the tables, summary and figures."""
    corpora = ctx.corpora or [
        resolve_corpus(name, settings.data_dir or None, download=not settings.offline)
        for name in settings.corpora
    ]
    if not corpora:
        raise ConfigError("give at least one corpus (a built-in name or a text file)")
    stats = []
    for corpus in track(corpora, "stats", enabled=ctx.progress):
        stats.append(
            compute_stats(corpus.name, corpus.read_text(), n_bytes=corpus.path.stat().st_size)
        )
    return write_stats(stats, ctx.out)


def load(run: RunDir) -> Tables:
    return load_stats(run.stats)


stage = Stage(
    name="stats",
    title="character statistics",
    settings=StatsSettings,
    run=run,
    load=load,
    claims=claims,
    section=section,
    help="character statistics of corpora (tables and figures)",
    summary="summary_md",
    section_title="Corpora: character statistics",
)
