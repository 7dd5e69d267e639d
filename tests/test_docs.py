"""The manual: README.md stays a short front page, every page of docs/ is reachable from the
site's nav, no path of the project's own machines leaks in, and every relative link (with its
anchor, where it names one) points at something that exists.

`mkdocs build --strict` (the README's test command) checks the links inside docs/ too; this
test also covers README.md, which the site does not build, and runs without mkdocs.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_LIMIT = 15 * 1024  # bytes: the front page; the rest belongs in docs/

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^(#{1,6})\s+(.+?)\s*#*\s*$", re.M)


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def manual() -> list[Path]:
    return [README, *pages()]


def prose(path: Path) -> str:
    """The text outside fenced code blocks: a link inside an example is not a link."""
    return _FENCE.sub("", path.read_text(encoding="utf-8"))


def slug(heading: str) -> str:
    """The anchor Python-Markdown's toc extension (mkdocs' default) gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text only
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def anchors(path: Path) -> set[str]:
    return {slug(m.group(2)) for m in _HEADING.finditer(prose(path))}


def nav_pages() -> list[str]:
    """The .md files named in mkdocs.yml's nav, relative to docs/."""
    config = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = config.split("\nnav:", 1)[1]
    return re.findall(r"^\s+-\s+(?:[^:\n]+:\s+)?(\S+\.md)\s*$", nav, re.M)


def test_readme_is_a_front_page() -> None:
    size = README.stat().st_size
    assert 0 < size <= README_LIMIT, f"README.md is {size} bytes; move detail into docs/"


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    listed = nav_pages()
    on_disk = [p.relative_to(DOCS).as_posix() for p in pages()]
    assert len(on_disk) >= 10
    assert sorted(listed) == sorted(on_disk)
    assert len(listed) == len(set(listed)), "a page is listed twice in the nav"


@pytest.mark.parametrize("path", manual(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_path_of_the_project_machines(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert "/work/" not in text


def resolves(page: Path, link: str) -> bool:
    """Whether a link of ``page`` names an existing file (and, in a page, an existing heading)."""
    target, _, anchor = link.partition("#")
    file = (page.parent / target).resolve() if target else page
    if not file.exists():
        return False
    return not (anchor and file.suffix == ".md") or anchor in anchors(file)


def broken_links(page: Path) -> list[str]:
    relative = [k for k in _LINK.findall(prose(page)) if not re.match(r"^[a-z][a-z0-9+.-]*:", k)]
    return [k for k in relative if not resolves(page, k)]  # http:, mailto: ... are not checked


@pytest.mark.parametrize("path", manual(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path: Path) -> None:
    assert broken_links(path) == []


def test_the_link_check_finds_a_missing_file_and_a_missing_heading(tmp_path: Path) -> None:
    (tmp_path / "a.md").write_text("# Title\n\n## The study: `domaingpt run`\n")
    page = tmp_path / "b.md"
    page.write_text(
        "[ok](a.md#the-study-domaingpt-run) [bad](a.md#nope) [gone](c.md) [web](https://x.org)\n"
        "[here](#local) [top](a.md)\n## Local\n```\n[in code](nowhere.md)\n```\n"
    )
    assert broken_links(page) == ["a.md#nope", "c.md"]


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    commands = re.findall(r"^pip install .*pytest.*$", README.read_text(encoding="utf-8"), re.M)
    assert len(commands) == 1, commands
    assert "mkdocs build --strict" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert commands[0] in ci
