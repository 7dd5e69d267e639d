"""Command-line options generated from a settings class, so a default lives in one place.

Each field of a :class:`~domaingpt.core.settings.StageSettings` subclass declared with
``cli=True`` becomes an option: ``--field-name`` (or the field's ``flag``), its help text
and default from the field, its type from the annotation. Lists are comma-separated
(``--pairs a:b,b:c``), or one item per option where the field says ``repeat``; booleans
are switches (``--no-NAME`` for a default of true); a field typed ``str | list[int]``
takes a string that the settings class parses.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any

from domaingpt.core.progress import Log, quiet_log, stderr_log
from domaingpt.core.settings import StageSettings
from domaingpt.errors import ConfigError

_MISSING = object()

#: What ``--quiet`` means, the same for every command that has it.
QUIET_HELP = (
    "no progress bars and no log lines: only the command's results, warnings and errors "
    "(a study still writes its log lines to RUN/log.txt)"
)


def add_quiet(parser: argparse.ArgumentParser) -> None:
    """``--quiet``/``-q`` (:data:`QUIET_HELP`); a command reads it with :func:`command_log`
    and :func:`show_progress`."""
    parser.add_argument("--quiet", "-q", action="store_true", help=QUIET_HELP)


def command_log(args: argparse.Namespace) -> Log:
    """A command's log: stderr, above any progress bar; nothing with ``--quiet``."""
    return quiet_log if getattr(args, "quiet", False) else stderr_log


def show_progress(args: argparse.Namespace) -> bool:
    """Progress bars, unless ``--quiet``."""
    return not getattr(args, "quiet", False)


def _options(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)


def _list_item(hint: Any) -> type | None:
    """The item type when ``hint`` is exactly ``list[X]``."""
    if typing.get_origin(hint) is list:
        return typing.get_args(hint)[0]
    return None


def _split(item: type, what: str):
    def parse(text: str) -> list:
        parts = [t.strip() for t in text.split(",") if t.strip()]
        if item is int:
            try:
                return [int(t) for t in parts]
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"{what} must be comma-separated integers, got {text!r}"
                ) from None
        return parts

    return parse


def _show(default: Any) -> str:
    if isinstance(default, list):
        return ",".join(map(str, default)) or "none"
    if isinstance(default, str):
        return repr(default) if default.strip() != default or not default else default
    return str(default)


def _with_default(help_text: str, default: Any) -> str:
    if "(default" in help_text:  # the help already says what happens by default
        return help_text
    return f"{help_text} (default: {_show(default)})"


def add_settings_arguments(parser: argparse.ArgumentParser, cls: type[StageSettings]) -> None:
    """Add one option per CLI field of ``cls`` (help and default from the field)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if not f.init or not meta.get("cli", False):
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        help_text = meta.get("help", "")
        hint = hints[f.name]
        kwargs: dict[str, Any] = {"dest": f.name, "default": _MISSING}
        if meta.get("metavar"):
            kwargs["metavar"] = meta["metavar"]
        if not flag.startswith("-"):  # positional: a list given as separate words
            parser.add_argument(f.name, nargs="+", help=help_text, metavar=meta.get("metavar"))
            continue
        if hint is bool:
            if default:
                flag = "--no-" + flag[2:]
                kwargs.update(
                    action="store_false", help=f"{help_text} (default: on; {flag} turns it off)"
                )
            else:
                kwargs.update(action="store_true", help=help_text)
            parser.add_argument(flag, **kwargs)
            continue
        item = _list_item(hint)
        if item is not None and meta.get("repeat"):
            kwargs.update(action="append", default=None, help=help_text + " (repeatable)")
        elif item is not None:
            kwargs.update(type=_split(item, flag), help=_with_default(help_text, default))
        else:
            simple = next((o for o in _options(hint) if o in (int, float)), None)
            if simple is not None and len(_options(hint)) == 1:
                kwargs["type"] = simple
            kwargs["help"] = _with_default(help_text, default)
            if meta.get("choices"):
                kwargs["choices"] = meta["choices"]
        kwargs["help"] = kwargs["help"].replace("%", "%%")
        parser.add_argument(flag, **kwargs)


def settings_from_args(
    cls: type[StageSettings], args: argparse.Namespace, stage: str
) -> StageSettings:
    """The settings of the stage named ``stage`` an argparse namespace describes (unset
    options keep the defaults); a refused value is an error naming the stage."""
    values = {}
    for f in dataclasses.fields(cls):
        value = getattr(args, f.name, _MISSING)
        if f.init and value is not _MISSING and value is not None:
            values[f.name] = value
    try:
        return cls(**values)
    except (ConfigError, TypeError, ValueError) as e:
        raise ConfigError(f"{stage}: {e}") from None
