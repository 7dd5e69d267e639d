"""Small file helpers: atomic writes, JSON and JSON Lines.

An atomic write goes to a temporary file in the target's directory, is flushed and
fsynced, then renamed over the target with :func:`os.replace`; a reader sees either the
old file or the new one, never a half-written one. Parent directories are created.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import secrets
import stat
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from domaingpt.core.faults import fault_point
from domaingpt.core.filelock import O_NOFOLLOW
from domaingpt.core.limits import MAX_USER_FILE_BYTES
from domaingpt.errors import DomainGPTError

__all__ = [
    "append_jsonl",
    "append_text",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_json",
    "read_jsonl",
    "read_user_text",
    "write_json",
    "write_jsonl",
]


@contextmanager
def atomic_open(path: str | os.PathLike[str]) -> Iterator[IO[bytes]]:
    """A binary file handle whose content replaces ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as open() would.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        fault_point("io.replace")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path`` as a :class:`Path`."""
    with atomic_open(path) as fh:
        fh.write(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def _kind(mode: int) -> str:
    """What a file that is not a regular file is, in words."""
    for test, what in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return what
    return "not a regular file"


def read_user_text(
    path: str | os.PathLike[str], what: str, *, limit: int = MAX_USER_FILE_BYTES
) -> str:
    """The UTF-8 text of a file a user named (``what``: "prompt file", "study file"...).

    The one way such a file is read: a regular file only (a directory, a FIFO that would
    block forever, ``/dev/zero`` that never ends: each refused at once, saying what it
    is), at most ``limit`` bytes (read in chunks, never more than ``limit`` + 1), valid
    UTF-8. Every refusal is a one-line :class:`DomainGPTError` naming the file.
    """
    path = Path(path)
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not wait for one.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DomainGPTError(f"{what} {path} does not exist: check the path") from None
    except OSError as e:
        raise DomainGPTError(f"cannot read {what} {path}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise DomainGPTError(f"{what} {path} is {_kind(mode)}, not a file: give a text file")
    with os.fdopen(fd, "rb") as fh:
        os.set_blocking(fd, True)
        chunks, size = [], 0
        if os.fstat(fd).st_size > limit:  # known too large: refused without reading it
            size = limit + 1
        while size <= limit:  # and one that grows while read stops at the limit
            chunk = fh.read(min(1 << 20, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    if size > limit:
        most = f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit:,} bytes"
        raise DomainGPTError(
            f"{what} {path} is larger than {most}, the most domaingpt reads from such a "
            "file: give a smaller one"
        )
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as e:
        raise DomainGPTError(f"{what} {path} is not UTF-8 text (byte {e.start})") from None


def _json_default(obj: Any) -> Any:
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, set | frozenset):
        return sorted(obj)
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return obj.tolist()
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _dumps(obj: Any, indent: int | None = None) -> str:
    return json.dumps(obj, indent=indent, ensure_ascii=False, default=_json_default)


def record_dict(record: Any) -> dict[str, Any]:
    """A dataclass record as its JSON file holds it: the fields that are set, over the
    keys it was read with that it does not know (its ``extra``), so a file written by
    another version keeps them."""
    out = {
        f.name: getattr(record, f.name)
        for f in dataclasses.fields(record)
        if f.name != "extra" and getattr(record, f.name) is not None
    }
    return {**record.extra, **out}


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as UTF-8 JSON atomically (paths, sets and numpy values allowed)."""
    return atomic_write_text(path, _dumps(obj, indent) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Parse a JSON file; a missing or invalid file raises :class:`DomainGPTError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DomainGPTError(f"{path}: file not found") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise DomainGPTError(f"{path}: not valid JSON ({exc})") from None


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, atomically replacing ``path``."""
    text = "".join(_dumps(dict(row)) + "\n" for row in rows)
    return atomic_write_text(path, text)


def open_no_follow(path: Path, flags: int, mode: int = 0o644) -> int:
    """``os.open(path, flags | O_NOFOLLOW, mode)``: a symbolic link where domaingpt writes
    is refused with one line naming it (other OS errors propagate for the caller to
    word)."""
    try:
        return os.open(path, flags | O_NOFOLLOW, mode)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise DomainGPTError(
                f"{path} is a symbolic link; domaingpt never writes through one: remove it"
            ) from None
        raise


def append_text(path: str | os.PathLike[str], text: str) -> Path:
    """Append ``text`` to ``path`` with one ``write`` call, flushed; never through a link.

    The file is opened with ``O_NOFOLLOW`` (POSIX; Windows has no such flag): a symbolic link planted where a log or metrics
    file belongs is refused, so nothing outside the run directory is ever appended to.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_no_follow(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    data = text.encode("utf-8")
    with os.fdopen(fd, "wb") as fh:
        fault_point("io.append", lambda: (fh.write(data[: len(data) // 2]), fh.flush()))
        fh.write(data)
        fh.flush()
    return path


def append_jsonl(
    path: str | os.PathLike[str], rows: Mapping[str, Any] | Iterable[Mapping[str, Any]]
) -> Path:
    """Append one row (a mapping) or several rows to a JSON Lines file.

    The lines are written with a single ``write`` call and flushed, so a concurrent
    reader or a crash leaves at most one truncated last line, which :func:`read_jsonl`
    ignores.
    """
    batch = [rows] if isinstance(rows, Mapping) else list(rows)
    return append_text(path, "".join(_dumps(dict(row)) + "\n" for row in batch))


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The objects of a JSON Lines file, in order.

    Blank lines are skipped. A last line that does not end with a newline and does not
    parse is taken to be an interrupted append and is dropped; any other bad line
    raises :class:`DomainGPTError` naming the file and line.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DomainGPTError(f"{path}: file not found") from None
    lines = raw.split(b"\n")
    rows: list[dict[str, Any]] = []
    for i, blob in enumerate(lines):
        last = i == len(lines) - 1  # no trailing newline: possibly a truncated append
        try:
            line = blob.decode("utf-8")
        except UnicodeDecodeError as exc:
            if last:
                break
            raise DomainGPTError(f"{path}:{i + 1}: not valid UTF-8 ({exc})") from None
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            if last:
                break
            raise DomainGPTError(f"{path}:{i + 1}: not valid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise DomainGPTError(f"{path}:{i + 1}: expected a JSON object per line")
        rows.append(row)
    return rows
