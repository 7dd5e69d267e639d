"""Typed settings: one frozen dataclass per stage, checked when it is made.

A stage's settings come from three places — a study file's ``[stage]`` table, the
command line, and Python — and all three go through the same class, so a default, a
type and a check live in one place. Each field is declared with :func:`setting`, whose
help text is what ``domaingpt STAGE --help`` prints (the CLI is generated from the
fields, see :mod:`domaingpt.cli.options`).

Every stage's settings share the *runtime* part (:class:`StageSettings`): where and how
fast the stage runs (device, threads), where corpora are found and whether they may be
downloaded. Those fields never enter a stage's cache key: the same settings on another
machine compute the same thing.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal, TypeVar

from domaingpt.core.limits import check_threads
from domaingpt.errors import ConfigError

S = TypeVar("S", bound="StageSettings")

#: Fields every stage has that say where or how fast it runs, not what it computes.
RUNTIME_FIELDS = frozenset({"device", "threads", "data_dir", "offline"})
#: Such fields some stages add: the worker processes their jobs run in.
OPTIONAL_RUNTIME_FIELDS = frozenset({"processes"})
#: What a path setting names: ``input``, a file to read (a study file's relative path is
#: relative to the study file), or ``output``, a file to write (relative to the run
#: directory, and never outside it).
PathKind = Literal["input", "output"]
PATH_KINDS: tuple[PathKind, ...] = ("input", "output")
#: The largest seed: every random generator used (torch, numpy) accepts 0..2**63 - 1,
#: also after adding the number of seeds a stage draws from it.
MAX_SEED = 2**63 - 1


def setting(
    default: Any,
    help: str,
    *,
    flag: str | None = None,
    cli: bool = True,
    metavar: str | None = None,
    repeat: bool = False,
    choices: tuple[str, ...] | None = None,
    path: PathKind | None = None,
) -> Any:
    """A settings field: its default, its help text, and how the CLI spells it.

    ``flag`` overrides the option name (default ``--field-name``; a name without dashes
    is a positional argument); ``cli=False`` keeps a field out of the command line (study
    files and Python still set it). A list is given comma-separated, or one item per
    option with ``repeat`` (items that may contain commas, like prompts). Lists get a
    ``default_factory`` so instances never share one. ``path``: the field names a file
    or folder (a string, or a list of them), see :func:`path_fields`.
    """
    if path not in (None, *PATH_KINDS):
        raise ValueError(f"setting(path=...) must be one of {PATH_KINDS}, got {path!r}")
    meta = {
        "help": help,
        "flag": flag,
        "cli": cli,
        "metavar": metavar,
        "repeat": repeat,
        "choices": choices,
        "path": path,
    }
    if isinstance(default, list | dict | set):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class StageSettings:
    """The runtime part every stage shares; subclasses add what the stage computes.

    Frozen and checked on construction: a subclass overrides :meth:`check` (calling
    ``super().check()``) and raises :class:`ConfigError` naming the field and the fix.
    """

    device: str = setting("auto", "device: auto, cpu, cuda, cuda:N or mps")
    threads: int = setting(
        0, "torch threads (0: torch's default; 1 is often fastest on a busy CPU)"
    )
    data_dir: str = setting(
        "",
        "directory holding corpus files (default: $DOMAINGPT_DATA, then the cache)",
        path="input",
    )
    offline: bool = setting(False, "never download a corpus")

    def __post_init__(self) -> None:
        for f in fields(self):
            if not f.init:
                continue
            value = getattr(self, f.name)
            coerced = coerce(f.name, value, type(self), f.name)
            if coerced is not value:
                object.__setattr__(self, f.name, coerced)
            checked_number(f.name, coerced)
        self.check()

    def check(self) -> None:
        """Raise :class:`ConfigError` for a value the stage cannot run with."""
        if self.threads < 0:
            raise ConfigError(f"threads must be 0 (torch's default) or more, got {self.threads}")
        check_threads("threads", self.threads)

    def check_study(self, corpora: list[str]) -> None:
        """Checks that need the study around the stage, run by ``domaingpt run`` before its
        first stage: ``corpora`` are the names of the study's corpora (its models). A
        subclass refuses here what would otherwise fail only when the stage runs (a pair
        naming a corpus the study does not train, a prompt file that cannot be read)."""

    def memory_setting(self, name: str) -> tuple[str, int | None]:
        """The setting an out-of-memory error tells the user to lower, and its value:
        the stage's ``batch_size`` when it has one (None: the model's own). ``name``: the
        stage's name (its study-file table)."""
        value = getattr(self, "batch_size", None)
        if isinstance(value, int) and not isinstance(value, bool):
            return f"{name}.batch_size", value or None
        return f"the batch sizes of [{name}]", None

    def replace(self: S, **changes: Any) -> S:
        return dataclasses.replace(self, **changes)

    def key_dict(self) -> dict[str, Any]:
        """What the stage's result depends on: every field but the runtime ones."""
        runtime = RUNTIME_FIELDS | OPTIONAL_RUNTIME_FIELDS
        return {k: v for k, v in self.to_dict().items() if k not in runtime}

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}


def path_fields(cls: type[StageSettings]) -> dict[str, PathKind]:
    """The fields of ``cls`` declared as paths (``setting(path=...)``): name -> kind."""
    return {f.name: f.metadata["path"] for f in fields(cls) if f.metadata.get("path")}


def positive(name: str, value: float, *, zero_ok: bool = False) -> None:
    """Refuse ``value`` below 1 (or below 0 with ``zero_ok``), or a non-finite number."""
    low = 0 if zero_ok else 1
    if (isinstance(value, float) and not math.isfinite(value)) or value < low:
        more = "zero or more" if zero_ok else "at least 1"
        raise ConfigError(f"{name} must be {more}, got {value}")


def finite(name: str, value: float, low: float | None = None, high: float | None = None) -> None:
    """Refuse NaN, infinities and values outside ``[low, high]``."""
    if not math.isfinite(value):
        raise ConfigError(f"{name} must be a finite number, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}]"
        raise ConfigError(f"{name} must be in {bounds}, got {value}")


def seed(name: str, value: int) -> None:
    """Refuse a seed the random generators cannot take (below 0 or above MAX_SEED)."""
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{name} must be a seed from 0 to 2**63 - 1, got {value}")


def checked_number(key: str, value: Any) -> None:
    """The checks every number of every settings class gets, whatever the stage: a float
    (or a float in a list) must be finite, and a field named ``seed``/``*_seed`` must be
    a seed the generators accept."""
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(item, float):
            finite(key, item)
    name = key.rsplit(".", 1)[-1]
    if (name == "seed" or name.endswith("_seed")) and isinstance(value, int):
        seed(key, value)


def coerce(key: str, value: Any, cls: type, name: str) -> Any:
    """``value`` as the field's annotated type (ints widen to floats), or ConfigError."""
    hint = typing.get_type_hints(cls)[name]
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for opt in options:
        origin = typing.get_origin(opt) or opt
        if origin is bool and isinstance(value, bool):
            return value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin is float and isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if not isinstance(value, float) else value
        if origin is str and isinstance(value, str):
            return value
        if origin is list and isinstance(value, list | tuple):
            (item,) = typing.get_args(opt)
            if all(_is(v, item) for v in value):
                return list(value) if isinstance(value, tuple) else value
        if origin is dict and isinstance(value, dict):
            return value
    names = " or ".join(_type_name(o) for o in options)
    raise ConfigError(f"{key} must be {names}, got {value!r}")


def _is(value: Any, item: type) -> bool:
    if item is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, item) and not (item is int and isinstance(value, bool))


def _type_name(t: Any) -> str:
    origin = typing.get_origin(t)
    if origin is list:
        return f"a list of {_type_name(typing.get_args(t)[0])}"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(
        t, getattr(t, "__name__", str(t))
    )


def unknown_key(key: str, known: list[str], where: str) -> ConfigError:
    """An unknown key, with the closest known one suggested."""
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return ConfigError(f"unknown key {key!r} in {where}{hint}")


def settings_from_table(
    cls: type[S], values: dict[str, Any], section: str, *, source: str = "config"
) -> S:
    """An instance of ``cls`` from the TOML table ``[section]``.

    An unknown key names the closest known one; a wrong type or a refused value names
    its key and where it came from.
    """
    if not isinstance(values, dict):
        raise ConfigError(f"[{section}] in {source} must be a table")
    known = [f.name for f in fields(cls)]
    for name in values:
        if name not in known:
            raise unknown_key(f"{section}.{name}", [f"{section}.{k}" for k in known], source)
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"[{section}] in {source}: {e}") from None
