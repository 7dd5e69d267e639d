"""The ``domaingpt`` command line.

Every stage with a command gets one generated from its settings (see
:mod:`domaingpt.cli.options`); ``run``, ``train``, ``sample`` and ``corpora`` are written
by hand, and so are ``export``/``import-hf`` (:mod:`domaingpt.cli.interop`) and ``runs``/``compare``
(:mod:`domaingpt.cli.runs`). Every user-facing failure is a :class:`~domaingpt.errors.DomainGPTError`: it is
printed as one ``error:`` line on stderr and the exit status is 2. Ctrl-C exits with 130.
Warnings are printed when raised, one ``warning:`` line each, whatever their category.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import typing
import warnings
from pathlib import Path

from domaingpt.cli import interop, nanogpt, runs
from domaingpt.cli.commands import cmd_corpora, cmd_run, cmd_sample, cmd_train, stage_command
from domaingpt.cli.options import add_quiet, add_settings_arguments
from domaingpt.context.rundir import RunDir
from domaingpt.core.environment import check_environment
from domaingpt.core.progress import stderr_log
from domaingpt.core.version import __version__
from domaingpt.data.encoding import cache_kept_on_refusal
from domaingpt.errors import DomainGPTError, disk_error, one_line


class Parser(argparse.ArgumentParser):
    """argparse, with its errors as one ``error:`` line like every other error (argparse
    prints the usage first; here ``--help`` shows it)."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {self.prog}: {message} (see {self.prog} --help)\n")


def _integer(text: str, least: int, *, scientific: bool = False) -> int:
    """``text`` as an integer of at least ``least`` (``scientific``: also ``1e6``)."""
    try:
        value = int(text)
    except ValueError:
        try:
            number = float(text) if scientific else math.nan
        except ValueError:
            number = math.nan
        if not (math.isfinite(number) and number.is_integer()):
            kind = "a whole number" if scientific and not math.isnan(number) else "an integer"
            raise argparse.ArgumentTypeError(f"expected {kind}, got {text!r}") from None
        value = int(number)
    if value < least:
        at_least = "1 or more" if least == 1 else "zero or more"
        raise argparse.ArgumentTypeError(f"expected {at_least}, got {value}")
    return value


def char_count(text: str) -> int:
    """An argparse type: a number of characters, 1 or more, also written like ``1e6``."""
    return _integer(text, 1, scientific=True)


def count(text: str) -> int:
    """An argparse type: an integer of at least 0."""
    return _integer(text, 0)


def _common(p: argparse.ArgumentParser, *, offline: bool = True) -> None:
    if offline:
        p.add_argument("--offline", action="store_true", help="never download a corpus")
    p.add_argument(
        "--data-dir",
        metavar="DIR",
        help="directory holding corpus files (default: $DOMAINGPT_DATA, then the cache)",
    )
    add_quiet(p)


def _out(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/default", help="run directory (default: runs/default)")


def _run_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the whole study (statistics, training, analyses) and write its report",
        description="Run every stage of a study into runs/NAME and write report.html. "
        "Finished stages whose inputs are unchanged are skipped; an interrupted run "
        "continues where it stopped.",
    )
    p.add_argument("study", nargs="?", help="study file (TOML); default: the --preset study")
    p.add_argument(
        "--preset",
        default=None,
        help="study preset: smoke, cpu or gpu (default: cpu); a study file is layered over it",
    )
    p.add_argument("--out", default=None, help="run directory (default: runs/<study name>)")
    p.add_argument(
        "--force",
        action="append",
        default=[],
        metavar="STAGE",
        help="redo a stage even if unchanged (repeatable; 'all' for every stage)",
    )
    p.add_argument(
        "--threads",
        type=count,
        default=None,
        help="torch threads for every stage (default: the study's; 1 is often fastest on a "
        "CPU shared with other jobs)",
    )
    _common(p)
    p.set_defaults(func=cmd_run)


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a character-level GPT on one corpus")
    p.add_argument("corpus", help="built-in corpus name or path to a text file")
    p.add_argument(
        "--preset",
        default=None,
        help="preset name or TOML file (default: cpu-mini; with --resume: the configuration "
        "the model was trained with, from its run.json)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. --set train.lr=3e-4 (repeatable)",
    )
    _out(p)
    p.add_argument(
        "--vocab",
        help="comma-separated corpora whose characters form the vocabulary "
        "(default: the run's vocab.json, else the built-in corpora plus this one)",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the model from its newest valid checkpoint, with its recorded "
        "configuration (--set train.max_iters=N extends it)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="delete an existing model directory first (never a folder domaingpt did not "
        "write as one)",
    )
    _common(p)
    p.set_defaults(func=cmd_train)


def _sample_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="generate text from a trained model")
    p.add_argument("model", help="model directory (runs/NAME/models/CORPUS) or checkpoint file")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--escapes", action="store_true", help=r"interpret \n, \t, \\ in --prompt")
    p.add_argument(
        "--chars",
        type=char_count,
        default=300,
        help="characters to generate (at most 10 million; printed as they are generated)",
    )
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--iter", default="final", help="history checkpoint iteration (default: final)")
    p.add_argument("--device", default="auto")
    _common(p, offline=False)
    p.set_defaults(func=cmd_sample)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser: hand-written commands, then one generated per stage with a command.

    ``command``: the command about to run. When it is a hand-written one, the stage
    commands are left out: generating them imports every stage, with pandas and
    matplotlib, which a command like ``domaingpt train`` does not need.
    """
    parser = Parser(
        prog="domaingpt",
        description="Study how the training domain shapes small character-level GPT models.",
    )
    parser.add_argument("--version", action="version", version=f"domaingpt {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _run_parser(sub)
    p = sub.add_parser("corpora", help="list the known corpora, where each was found, checksum ok?")
    _common(p, offline=False)
    p.set_defaults(func=cmd_corpora)
    _train_parser(sub)
    _sample_parser(sub)
    interop.add_parsers(sub)
    nanogpt.add_parsers(sub)
    runs.add_parsers(sub)
    if command in sub.choices:
        return parser
    from domaingpt.study.pipeline import BUILTIN_STAGES

    for stage in BUILTIN_STAGES:
        if not stage.command:
            continue
        p = sub.add_parser(
            stage.name, aliases=list(stage.aliases), help=stage.help, description=stage.help
        )
        _out(p)
        add_settings_arguments(p, stage.settings)
        add_quiet(p)
        p.set_defaults(func=stage_command(stage))
    return parser


def _run_lock(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Every command that writes a run directory (``--out``) holds its lock meanwhile."""
    out = getattr(args, "out", None)
    return RunDir(Path(out)).lock() if out else contextlib.nullcontext()


def _command(argv: list[str]) -> str | None:
    """The command named in ``argv`` (its first word that is not an option), if any."""
    return next((a for a in argv if not a.startswith("-")), None)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: typing.TextIO | None = None,
    line: str | None = None,
) -> None:
    """One ``warning:`` line on stderr, above any progress bar; a category other than
    UserWarning (a library's deprecation, a numeric RuntimeWarning) is named."""
    kind = "" if issubclass(category, UserWarning) else f"{category.__name__}: "
    stderr_log(f"warning: {kind}{one_line(str(message))}")


@contextlib.contextmanager
def _warnings_shown() -> typing.Iterator[None]:
    """Every warning shown when it is raised (once per place it is raised from, Python's
    ``default``; a user's ``-W`` or ``PYTHONWARNINGS`` wins), as :func:`_show_warning`
    prints it; the filter and the printer are restored after."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("default")
        warnings.showwarning = _show_warning
        yield


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(_command(argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, or a usage error (printed: one line)
        return e.code if isinstance(e.code, int) else 2
    try:
        with _warnings_shown():
            check_environment()  # a bad DOMAINGPT_* value: refused before any write
            with _run_lock(args), cache_kept_on_refusal():
                return int(args.func(args) or 0)
    except DomainGPTError as e:
        print(f"error: {one_line(str(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except OSError as e:
        message = disk_error(e)
        if message is None:
            raise
        # A file the command could not write or read (permissions, a read-only or full
        # disk, a name too long): the user can act on it, so one line, not a traceback.
        print(f"error: {one_line(message)}", file=sys.stderr)
        return 2
    finally:
        if "torch.distributed" in sys.modules:  # joined a process group under torchrun
            from domaingpt.core.distributed import shutdown

            shutdown()


__all__ = ["build_parser", "main"]
