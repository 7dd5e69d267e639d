"""Progress bars and log lines, the same for every command and stage.

Log lines go to stderr *above* any progress bar (``tqdm.write``), so a bar is never torn
by a message; ``quiet`` turns bars off.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from tqdm.auto import tqdm

Log = Callable[[str], None]


def progress_bar(
    total: int | None, desc: str, *, enabled: bool = True, unit: str = "it", initial: int = 0
) -> Any:
    """A transient bar (gone when it closes) that fits the terminal."""
    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not enabled,
        dynamic_ncols=True,
        leave=False,
    )


def stderr_log(msg: str) -> None:
    """Write one log line to stderr, above any progress bar."""
    tqdm.write(msg, file=sys.stderr)


def quiet_log(msg: str) -> None:
    """A log that drops every line."""


def track(items: Any, desc: str, *, enabled: bool = True, unit: str = "it") -> Any:
    """Iterate over ``items`` with a transient progress bar."""
    return tqdm(items, desc=desc, unit=unit, disable=not enabled, dynamic_ncols=True, leave=False)
