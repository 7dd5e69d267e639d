"""Download the sources of a built-in corpus and rebuild its exact ``.txt``.

Each :class:`~domaingpt.corpus.Source` is fetched to a temporary file, checked against
its SHA-256 when known, turned into text by its ``kind`` and checked against the
corpus's final SHA-256. Files only ever appear under their final name by an atomic
``os.replace``, so an interrupted or failed download leaves nothing half-written.
Set ``DOMAINGPT_OFFLINE=1`` to forbid network access altogether.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from tqdm import tqdm

from domaingpt.core.io import atomic_write_bytes
from domaingpt.core.version import __version__
from domaingpt.data.corpus import CorpusSpec, Source, offline_help
from domaingpt.errors import CorpusError

OFFLINE_ENV = "DOMAINGPT_OFFLINE"
_CHUNK = 1 << 16


def offline() -> bool:
    """True when ``DOMAINGPT_OFFLINE`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes", "on"}


def _reason(e: BaseException) -> str:
    """A short human reason for a download failure."""
    if isinstance(e, urllib.error.HTTPError):
        return f"HTTP {e.code} {e.reason}"
    if isinstance(e, urllib.error.URLError):
        return f"cannot connect ({e.reason})"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, CorpusError):
        return str(e)
    return f"{type(e).__name__}: {e}"


def _temp_in(directory: Path, name: str) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=directory)
    os.close(fd)
    return Path(tmp)


def fetch(
    url: str,
    dest: Path,
    *,
    expected_sha256: str | None,
    progress: bool = True,
    timeout: float = 30,
) -> Path:
    """Download ``url`` to ``dest`` atomically, verifying its SHA-256 when one is given."""
    if offline():
        raise CorpusError(f"not downloading {url}: downloads are disabled by {OFFLINE_ENV}=1")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_in(dest.parent, dest.name)
    try:
        req = urllib.request.Request(url, headers={"User-Agent": f"domaingpt/{__version__}"})
        h = hashlib.sha256()
        n = 0
        with urllib.request.urlopen(req, timeout=timeout) as resp, open(tmp, "wb") as out:
            length = resp.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            show = progress and sys.stderr.isatty()
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=dest.name,
                disable=not show,
                leave=False,
            ) as bar:
                while chunk := resp.read(_CHUNK):
                    out.write(chunk)
                    h.update(chunk)
                    n += len(chunk)
                    bar.update(len(chunk))
        if total is not None and n != total:
            raise CorpusError(f"download truncated: got {n:,} of {total:,} bytes")
        actual = h.hexdigest()
        if expected_sha256 is not None and actual != expected_sha256:
            raise CorpusError(
                f"checksum mismatch: expected sha256 {expected_sha256}, got {actual} ({n:,} bytes)"
            )
        os.replace(tmp, dest)
    except BaseException as e:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(e, Exception):
            raise CorpusError(f"download of {url} failed: {_reason(e)}") from e
        raise
    return dest


def transform_plain(data: bytes) -> str:
    """The source is the text: strict UTF-8, nothing changed."""
    return data.decode("utf-8")


def transform_math_jsonl(data: bytes) -> str:
    """MATH JSONL → ``"Problem: " + question + "\\nSolution: " + answer + "\\n\\n"``, in order."""
    parts: list[str] = []
    # Split on "\n" only: str.splitlines() would also split at U+2028 inside JSON strings.
    for i, line in enumerate(data.decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"line {i} is not valid JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise ValueError(f"line {i} is not a JSON object")
        q, a = rec.get("question"), rec.get("answer")
        if not isinstance(q, str) or not isinstance(a, str):
            raise ValueError(f"line {i} lacks string 'question' and 'answer' fields")
        parts.append(f"Problem: {q}\nSolution: {a}\n\n")
    if not parts:
        raise ValueError("no records")
    return "".join(parts)


def transform_crlf(text: str) -> str:
    """CRLF line endings → LF; nothing else changes."""
    return text.replace("\r\n", "\n")


def transform_wikitext(text: str) -> str:
    """WikiText raw → LF lines with the blank lines (empty or a single space) removed."""
    lines = [ln for ln in transform_crlf(text).split("\n") if ln not in ("", " ")]
    return "".join(ln + "\n" for ln in lines)


def _transform(source: Source, path: Path) -> str:
    data = path.read_bytes()
    if source.kind == "plain":
        return transform_plain(data)
    if source.kind == "math-jsonl":
        return transform_math_jsonl(data)
    if source.kind == "crlf-text":
        return transform_crlf(data.decode("utf-8"))
    if source.kind == "wikitext-zip":
        assert source.member is not None
        try:
            with zipfile.ZipFile(path) as zf:
                member = zf.read(source.member)
        except KeyError:
            raise ValueError(f"zip has no member {source.member}") from None
        except zipfile.BadZipFile as e:
            raise ValueError(f"not a valid zip file ({e})") from None
        return transform_wikitext(member.decode("utf-8"))
    raise ValueError(f"unknown source kind {source.kind!r}")


def _build_one(spec: CorpusSpec, source: Source, dest: Path, progress: bool) -> None:
    with tempfile.TemporaryDirectory(prefix="domaingpt-") as tmpdir:
        name = source.url.rstrip("/").rsplit("/", 1)[-1] or "source"
        raw = fetch(
            source.url, Path(tmpdir) / name, expected_sha256=source.sha256, progress=progress
        )
        try:
            text = _transform(source, raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise CorpusError(f"cannot convert {source.kind} source: {e}") from None
    data = text.encode("utf-8")
    actual = hashlib.sha256(data).hexdigest()
    if actual != spec.sha256:
        raise CorpusError(
            f"converted text has sha256 {actual}, expected {spec.sha256} "
            "(the source changed or the conversion is wrong)"
        )
    atomic_write_bytes(dest, data)


def build_from_sources(spec: CorpusSpec, dest: Path, progress: bool = True) -> Path:
    """Build ``dest`` from the first of ``spec.sources`` that yields the verified text."""
    dest = Path(dest)
    if offline():
        raise CorpusError(
            f"corpus {spec.name!r} is not available locally and downloads are disabled by "
            f"{OFFLINE_ENV}=1: " + offline_help(spec)
        )
    failures: list[str] = []
    for source in spec.sources:
        try:
            _build_one(spec, source, dest, progress)
        except CorpusError as e:
            msg = str(e)
            prefix = f"download of {source.url} failed: "
            failures.append(f"{source.url}: {msg.removeprefix(prefix)}")
            continue
        except OSError as e:
            failures.append(f"{source.url}: {e}")
            continue
        return dest
    raise CorpusError(
        f"could not get corpus {spec.name!r}: "
        + "; ".join(failures)
        + ". To work offline, "
        + offline_help(spec)
    )
