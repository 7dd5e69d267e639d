"""Tables derived from the measured samples, which the claims and figures read: the
mean per checkpoint, when each model first reaches a milestone of the study (spacing,
real words, word formation), and the adapted models before and after adaptation."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.stages.quality.settings import QualitySettings
from domaingpt.stages.quality.textmetrics import REPETITION_METRICS

#: The milestones of :func:`milestones`: what first passing each one means.
EVENTS: dict[str, str] = {
    "spacing": "first iteration whose mean share of spaces is within the tolerance of the corpus's",
    "words": "first iteration where most long words (≥ 4 letters) are real words",
    "coherent": "first iteration where word formation passes the coherence threshold",
}


def pooled(df: pd.DataFrame, share: str, count: str) -> float:
    """Share pooled over samples: Σ share·count / Σ count (samples without words drop out)."""
    ok = df[share].notna() & (df[count] > 0)
    total = df.loc[ok, count].sum()
    return float((df.loc[ok, share] * df.loc[ok, count]).sum() / total) if total else math.nan


def reference_value(
    reference: pd.DataFrame, corpus: str, metric: str, col: str = "slice_mean"
) -> float:
    """A corpus's own value of ``metric`` (reference.csv; NaN when it has none)."""
    hit = reference[(reference["corpus"] == corpus) & (reference["metric"] == metric)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def checkpoint_summary(timeline: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, iteration): val_loss, mean measures, pooled word shares."""
    if timeline.empty:
        return pd.DataFrame()
    rows = []
    for (model, it), g in timeline.groupby(["model", "iteration"], sort=True):
        rows.append(
            {
                "model": model,
                "corpus": g["corpus"].iloc[0],
                "iteration": int(it),
                "val_loss": float(g["val_loss"].iloc[0]),
                "n_samples": len(g),
                "space_share": float(g["space_share"].mean()),
                "word_known": pooled(g, "word_known", "n_words"),
                "long_word_known": pooled(g, "long_word_known", "n_long_words"),
                "n_long_words": float(g["n_long_words"].sum()),
                **{m: float(g[m].mean()) for m in REPETITION_METRICS},
            }
        )
    return pd.DataFrame(rows)


def model_histories(summary: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    """Each model's rows of a checkpoint summary by iteration, models in the study's order."""
    out = []
    for model in study_order(summary["model"].unique()):
        g = summary[summary["model"] == model]
        out.append((model, g.sort_values("iteration").reset_index(drop=True)))
    return out


def _first_event(summary: pd.DataFrame, passed: pd.Series) -> tuple[Any, Any]:
    """(first row where ``passed``, the row just before it) or (None, last row)."""
    hits = np.flatnonzero(passed.to_numpy())
    if not len(hits):
        return None, summary.iloc[-1]
    i = int(hits[0])
    return summary.iloc[i], (summary.iloc[i - 1] if i else None)


def milestones(
    summary: pd.DataFrame, reference: pd.DataFrame, settings: QualitySettings | None = None
) -> pd.DataFrame:
    """When each model first reaches each milestone of :data:`EVENTS`: one row per (model,
    event) with the iteration, val loss and value there, and the checkpoint before it
    (the event happened between the two). ``iteration`` is empty when never reached."""
    s = settings or QualitySettings()
    rows = []
    for model, g in model_histories(summary):
        corpus = g["corpus"].iloc[0]
        space = reference_value(reference, corpus, "space_share")
        tests = {
            "spacing": (
                "space_share",
                (g["space_share"] - space).abs() <= s.spacing_tolerance * space,
            ),
            "words": ("long_word_known", g["long_word_known"] >= s.word_majority),
            "coherent": ("long_word_known", g["long_word_known"] >= s.coherent_words),
        }
        best = g.loc[g["val_loss"].idxmin()] if g["val_loss"].notna().any() else g.iloc[-1]
        for event, (col, passed) in tests.items():
            first, prev = _first_event(g, passed)
            rows.append(
                {
                    "model": model,
                    "corpus": corpus,
                    "event": event,
                    "measure": col,
                    "iteration": None if first is None else int(first["iteration"]),
                    "val_loss": None if first is None else float(first["val_loss"]),
                    "value": None if first is None else float(first[col]),
                    "prev_iteration": None if prev is None else int(prev["iteration"]),
                    "prev_val_loss": None if prev is None else float(prev["val_loss"]),
                    "prev_value": None if prev is None else float(prev[col]),
                    "last_iteration": int(g["iteration"].iloc[-1]),
                    "best_value": float(g[col].max()),
                    "lowest_val_loss": float(best["val_loss"]),
                    "lowest_val_loss_iteration": int(best["iteration"]),
                }
            )
    return pd.DataFrame(rows)


def _phase_means(d: pd.DataFrame, target: str) -> dict[str, float]:
    """An adapted model's measures in one phase, over its seeds and samples."""
    if not len(d):
        keys = ("js_target", "js_source", "nearest_target", "long_word_known")
        return dict.fromkeys((*keys, "heading_share", "math_symbol"), math.nan)
    return {
        "js_target": float(d["js_unigram"].mean()),
        "js_source": float(d["js_unigram_source"].mean()),
        "nearest_target": float((d["nearest_corpus"] == target).mean()),
        "long_word_known": pooled(d, "long_word_known", "n_long_words"),
        "heading_share": float(d["heading_share"].mean()),
        "math_symbol": float(d["class_math_symbol"].mean()),
    }


def adapt_groups(adapted: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target, start): before/after means over seeds and samples,
    and the share of the style gap to the target that adaptation closed."""
    rows = []
    if adapted.empty:
        return pd.DataFrame()
    for (src, tgt, start), g in adapted.groupby(["source", "target", "start"], sort=True):
        row: dict[str, Any] = {"source": src, "target": tgt, "start": start}
        row["n_after"] = int((g["phase"] == "after").sum())
        for phase in ("before", "after"):
            for name, value in _phase_means(g[g["phase"] == phase], tgt).items():
                row[f"{name}_{phase}"] = value
        b, a = row["js_target_before"], row["js_target_after"]
        row["gap_closed"] = (
            (b - a) / b if b and not math.isnan(b) and not math.isnan(a) else math.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)
