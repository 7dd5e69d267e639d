"""The report's section on the corpora (the study's Part 1 table and figures)."""

from __future__ import annotations

from domaingpt.context.stage import StageView
from domaingpt.core import published
from domaingpt.report.document import Section


def section(view: StageView) -> Section:
    """One row per corpus beside the study's counts, class shares, notable symbols, figures."""
    s = Section("corpora", view.stage.heading)
    tables = view.tables or {}
    summary = tables["summary"]
    cols = [
        c
        for c in (
            "corpus",
            "characters",
            "lines",
            "unique_characters",
            "non_ascii_unique",
            "most_frequent",
            "digit_share",
            "math_symbol_share",
            "non_ascii_share",
            "notable_symbols",
        )
        if c in summary.columns
    ]
    table = summary[cols].copy()
    table.insert(
        table.columns.get_loc("unique_characters") + 1,
        "study_unique_characters",
        [published.UNIQUE_CHARS.get(c, float("nan")) for c in summary["corpus"]],
    )
    s.table(
        table,
        "One row per corpus (the study's published unique-character counts beside ours)",
        "stats/summary.csv",
    )
    if "class_shares" in tables:
        cs = tables["class_shares"].pivot_table(
            index="char_class", columns="corpus", values="share", sort=False
        )
        cs = cs[[c for c in summary["corpus"] if c in cs.columns]]
        cs.columns = [f"{c}_share" for c in cs.columns]
        s.table(cs.reset_index(), "Share of each character class", "stats/class_shares.csv")
    if "notable" in tables and not tables["notable"].empty:
        nb = tables["notable"]
        cols = [c for c in ("corpus", "label", "char_class", "count", "context") if c in nb]
        s.table(
            nb[cols],
            "Notable symbols, each with the text around its first occurrence (⏎ newline, ⇥ tab)",
            "stats/notable.csv",
        )
    pngs = {p.stem: p for p in view.figures()}
    for c in summary["corpus"]:
        if f"distribution_{c}" in pngs:
            s.figure(pngs[f"distribution_{c}"])
    s.figure(view.out / "class_shares.png")
    return s
