"""The one exception type a user is meant to see.

Anything raised as :class:`DomainGPTError` is a problem the user can act on (a bad
config value, a missing corpus, a corrupt checkpoint). The CLI prints its message as a
single line and exits non-zero; every other exception is a bug in domaingpt.
"""

from __future__ import annotations

import errno
import os


class DomainGPTError(Exception):
    """A user-actionable error: the message names the thing and says what to do."""


class ConfigError(DomainGPTError):
    """A config file, preset or ``--set`` override is invalid."""


class CorpusError(DomainGPTError):
    """A corpus cannot be found, downloaded, decoded or verified."""


class CheckpointError(DomainGPTError):
    """A checkpoint is missing, corrupt, or does not fit the model asked for."""


#: What the user can do about an OSError of these kinds (any other is a bug or a fault
#: of the machine): one place, so a permission problem never says "free some disk space".
_DISK_ADVICE = {
    errno.ENOSPC: "the disk is full: free some disk space",
    errno.EDQUOT: "the disk quota is exceeded: free some space",
    errno.EACCES: "check the permissions of the path",
    errno.EPERM: "check the permissions of the path",
    errno.EROFS: "the file system is read-only: use another path",
    errno.ENOTDIR: "a part of the path is not a directory: check the path",
    errno.ENAMETOOLONG: "a name in the path is too long: use a shorter one",
}


def disk_error(error: OSError) -> str | None:
    """``PATH: the system's message: what to do`` for an OSError the user can act on (a
    full or read-only disk, permissions, a bad path); None for any other."""
    advice = _DISK_ADVICE.get(error.errno or 0)
    if advice is None:
        return None
    where = f"{error.filename}: " if error.filename else ""
    cause = error.strerror or os.strerror(error.errno or 0)
    return f"{where}{cause}; {advice}"


def one_line(message: str) -> str:
    """``message`` on one line: a newline or another control character (in a path, say)
    is written as its escape, so an ``error:`` line is always exactly one line."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in message)
