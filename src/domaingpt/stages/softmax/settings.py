"""What ``domaingpt softmax`` computes: the ``[softmax]`` table of a study file."""

from __future__ import annotations

from dataclasses import dataclass

from domaingpt.context.prompts import UserPromptSettings
from domaingpt.core.settings import setting
from domaingpt.errors import ConfigError


@dataclass(frozen=True)
class SoftmaxSettings(UserPromptSettings):
    """Settings of ``domaingpt softmax`` (also read from a ``[softmax]`` TOML table)."""

    top_k: int = setting(5, "top-k characters kept")
    epsilon: float = setting(0.05, "JS divergence (bits) below which a model counts as hardened")
    delta: float = setting(0.05, "p(true) settling tolerance", cli=False)
    overpredicted: int = setting(10, "characters per model in overpredicted.csv", cli=False)
    figure_prompts: int = setting(1, "prompts per corpus in the top-k figures", cli=False)
    batch_size: int = setting(128, "prompts per forward pass", cli=False)

    def check(self) -> None:
        super().check()
        self.validate()

    def validate(self) -> SoftmaxSettings:
        if self.top_k < 1:
            raise ConfigError(f"top-k must be at least 1, got {self.top_k}")
        if not self.epsilon > 0 or not self.delta > 0:
            raise ConfigError("epsilon and delta must be positive")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        return self
