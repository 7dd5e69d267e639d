"""One smoke study shared by test_study, test_report and test_report_browser.

Session fixtures defined in a test module are per module; the run is cached here, at
module level, so the three files share a single run of the smoke pipeline.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from domaingpt.study import StudyResult, load_study, run_study


@dataclass
class SmokeRun:
    root: Path
    result: StudyResult
    log: list[str]
    seconds: float


_CACHE: dict[str, SmokeRun] = {}


def private_env(mp: pytest.MonkeyPatch, base: Path) -> None:
    # Session-scoped work runs before conftest's per-test cache fixture: set it up here too.
    mp.setenv("XDG_CACHE_HOME", str(base / "xdg-cache"))
    mp.setenv("DOMAINGPT_OFFLINE", "1")


def smoke_run(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> SmokeRun:
    """The ``smoke`` study on the three real corpora, run once per test session."""
    if "smoke" not in _CACHE:
        base = tmp_path_factory.getbasetemp()
        out = base / "smoke-study"
        log: list[str] = []
        with pytest.MonkeyPatch.context() as mp:
            private_env(mp, base)
            t0 = time.perf_counter()
            result = run_study(
                load_study(preset="smoke"), out, data_dir=data_dir, progress=False, log=log.append
            )
            seconds = time.perf_counter() - t0
        _CACHE["smoke"] = SmokeRun(out, result, log, seconds)
    return _CACHE["smoke"]


def copy_run(run: SmokeRun, dest: Path) -> Path:
    """A private copy of the shared run, for tests that change it."""
    shutil.copytree(run.root, dest)
    return dest
