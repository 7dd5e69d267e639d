"""Fault injection for the crash-safety tests: a process kills itself at a named point.

With ``DOMAINGPT_FAULT=SITE:N`` in its environment, a domaingpt process sends itself
SIGKILL the N-th time (1-based) it reaches :func:`fault_point` ``(SITE)``. The tests use
it to kill training at chosen moments — between a checkpoint's tensor file and its
record, halfway through an appended metrics line, right after an optimizer step — so a
kill lands where the test wants it however fast or slow the machine is. Without the
variable a fault point costs one comparison. It is a testing aid, not a user feature.

Sites: ``train.step`` (after an optimizer step), ``checkpoint.tensors`` (tensor file
written, record not yet), ``checkpoint.record`` (both written), ``io.replace`` (a temp
file written, not yet renamed), ``io.append`` (half of an appended JSON line written).
"""

from __future__ import annotations

import os
import signal
from collections import Counter
from collections.abc import Callable

from domaingpt.errors import ConfigError

ENV = "DOMAINGPT_FAULT"
SITES = ("train.step", "checkpoint.tensors", "checkpoint.record", "io.replace", "io.append")


def _parse(value: str | None) -> tuple[str, int] | None:
    """``SITE:N`` read; None when unset or malformed (:func:`check` names a malformed one:
    raising here, at import, would be a traceback instead of an error line)."""
    if not value:
        return None
    site, _, count = value.rpartition(":")
    if site not in SITES or not count.isdigit() or int(count) < 1:
        return None
    return site, int(count)


def check() -> None:
    """Refuse a malformed ``DOMAINGPT_FAULT`` (a ConfigError) before a command starts."""
    value = os.environ.get(ENV)
    if value and _parse(value) is None:
        raise ConfigError(
            f"{ENV}={value!r}: must be SITE:N with SITE one of {', '.join(SITES)} and N >= 1 "
            f"(a testing aid: unset it)"
        )


_ARMED = _parse(os.environ.get(ENV))
_seen: Counter[str] = Counter()


def fault_point(site: str, before: Callable[[], object] | None = None) -> None:
    """Kill this process here if ``DOMAINGPT_FAULT`` names this site and this occurrence.

    ``before`` runs just before the kill (for example, to write half a line first).
    """
    if _ARMED is None or _ARMED[0] != site:
        return
    _seen[site] += 1
    if _seen[site] == _ARMED[1]:
        if before is not None:
            before()
        os.kill(os.getpid(), signal.SIGKILL)
