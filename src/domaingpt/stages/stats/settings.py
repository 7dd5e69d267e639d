"""The stats stage's settings: which corpora to count."""

from __future__ import annotations

from dataclasses import dataclass

from domaingpt.core.settings import StageSettings, setting


@dataclass(frozen=True)
class StatsSettings(StageSettings):
    corpora: list[str] = setting(
        [], "built-in corpus names or paths to text files", flag="corpora", metavar="CORPUS"
    )
