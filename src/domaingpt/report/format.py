"""How numbers and names read in the report: one formatting rule per kind of column."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from domaingpt.report.document import MAX_TABLE_ROWS

_COUNT_SUFFIXES = (
    "iteration",
    "iterations",
    "iter",
    "step",
    "steps",
    "seed",
    "seeds",
    "count",
    "characters",
    "chars",
    "lines",
    "bytes",
    "unique",
    "rank",
    "order",
    "codepoint",
    "windows",
    "prompts",
)


def countlike(col: str) -> bool:
    """Columns whose float values are counts (NaN made them float): shown as integers."""
    col = col.lower()
    return col in ("n", "k", "seeds") or col.startswith("n_") or col.endswith(_COUNT_SUFFIXES)


def fmt(v: Any, col: str = "") -> str:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int) and not isinstance(v, bool):
        plain = any(k in col for k in ("iter", "step", "seed", "codepoint", "order", "rank"))
        return str(v) if plain or abs(v) < 1000 else f"{v:,}"
    if isinstance(v, float):
        if math.isnan(v):
            return ""
        if col.endswith("seconds"):
            return f"{v:.1f}"
        if col.endswith("share") or col.endswith("fraction"):
            return f"{100 * v:.2f} %" if v >= 1e-4 or v == 0 else f"{100 * v:.2g} %"
        if float(v).is_integer() and abs(v) < 1e15 and countlike(col):
            return fmt(int(v), col)
        if abs(v) >= 1000:
            return f"{v:,.0f}"
        if abs(v) >= 1e-3 or v == 0:
            return f"{v:.4f}"
        return f"{v:.3g}"
    return str(v)


def cells(df: pd.DataFrame) -> list[list[str]]:
    out = []
    for row in df.itertuples(index=False):
        out.append(
            [
                fmt(v.item() if hasattr(v, "item") else v, str(c))
                for c, v in zip(df.columns, row, strict=True)
            ]
        )
    return out


def is_numeric(col: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(col) and not pd.api.types.is_bool_dtype(col)


def rows_shown(df: pd.DataFrame, max_rows: int) -> pd.DataFrame:
    if max_rows < 0:
        return df
    return df.head(max_rows or MAX_TABLE_ROWS)


def ordered(names: Any, order: list[str] | None) -> list[str]:
    """``names`` in the study's corpus order (then the rest as they come)."""
    names = list(dict.fromkeys(names))
    first = [n for n in (order or []) if n in names]
    return first + [n for n in names if n not in first]


def by_model_and_iteration(df: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """``df`` sorted by model (in the study's order) and iteration."""
    ranked = df.assign(model=pd.Categorical(df["model"], ordered(df["model"], order)))
    return ranked.sort_values(["model", "iteration"]).astype({"model": str})
