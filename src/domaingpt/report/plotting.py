"""How every figure of domaingpt looks and is saved.

* figures are :class:`~matplotlib.figure.Figure` objects of their own (:func:`subplots`),
  never pyplot's: saved through the Agg canvas, they render without a display and
  leave pyplot's backend and figures alone (importing this module changes nothing:
  a notebook keeps its backend);
* drawn inside :func:`figure_style`, which selects a font list with per-glyph fallback:
  DejaVu Sans first (always available, ships with matplotlib), then any installed font
  with wider coverage (Noto, CJK fonts, STIX ...), so non-ASCII characters render as
  well as the machine allows (Debian's ``fonts-noto-cjk`` and ``fonts-noto-core`` cover
  every character of the three corpora, CJK and Devanagari included). Fonts installed
  after matplotlib built its font cache are found too. A character that no installed
  font can draw is reported once per figure, as one warning naming the characters
  (instead of matplotlib's warning per glyph and per draw), and complex scripts
  (Devanagari) are drawn glyph by glyph, unshaped, without matplotlib's warning about
  it: readable for single characters, which is what the figures show;
* saved with :func:`save_figure`: atomically (temp file + rename).

Stages draw their own figures (``stages/<stage>/figures.py``) from their tables with
these helpers.
"""

from __future__ import annotations

import io
import logging
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib import font_manager
from matplotlib.figure import Figure

from domaingpt.core.io import atomic_write_bytes
from domaingpt.data.charclass import CLASSES

# One colour per character class, shared by every figure (tab10 order).
CLASS_COLORS: dict[str, str] = dict(
    zip(
        CLASSES,
        ("#1f77b4", "#aec7e8", "#ff7f0e", "#7f7f7f", "#c7c7c7", "#2ca02c", "#d62728", "#9467bd"),
        strict=True,
    )
)


# Tried in order after DejaVu Sans; only installed ones are used.
_FALLBACK_FONTS = (
    "Noto Sans",
    "Noto Sans CJK SC",
    "Noto Sans CJK JP",
    "Noto Sans SC",
    "Noto Sans JP",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "Noto Sans Arabic",
    "Noto Naskh Arabic",
    "Noto Sans Hebrew",
    "Noto Sans Devanagari",
    "Noto Sans Thai",
    "Noto Sans Math",
    "Noto Sans Symbols",
    "Noto Sans Symbols 2",
    "Arial Unicode MS",
    "STIXGeneral",
    "Symbola",
)


#: Font files worth registering when matplotlib's cache predates them (by file name).
_FALLBACK_FILES = re.compile(r"noto|droid|wqy|wenquanyi|sourcehan|stix|symbola|unicode", re.I)


def _register_new_fonts() -> None:
    """Fonts installed after matplotlib cached its font list (e.g. ``apt-get install
    fonts-noto-cjk`` on a machine that had drawn before) are invisible to it until the
    cache is rebuilt; register the fallback candidates among them (under a second)."""
    manager = font_manager.fontManager
    known = {f.fname for f in manager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known and _FALLBACK_FILES.search(Path(path).name):
            try:
                manager.addfont(path)
            except (OSError, RuntimeError, ValueError):
                continue  # an unreadable font file is skipped, as matplotlib does


@lru_cache(maxsize=1)
def font_families() -> tuple[str, ...]:
    """The font families used, DejaVu Sans first, then installed fallbacks."""
    _register_new_fonts()
    installed = {f.name for f in font_manager.fontManager.ttflist}
    return ("DejaVu Sans", *(f for f in _FALLBACK_FONTS if f in installed))


_GLYPH_WARNING = re.compile(r"Glyph (\d+) .*missing from")
#: Said per draw of a complex script (Devanagari), which is drawn unshaped on purpose.
_UNSHAPED_WARNING = re.compile(r"Matplotlib currently does not support \w+ natively")
_watching = 0  # nesting depth of glyph_watch (the outermost one reports)


def missing_glyphs_message(chars: set[str]) -> str:
    shown = " ".join(sorted(chars)[:20]) + (" …" if len(chars) > 20 else "")
    return (
        f"Glyphs missing from the installed fonts for {len(chars)} character(s): {shown}; "
        "they are drawn as boxes (on Debian: apt-get install fonts-noto-cjk fonts-noto-core)"
    )


@contextmanager
def glyph_watch() -> Iterator[set[str]]:
    """Collect matplotlib's missing-glyph warnings while drawing and report them once,
    as one warning naming the characters; drop its unshaped-script warnings; every
    other warning passes through. The warnings filter is changed only inside."""
    global _watching
    missing: set[str] = set()
    if _watching:
        yield missing
        return
    _watching += 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield missing
    finally:
        _watching -= 1
    for w in caught:
        found = _GLYPH_WARNING.search(str(w.message))
        if found:
            missing.add(chr(int(found.group(1))))
        elif not _UNSHAPED_WARNING.search(str(w.message)):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        warnings.warn(missing_glyphs_message(missing), UserWarning, stacklevel=3)


@contextmanager
def figure_style() -> Iterator[None]:
    """rc settings for the study's figures; draw and save inside this block."""
    rc = {
        # The families themselves, not the generic "sans-serif": matplotlib falls back
        # glyph by glyph only along an explicit list (a generic resolves to one font).
        "font.family": list(font_families()),
        "font.sans-serif": list(font_families()),
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "axes.axisbelow": True,
        "figure.dpi": 100,
        "savefig.dpi": 150,
    }
    fm_logger = logging.getLogger("matplotlib.font_manager")
    level = fm_logger.level
    fm_logger.setLevel(max(level, logging.ERROR))  # no "findfont: not found" chatter
    try:
        with matplotlib.rc_context(rc), glyph_watch():
            yield
    finally:
        fm_logger.setLevel(level)


def save_figure(
    fig: Figure,
    path: str | Path,
    *,
    caption: str = "",
    dpi: int | None = None,
    tight: bool = True,
) -> Path:
    """Save ``fig`` as PNG and, beside it, as SVG (vectors, for a paper), atomically.
    Returns the PNG's path.

    ``caption`` says what the figure shows; it is stored in both files (the PNG's
    ``Description`` text chunk, the SVG's ``dc:description``), and the report captions
    the figure with it (:func:`figure_caption`): one place per figure, where it is drawn.
    ``tight`` crops to the drawn content (``bbox_inches="tight"``, an extra layout pass);
    pass ``False`` for a figure already laid out with ``tight_layout``.
    """
    path = Path(path)
    bbox = "tight" if tight else None
    with glyph_watch():
        for out, fmt in ((path, "png"), (path.with_suffix(".svg"), "svg")):
            buf = io.BytesIO()
            meta = {"Description": caption} if caption else {}
            if fmt == "svg":
                meta["Date"] = None  # no timestamp: the same figure, the same bytes
            fig.savefig(buf, format=fmt, dpi=dpi, bbox_inches=bbox, metadata=meta)
            atomic_write_bytes(out, buf.getvalue())
    return path


#: The arguments of ``pyplot.subplots`` that shape the grid; the others are the figure's.
_GRID_ARGS = frozenset(
    {
        "nrows",
        "ncols",
        "sharex",
        "sharey",
        "squeeze",
        "width_ratios",
        "height_ratios",
        "subplot_kw",
        "gridspec_kw",
    }
)


def subplots(*args: Any, figsize: tuple[float, float], **kwargs: Any) -> tuple[Figure, Any]:
    """``pyplot.subplots`` without pyplot: a figure of its own (no backend chosen, none
    kept open), ``figsize`` from :func:`report_size`, the same arguments otherwise
    (``layout=`` ...); draw it inside :func:`figure_style`."""
    grid = {k: v for k, v in kwargs.items() if k in _GRID_ARGS}
    fig = Figure(figsize=figsize, **{k: v for k, v in kwargs.items() if k not in _GRID_ARGS})
    return fig, fig.subplots(*args, **grid)


#: The widest a figure is drawn (inches): the report shows figures at most
#: :data:`REPORT_WIDTH_PX` wide, so a figure this wide shows its 10-point text at
#: 10 × REPORT_WIDTH_PX / (72 × MAX_WIDTH_IN) ≈ 14 px (8-point ticks at ≈ 11 px).
MAX_WIDTH_IN = 10.5
#: The report's content width in CSS pixels (report.html's ``main``: 1120 − 2 × 28).
REPORT_WIDTH_PX = 1064


def report_size(width: float, height: float) -> tuple[float, float]:
    """A figure size (inches) at most :data:`MAX_WIDTH_IN` wide: every figure is created
    through it, so that the fonts' point sizes stay legible in the report (a figure of
    many panels would otherwise be shrunk until its text is a few pixels high). The
    height is kept: the text a panel holds needs it whatever the width."""
    return min(width, MAX_WIDTH_IN), height


def figure_caption(path: str | Path) -> str:
    """The caption :func:`save_figure` stored in a PNG ('' when it has none)."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return str(getattr(image, "text", {}).get("Description", ""))
    except OSError:
        return ""


def tick_label(label: str, max_len: int = 12) -> str:
    """Short form of a :func:`~domaingpt.charclass.describe_char` label for a tick."""
    if label.startswith("U+") and " <" in label:
        return label.split(" ", 1)[0]
    return label if len(label) <= max_len else label[: max_len - 1] + "…"


DOMAIN_STYLE = {
    "in": ("C0", "-", "in-domain"),
    "out": ("C3", "--", "out-of-domain"),
    "user": ("C2", ":", "user prompts"),
}


def plain(text: str) -> str:
    """Text drawn literally: ``$`` would start mathtext, control characters are shown."""
    shown = str(text).replace("\n", "↵").replace("\t", "⇥").replace("\r", "␍")
    return shown.replace("$", r"\$")


def iteration_axis(ax, iterations) -> None:
    its = [int(i) for i in iterations]
    if its and max(its) >= 100 and min(its) >= 0:
        ax.set_xscale("symlog", linthresh=10)
    ax.set_xlabel("iteration")


def panels(n: int, width: float = 4.6, height: float = 3.4, max_cols: int = 3):
    cols = max(1, min(n, max_cols))
    rows = max(1, -(-n // cols))
    fig, axes = subplots(
        rows, cols, figsize=report_size(width * cols, height * rows), squeeze=False, sharey=True
    )
    flat = list(axes.ravel())
    for ax in flat[n:]:
        ax.set_visible(False)
    return fig, flat[:n]


def grid(n_rows: int, n_cols: int, cell: tuple[float, float], extra_height: float, **kwargs: Any):
    """A figure of ``n_rows`` × ``n_cols`` panels (at least one each), ``cell`` inches a
    panel plus ``extra_height`` inches for titles; ``axes`` is always 2-D."""
    rows, cols = max(n_rows, 1), max(n_cols, 1)
    return subplots(
        rows,
        cols,
        figsize=report_size(cell[0] * cols, cell[1] * rows + extra_height),
        squeeze=False,
        **kwargs,
    )
