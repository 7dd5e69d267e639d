"""What the sample-quality stage generates, and the thresholds its claims are checked with.

The settings a run used are written to ``quality/settings.json`` (the ``settings``
table of :func:`~domaingpt.stages.quality.results.load`), so the claims can
be checked again from the tables alone with the same thresholds (:func:`thresholds`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from domaingpt.context.stage import Tables
from domaingpt.core.limits import check_processes
from domaingpt.core.settings import StageSettings, setting
from domaingpt.errors import ConfigError

#: The stage's folder in a run directory.


@dataclass(frozen=True)
class QualitySettings(StageSettings):
    """What to generate and the thresholds the study's claims are checked with.

    ``models`` / ``iterations`` empty: every trained model / every history checkpoint.
    ``corpora``: reference corpora for style distance (names or paths); empty: the
    corpora of the models (and of the adaptation runs). ``top_k`` 0: no top-k cut.
    ``adapt_samples``: seeds per adapted model (each pair and start has several adapted
    models, one per adaptation seed, so the spread comes from those too); 0 or
    ``adapt = False`` skips adapted models.

    16 samples per checkpoint (and per adapted model) by default: every claim carries an
    interval over its samples, so a verdict does not turn on one text of two. They
    are drawn as one batch per checkpoint, so 16 cost little more than 2 (see
    :mod:`~domaingpt.stages.quality.generate`).
    """

    samples: int = setting(16, "seeds per checkpoint")
    chars: int = setting(500, "characters per sample")
    prompt: str = setting("\n", "prompt of every sample (default: a newline)")
    temperature: float = setting(1.0, "sampling temperature")
    top_k: int = setting(0, "top-k cut of the sampling (0: none)", cli=False)
    first_seed: int = setting(1, "first sampling seed", cli=False)
    models: list[str] = setting([], "models to sample (default: every trained model)")
    iterations: list[int] = setting([], "iterations to sample (default: every checkpoint)")
    corpora: list[str] = setting(
        [], "reference corpora, names or paths (default: the models' corpora)"
    )
    n_slices: int = setting(
        20, "held-out corpus slices the samples are compared with", flag="--slices"
    )
    adapt: bool = setting(True, "measure the adapted models too")
    adapt_samples: int = setting(
        16, "seeds per adapted model (at most samples); its adaptation seeds add the spread"
    )
    device: str = setting("cpu", "device for generation")
    threads: int = setting(1, "torch threads for generation")
    processes: int = setting(
        0,
        "worker processes sampling checkpoints side by side, each on one torch thread "
        "(0: automatic, one per core on a CPU where it pays and threads = 1; 1: in this "
        "process)",
    )
    # claim thresholds
    spacing_tolerance: float = setting(
        0.2, "|space share - corpus| <= this × corpus share", cli=False
    )
    word_majority: float = setting(0.5, '"most long words are real words"', cli=False)
    coherent_words: float = setting(
        0.75, 'long-word share meaning "word formation passes"', cli=False
    )
    loss_tolerance: float = setting(0.15, "nats either side of the study's loss range", cli=False)
    iteration_factor: float = setting(
        2.5, "iterations within [lo / f, hi · f] match the study", cli=False
    )
    repeat_sigmas: float = setting(
        2.0, '"repetitive": beyond corpus slice mean ± this many std', cli=False
    )

    def check(self) -> None:
        super().check()
        positive = {"samples": self.samples, "chars": self.chars, "n_slices": self.n_slices}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{name} must be at least 1, got {value}")
        if self.adapt_samples < 0 or self.top_k < 0 or self.threads < 0:
            raise ConfigError("adapt_samples, top_k and threads must be zero or more")
        check_processes("quality.processes", self.processes)
        if not self.prompt:
            raise ConfigError("prompt must not be empty (the default is a newline)")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be zero or more, got {self.temperature}")
        for name in ("spacing_tolerance", "loss_tolerance", "repeat_sigmas"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be zero or more")
        for name in ("word_majority", "coherent_words"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{name} must be in (0, 1]")
        if self.iteration_factor < 1:
            raise ConfigError("iteration_factor must be at least 1")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.samples))


def thresholds(tables: Tables) -> QualitySettings:
    """The settings the stage ran with, from its ``settings`` table (the defaults for a
    run that did not record them)."""
    recorded = tables.get("settings")
    if recorded is None or recorded.empty:
        return QualitySettings()
    row = recorded.iloc[0].to_dict()
    names = {f.name for f in dataclasses.fields(QualitySettings) if f.init}
    return QualitySettings(**{k: v for k, v in row.items() if k in names})
