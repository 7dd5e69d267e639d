"""The report's section on the zero-shot loss matrix."""

from __future__ import annotations

from typing import Any

import pandas as pd

from domaingpt.context.stage import StageView
from domaingpt.core import published
from domaingpt.report.document import Section
from domaingpt.report.format import ordered
from domaingpt.stages.evaluate.compute import comparable_loss, final_zero_shot
from domaingpt.stages.evaluate.figures import plot_zero_shot_vs_study


def zero_shot_matrix(
    zs: pd.DataFrame,
    with_ci: bool = True,
    order: list[str] | None = None,
    value: str = "loss_nats",
) -> pd.DataFrame:
    """Rows = model, columns = corpus, cells "loss [ci_low, ci_high]" (final checkpoints;
    the interval is the loss's: ``value`` other than ``loss_nats`` is shown alone)."""
    fin = final_zero_shot(zs)
    order, corpora = ordered(fin["model"], order), ordered(fin["corpus"], order)
    rows = []
    for m in order:
        row: dict[str, Any] = {"model": m}
        for c in corpora:
            hit = fin[(fin["model"] == m) & (fin["corpus"] == c)]
            if hit.empty:
                row[c] = ""
                continue
            r = hit.iloc[0]
            if with_ci and value == "loss_nats" and {"ci_low", "ci_high"} <= set(hit.columns):
                row[c] = f"{r['loss_nats']:.4f} [{r['ci_low']:.4f}, {r['ci_high']:.4f}]"
            else:
                row[c] = float(r[value])
        rows.append(row)
    return pd.DataFrame(rows)


def section(view: StageView) -> Section:
    """The matrix with intervals, the study's beside it, and the figures."""
    s = Section("cross-domain", view.stage.heading)
    tables = view.tables or {}
    if "zero_shot" not in tables:
        s.missing("evaluate wrote no zero_shot table")
    else:
        zs = tables["zero_shot"]
        if comparable_loss(zs)[0] == "bits_per_char":
            _subword_matrices(s, zs, view.corpora)
            for p in view.figures():
                s.figure(p)
            return s
        s.p(
            "Cross-entropy (nats per character) of each model's final checkpoint on each "
            "corpus's whole validation split, with a 95 % bootstrap confidence interval over "
            "windows; rows are models, columns corpora, as in the study's table."
        )
        s.table(
            zero_shot_matrix(zs, order=view.corpora),
            "This run: loss [95 % CI] of the model in each row on the corpus in each column",
            "eval/zero_shot.csv",
        )
        pub = pd.DataFrame([{"model": m, **row} for m, row in published.ZERO_SHOT.items()])
        s.table(pub, "The study's published matrix (larger models trained far longer)")
        fin = final_zero_shot(zs)
        try:
            path = plot_zero_shot_vs_study(
                fin, published.ZERO_SHOT, view.figdir / "zero_shot_vs_study.png"
            )
            s.figure(path)
        except Exception as e:  # the figure is a convenience; the tables above carry the data
            s.note(f"(comparison figure not drawn: {type(e).__name__}: {e})")
        for p in view.figures():
            s.figure(p)
    return s


def _subword_matrices(s: Section, zs: pd.DataFrame, order: list[str]) -> None:
    """A subword vocabulary's matrix: bits per character first (the unit in which
    corpora, and models with other tokenizers, compare), then the loss per token with
    its interval; the study's matrix (nats per character) is not set beside them."""
    s.p(
        "Models of this run read tokens of a subword vocabulary, so the loss per token of "
        "one model differs between corpora partly because a corpus packs more or fewer "
        "characters into a token. Bits per character (the loss summed over a split's "
        "tokens, divided by the characters they cover, in bits) compare corpora, and "
        "models with other tokenizers; the study's matrix, in nats per character of "
        "character-level models, is not set beside them."
    )
    s.table(
        zero_shot_matrix(zs, order=order, value="bits_per_char"),
        "This run: bits per character of the model in each row on the corpus in each column",
        "evaluate/zero_shot.csv",
    )
    s.table(
        zero_shot_matrix(zs, order=order),
        "This run: loss per token (nats) [95 % CI over windows]",
        "evaluate/zero_shot.csv",
    )
