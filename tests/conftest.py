"""Shared fixtures: the real corpora (from $DOMAINGPT_DATA or ../shared/data) and a
private cache directory so tests never touch the user's ~/.cache."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The corpus and download tests read the real files here: $DOMAINGPT_DATA, else
# ../shared/data (unlike real_data_dir, no fall-back from the one to the other).
REAL_DATA = Path(os.environ.get("DOMAINGPT_DATA") or REPO / ".." / "shared" / "data").resolve()


def real_data_dir() -> Path | None:
    env = os.environ.get("DOMAINGPT_DATA")
    for candidate in (Path(env) if env else None, REPO.parent / "shared" / "data"):
        if candidate and (candidate / "shakespeare.txt").is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = real_data_dir()
    if d is None:
        pytest.skip(
            "real corpora not found (set DOMAINGPT_DATA or put ../shared/data beside the repo)"
        )
    return d


@pytest.fixture
def real_file() -> Callable[[str], Path]:
    """A function giving ``REAL_DATA / name``; it skips the test when that file is missing."""

    def get(name: str) -> Path:
        path = REAL_DATA / name
        if not path.is_file():
            pytest.skip(f"real corpora not found in {REAL_DATA} (set DOMAINGPT_DATA)")
        return path

    return get


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    # One cache for the whole session (encoded corpora and the native kernels are reused
    # across tests), never ~/.cache. Session-scoped, so module-scoped fixtures that
    # train or encode already see it.
    cache = tmp_path_factory.getbasetemp() / "xdg-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(cache))
        mp.setenv("DOMAINGPT_OFFLINE", "1")
        yield
