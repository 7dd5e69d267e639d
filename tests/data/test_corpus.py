"""Corpus registry and resolution, checked against the real corpora in the shared data dir."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from domaingpt.data import corpus as corpus_mod
from domaingpt.data.corpus import (
    REGISTRY,
    CorpusSpec,
    cache_dir,
    corpus_table,
    data_dir_from_env,
    read_text,
    resolve_corpus,
    sha256_file,
)
from domaingpt.data.vocab import Vocab
from domaingpt.errors import CorpusError


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test gets its own empty cache and no ambient data dir or network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("DOMAINGPT_DATA", raising=False)
    monkeypatch.setenv("DOMAINGPT_OFFLINE", "1")


@pytest.fixture
def real_data(real_file) -> Path:
    return real_file("shakespeare.txt").parent


# --- registry ---------------------------------------------------------------------------


def test_registry_checksums_match_shared_sha256sums(real_data: Path) -> None:
    sums = {}
    for line in (real_data / "SHA256SUMS").read_text().splitlines():
        digest, fname = line.split()
        sums[fname] = digest
    assert sorted(REGISTRY) == ["math", "shakespeare", "wikipedia"]
    for spec in REGISTRY.values():
        assert spec.sha256 == sums[spec.filename]
        assert spec.sources and "\n" not in spec.description


def test_registry_sources_match_readme() -> None:
    math_src = REGISTRY["math"].sources[0]
    assert math_src.kind == "math-jsonl"
    assert "LightChen233/ECM/aac9ae2f22e312fac2de44f20e4227922649b5f4" in math_src.url
    assert math_src.url.endswith("/data/math/test.jsonl")
    assert math_src.sha256 == "9f498cfae760f977c582e5e325eca3d39e6f1fe9472cef8b5b62d9358f5d8915"
    wiki = REGISTRY["wikipedia"].sources
    assert wiki[0].kind == "wikitext-zip" and wiki[0].member == "wikitext-2-raw/wiki.test.raw"
    assert wiki[-1].kind == "crlf-text"
    assert "Tylogi/TyloQuant/7989d038b13ca737da11a95fb90e77ae059f33c0" in wiki[-1].url
    assert wiki[-1].sha256 == "4f3e427e4aff23acff917a8a51aeae21bf12832256e26914c8fc250dcef4103c"
    shakes = REGISTRY["shakespeare"].sources[0]
    assert shakes.kind == "plain"
    assert shakes.url == (
        "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
    )


# --- env / dirs -------------------------------------------------------------------------


def test_cache_dir_follows_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cache_dir() == tmp_path / "domaingpt"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "domaingpt"


def test_data_dir_explicit_wins_over_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert data_dir_from_env(None) is None
    monkeypatch.setenv("DOMAINGPT_DATA", str(tmp_path / "env"))
    assert data_dir_from_env(None) == tmp_path / "env"
    assert data_dir_from_env(tmp_path / "cli") == tmp_path / "cli"
    assert data_dir_from_env(str(tmp_path / "cli")) == tmp_path / "cli"


# --- real corpora -----------------------------------------------------------------------


def test_resolve_shakespeare_in_data_dir(real_data: Path) -> None:
    c = resolve_corpus("shakespeare", real_data)
    assert c.found_in == "data-dir"
    assert c.path == real_data / "shakespeare.txt"
    assert c.sha256 == "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
    assert c.builtin and c.spec is REGISTRY["shakespeare"]
    text = c.read_text()
    assert len(text) == 1_115_394
    assert len(set(text)) == 65
    assert Vocab.from_texts([text]).size == 66  # 65 characters + <unk>
    assert text.count("\n") == 40_000


def test_resolve_uses_domaingpt_data_env(real_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOMAINGPT_DATA", str(real_data))
    c = resolve_corpus("math", download=False)
    assert (c.found_in, c.sha256) == ("data-dir", REGISTRY["math"].sha256)
    text = c.read_text()
    assert len(text) == 3_665_464 and len(set(text)) == 98


def test_wikipedia_real_counts(real_data: Path) -> None:
    text = resolve_corpus("wikipedia", real_data).read_text()
    assert len(text) == 1_285_622 and len(set(text)) == 259
    assert text.startswith(" = Robert Boulter = \n")


def test_corrupted_copy_in_data_dir_is_refused(real_data: Path, tmp_path: Path) -> None:
    ddir = tmp_path / "data"
    ddir.mkdir()
    data = bytearray((real_data / "shakespeare.txt").read_bytes())
    data[1000] = ord("X") if data[1000] != ord("X") else ord("Y")
    (ddir / "shakespeare.txt").write_bytes(bytes(data))
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("shakespeare", ddir)
    msg = str(ei.value)
    assert "checksum mismatch" in msg
    assert str(ddir / "shakespeare.txt") in msg
    assert REGISTRY["shakespeare"].sha256 in msg
    assert sha256_file(ddir / "shakespeare.txt") in msg


def test_cache_copy_is_found_and_verified(real_data: Path, tmp_path: Path) -> None:
    corpora = cache_dir() / "corpora"
    corpora.mkdir(parents=True)
    shutil.copy(real_data / "shakespeare.txt", corpora / "shakespeare.txt")
    c = resolve_corpus("shakespeare", download=False)
    assert (c.found_in, c.path) == ("cache", corpora / "shakespeare.txt")
    (corpora / "shakespeare.txt").write_bytes(b"not shakespeare\n")
    with pytest.raises(CorpusError, match="delete it and run again"):
        resolve_corpus("shakespeare", download=False)


def test_explicit_path_is_a_user_corpus_named_by_stem(real_data: Path) -> None:
    c = resolve_corpus(str(real_data / "math.txt"))
    assert (c.name, c.found_in, c.spec, c.builtin) == ("math", "path", None, False)
    assert c.sha256 == REGISTRY["math"].sha256  # computed, even though not verified


def test_unknown_name_suggests_closest() -> None:
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("shakspeare")
    msg = str(ei.value)
    assert "did you mean 'shakespeare'" in msg
    for name in ("math", "shakespeare", "wikipedia"):
        assert name in msg


def test_unknown_name_without_close_match() -> None:
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("zzzz")
    assert "did you mean" not in str(ei.value) and "known corpora" in str(ei.value)


def test_not_found_without_download_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("math", tmp_path, download=False)
    msg = str(ei.value)
    assert "--data-dir" in msg and "DOMAINGPT_DATA" in msg
    assert str(cache_dir() / "corpora" / "math.txt") in msg
    assert REGISTRY["math"].sources[0].url in msg


def test_offline_env_blocks_download(tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("wikipedia", tmp_path)
    msg = str(ei.value)
    assert "DOMAINGPT_OFFLINE" in msg and "--data-dir" in msg
    assert not (cache_dir() / "corpora" / "wikipedia.txt").exists()


def test_data_dir_that_is_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not a directory"):
        resolve_corpus("math", tmp_path / "nope", download=False)


# --- user files -------------------------------------------------------------------------


def test_user_file_is_named_by_stem(tmp_path: Path) -> None:
    p = tmp_path / "mytext.txt"
    p.write_text("héllo wörld\n", encoding="utf-8")
    c = resolve_corpus(str(p))
    assert (c.name, c.path, c.found_in, c.builtin) == ("mytext", p.resolve(), "path", False)
    assert c.sha256 == sha256_file(p)
    assert c.read_text() == "héllo wörld\n"


def test_existing_file_without_extension_in_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "notes").write_text("abc", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    c = resolve_corpus("notes")
    assert (c.name, c.found_in, c.read_text()) == ("notes", "path", "abc")


def test_missing_path_errors(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="does not exist"):
        resolve_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(CorpusError, match="does not exist"):
        read_text(tmp_path / "missing.txt")


def test_invalid_utf8_reports_byte_offset(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes(b"hello, w\xc3\xb6rld\n" + b"\xff" + b"tail")
    with pytest.raises(CorpusError) as ei:
        read_text(p)
    assert "byte offset 14" in str(ei.value) and str(p) in str(ei.value)


def test_invalid_utf8_offset_counts_the_bom(tmp_path: Path) -> None:
    p = tmp_path / "bad.txt"
    p.write_bytes(b"\xef\xbb\xbfab\x80")
    with pytest.raises(CorpusError, match="byte offset 5"):
        read_text(p)


def test_bom_is_stripped(tmp_path: Path) -> None:
    p = tmp_path / "bom.txt"
    p.write_bytes(b"\xef\xbb\xbfabc\n")
    assert read_text(p) == "abc\n"


def test_empty_file_errors_but_whitespace_is_text(tmp_path: Path) -> None:
    p = tmp_path / "empty.txt"
    p.write_bytes(b"")
    with pytest.raises(CorpusError, match="is empty"):
        read_text(p)
    with pytest.raises(CorpusError, match="is empty"):
        resolve_corpus(str(p))
    p.write_bytes(b"\xef\xbb\xbf")
    with pytest.raises(CorpusError, match="is empty"):
        read_text(p)
    p.write_bytes(b" \n")
    assert read_text(p) == " \n"


def test_directory_errors(tmp_path: Path) -> None:
    d = tmp_path / "adir.txt"
    d.mkdir()
    with pytest.raises(CorpusError, match="is a directory"):
        read_text(d)
    with pytest.raises(CorpusError, match="is a directory"):
        resolve_corpus(str(d))


def test_binary_file_errors(tmp_path: Path) -> None:
    p = tmp_path / "blob.txt"
    p.write_bytes(b"PK\x03\x04\x00\x00binary")
    with pytest.raises(CorpusError, match=r"looks binary \(NUL byte at byte offset 4\)"):
        read_text(p)
    utf16 = tmp_path / "utf16.txt"
    utf16.write_text("hello", encoding="utf-16")
    with pytest.raises(CorpusError, match="looks binary"):
        read_text(utf16)


# --- table ------------------------------------------------------------------------------


def test_corpus_table_reports_without_downloading(real_data: Path, tmp_path: Path) -> None:
    ddir = tmp_path / "data"
    ddir.mkdir()
    shutil.copy(real_data / "shakespeare.txt", ddir / "shakespeare.txt")
    (ddir / "math.txt").write_text("tampered\n")
    rows = {r["name"]: r for r in corpus_table(ddir)}
    assert set(rows) == {"shakespeare", "math", "wikipedia"}
    s = rows["shakespeare"]
    assert (s["found_in"], s["sha256_ok"], s["size_bytes"]) == ("data-dir", True, 1_115_394)
    assert s["path"] == str(ddir / "shakespeare.txt")
    assert s["url"] == REGISTRY["shakespeare"].sources[0].url
    assert s["licence"] == REGISTRY["shakespeare"].licence
    assert (rows["math"]["sha256_ok"], rows["math"]["size_bytes"]) == (False, 9)
    w = rows["wikipedia"]
    assert (w["path"], w["found_in"], w["sha256_ok"], w["size_bytes"]) == (
        "not found",
        None,
        None,
        None,
    )
    assert not (cache_dir() / "corpora").exists()


def test_sha256_file_streams(tmp_path: Path) -> None:
    p = tmp_path / "x.bin"
    p.write_bytes(b"abc" * 1000)
    import hashlib

    assert sha256_file(p, chunk_size=7) == hashlib.sha256(b"abc" * 1000).hexdigest()


def test_registry_spec_is_frozen() -> None:
    spec = REGISTRY["math"]
    assert isinstance(spec, CorpusSpec)
    with pytest.raises(AttributeError):
        spec.sha256 = "x"  # type: ignore[misc]
    assert corpus_mod.Source("http://x", "plain").sha256 is None
    with pytest.raises(ValueError):
        corpus_mod.Source("http://x", "tarball")


@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 7, 64])
def test_streamed_text_equals_whole_text_across_chunk_boundaries(tmp_path, chunk):
    from domaingpt.data.corpus import iter_text

    text = "héllo 万 wörld 😀\n" * 7 + "end"
    path = tmp_path / "multi.txt"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode())
    chunks = list(iter_text(path, chunk_bytes=chunk))
    assert "".join(chunks) == text and len(chunks) > 1


def test_streamed_invalid_byte_offset_in_a_later_chunk(tmp_path):
    from domaingpt.data.corpus import iter_text

    path = tmp_path / "late.txt"
    path.write_bytes("é".encode() * 50 + b"\xff" + b"abc")
    with pytest.raises(CorpusError, match="byte offset 100"):
        list(iter_text(path, chunk_bytes=7))
    path.write_bytes(b"abc" * 10 + b"\x00")
    with pytest.raises(CorpusError, match="NUL byte at byte offset 30"):
        list(iter_text(path, chunk_bytes=4))
    path.write_bytes(b"abc\xe4\xb8")  # truncated 3-byte sequence at the end
    with pytest.raises(CorpusError, match="byte offset 3"):
        list(iter_text(path, chunk_bytes=2))


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("notes", True),
        ("my_notes-2.v1", True),
        ("données", True),
        ("-rf", True),
        (".", False),
        ("..", False),
        (".hidden", False),
        ("my notes", False),
        ("a/b", False),
        ("a\\b", False),
        ("", False),
        ("x" * 101, False),
        ("tab\there", False),
    ],
)
def test_a_model_name_is_one_safe_path_component(name: str, ok: bool) -> None:
    assert (corpus_mod.unsafe_name_reason(name) is None) == ok


@pytest.mark.parametrize("filename", ["..txt", "...txt", ".txt", ".notes.txt", "my notes.txt"])
def test_a_corpus_file_whose_name_cannot_name_a_model_is_refused(
    tmp_path: Path, filename: str
) -> None:
    """``..txt`` has the stem ``.``: its model directory would be the run's models/ folder
    (``...txt``: the run itself), deleted by --overwrite."""
    path = tmp_path / filename
    path.write_text("some text\n" * 10)
    with pytest.raises(CorpusError, match="cannot name a model"):
        resolve_corpus(str(path))
