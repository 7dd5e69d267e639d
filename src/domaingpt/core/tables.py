"""Tidy tables on disk: every stage writes and reads its CSV files through here.

Every text field is quoted, so a lone ``\\r`` or a comma inside a character column never
splits a row; columns that hold text (characters, names, verdicts) are read back as
text, never as numbers or NaN (the character ``"1"`` stays a string, ``"NA"`` stays a
word). A column named ``char`` beside a ``codepoint`` column is restored from the code
point, so characters that CSV readers mangle (``\\r``, ``\\x00``) come back exact.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.core.io import atomic_write_text
from domaingpt.errors import DomainGPTError

UNK = "<unk>"  # the vocabulary's unknown token (domaingpt.data.vocab.UNK)

#: Columns read as text wherever they appear.
TEXT_COLUMNS = (
    "model",
    "model_corpus",
    "prompt_corpus",
    "corpus",
    "domain",
    "char",
    "label",
    "target",
    "target_label",
    "claim",
    "scope",
    "section",
    "numbers",
    "evidence",
    "method",
    "char_class",
    "relpos",
    "verdict",
    "source",
    "stage",
    "group",
    "group_kind",
    "start",
    "text",
    "unicode_category",
    "category_name",
    "name",
    "context",
    "most_frequent",
    "notable_symbols",
    "event",
    "measure",
    "metric",
    "nearest_corpus",
    "prompt",
    "kind",
    "model_a",
    "model_b",
    "own_model",
    "comparison",
    "prompts",
    "baseline",
)


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """Write ``df`` as CSV (text fields quoted), atomically."""
    text = df.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    return atomic_write_text(path, text)


def round_significant(df: pd.DataFrame, columns: list[str], digits: int = 6) -> pd.DataFrame:
    """``df`` with the float ``columns`` rounded to ``digits`` significant digits: large
    per-prompt tables stay readable and a third of the size, with far more precision than
    any interval computed from them."""
    out = df.copy()
    for col in columns:
        x = out[col].to_numpy(dtype=np.float64)
        finite = np.isfinite(x) & (x != 0)
        mag = np.floor(np.log10(np.abs(x, where=finite, out=np.ones_like(x))))
        scale = 10.0 ** (digits - 1 - mag)
        out[col] = np.where(finite, np.round(x * scale) / scale, x)
    return out


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table` (or any plain CSV of ours)."""
    try:
        df = pd.read_csv(
            path,
            dtype={c: str for c in TEXT_COLUMNS},
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except FileNotFoundError:
        raise DomainGPTError(f"{path} not found; run the stage that writes it first") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DomainGPTError(f"{path}: cannot be read as CSV ({e})") from None
    if "codepoint" in df.columns and "char" in df.columns:
        df["char"] = [
            c if pd.isna(cp) else (UNK if int(cp) < 0 else chr(int(cp)))
            for c, cp in zip(df["char"], df["codepoint"], strict=True)
        ]
    return df


def read_tables(directory: Path, names: dict[str, str]) -> dict[str, pd.DataFrame]:
    """``{key: read_table(directory / file)}`` for the files of ``names`` that exist."""
    return {k: read_table(directory / f) for k, f in names.items() if (directory / f).is_file()}
