"""What ``domaingpt adapt`` runs: the adaptation budget, start points, seeds and pairs.

Three start points per pair (source model, target corpus):

``final``    the source model's final history checkpoint;
``early``    an early history checkpoint (default: the one nearest 10 % of training);
``scratch``  a freshly initialised model of the same shape (the baseline: what the
             same budget buys without any pre-training).
"""

from __future__ import annotations

from dataclasses import dataclass

from domaingpt.core import published
from domaingpt.core.limits import check_processes
from domaingpt.core.loggers import check_logger_names
from domaingpt.core.settings import StageSettings, finite, setting
from domaingpt.errors import ConfigError, DomainGPTError

START_POINTS = ("final", "early", "scratch")


@dataclass(frozen=True)
class AdaptSettings(StageSettings):
    """What ``domaingpt adapt`` runs; built from the CLI or an ``[adapt]`` table.

    ``lr = 0`` takes the source model's ``train.lr``; ``min_lr = 0`` takes ``lr / 10``;
    ``batch_size = 0`` the source model's. ``early`` is ``"auto"`` (the history checkpoint
    nearest ``early_fraction`` of training, iteration 0 and the final one excluded) or an
    iteration. ``pairs`` are ``"source:target"``; empty means every ordered pair of the
    run's trained models. ``loggers`` empty: the study's ``train.loggers`` (under
    ``domaingpt run``), else those the source model was trained with.
    """

    iters: int = setting(published.ADAPT_ITERS, "adaptation iterations (default: the study's)")
    early: str | int = setting(
        "auto", "early checkpoint iteration, or auto: the one nearest early_fraction of training"
    )
    early_fraction: float = setting(0.1, "where 'auto' looks for the early checkpoint", cli=False)
    seeds: int = setting(3, "seeds per start point")
    seed: int = setting(0, "first seed (seeds used: seed, seed + 1, ...)")
    lr: float = setting(0.0, "peak learning rate (0: the source model's)")
    min_lr: float = setting(0.0, "final learning rate (0: lr / 10)", cli=False)
    warmup_iters: int = setting(10, "warm-up iterations", flag="--warmup")
    batch_size: int = setting(0, "sequences per step (0: the source model's)", cli=False)
    schedule: list[int] = setting([0, 10, 25, 50, 100, 200], "steps at which losses are recorded")
    pairs: list[str] = setting([], "SOURCE:TARGET pairs (default: every ordered pair)")
    starts: list[str] = setting(list(START_POINTS), "start points: final, early, scratch")
    eval_windows: int = setting(128, "windows per loss along the schedule; 0: whole split")
    final_windows: int = setting(
        0, "windows for the losses after the last step; 0: the whole split", cli=False
    )
    eval_batch_size: int = setting(128, "windows per forward pass when scoring", cli=False)
    sample_chars: int = setting(200, "characters of each adapted model's sample", cli=False)
    sample_prompt: str = setting("\n", "prompt of the samples", cli=False)
    sample_seed: int = setting(1, "seed of the samples", cli=False)
    loggers: list[str] = setting(
        [],
        "where each run's loss curve is logged besides curves.csv: csv, tensorboard, wandb "
        "(default: the study's train.loggers, else the source model's)",
    )
    processes: int = setting(
        0,
        "worker processes running the adaptations side by side, each on its share of the "
        "cores (0: automatic, one per core on a CPU where it pays; 1: one after the other "
        "in this process)",
    )

    def check(self) -> None:
        super().check()
        for name in ("lr", "min_lr", "early_fraction"):
            finite(f"adapt.{name}", getattr(self, name))
        if self.iters < 1:
            raise ConfigError(
                f"adaptation needs at least 1 iteration, got {self.iters}; pass --iters N "
                "with N >= 1 (the study used 200)"
            )
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if self.lr < 0 or self.min_lr < 0:
            raise ConfigError("--lr and min_lr must be zero (the source's) or more")
        if min(self.warmup_iters, self.batch_size, self.eval_windows, self.final_windows) < 0:
            raise ConfigError(
                "warmup_iters, batch_size, eval_windows and final_windows must be >= 0"
            )
        if self.eval_batch_size < 1 or self.sample_chars < 0:
            raise ConfigError("eval_batch_size must be >= 1 and sample_chars >= 0")
        if not 0 < self.early_fraction < 1:
            raise ConfigError(f"early_fraction must be in (0, 1), got {self.early_fraction}")
        if any(s < 0 for s in self.schedule):
            raise ConfigError(f"--schedule steps must be >= 0, got {self.schedule}")
        bad = [s for s in self.starts if s not in START_POINTS]
        if bad or not self.starts:
            raise ConfigError(
                f"start points must be among {', '.join(START_POINTS)}, got {self.starts}"
            )
        check_logger_names("adapt.loggers", self.loggers)
        check_processes("adapt.processes", self.processes)
        self.early_iteration()
        for pair in self.pairs:
            parse_pair(pair)

    def check_study(self, corpora: list[str]) -> None:
        """Each pair's source is a model the study trains; its target one of the study's
        corpora, or a corpus that can be found (a built-in name, a text file)."""
        from domaingpt.data.corpus import REGISTRY, resolve_corpus

        super().check_study(corpora)
        for pair in self.pairs:
            source, target = parse_pair(pair)
            if source not in corpora:
                raise ConfigError(
                    f"adapt.pairs: {pair!r} adapts from {source!r}, which the study does "
                    f"not train (its corpora: {', '.join(corpora)}); a pair is SOURCE:TARGET "
                    "with SOURCE one of them"
                )
            if target in corpora or target in REGISTRY:
                continue
            try:
                resolve_corpus(target, self.data_dir or None, download=False)
            except DomainGPTError as e:
                raise ConfigError(f"adapt.pairs: {pair!r}: the target {e}") from None

    def key_dict(self) -> dict:
        """Without ``loggers``: where the curves are shown changes none of them, so a
        change of loggers reruns nothing (as ``train.loggers`` retrains nothing)."""
        return {k: v for k, v in super().key_dict().items() if k != "loggers"}

    def early_iteration(self) -> int | None:
        """The requested early iteration, or None for ``auto``."""
        if isinstance(self.early, int) and not isinstance(self.early, bool):
            value = self.early
        elif str(self.early).strip().lower() == "auto":
            return None
        else:
            try:
                value = int(str(self.early).strip())
            except ValueError:
                raise ConfigError(
                    f"--early must be 'auto' or a checkpoint iteration, got {self.early!r}"
                ) from None
        if value < 0:
            raise ConfigError(f"--early must be a checkpoint iteration >= 0, got {value}")
        return value

    def steps(self) -> list[int]:
        """The evaluation schedule within ``iters``: always with 0 and ``iters``."""
        return sorted({s for s in self.schedule if s <= self.iters} | {0, self.iters})

    def seed_values(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]


def parse_pair(text: str) -> tuple[str, str]:
    """``"shakespeare:math"`` -> ("shakespeare", "math")."""
    source, sep, target = str(text).partition(":")
    if not sep or not source.strip() or not target.strip():
        raise ConfigError(
            f"a pair is SOURCE:TARGET, e.g. shakespeare:math; got {text!r} in --pairs"
        )
    return source.strip(), target.strip()
