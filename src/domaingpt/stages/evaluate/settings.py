"""The evaluate stage's settings: what domaingpt evaluate scores."""

from __future__ import annotations

from dataclasses import dataclass

from domaingpt.core.settings import StageSettings, positive, setting
from domaingpt.errors import ConfigError
from domaingpt.model.checkpoint import (
    parse_checkpoint_selection,
)


@dataclass(frozen=True)
class EvaluateSettings(StageSettings):
    """What ``domaingpt evaluate`` scores; built from the CLI or a ``[evaluate]`` table."""

    models: list[str] = setting([], "models to score (default: every trained model)")
    corpora: list[str] = setting(
        [], "corpus names or paths to score on (default: the models' corpora)"
    )
    checkpoints: str | list[int] = setting(
        "final", "final, all, or iterations like 0,500,2000 (default: final)"
    )
    batch_size: int = setting(
        128,
        "windows per forward pass (the native CPU engine uses at most 1024 positions, 16 "
        "windows of 64)",
    )
    bootstrap: int = setting(1000, "bootstrap resamples of windows for the interval; 0: none")
    confidence: float = setting(0.95, "confidence level of the interval", cli=False)
    seed: int = setting(0, "seed of the bootstrap: same seed, same interval")

    def check(self) -> None:
        super().check()
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        positive("bootstrap", self.bootstrap, zero_ok=True)
        if not 0 < self.confidence < 1:
            raise ConfigError(f"confidence must be in (0, 1), got {self.confidence}")
        parse_checkpoint_selection(self.checkpoints)
