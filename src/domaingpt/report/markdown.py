"""The report as Markdown for GitHub: the same document, figures by relative path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pandas as pd

from domaingpt.report.document import COLLAPSE_ITEMS, COLLAPSE_ROWS, Block, Section
from domaingpt.report.format import cells, fmt, is_numeric, rows_shown

_MD_TEXT = re.compile(r"([\\`*_{}\[\]<>|#~$])")


def _md(text: Any) -> str:
    """Text safe in a Markdown paragraph or table cell (no HTML, no table breaks)."""
    s = str(text).replace("&", "&amp;")
    s = _MD_TEXT.sub(r"\\\1", s)
    return s.replace("\r", " ").replace("\n", " ⏎ ")


def _md_table(df: pd.DataFrame, caption: str, source: str, max_rows: int = 0) -> str:
    """A table; one longer than :data:`COLLAPSE_ROWS` rows is collapsed (GitHub renders
    ``<details>``, with the table inside as Markdown after a blank line)."""
    table = _md_table_body(df, caption, source, max_rows)
    if len(df) <= COLLAPSE_ROWS:
        return table
    title = f"{caption} ({len(df):,} rows)" if caption else f"Table of {len(df):,} rows"
    return f"<details><summary>{_md(title)}</summary>\n\n{table}\n\n</details>"


def _md_item(row: dict[str, Any]) -> str:
    verdict = f"**{_md(row['verdict'])}** " if row.get("verdict") else ""
    link = f" ([→ {_md(row.get('link') or 'details')}]({row['href']}))" if row.get("href") else ""
    return f"- {verdict}{_md(row.get('text', ''))}{link}"


def _md_items(block: Block) -> list[str]:
    limit = len(block.rows) if block.max_rows < 0 else COLLAPSE_ITEMS
    first, rest = block.rows[:limit], block.rows[limit:]
    out = [_md_item(r) for r in first]
    if rest:
        out += ["", f"<details><summary>{len(rest)} {_md(block.text)}</summary>", ""]
        out += [_md_item(r) for r in rest]
        out += ["", "</details>"]
    return [*out, ""]


def _md_table_body(df: pd.DataFrame, caption: str, source: str, max_rows: int = 0) -> str:
    shown = rows_shown(df, max_rows)
    numeric = [is_numeric(shown[c]) for c in shown.columns]
    lines = []
    if caption:
        lines += [f"*{_md(caption)}*", ""]
    lines.append("| " + " | ".join(_md(c) for c in shown.columns) + " |")
    lines.append("|" + "".join(" ---: |" if n else " --- |" for n in numeric))
    for row in cells(shown):
        lines.append("| " + " | ".join(_md(c) for c in row) + " |")
    if len(df) > len(shown):
        where = f" in `{source}`" if source else ""
        lines += ["", f"First {len(shown)} of {len(df):,} rows; all{where}."]
    return "\n".join(lines)


def _fence(text: str) -> str:
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def _md_section(s: Section, root: Path) -> list[str]:
    out = ["", f'<a id="{s.id}"></a>', "", f"## {_md(s.title)}", ""]
    for b in s.blocks:
        if b.kind in ("p", "note"):
            out += [_md(b.text), ""]
        elif b.kind == "h3":
            out += [f"### {_md(b.text)}", ""]
        elif b.kind == "missing":
            out += [f"> **Missing:** {_md(b.text)}", ""]
        elif b.kind == "table" and b.table is not None:
            out += [_md_table(b.table, b.text, b.source, b.max_rows), ""]
        elif b.kind == "items":
            out += _md_items(b)
        elif b.kind == "iframe" and b.path is not None:
            rel = b.path.resolve().relative_to(root.resolve()).as_posix()
            out += [f"[{_md(b.text)}]({quote(rel)})", ""]
        elif b.kind == "figure" and b.path is not None:
            try:
                rel = b.path.resolve().relative_to(root.resolve()).as_posix()
            except ValueError:
                rel = b.path.name
            out += [f"![{_md(b.text)}]({quote(rel)})", ""]
        elif b.kind == "sample":
            out += [f"**{_md(b.text)}**", ""]
            for r in b.rows:
                text = str(r.get("text", ""))
                fence = _fence(text)
                head = (
                    f"iteration {fmt(r.get('iter'))}, val loss {fmt(r.get('val_loss'), 'val_loss')}"
                )
                out += [f"*{_md(head)}*", "", fence + "text", text, fence, ""]
    return out


def render_markdown(title: str, subtitle: str, sections: list[Section], root: Path) -> str:
    """The same document for GitHub: figures referenced relative to ``root``; lead
    sections (the findings) before the contents."""
    out = [f"# {_md(title)}", "", _md(subtitle), ""]
    for s in sections:
        if s.lead:
            out += _md_section(s, root)
    out += ["", "## Contents", ""]
    out += [f"{i}. [{_md(s.title)}](#{s.id})" for i, s in enumerate(sections, 1)]
    for s in sections:
        if not s.lead:
            out += _md_section(s, root)
    return "\n".join(out).rstrip() + "\n"
