"""An exclusive, non-blocking OS file lock and positioned reads and writes, on POSIX and
Windows.

POSIX: ``flock`` on the whole file; the kernel drops it when the process ends, however it
ends. Windows: ``msvcrt.locking`` on one byte far past the data (a Windows lock is
mandatory: locking the bytes that hold the holder's pid would stop another process from
reading who holds it); Windows too releases it when the process ends. Each platform's
module is imported where it is used, so importing this one works everywhere.
"""

from __future__ import annotations

import os
import sys

#: ``O_NOFOLLOW`` where the platform has it (POSIX); Windows has no such flag (0).
O_NOFOLLOW: int = getattr(os, "O_NOFOLLOW", 0)
#: The byte a Windows lock covers: past any pid written at offset 0.
_WINDOWS_LOCK_OFFSET = 1 << 20


def lock_exclusive(fd: int) -> None:
    """Lock the open file ``fd`` for this process without waiting; ``BlockingIOError``
    when another process holds it. Closing ``fd`` (or the process ending) releases it."""
    if sys.platform == "win32":
        import msvcrt

        position = os.lseek(fd, 0, os.SEEK_CUR)
        os.lseek(fd, _WINDOWS_LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError as e:  # EACCES / EDEADLOCK: held by another process
            raise BlockingIOError(e.errno, "the file is locked by another process") from None
        finally:
            os.lseek(fd, position, os.SEEK_SET)
        return
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def read_at(fd: int, n: int, offset: int) -> bytes:
    """Up to ``n`` bytes of ``fd`` from ``offset`` (``os.pread`` where it exists)."""
    if hasattr(os, "pread"):
        return os.pread(fd, n, offset)
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, n)


def write_at(fd: int, data: bytes, offset: int) -> None:
    """Write ``data`` to ``fd`` at ``offset`` (``os.pwrite`` where it exists)."""
    if hasattr(os, "pwrite"):
        os.pwrite(fd, data, offset)
        return
    os.lseek(fd, offset, os.SEEK_SET)
    os.write(fd, data)
