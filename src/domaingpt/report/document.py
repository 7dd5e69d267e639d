"""The report as a document: sections of paragraphs, tables, figures and samples.

Stages build their :class:`Section` from their tables; :mod:`domaingpt.report.html` and
:mod:`domaingpt.report.markdown` render the same document two ways.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

MAX_TABLE_ROWS = 40
#: Tables longer than this are collapsed (``<details>``): the report reads top down.
COLLAPSE_ROWS = 12
#: Lists longer than this show their first items and collapse the rest.
COLLAPSE_ITEMS = 8


@dataclass
class Block:
    kind: str  # p | table | figure | sample | missing | note | h3 | items | iframe
    text: str = ""
    table: pd.DataFrame | None = None
    path: Path | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)  # samples; items (see Section.items)
    source: str = ""  # the file a table came from (shown when it is truncated)
    max_rows: int = 0  # 0: MAX_TABLE_ROWS; -1: every row


@dataclass
class Section:
    """A part of the report. ``lead`` sections come first, before the table of contents
    (the findings); the others follow in order."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)
    lead: bool = False

    def p(self, text: str) -> None:
        self.blocks.append(Block("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(Block("note", text))

    def h3(self, text: str) -> None:
        self.blocks.append(Block("h3", text))

    def table(
        self, df: pd.DataFrame, caption: str = "", source: str = "", *, max_rows: int = 0
    ) -> None:
        self.blocks.append(Block("table", caption, table=df, source=source, max_rows=max_rows))

    def figure(self, path: Path, caption: str = "") -> None:
        """A figure, captioned by ``caption``, else by the caption stored in it where it was
        drawn (:func:`domaingpt.report.plotting.save_figure`), else by its file name (a
        figure of an older run)."""
        if Path(path).is_file():
            caption = caption or stored_caption(Path(path))
            self.blocks.append(Block("figure", caption, path=Path(path)))

    def missing(self, text: str) -> None:
        self.blocks.append(Block("missing", text))

    def samples(self, title: str, rows: list[dict[str, Any]]) -> None:
        """Sample texts (rows with ``iter``, ``val_loss``, ``text``) under ``title``."""
        self.blocks.append(Block("sample", title, rows=rows))

    def items(
        self, rows: list[dict[str, Any]], more: str = "more", *, collapse: bool = True
    ) -> None:
        """A list: each row has ``text``, and optionally ``verdict`` (shown as a badge)
        and ``href``/``link`` (a link into the report, e.g. ``#adaptation``). Past
        :data:`COLLAPSE_ITEMS` rows the rest is collapsed under ``more`` (unless not
        ``collapse``)."""
        self.blocks.append(Block("items", more, rows=rows, max_rows=0 if collapse else -1))

    def embed(self, path: Path, caption: str) -> None:
        """A whole HTML page, sandboxed in the HTML report and linked from Markdown."""
        if Path(path).is_file():
            self.blocks.append(Block("iframe", caption, path=Path(path)))

    @property
    def is_missing(self) -> bool:
        return any(b.kind == "missing" for b in self.blocks)


def stored_caption(path: Path) -> str:
    """The caption stored in a figure where it was drawn, else one from its file name."""
    from domaingpt.report.plotting import figure_caption  # matplotlib: only when drawn

    if found := figure_caption(path):
        return found
    stem = path.stem.replace("_", " ").replace("-", " ")
    return stem[:1].upper() + stem[1:]


def figures_and_heatmap(s: Section, folder: Path) -> None:
    """Every PNG of ``folder`` (each with its stored caption) and its ``heatmap.html``,
    if any."""
    for p in sorted(folder.rglob("*.png")) if folder.is_dir() else []:
        s.figure(p)
    s.embed(folder / "heatmap.html", "Text heatmaps (hover a character for its value)")
