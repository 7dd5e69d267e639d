"""Replacing or deleting a folder: only one domaingpt wrote, checked just before.

Every ``--overwrite`` goes through here (``train``: a model directory, ``import-hf``: a
model directory, ``export``: an earlier export). Each names what it owns with a
predicate (:func:`domaingpt.training.modeldir.is_model_dir`,
:func:`domaingpt.interop.hf.is_own_export`): a folder that holds anything else, or is
a symbolic link, is refused with one line and left as it was.

A replacement is built beside its target first and swapped in by renames
(:func:`publish`), so a refused or failed command leaves the old folder whole; and a
folder being written is claimed (:func:`claim`) so that two commands writing it at once
do not both succeed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from domaingpt.core.filelock import lock_exclusive, read_at, write_at
from domaingpt.core.io import open_no_follow
from domaingpt.errors import DomainGPTError

Owned = Callable[[Path], bool]


def is_vacant(path: Path) -> bool:
    """Nothing there, or an empty real folder: writing there deletes nothing."""
    if path.is_symlink():
        return False
    if not path.exists():
        return True
    return path.is_dir() and not any(path.iterdir())


def check_owned(path: Path, owned: Owned, refusal: str) -> None:
    """Raise ``refusal`` unless ``path`` is vacant or ``owned`` says domaingpt wrote it."""
    if not is_vacant(path) and (path.is_symlink() or not owned(path)):
        raise DomainGPTError(refusal)


def remove_owned(path: Path, owned: Owned, refusal: str) -> None:
    """Delete the folder ``path`` (checked by :func:`check_owned` first, here)."""
    check_owned(path, owned, refusal)
    if path.is_dir():
        shutil.rmtree(path)


def publish(new: Path, dest: Path, owned: Owned, refusal: str) -> None:
    """Move the finished folder ``new`` to ``dest`` (a sibling of it).

    An earlier ``dest`` must be one domaingpt wrote (checked again here, just before):
    it is renamed aside, ``new`` renamed in, and only then is the old one deleted, so
    at every moment ``dest`` is the old folder or the new one, never a mix.
    """
    check_owned(dest, owned, refusal)
    if is_vacant(dest):
        if dest.exists():
            dest.rmdir()
        os.rename(new, dest)
        return
    aside = dest.with_name(f".{dest.name}.old-{os.getpid()}")
    shutil.rmtree(aside, ignore_errors=True)
    os.rename(dest, aside)
    try:
        os.rename(new, dest)
    except OSError:
        os.rename(aside, dest)  # put the old one back: nothing lost
        raise
    shutil.rmtree(aside, ignore_errors=True)


def scratch_beside(dest: Path, what: str) -> Path:
    """A fresh hidden sibling of ``dest`` to build its replacement in (``what``: a tag)."""
    tmp = dest.with_name(f".{dest.name}.{what}-{os.getpid()}")
    if tmp.is_symlink():
        tmp.unlink()
    shutil.rmtree(tmp, ignore_errors=True)  # left by a killed process with our pid
    return tmp


@contextmanager
def claim(path: Path, what: str = "folder") -> Iterator[None]:
    """Exclusive writing of ``path`` by this process, or a one-line refusal.

    An OS lock (:mod:`domaingpt.core.filelock`) on ``.NAME.lock`` beside ``path`` (``path`` itself may not
    exist yet, and a replacement swaps it). The kernel drops the lock when the process
    ends, however it ends; the lock file is removed when the claim ends. A lock file
    removed by its holder while this process opened it counts as taken: try again.
    """
    lock = path.with_name(f".{path.name}.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        fd = open_no_follow(lock, os.O_RDWR | os.O_CREAT)
        try:
            lock_exclusive(fd)
        except BlockingIOError:
            holder = read_at(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise DomainGPTError(
                f"{path} is being written by another domaingpt process (pid {holder}); "
                f"wait for it to finish, then run this again (or choose another {what})"
            ) from None
        try:
            current = os.lstat(lock)
        except FileNotFoundError:
            current = None
        if current is not None and os.path.samestat(os.fstat(fd), current):
            break
        os.close(fd)  # the holder removed it meanwhile: take the new one
    else:
        raise DomainGPTError(f"{path} is contended by other processes; run this again")
    try:
        os.ftruncate(fd, 0)
        write_at(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        with suppress(OSError):
            lock.unlink()  # while still held: a later opener sees the name gone
        os.close(fd)
