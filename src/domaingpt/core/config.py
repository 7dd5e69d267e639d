"""Run configuration: typed dataclasses, TOML presets and ``--set key=value`` overrides.

A preset is a TOML file with ``[model]``, ``[train]`` and ``[data]`` tables. Every key is
checked against the dataclass fields: an unknown key is an error that suggests the
closest one, and a value of the wrong type is an error that names the key.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

from domaingpt.core.io import read_user_text
from domaingpt.core.limits import check_threads
from domaingpt.core.loggers import DEFAULT_LOGGERS, check_logger_names
from domaingpt.core.settings import coerce, finite, seed
from domaingpt.errors import ConfigError, DomainGPTError

#: The study file's tables that configure training (the train stage's settings).
TRAIN_SECTIONS = ("model", "train", "data")
#: Training settings that change how fast a run goes, not what it computes: they may
#: differ on resume, and they are not part of the train stage's cache key.
RUNTIME_TRAIN_KEYS = frozenset(
    {
        "compile",
        "device",
        "threads",
        "step",
        "eval_interval",
        "eval_tokens",
        "log_interval",
        "resume_interval",
        "loggers",
    }
)
#: ``train.step`` values of earlier versions that no longer exist: the worker and native
#: steps, which computed the plain step's gradients but were never faster.
REMOVED_STEPS = ("workers", "native")


@dataclass(frozen=True)
class ModelSpec:
    """The model's shape, a preset's ``[model]`` table. ``vocab_size`` is not here: it comes
    from the study's vocabulary (:class:`domaingpt.model.gpt.GPTConfig` adds it)."""

    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    block_size: int = 64
    dropout: float = 0.0
    bias: bool = True

    def check(self) -> None:
        """Refuse a shape no model can have (a ConfigError naming the ``model.`` key)."""
        for name in ("n_layer", "n_head", "n_embd", "block_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"model.{name} must be at least 1, got {value!r}")
        if self.n_embd % self.n_head:
            raise ConfigError(
                f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head})"
            )
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")


@dataclass(frozen=True)
class TrainSpec:
    batch_size: int = 12
    grad_accum: int = 1
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 0  # 0: decay over max_iters
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # 0 disables clipping
    seed: int = 1337
    eval_interval: int = 250  # 0: only at the end
    eval_tokens: int = 32768  # characters of val split scored at each periodic eval
    # Per-step scalars (the step's loss, lr, tokens/s, gradient norm) to train.loggers
    # every this many iterations (0: none); metrics.jsonl keeps its evaluation rows.
    log_interval: int = 10
    # Iterations that get a history checkpoint and a sample; "log" = a log-spaced schedule.
    checkpoints: list[int] | str = "log"
    resume_interval: int = 500  # a resumable checkpoint (with optimizer state) this often
    sample_chars: int = 200
    sample_prompt: str = "\n"
    sample_seed: int = 1
    compile: str = "auto"  # "auto" | "on" | "off"
    # Only "plain" (one autograd pass over the batch with torch's threads): the key stays
    # so that configs recorded by earlier versions, which wrote it, still load.
    step: str = "plain"
    device: str = "auto"  # "auto" | "cpu" | "cuda" | "mps" | "cuda:1" ...
    threads: int = 0  # 0: torch's default
    # Where the scalars go besides metrics.jsonl: names of core.loggers.LOGGERS.
    loggers: list[str] = field(default_factory=lambda: list(DEFAULT_LOGGERS))

    @property
    def decay_iters(self) -> int:
        return self.lr_decay_iters or self.max_iters


@dataclass(frozen=True)
class DataSpec:
    val_fraction: float = 0.1


@dataclass(frozen=True)
class RunConfig:
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    data: DataSpec = field(default_factory=DataSpec)
    preset: str = "custom"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> RunConfig:
        t = self.train
        # Non-finite values first: NaN passes every comparison below (nan < 0 is False).
        for section in ("model", "train", "data"):
            for f in fields(getattr(self, section)):
                value = getattr(getattr(self, section), f.name)
                if isinstance(value, float):
                    finite(f"{section}.{f.name}", value)
        seed("train.seed", t.seed)
        seed("train.sample_seed", t.sample_seed)
        positive = {
            "train.batch_size": t.batch_size,
            "train.grad_accum": t.grad_accum,
            "train.max_iters": t.max_iters,
            "train.eval_tokens": t.eval_tokens,
            "train.resume_interval": t.resume_interval,
        }
        for key, value in positive.items():
            if value < 1:
                raise ConfigError(f"{key} must be at least 1, got {value}")
        for key, value in {
            "train.warmup_iters": t.warmup_iters,
            "train.eval_interval": t.eval_interval,
            "train.log_interval": t.log_interval,
            "train.sample_chars": t.sample_chars,
            "train.lr_decay_iters": t.lr_decay_iters,
            "train.threads": t.threads,
        }.items():
            if value < 0:
                raise ConfigError(f"{key} must be zero or more, got {value}")
        check_threads("train.threads", t.threads)
        if not (t.lr > 0 and 0 <= t.min_lr <= t.lr):
            raise ConfigError(
                f"need 0 < train.lr and 0 <= train.min_lr <= train.lr, got {t.lr}, {t.min_lr}"
            )
        if not (0 <= t.beta1 < 1 and 0 <= t.beta2 < 1):
            raise ConfigError("train.beta1 and train.beta2 must be in [0, 1)")
        if t.weight_decay < 0 or t.grad_clip < 0:
            raise ConfigError("train.weight_decay and train.grad_clip must be zero or more")
        if t.compile not in ("auto", "on", "off"):
            raise ConfigError(f"train.compile must be 'auto', 'on' or 'off', got {t.compile!r}")
        if t.step in REMOVED_STEPS:
            raise ConfigError(
                f"train.step = {t.step!r} no longer exists (it was never faster than the "
                "plain step, which computes the same); delete train.step or set it to 'plain'"
            )
        if t.step != "plain":
            raise ConfigError(f"train.step must be 'plain', got {t.step!r}")
        check_logger_names("train.loggers", t.loggers)
        if isinstance(t.checkpoints, str) and t.checkpoints != "log":
            raise ConfigError('train.checkpoints must be "log" or a list of iterations')
        if isinstance(t.checkpoints, list) and any(i < 0 for i in t.checkpoints):
            raise ConfigError("train.checkpoints must not hold negative iterations")
        if not 0 < self.data.val_fraction < 1:
            raise ConfigError(f"data.val_fraction must be in (0, 1), got {self.data.val_fraction}")
        self.model.check()
        return self


SECTIONS: dict[str, type] = {"model": ModelSpec, "train": TrainSpec, "data": DataSpec}
#: Lists of names that may also be given as one comma-separated string (``--set`` reads a
#: value as TOML, and ``csv,tensorboard`` is not TOML), as the stages' list options are.
_COMMA_LISTS = frozenset({"loggers"})


def _all_keys() -> list[str]:
    return [f"{s}.{f.name}" for s, cls in SECTIONS.items() for f in fields(cls)]


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, _all_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown config key {key!r}{hint}")


def _apply(cfg: RunConfig, section: str, values: dict[str, Any]) -> RunConfig:
    cls = SECTIONS[section]
    names = {f.name for f in fields(cls)}
    updates = {}
    for name, value in values.items():
        key = f"{section}.{name}"
        if name not in names:
            raise _unknown_key(key)
        if name in _COMMA_LISTS and isinstance(value, str):  # --set train.loggers=csv,wandb
            value = [v.strip() for v in value.split(",") if v.strip()]
        updates[name] = coerce(f"config key {key!r}", value, cls, name)
    return replace(cfg, **{section: replace(getattr(cfg, section), **updates)})


def from_dict(
    data: dict[str, Any], base: RunConfig | None = None, *, source: str = "config"
) -> RunConfig:
    cfg = base or RunConfig()
    for section, values in data.items():
        if section == "preset":
            continue
        if section not in SECTIONS:
            if not isinstance(values, dict):
                raise _unknown_key(section)
            raise ConfigError(f"unknown section [{section}] in {source}; known: {sorted(SECTIONS)}")
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {source} must be a table")
        cfg = _apply(cfg, section, values)
    return cfg


def preset_names() -> list[str]:
    files = resources.files("domaingpt") / "presets"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".toml"))


def read_toml(text: str, source: str) -> dict[str, Any]:
    """Parse TOML text; a syntax error is a ConfigError naming ``source``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{source} is not valid TOML: {e}") from None


def read_config_text(path: Path, what: str) -> str:
    """The UTF-8 text of ``path``; an unreadable file is a ConfigError naming ``what``."""
    try:
        return read_user_text(path, what)
    except DomainGPTError as e:
        raise ConfigError(str(e)) from None


def load_preset(name_or_path: str) -> RunConfig:
    """A shipped preset by name (``cpu-mini``) or a TOML file by path."""
    path = Path(name_or_path)
    # A name with no path separator and no .toml suffix is a preset, even if a folder of
    # that name happens to be in the current directory (a run directory called "smoke").
    if path.suffix == ".toml" or "/" in name_or_path or os.sep in name_or_path:
        text = read_config_text(path, "config file")
        name = path.stem
    else:
        if name_or_path not in preset_names():
            close = difflib.get_close_matches(name_or_path, preset_names(), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"unknown preset {name_or_path!r}{hint} (known: {', '.join(preset_names())})"
            )
        text = (resources.files("domaingpt") / "presets" / f"{name_or_path}.toml").read_text()
        name = name_or_path
    cfg = from_dict(read_toml(text, str(name_or_path)), source=str(name_or_path))
    return replace(cfg, preset=name)


def parse_override(item: str) -> tuple[str, Any]:
    """``train.lr=3e-4`` -> (``train.lr``, 3e-4); the value is read as TOML, else a string."""
    if "=" not in item:
        raise ConfigError(f"--set expects key=value, got {item!r}")
    key, raw = (s.strip() for s in item.split("=", 1))
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return key, value


def apply_overrides(cfg: RunConfig, items: list[str]) -> RunConfig:
    for item in items:
        key, value = parse_override(item)
        if key.count(".") != 1:
            raise _unknown_key(key)
        section, name = key.split(".")
        if section not in SECTIONS:
            raise _unknown_key(key)
        cfg = _apply(cfg, section, {name: value})
    return cfg


def build_config(preset: str = "cpu-mini", overrides: list[str] | None = None) -> RunConfig:
    return apply_overrides(load_preset(preset), overrides or []).validate()


def log_schedule(max_iters: int) -> list[int]:
    """0, 10, 25, 50, 100, 250, 500, 1000, 2500, ... up to and including ``max_iters``."""
    points, scale = [0], 1
    while True:
        for m in (10, 25, 50):
            it = m * scale
            if it >= max_iters:
                return sorted({*points, max_iters})
            points.append(it)
        scale *= 10
