"""The stats stage's run: count every character of every corpus, write the tables, the summary and the figures."""

from __future__ import annotations

from pathlib import Path

from domaingpt.context.stage import StageContext
from domaingpt.core.progress import track
from domaingpt.data.corpus import resolve_corpus
from domaingpt.errors import ConfigError
from domaingpt.stages.stats.compute import (
    CorpusStats,
    compute_stats,
    stats_tables,
    write_stats_files,
)
from domaingpt.stages.stats.settings import StatsSettings


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
    return write_stats(ctx, stats)


def write_stats(ctx: StageContext, stats: list[CorpusStats]) -> dict[str, Path]:
    """The tables (through the context), the Markdown summary and the figures."""
    written = {name: ctx.write_table(name, t) for name, t in stats_tables(stats).items()}
    return {**written, **write_stats_files(stats, ctx.out)}
