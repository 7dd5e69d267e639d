"""The command line run in-process, shared by the test modules that call ``main``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from domaingpt.cli import main


def cli(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    """Exit status, stdout and stderr of ``domaingpt *argv`` (arguments made strings)."""
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def cli_error(capsys: pytest.CaptureFixture[str], *argv: object) -> str:
    """Stderr of ``domaingpt *argv``, which must fail with one ``error:`` line (status 2)."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    return err


def train_smoke(
    out: Path,
    data_dir: Path,
    *overrides: str,
    corpus: str = "shakespeare",
    quiet: bool = True,
    extra: Sequence[str] = (),
) -> int:
    """Exit status of ``domaingpt train CORPUS --preset smoke`` into ``out``; each of
    ``overrides`` is a ``--set``, ``extra`` more arguments."""
    argv = ["train", corpus, "--preset", "smoke", "--out", str(out), "--data-dir", str(data_dir)]
    if quiet:
        argv.append("--quiet")
    for item in overrides:
        argv += ["--set", item]
    return main([*argv, *extra])
