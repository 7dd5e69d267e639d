"""The report as one self-contained HTML file: no script, no external resource.

Figures are embedded as base64 PNG (or, with :class:`FigureFiles`, linked as files
beside the HTML with their SVG); every text that comes from data (corpora, prompts,
samples, file names) is escaped. Each figure is shown at its print size (96 CSS pixels
per inch of the figure), so that every figure's text has the same size on screen: the
figures are at most :data:`~domaingpt.report.plotting.MAX_WIDTH_IN` wide, which fits the
page. The contents stay in reach: a fixed side column on a wide window, else a fixed
link back to them.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

from domaingpt.core.claims import Verdict
from domaingpt.core.version import __version__
from domaingpt.report.document import COLLAPSE_ITEMS, COLLAPSE_ROWS, Block, Section
from domaingpt.report.format import cells, fmt, is_numeric, rows_shown

_CSS = """
:root { --fg:#1d2329; --muted:#5b6670; --line:#d9dee3; --bg:#ffffff; --soft:#f5f7f9;
        --ok:#1a7f37; --bad:#b42318; --part:#9a6700; --na:#6e7781; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.55 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans","Noto Sans",
       "Noto Sans CJK SC","Noto Sans Devanagari",sans-serif;
       color:var(--fg); background:var(--bg); }
main { max-width:1120px; margin:0 auto; padding:24px 28px 80px; }
/* The contents stay in reach: a fixed side column where the window has room for it
   beside the page, else a fixed link back to them (no script: plain CSS). */
a.tocjump { position:fixed; right:16px; bottom:16px; background:var(--soft); color:#0b5cad;
            border:1px solid var(--line); border-radius:16px; padding:4px 12px; font-size:13px;
            text-decoration:none; box-shadow:0 1px 3px rgba(0,0,0,.12); }
@media (min-width: 1400px) {
  body { padding-left:270px; }
  nav#contents { position:fixed; top:0; left:0; width:256px; height:100vh; overflow-y:auto;
                 border-radius:0; border-width:0 1px 0 0; padding:18px 14px; }
  nav#contents ol { columns:1; padding-left:20px; }
  nav#contents li { margin:3px 0; }
  a.tocjump { display:none; }
}
h1 { font-size:28px; margin:8px 0 4px; }
h2 { font-size:22px; margin:40px 0 10px; padding-top:12px; border-top:2px solid var(--line); }
h3 { font-size:17px; margin:26px 0 8px; }
p { margin:8px 0; max-width:78ch; }
.sub { color:var(--muted); margin:0 0 16px; }
nav { background:var(--soft); border:1px solid var(--line); border-radius:8px; padding:10px 16px; }
nav ol { margin:4px 0; padding-left:22px; columns:2; }
nav a { color:#0b5cad; text-decoration:none; }
.tablewrap { overflow-x:auto; margin:10px 0 4px; }
table { border-collapse:collapse; font-size:13.5px; }
p.cap { color:var(--muted); font-size:13px; margin:14px 0 2px; }
th, td { border:1px solid var(--line); padding:4px 8px; vertical-align:top; text-align:left; }
td { max-width:56ch; } td:not(.num) { overflow-wrap:break-word; }
th { background:var(--soft); font-weight:600; }
td.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
tr:nth-child(even) td { background:#fbfcfd; }
figure { margin:14px 0 18px; }
figure img { max-width:100%; height:auto; border:1px solid var(--line); border-radius:4px; }
figcaption { color:var(--muted); font-size:13.5px; margin-top:4px; max-width:92ch; }
figcaption a { color:#0b5cad; }
pre.sample { white-space:pre-wrap; word-break:break-word; background:var(--soft); margin:0;
             padding:6px 8px; border-radius:4px; font:12.5px/1.4 ui-monospace,"DejaVu Sans Mono",monospace; }
.note { color:var(--muted); font-size:13.5px; }
.missing { border-left:4px solid var(--part); background:#fff8e6; padding:8px 12px; margin:10px 0; }
.verdict { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12.5px;
           font-weight:600; color:#fff; white-space:nowrap; }
.v-holds { background:var(--ok); } .v-fails { background:var(--bad); }
.v-partly { background:var(--part); } .v-na { background:var(--na); }
details { margin:8px 0; } summary { cursor:pointer; font-weight:600; }
section.lead { background:var(--soft); border:1px solid var(--line); border-radius:8px;
               padding:4px 18px 12px; margin:18px 0; }
section.lead h2 { border-top:none; margin-top:14px; }
ul.items { padding-left:20px; } ul.items li { margin:4px 0; max-width:92ch; }
ul.items a { color:#0b5cad; white-space:nowrap; }
footer { margin-top:48px; color:var(--muted); font-size:13px; }
"""


_VERDICT_CLASS = {
    Verdict.HOLDS: "v-holds",
    Verdict.FAILS: "v-fails",
    Verdict.PARTLY: "v-partly",
    Verdict.ONE_MODEL: "v-na",
    Verdict.UNMEASURED: "v-na",
}


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _html_table(df: pd.DataFrame, caption: str, source: str, max_rows: int = 0) -> str:
    """A table; one longer than :data:`COLLAPSE_ROWS` rows is collapsed under its caption."""
    table = _html_table_body(df, caption, source, max_rows)
    if len(df) <= COLLAPSE_ROWS:
        return table
    title = f"{caption} ({len(df):,} rows)" if caption else f"Table of {len(df):,} rows"
    return f"<details><summary>{_e(title)}</summary>{table}</details>"


def _html_table_body(df: pd.DataFrame, caption: str, source: str, max_rows: int = 0) -> str:
    shown = rows_shown(df, max_rows)
    numeric = [is_numeric(shown[c]) for c in shown.columns]
    parts = [f'<p class="cap">{_e(caption)}</p>'] if caption else []
    parts.append('<div class="tablewrap"><table>')
    parts.append(
        "<thead><tr>" + "".join(f"<th>{_e(c)}</th>" for c in shown.columns) + "</tr></thead><tbody>"
    )
    for row in cells(shown):
        tds = []
        for cell, num, col in zip(row, numeric, shown.columns, strict=True):
            if col == "verdict" and cell in _VERDICT_CLASS:
                tds.append(
                    f'<td><span class="verdict {_VERDICT_CLASS[cell]}">{_e(cell)}</span></td>'
                )
            elif num:
                tds.append(f'<td class="num">{_e(cell)}</td>')
            else:
                tds.append(f"<td>{_e(cell)}</td>")
        parts.append("<tr>" + "".join(tds) + "</tr>")
    parts.append("</tbody></table></div>")
    if len(df) > len(shown):
        where = f" in {source}" if source else ""
        parts.append(f'<p class="note">First {len(shown)} of {len(df):,} rows; all{_e(where)}.</p>')
    return "".join(parts)


def _html_item(row: dict[str, Any]) -> str:
    parts = []
    verdict = row.get("verdict")
    if verdict in _VERDICT_CLASS:
        parts.append(f'<span class="verdict {_VERDICT_CLASS[verdict]}">{_e(verdict)}</span> ')
    parts.append(_e(row.get("text", "")))
    if row.get("href"):
        parts.append(f' <a href="{_e(row["href"])}">→ {_e(row.get("link") or "details")}</a>')
    return "<li>" + "".join(parts) + "</li>"


def _html_items(block: Block) -> str:
    limit = len(block.rows) if block.max_rows < 0 else COLLAPSE_ITEMS
    first, rest = block.rows[:limit], block.rows[limit:]
    out = '<ul class="items">' + "".join(_html_item(r) for r in first) + "</ul>"
    if rest:
        out += (
            f"<details><summary>{len(rest)} {_e(block.text)}</summary>"
            '<ul class="items">' + "".join(_html_item(r) for r in rest) + "</ul></details>"
        )
    return out


def _html_samples(block: Block) -> str:
    rows = [
        '<tr><td class="num">{}</td><td class="num">{}</td><td><pre class="sample">{}</pre></td></tr>'.format(
            _e(fmt(r.get("iter"))), _e(fmt(r.get("val_loss"), "val_loss")), _e(r.get("text", ""))
        )
        for r in block.rows
    ]
    return (
        f'<details open><summary>{_e(block.text)}</summary><div class="tablewrap"><table>'
        "<thead><tr><th>iteration</th><th>val loss</th><th>sample</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></div></details>"
    )


#: CSS pixels per inch of a figure: its print size on screen (10-point text: 13.3 px).
CSS_PX_PER_INCH = 96


@dataclass
class FigureFiles:
    """Figures as files beside the HTML instead of embedded (``report.embed = false``):
    each PNG, and the SVG beside it, gets a name in ``folder`` (linked as
    ``folder.name/NAME``); :attr:`copies` says what to copy where, once per file."""

    folder: Path
    copies: dict[Path, Path] = field(default_factory=dict)
    numbers: dict[Path, int] = field(default_factory=dict)  # a figure's PNG and SVG: one

    def href(self, path: Path) -> str:
        if path not in self.copies:
            number = self.numbers.setdefault(path.with_suffix(""), len(self.numbers) + 1)
            self.copies[path] = self.folder / f"{number:02d}-{path.name}"
        return f"{self.folder.name}/{self.copies[path].name}"


def _display_width(path: Path) -> int | None:
    """The figure's print width in CSS pixels, from its pixel width and its dpi (None:
    not a PNG that says)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            dpi = image.info.get("dpi", (0, 0))[0]
            return round(image.width * CSS_PX_PER_INCH / dpi) if dpi else None
    except OSError:
        return None


def _html_figure(block: Block, files: FigureFiles | None) -> str:
    assert block.path is not None
    path = block.path
    mime = "image/svg+xml" if path.suffix.lower() == ".svg" else "image/png"
    links = ""
    if files is None:
        src = f"data:{mime};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
    else:
        src = files.href(path)
        vector = path.with_suffix(".svg")
        links = f' (<a href="{_e(src)}">PNG</a>'
        if path.suffix.lower() == ".png" and vector.is_file():
            links += f', <a href="{_e(files.href(vector))}">SVG</a>'
        links += ")"
    width = _display_width(path) if mime == "image/png" else None
    size = f' width="{width}"' if width else ""
    return (
        f'<figure><img src="{_e(src)}"{size} alt="{_e(block.text)}">'
        f"<figcaption>{_e(block.text)}{links}</figcaption></figure>"
    )


def _html_section(s: Section, files: FigureFiles | None = None) -> list[str]:
    cls = ' class="lead"' if s.lead else ""
    out = [f'<section id="{_e(s.id)}"{cls}><h2>{_e(s.title)}</h2>']
    for b in s.blocks:
        if b.kind == "p":
            out.append(f"<p>{_e(b.text)}</p>")
        elif b.kind == "note":
            out.append(f'<p class="note">{_e(b.text)}</p>')
        elif b.kind == "h3":
            out.append(f"<h3>{_e(b.text)}</h3>")
        elif b.kind == "missing":
            out.append(f'<div class="missing"><strong>Missing:</strong> {_e(b.text)}</div>')
        elif b.kind == "table" and b.table is not None:
            out.append(_html_table(b.table, b.text, b.source, b.max_rows))
        elif b.kind == "figure":
            out.append(_html_figure(b, files))
        elif b.kind == "sample":
            out.append(_html_samples(b))
        elif b.kind == "items":
            out.append(_html_items(b))
        elif b.kind == "iframe" and b.path is not None:
            # Embedded whole, sandboxed (no script can run): the page stays one file.
            doc = b.path.read_text(encoding="utf-8")
            out.append(
                f'<figure><iframe sandbox="" title="{_e(b.text)}" srcdoc="{_e(doc)}" '
                'style="width:100%;height:560px;border:1px solid #d9dee3;border-radius:4px">'
                f"</iframe><figcaption>{_e(b.text)}</figcaption></figure>"
            )
    out.append("</section>")
    return out


def render_html(
    title: str, subtitle: str, sections: list[Section], files: FigureFiles | None = None
) -> str:
    """The report as one HTML document: no script, no external resource (with ``files``,
    the figures are linked from there instead). Lead sections (the findings) come first,
    then the contents, then the detailed sections."""
    lead = [s for s in sections if s.lead]
    rest = [s for s in sections if not s.lead]
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f'<h1>{_e(title)}</h1><p class="sub">{_e(subtitle)}</p>',
    ]
    for s in lead:
        out += _html_section(s, files)
    out += [
        '<nav id="contents"><strong>Contents</strong><ol>',
        *(f'<li><a href="#{_e(s.id)}">{_e(s.title)}</a></li>' for s in sections),
        "</ol></nav>",
    ]
    for s in rest:
        out += _html_section(s, files)
    out.append(
        f"<footer>Generated by domaingpt {_e(__version__)} on "
        f"{_e(datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC'))}.</footer>"
    )
    out.append('</main><a class="tocjump" href="#contents">↑ Contents</a></body></html>')
    return "\n".join(out) + "\n"
