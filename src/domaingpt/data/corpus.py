"""Which text corpora exist, where their files are, and whether they are the right bytes.

A corpus is either a *built-in* one from :data:`REGISTRY` (known URL, licence and
SHA-256 of the final ``.txt``) or a *user* corpus: any UTF-8 text file given by path.
Built-in corpora are looked up in a data directory (``--data-dir`` / ``DOMAINGPT_DATA``),
then in the cache, then downloaded (see :mod:`domaingpt.download`). Every file found or
built for a built-in corpus is checked against its SHA-256, so an experiment never runs
silently on different text than the one it claims.
"""

from __future__ import annotations

import difflib
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from domaingpt.core.replicates import SEPARATOR, is_reserved
from domaingpt.errors import CorpusError

SOURCE_KINDS = ("plain", "math-jsonl", "wikitext-zip", "crlf-text")
DATA_ENV = "DOMAINGPT_DATA"
_BOM = b"\xef\xbb\xbf"
CHUNK_BYTES = 1 << 22  # 4 MiB: bounded memory however large the corpus


@dataclass(frozen=True)
class Source:
    """One place a corpus can be built from, and how its bytes become the final text."""

    url: str
    kind: str
    sha256: str | None = None
    member: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SOURCE_KINDS:
            raise ValueError(f"unknown source kind {self.kind!r}; expected one of {SOURCE_KINDS}")
        if self.kind == "wikitext-zip" and not self.member:
            raise ValueError("a 'wikitext-zip' source needs the zip member path")


@dataclass(frozen=True)
class CorpusSpec:
    """A built-in corpus: its file name, provenance, and the SHA-256 of the final text."""

    name: str
    filename: str
    description: str
    licence: str
    homepage: str
    sha256: str
    sources: tuple[Source, ...]


REGISTRY: dict[str, CorpusSpec] = {
    spec.name: spec
    for spec in (
        CorpusSpec(
            name="shakespeare",
            filename="shakespeare.txt",
            description="Tiny Shakespeare (char-rnn): ~40,000 lines from Shakespeare's plays",
            licence="public domain text; char-rnn repository MIT",
            homepage="https://github.com/karpathy/char-rnn",
            sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
            sources=(
                Source(
                    url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
                    "tinyshakespeare/input.txt",
                    kind="plain",
                    # Copied byte for byte, so the source is the final text.
                    sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
                ),
            ),
        ),
        CorpusSpec(
            name="math",
            filename="math.txt",
            description="MATH test split (5,000 problems + solutions, LaTeX); "
            "do not train models later evaluated on MATH",
            licence="MIT, Copyright (c) 2021 Dan Hendrycks",
            homepage="https://github.com/hendrycks/math",
            sha256="b6a976a917f48d17161acf87a89c473349e3e8b9db40d543f8db3e3c2c6f0f92",
            sources=(
                Source(
                    url="https://raw.githubusercontent.com/LightChen233/ECM/"
                    "aac9ae2f22e312fac2de44f20e4227922649b5f4/data/math/test.jsonl",
                    kind="math-jsonl",
                    sha256="9f498cfae760f977c582e5e325eca3d39e6f1fe9472cef8b5b62d9358f5d8915",
                ),
            ),
        ),
        CorpusSpec(
            name="wikipedia",
            filename="wikipedia.txt",
            description="WikiText-2 raw test split: Wikipedia Good and Featured articles",
            licence="CC BY-SA 3.0 (Wikipedia contributors; WikiText by Merity et al.)",
            homepage="https://huggingface.co/datasets/Salesforce/wikitext",
            sha256="bbf94c53a05abe9ee670d3b6343608095822c85e26de37c70b24fc571964574a",
            sources=(
                Source(
                    url="https://s3.amazonaws.com/research.metamind.io/wikitext/"
                    "wikitext-2-raw-v1.zip",
                    kind="wikitext-zip",
                    member="wikitext-2-raw/wiki.test.raw",
                ),
                Source(
                    url="https://wikitext.smerity.com/wikitext-2-raw-v1.zip",
                    kind="wikitext-zip",
                    member="wikitext-2-raw/wiki.test.raw",
                ),
                Source(
                    url="https://raw.githubusercontent.com/Tylogi/TyloQuant/"
                    "7989d038b13ca737da11a95fb90e77ae059f33c0/data/wikitext-2-raw/wiki.test.raw",
                    kind="crlf-text",
                    sha256="4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c",
                ),
            ),
        ),
    )
}


@dataclass(frozen=True)
class Corpus:
    """A resolved corpus: a file on disk, its SHA-256, and how it was found."""

    name: str
    path: Path
    sha256: str
    spec: CorpusSpec | None
    found_in: str  # "path", "data-dir", "cache" or "download"

    @property
    def builtin(self) -> bool:
        """True for a registry corpus (verified checksum), False for a user file."""
        return self.spec is not None

    def read_text(self) -> str:
        return read_text(self.path)

    def iter_text(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
        return iter_text(self.path, chunk_bytes)


def cache_dir() -> Path:
    """Per-user cache root, following XDG so it can be moved (and isolated in tests)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg).expanduser() if xdg and Path(xdg).expanduser().is_absolute() else None
    return (base or Path.home() / ".cache") / "domaingpt"


def corpora_cache_dir() -> Path:
    """Where downloaded built-in corpora are kept."""
    return cache_dir() / "corpora"


def data_dir_from_env(explicit: str | Path | None) -> Path | None:
    """The data directory: an explicit ``--data-dir`` wins over ``DOMAINGPT_DATA``."""
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV, "")
    return Path(env).expanduser() if env else None


def sha256_file(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """SHA-256 hex digest, streamed so a large corpus is never held in memory twice."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            h.update(chunk)
    return h.hexdigest()


#: :func:`sha256_once`'s digests: (path, inode, size, mtime, ctime) -> SHA-256.
_DIGESTS: dict[tuple, str] = {}


def sha256_once(path: str | Path) -> str:
    """:func:`sha256_file`, computed once per process for a file that has not changed
    since (same inode, size, modification and change times): a verification that every
    command repeats (a cache entry, a stage's outputs) costs one read of each file."""
    st = os.stat(path)
    key = (str(Path(path).resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _check_file(path: Path, what: str) -> None:
    """Refuse a missing path, a directory or an empty file before anything reads it."""
    if not path.exists():
        raise CorpusError(f"{what} {path} does not exist: check the path")
    if path.is_dir():
        raise CorpusError(f"{what} {path} is a directory: give the path of a UTF-8 text file")
    if not path.is_file():
        raise CorpusError(f"{what} {path} is not a regular file: give a UTF-8 text file")
    if path.stat().st_size == 0:
        raise CorpusError(f"{what} {path} is empty: give a file with some text in it")


def _complete_prefix(buf: bytes) -> int:
    """Length of the longest prefix of ``buf`` that does not end inside a UTF-8 sequence."""
    for back in range(1, min(4, len(buf)) + 1):
        byte = buf[-back]
        if byte & 0xC0 != 0x80:  # a lead byte (or ASCII): does its sequence fit?
            need = (
                1 if byte < 0x80 else 2 if byte >> 5 == 0b110 else 3 if byte >> 4 == 0b1110 else 4
            )
            return len(buf) - back if back < need else len(buf)
    return len(buf)  # no lead byte in reach: invalid, strict decoding will say where


def iter_text(path: str | Path, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """Strict UTF-8 text of a corpus file in chunks (BOM stripped), never whole in memory.

    Chunks end on character boundaries. An invalid byte, a NUL byte (a binary or UTF-16
    file) or a BOM-only file is an error that names the file and the byte offset.
    """
    path = Path(path)
    _check_file(path, "corpus file")
    if path.stat().st_size == len(_BOM) and path.read_bytes() == _BOM:
        raise CorpusError(f"corpus file {path} is empty (only a BOM): give some text")
    carry, base = b"", 0  # bytes held over to the next chunk; absolute offset of buf[0]
    try:
        f = open(path, "rb")  # noqa: SIM115 (closed in finally; generator)
    except OSError as e:
        raise CorpusError(f"cannot read corpus file {path}: {e.strerror or e}") from None
    try:
        while True:
            data = f.read(chunk_bytes)
            buf = carry + data
            if not buf:
                return
            cut = _complete_prefix(buf) if data else len(buf)
            part, carry = buf[:cut], buf[cut:]
            nul = part.find(b"\x00")
            if nul != -1:
                raise CorpusError(
                    f"corpus file {path} looks binary (NUL byte at byte offset {base + nul}); "
                    "give a UTF-8 text file (convert UTF-16 text with iconv -t UTF-8)"
                )
            skip = len(_BOM) if base == 0 and part.startswith(_BOM) else 0
            try:
                text = part[skip:].decode("utf-8", errors="strict")
            except UnicodeDecodeError as e:
                offset = base + skip + e.start
                bad = part[skip + e.start : skip + e.start + 4].hex(" ")
                raise CorpusError(
                    f"corpus file {path} is not valid UTF-8 at byte offset {offset} (bytes {bad}); "
                    "convert it to UTF-8, e.g. iconv -f latin1 -t utf-8"
                ) from None
            base += cut
            if text:
                yield text
            if not data:
                return
    finally:
        f.close()


def read_text(path: str | Path) -> str:
    """Strict UTF-8 text of a corpus file (BOM stripped); bad input is an error, not mojibake."""
    return "".join(iter_text(path))


def _verify(path: Path, spec: CorpusSpec, where: str) -> str:
    """SHA-256 of a found built-in corpus file, or an error if it is not the expected text."""
    _check_file(path, f"corpus {spec.name!r} file")
    actual = sha256_file(path)
    if actual != spec.sha256:
        fix = (
            "delete it and run again to download a fresh copy"
            if where == "cache"
            else f"replace it with the original {spec.filename} (see {spec.sources[0].url})"
        )
        raise CorpusError(
            f"checksum mismatch for corpus {spec.name!r} file {path}: expected sha256 "
            f"{spec.sha256}, got {actual}; the file is corrupt or a different text: {fix}"
        )
    return actual


def offline_help(spec: CorpusSpec) -> str:
    """Where to put a built-in corpus by hand when it cannot be downloaded."""
    cached = corpora_cache_dir() / spec.filename
    return (
        f"put {spec.filename} in a directory and pass --data-dir DIR (or set {DATA_ENV}=DIR), "
        f"or copy it to {cached}; it is built from {spec.sources[0].url} "
        f"(expected sha256 {spec.sha256})"
    )


def _looks_like_path(name: str) -> bool:
    seps = [os.sep] + ([os.altsep] if os.altsep else [])
    return any(s in name for s in seps) or name.endswith(".txt")


#: The longest model name: it is a directory name, and adaptation joins two of them.
MAX_NAME = 100
_NAME_PUNCTUATION = frozenset("._-")


def unsafe_name_reason(name: str) -> str | None:
    """Why ``name`` cannot name a model directory (``None``: it can).

    A model's name becomes ``models/<name>`` and ``adapt/<a>__to__<b>``, and
    ``--overwrite`` deletes that directory: ``.`` or ``..`` would be the run's ``models/``
    folder or the run itself. So a name is one safe path component: letters, digits,
    ``.``, ``_`` and ``-``, not starting with ``.``, at most :data:`MAX_NAME` characters,
    and without ``__to__``, which would make an adaptation's pair name ambiguous.
    """
    if not name:
        return "it is empty"
    if name.startswith("."):
        return "it starts with '.'"
    if len(name) > MAX_NAME:
        return f"it is longer than {MAX_NAME} characters"
    bad = sorted({c for c in name if not (c.isalnum() or c in _NAME_PUNCTUATION)})
    if bad:
        return f"it holds {', '.join(repr(c) for c in bad[:5])}"
    if "__to__" in name:
        return "it holds '__to__', which separates the two models of an adaptation"
    return None


def check_model_name(name: str, source: str = "") -> str:
    """``name`` when it can name a model directory, else a one-line :class:`CorpusError`."""
    reason = unsafe_name_reason(name)
    if reason is None:
        return name
    where = f" (from {source})" if source else ""
    raise CorpusError(
        f"{name!r}{where} cannot name a model: {reason}; a model's name is its corpus file's "
        "name without .txt and must be letters, digits, '.', '_' or '-', not starting "
        "with '.': rename the file (e.g. my_notes.txt)"
    )


def _user_corpus(path: Path) -> Corpus:
    _check_file(path, "corpus file")
    path = path.resolve()
    check_model_name(path.stem, f"corpus file {path}")
    if is_reserved(path.stem):
        raise CorpusError(
            f"corpus file {path}: '{SEPARATOR}<number>' in a name marks a replicate model of "
            "another corpus; rename the file (e.g. without that part)"
        )
    return Corpus(path.stem, path, sha256_file(path), None, "path")


def resolve_corpus(
    name_or_path: str, data_dir: str | Path | None = None, *, download: bool = True
) -> Corpus:
    """Find a corpus: a file path, else a built-in name in data dir, cache, or by download.

    A bare registry name wins over a same-named file in the working directory (write
    ``./math`` to mean the file), so a stray file cannot shadow a verified corpus.
    """
    name = str(name_or_path)
    if not name.strip():
        raise CorpusError("empty corpus name: give a built-in name or the path of a text file")
    if _looks_like_path(name):
        return _user_corpus(Path(name).expanduser())
    spec = REGISTRY.get(name)
    if spec is None:
        if Path(name).is_file():
            return _user_corpus(Path(name))
        known = sorted(REGISTRY)
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise CorpusError(
            f"unknown corpus {name!r}: {hint}known corpora are {', '.join(known)}; "
            "or give the path of a UTF-8 .txt file"
        )

    ddir = data_dir_from_env(data_dir)
    if ddir is not None:
        if not ddir.is_dir():
            raise CorpusError(
                f"data directory {ddir} (from --data-dir or {DATA_ENV}) is not a directory: "
                "fix the path or unset it"
            )
        candidate = ddir / spec.filename
        if candidate.exists():
            return Corpus(
                spec.name, candidate, _verify(candidate, spec, "data-dir"), spec, "data-dir"
            )

    cached = corpora_cache_dir() / spec.filename
    if cached.exists():
        return Corpus(spec.name, cached, _verify(cached, spec, "cache"), spec, "cache")

    looked = f"{ddir / spec.filename} and {cached}" if ddir is not None else str(cached)
    if not download:
        raise CorpusError(
            f"corpus {spec.name!r} not found (looked in {looked}) and downloading is off: "
            + offline_help(spec)
        )
    from domaingpt.data.download import build_from_sources  # lazy: download imports this module

    path = build_from_sources(spec, cached)
    return Corpus(spec.name, path, _verify(path, spec, "cache"), spec, "download")


def corpus_table(data_dir: str | Path | None = None) -> list[dict]:
    """One row per built-in corpus for ``domaingpt corpora``; looks, never downloads."""
    ddir = data_dir_from_env(data_dir)
    if ddir is not None and not ddir.is_dir():
        raise CorpusError(
            f"data directory {ddir} (from --data-dir or {DATA_ENV}) is not a directory: "
            "fix the path or unset it"
        )
    rows: list[dict] = []
    for spec in REGISTRY.values():
        path: Path | None = None
        found_in: str | None = None
        if ddir is not None and (ddir / spec.filename).is_file():
            path, found_in = ddir / spec.filename, "data-dir"
        elif (corpora_cache_dir() / spec.filename).is_file():
            path, found_in = corpora_cache_dir() / spec.filename, "cache"
        ok: bool | None = None
        size: int | None = None
        if path is not None:
            size = path.stat().st_size
            try:
                ok = sha256_file(path) == spec.sha256
            except OSError:
                ok = False
        rows.append(
            {
                "name": spec.name,
                "description": spec.description,
                "licence": spec.licence,
                "path": str(path) if path is not None else "not found",
                "found_in": found_in,
                "sha256_ok": ok,
                "size_bytes": size,
                "url": spec.sources[0].url,
            }
        )
    return rows
