"""The report's section on few-shot adaptation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from domaingpt.context.stage import StageView
from domaingpt.core.claims import display
from domaingpt.core.io import read_jsonl
from domaingpt.report.document import Section


def section(view: StageView) -> Section:
    """Curves, the summary by start point with a verdict per pair, adapted samples."""
    s = Section("adaptation", view.stage.heading)
    tables = view.tables or {}
    if tables:
        s.p(
            "Each model is trained further on every other corpus, starting from its final "
            "checkpoint, from an early checkpoint, and (as a baseline) from scratch, with the "
            "same budget; the target-domain validation loss is recorded along the way."
        )
        for p in view.figures():
            if p.parent == view.out:
                s.figure(p)
        if "summary" in tables:
            s.table(
                _adapt_view(tables["summary"]),
                "Target-corpus loss after adaptation by start point (mean ± std over seeds; "
                "Δ = early − final, paired by seed), and the verdict per pair",
                "adapt/summary.csv",
            )
        samples = _adapt_samples(view.out)
        if samples:
            s.h3("Samples of the adapted models")
            s.p(
                "The study judged adaptation by tone; a fixed-seed sample of each adapted "
                "model (final start, first seed) shows it."
            )
            for title, rows in samples.items():
                s.samples(title, rows)
        s.note("All curves and runs: adapt/curves.csv, adapt/final.csv.")
    return s


def _pm(mean: Any, std: Any) -> str:
    if mean is None or pd.isna(mean):
        return ""
    return f"{mean:.3f}" + ("" if std is None or pd.isna(std) else f" ± {std:.3f}")


def _adapt_view(summary: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in summary.to_dict("records"):
        early_it = r.get("early_iteration")
        rows.append(
            {
                "pair": f"{r.get('source')} → {r.get('target')}",
                "seeds": r.get("n_seeds"),
                "final start": _pm(r.get("final_mean"), r.get("final_std")),
                "early start": _pm(r.get("early_mean"), r.get("early_std"))
                + ("" if early_it is None or pd.isna(early_it) else f" (@{int(early_it)})"),
                "scratch": _pm(r.get("scratch_mean"), r.get("scratch_std")),
                "Δ early − final": _pm(r.get("delta_early_minus_final"), r.get("delta_spread")),
                "forgetting (final start)": r.get("forgetting_final"),
                "verdict": r.get("verdict", ""),
            }
        )
    return pd.DataFrame(rows)


def _adapt_samples(out: Path) -> dict[str, list[dict[str, Any]]]:
    """Samples of the adapted models (final start, lowest seed), by pair."""
    path = out / "samples.jsonl"
    if not path.is_file():
        return {}
    rows = read_jsonl(path)
    out: dict[str, list[dict[str, Any]]] = {}
    seeds = sorted({r.get("seed", 0) for r in rows})
    for r in rows:
        if r.get("start", "final") != "final" or r.get("seed", 0) != (seeds[0] if seeds else 0):
            continue
        title = f"{display(r.get('source', '?'))} model adapted to {display(r.get('target', '?'))}"
        out.setdefault(title, []).append(
            {
                "iter": r.get("step", r.get("iter")),
                "val_loss": r.get("target_loss", r.get("val_loss")),
                "text": r.get("text", ""),
            }
        )
    return out
