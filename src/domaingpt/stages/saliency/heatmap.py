"""A standalone HTML text heatmap: every character tinted by its attribution.

One self-contained file (inline CSS, no JavaScript, no external resources) that any
browser opens. Each character is a ``<span>`` whose background is red for a positive
score and blue for a negative one, with an opacity proportional to ``|score|`` divided by
the largest ``|score|`` of its row; hovering shows the exact value (the ``title``
attribute). Every piece of text, prompt characters included, is HTML-escaped, so a
prompt containing ``<script>`` is shown, never run. Newlines are drawn as ``↵`` and
break the line, tabs as ``⇥``, other control characters as ``�``.
"""

from __future__ import annotations

import html
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from domaingpt.core.io import atomic_write_text
from domaingpt.data.charclass import describe_char, describe_token

POSITIVE = (214, 39, 40)
NEGATIVE = (31, 119, 180)

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px;
       color: #222; max-width: 1100px; }
h1 { font-size: 20px; } h2 { font-size: 16px; margin-top: 28px; }
.note { color: #555; font-size: 13px; }
.row { margin: 10px 0 14px; }
.label { font-size: 12px; color: #555; margin-bottom: 3px; }
.text { font-family: "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 14px;
        line-height: 1.7; white-space: pre-wrap; word-break: break-all; }
.text span { border-radius: 2px; }
.target { outline: 2px solid #333; padding: 0 2px; margin-left: 2px; }
.legend span { display: inline-block; padding: 1px 8px; margin-right: 6px; font-size: 12px; }
"""


@dataclass(frozen=True)
class HeatmapRow:
    """One prompt: its characters, one score per character, and the target after it."""

    label: str
    text: str
    values: Sequence[float]
    target: str = ""
    group: str = ""  # rows of one group share a heading


def _shown(ch: str) -> str:
    """What a character looks like on the page (before escaping)."""
    if ch == "\n":
        return "↵\n"
    if ch == "\t":
        return "⇥"
    if ch == "\r":
        return "␍"
    if unicodedata.category(ch) == "Cc":
        return "\ufffd"
    return ch


def _tint(value: float, scale: float) -> str:
    strength = min(abs(value) / scale, 1.0) if scale > 0 else 0.0
    r, g, b = POSITIVE if value >= 0 else NEGATIVE
    return f"rgba({r},{g},{b},{0.85 * strength:.3f})"


def render_row(row: HeatmapRow) -> str:
    """The HTML of one prompt (a ``div``)."""
    if len(row.values) != len(row.text):
        raise ValueError(
            f"heatmap row {row.label!r}: {len(row.text)} characters but {len(row.values)} values"
        )
    values = [float(v) for v in row.values]
    scale = max((abs(v) for v in values), default=0.0)
    total = sum(abs(v) for v in values)
    spans = []
    for ch, v in zip(row.text, values, strict=True):
        share = abs(v) / total if total > 0 else 0.0
        title = f"{describe_char(ch)}: {v:.4g} (share {share:.1%})"
        spans.append(
            f'<span style="background:{_tint(v, scale)}" title="{html.escape(title, quote=True)}">'
            f"{html.escape(_shown(ch))}</span>"
        )
    target = ""
    if row.target:
        title = f"target: {describe_token(row.target)}"
        target = (
            f'<span class="target" title="{html.escape(title, quote=True)}">'
            f"{html.escape(''.join(map(_shown, row.target)))}</span>"
        )
    return (
        f'<div class="row"><div class="label">{html.escape(row.label)}</div>'
        f'<div class="text">{"".join(spans)}{target}</div></div>'
    )


def render_heatmap(rows: Sequence[HeatmapRow], *, title: str, note: str = "") -> str:
    """A complete HTML document; rows are grouped under their ``group`` headings."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    parts.append(
        '<p class="legend"><span style="background:rgba(214,39,40,0.7)">supports</span>'
        '<span style="background:rgba(31,119,180,0.7)">opposes</span></p>'
    )
    if not rows:
        parts.append('<p class="note">No prompts to show.</p>')
    group = None
    for row in rows:
        if row.group and row.group != group:
            group = row.group
            parts.append(f"<h2>{html.escape(group)}</h2>")
        parts.append(render_row(row))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_heatmap(
    rows: Sequence[HeatmapRow], path: str | Path, *, title: str, note: str = ""
) -> Path:
    """Write :func:`render_heatmap` to ``path`` atomically."""
    return atomic_write_text(Path(path), render_heatmap(rows, title=title, note=note))
