"""``domaingpt runs`` and ``domaingpt compare``: the runs under a folder, two runs side by side."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: every command's parser imports this module
    import pandas as pd


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "runs",
        help="list the runs under a folder: study, stages done, models, in-domain losses",
    )
    p.add_argument("folder", nargs="?", default="runs", help="folder holding runs (default: runs)")
    p.set_defaults(func=cmd_runs)

    p = sub.add_parser(
        "compare",
        help="what differs between two runs: settings, losses, zero-shot matrix, verdicts",
        description="Compare run B with run A: the settings that differ, the in-domain "
        "losses and the zero-shot matrix (with B - A), and the claims whose verdict differs.",
    )
    p.add_argument("run_a", metavar="RUN_A", help="run directory")
    p.add_argument("run_b", metavar="RUN_B", help="run directory")
    p.set_defaults(func=cmd_compare)


def _cell(value: object) -> str:
    if isinstance(value, float):
        return "-" if value != value else f"{value:+.4f}" if value < 0 else f"{value:.4f}"
    return str(value)


def _show(df: pd.DataFrame) -> str:
    """A plain-text table: text left-aligned, numbers right-aligned, two spaces apart."""
    import pandas as pd

    numeric = [pd.api.types.is_float_dtype(df[c]) for c in df.columns]
    rows = [[str(c) for c in df.columns]]
    rows += [[_cell(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(df.columns))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(w) if num else cell.ljust(w)
            for cell, w, num in zip(row, widths, numeric, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def cmd_runs(args: argparse.Namespace) -> int:
    from domaingpt.study.runs import runs_table

    table = runs_table(args.folder)
    if table.empty:
        print(f"no runs under {args.folder}; start one with `domaingpt run`")
        return 0
    print(_show(table))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from domaingpt.study.runs import compare_runs

    c = compare_runs(args.run_a, args.run_b)
    print(f"A: {c.a}\nB: {c.b}")
    parts = [
        ("Settings that differ", c.settings, "the same settings"),
        ("In-domain loss (nats per character)", c.losses, "no losses in either run"),
        ("Zero-shot matrix (final checkpoints)", c.matrix, "no zero-shot matrix in either run"),
        ("Verdicts", c.verdict_counts, "no claims in either run"),
        ("Claims whose verdict differs", c.verdicts, "every verdict is the same"),
    ]
    for title, table, empty in parts:
        print(f"\n{title}:")
        print(_show(table) if not table.empty else f"  ({empty})")
    return 0
