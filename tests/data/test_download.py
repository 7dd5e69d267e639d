"""Downloading and rebuilding corpora for real, against an HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import threading
import zipfile
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from domaingpt.data import corpus as corpus_mod
from domaingpt.data.corpus import REGISTRY, CorpusSpec, Source, cache_dir, resolve_corpus
from domaingpt.data.download import (
    build_from_sources,
    fetch,
    transform_crlf,
    transform_math_jsonl,
    transform_plain,
    transform_wikitext,
)
from domaingpt.errors import CorpusError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Server:
    """Serves ``files`` (path → bytes) on loopback and counts requests per path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.hits: Counter[str] = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return self.base + path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.close()


@pytest.fixture(autouse=True)
def _isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("DOMAINGPT_DATA", raising=False)
    monkeypatch.delenv("DOMAINGPT_OFFLINE", raising=False)


def register(monkeypatch: pytest.MonkeyPatch, final: bytes, *sources: Source) -> CorpusSpec:
    spec = CorpusSpec(
        name="tiny",
        filename="tiny.txt",
        description="test corpus",
        licence="CC0",
        homepage="http://127.0.0.1/",
        sha256=sha(final),
        sources=sources,
    )
    monkeypatch.setitem(corpus_mod.REGISTRY, "tiny", spec)
    return spec


def corpora_files() -> list[str]:
    d = cache_dir() / "corpora"
    return sorted(os.listdir(d)) if d.exists() else []


# --- fetch ------------------------------------------------------------------------------


def test_fetch_verifies_and_writes_atomically(server: Server, tmp_path: Path) -> None:
    body = b"x" * 200_000
    server.files["/f.bin"] = body
    dest = tmp_path / "out" / "f.bin"
    assert fetch(server.url("/f.bin"), dest, expected_sha256=sha(body)) == dest
    assert dest.read_bytes() == body
    assert os.listdir(dest.parent) == ["f.bin"]


def test_fetch_wrong_sha_leaves_nothing(server: Server, tmp_path: Path) -> None:
    server.files["/f.bin"] = b"hello"
    dest = tmp_path / "f.bin"
    with pytest.raises(CorpusError) as ei:
        fetch(server.url("/f.bin"), dest, expected_sha256="0" * 64)
    assert server.url("/f.bin") in str(ei.value) and "checksum mismatch" in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_fetch_404_names_url_and_status(server: Server, tmp_path: Path) -> None:
    with pytest.raises(CorpusError) as ei:
        fetch(server.url("/missing"), tmp_path / "m", expected_sha256=None)
    assert "HTTP 404" in str(ei.value) and server.url("/missing") in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_fetch_refuses_when_offline(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files["/f"] = b"data"
    monkeypatch.setenv("DOMAINGPT_OFFLINE", "1")
    with pytest.raises(CorpusError, match="DOMAINGPT_OFFLINE"):
        fetch(server.url("/f"), tmp_path / "f", expected_sha256=None)
    assert server.hits["/f"] == 0


# --- resolve via download ---------------------------------------------------------------


def test_plain_download_lands_in_cache_once(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = b"To be, or not to be\n"
    server.files["/plain.txt"] = body
    register(monkeypatch, body, Source(server.url("/plain.txt"), "plain", sha256=sha(body)))
    c = resolve_corpus("tiny")
    assert c.found_in == "download"
    assert c.path == cache_dir() / "corpora" / "tiny.txt"
    assert c.path.read_bytes() == body and c.sha256 == sha(body)
    assert server.hits["/plain.txt"] == 1
    again = resolve_corpus("tiny")
    assert (again.found_in, again.path) == ("cache", c.path)
    assert server.hits["/plain.txt"] == 1
    assert corpora_files() == ["tiny.txt"]


def test_wrong_source_sha_leaves_no_file(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"some text\n"
    server.files["/plain.txt"] = body
    register(monkeypatch, body, Source(server.url("/plain.txt"), "plain", sha256="ab" * 32))
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("tiny")
    msg = str(ei.value)
    assert server.url("/plain.txt") in msg and "checksum mismatch" in msg
    assert corpora_files() == []


def test_wrong_final_sha_leaves_no_file(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/plain.txt"] = b"served text\n"
    register(monkeypatch, b"expected text\n", Source(server.url("/plain.txt"), "plain"))
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("tiny")
    assert "converted text has sha256" in str(ei.value)
    assert sha(b"expected text\n") in str(ei.value)
    assert corpora_files() == []


def test_math_jsonl_download(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    records = [
        {"question": "What is $1+1$?", "answer": "It is $\\boxed{2}$.", "level": "Level 1"},
        {"question": "Tab\there\u2028and é", "answer": "Line\nbreak", "type": "Algebra"},
    ]
    jsonl = "".join(json.dumps(r) + "\n" for r in records).encode()
    expected = (
        "Problem: What is $1+1$?\nSolution: It is $\\boxed{2}$.\n\n"
        "Problem: Tab\there\u2028and é\nSolution: Line\nbreak\n\n"
    )
    server.files["/test.jsonl"] = jsonl
    register(
        monkeypatch,
        expected.encode(),
        Source(server.url("/test.jsonl"), "math-jsonl", sha256=sha(jsonl)),
    )
    c = resolve_corpus("tiny")
    assert c.read_text() == expected


def test_wikitext_zip_download(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    raw = " \r\n = Title = \r\n \r\n Some text , here . \r\n\r\n = = Section = = \r\n \r\n"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("wikitext-2-raw/wiki.train.raw", "ignored\r\n")
        zf.writestr("wikitext-2-raw/wiki.test.raw", raw.encode())
    expected = " = Title = \n Some text , here . \n = = Section = = \n"
    server.files["/wt.zip"] = buf.getvalue()
    register(
        monkeypatch,
        expected.encode(),
        Source(server.url("/wt.zip"), "wikitext-zip", member="wikitext-2-raw/wiki.test.raw"),
    )
    assert resolve_corpus("tiny").read_text() == expected


def test_first_source_404_second_succeeds(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    body = b"mirror text\r\nline two\r\n"
    server.files["/mirror.raw"] = body
    register(
        monkeypatch,
        b"mirror text\nline two\n",
        Source(server.url("/gone.zip"), "wikitext-zip", member="a/b.raw"),
        Source(server.url("/mirror.raw"), "crlf-text", sha256=sha(body)),
    )
    c = resolve_corpus("tiny")
    assert c.read_text() == "mirror text\nline two\n"
    assert server.hits["/gone.zip"] == 1 and server.hits["/mirror.raw"] == 1


def test_bad_zip_then_good_source(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/bad.zip"] = b"not a zip"
    server.files["/ok.txt"] = b"ok\n"
    spec = register(
        monkeypatch,
        b"ok\n",
        Source(server.url("/bad.zip"), "wikitext-zip", member="x"),
        Source(server.url("/ok.txt"), "plain"),
    )
    dest = cache_dir() / "corpora" / spec.filename
    assert build_from_sources(spec, dest, progress=False) == dest
    assert dest.read_bytes() == b"ok\n"


def test_all_sources_fail_lists_each(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/bad.zip"] = b"not a zip"
    register(
        monkeypatch,
        b"x",
        Source(server.url("/a.txt"), "plain"),
        Source(server.url("/bad.zip"), "wikitext-zip", member="x"),
    )
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("tiny")
    msg = str(ei.value)
    assert f"{server.url('/a.txt')}: HTTP 404" in msg
    assert f"{server.url('/bad.zip')}: cannot convert wikitext-zip source" in msg
    assert "--data-dir" in msg
    assert corpora_files() == []


def test_unreachable_server_says_where_to_put_file(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/tiny.txt"
    register(monkeypatch, b"x", Source(url, "plain"))
    with pytest.raises(CorpusError) as ei:
        resolve_corpus("tiny")
    msg = str(ei.value)
    assert url in msg and "cannot connect" in msg
    assert "--data-dir DIR" in msg and "DOMAINGPT_DATA" in msg
    assert str(cache_dir() / "corpora" / "tiny.txt") in msg
    assert corpora_files() == []


def test_offline_env_makes_no_request(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    server.files["/plain.txt"] = b"x"
    register(monkeypatch, b"x", Source(server.url("/plain.txt"), "plain"))
    monkeypatch.setenv("DOMAINGPT_OFFLINE", "1")
    with pytest.raises(CorpusError, match="DOMAINGPT_OFFLINE=1"):
        resolve_corpus("tiny")
    assert server.hits["/plain.txt"] == 0


# --- transformations --------------------------------------------------------------------


def test_transforms_small() -> None:
    assert transform_plain("é\r\n".encode()) == "é\r\n"
    assert transform_crlf("a\r\nb\r\n\r\n") == "a\nb\n\n"
    assert transform_wikitext(" \n a \n\n b\n") == " a \n b\n"
    with pytest.raises(UnicodeDecodeError):
        transform_plain(b"\xff")
    with pytest.raises(ValueError, match="line 2"):
        transform_math_jsonl(b'{"question": "q", "answer": "a"}\n{"question": 1}\n')
    with pytest.raises(ValueError, match="line 1 is not valid JSON"):
        transform_math_jsonl(b"{oops\n")


def test_math_transform_reproduces_real_prefix(real_file) -> None:
    text = real_file("math.txt").read_bytes().decode("utf-8")
    records = []
    pos = 0
    for _ in range(2):
        assert text.startswith("Problem: ", pos)
        sol = text.index("\nSolution: ", pos)
        end = text.index("\n\nProblem: ", sol)
        records.append(
            {
                "question": text[pos + len("Problem: ") : sol],
                "answer": text[sol + len("\nSolution: ") : end],
                "level": "Level ?",
                "type": "?",
            }
        )
        pos = end + 2
    jsonl = "".join(json.dumps(r) + "\n" for r in records).encode()
    out = transform_math_jsonl(jsonl)
    assert out == text[:pos]
    assert text[pos:].startswith("Problem: ")
    assert records[0]["question"].startswith("How many vertical asymptotes")


def test_crlf_transform_matches_real_wikipedia_source_sha(real_file) -> None:
    """Rebuilding the mirror's CRLF file from wikipedia.txt gives the README's source sha."""
    final = real_file("wikipedia.txt").read_bytes()
    source = final.replace(b"\n", b"\r\n")
    mirror = REGISTRY["wikipedia"].sources[-1]
    assert sha(source) == mirror.sha256
    assert sha(transform_crlf(source.decode()).encode()) == REGISTRY["wikipedia"].sha256
    # The zip route's blank-line removal is a no-op on the final text.
    assert transform_wikitext(final.decode()) == final.decode()


def test_real_registry_build_from_local_mirror(
    server: Server, monkeypatch: pytest.MonkeyPatch, real_file
) -> None:
    """The real shakespeare spec, with its URL redirected to loopback, builds the real file."""
    body = real_file("shakespeare.txt").read_bytes()
    server.files["/input.txt"] = body
    real = REGISTRY["shakespeare"]
    src = real.sources[0]
    spec = CorpusSpec(
        real.name,
        real.filename,
        real.description,
        real.licence,
        real.homepage,
        real.sha256,
        (Source(server.url("/input.txt"), src.kind, src.sha256),),
    )
    monkeypatch.setitem(corpus_mod.REGISTRY, "shakespeare", spec)
    c = resolve_corpus("shakespeare")
    assert (c.found_in, c.sha256) == ("download", real.sha256)
    assert len(c.read_text()) == 1_115_394
