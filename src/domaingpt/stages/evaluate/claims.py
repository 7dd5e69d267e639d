"""The study's zero-shot statements, checked on the zero-shot table.

Effects (positive supports the claim, zero is its null; nats): per model (or corpus) the
margin by which its own cell beats the best other one, and the smallest margin over them,
since each claim is made of every model ("each model's ..."), as the verdict is.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, display, unmeasured, verdict_of
from domaingpt.stages.evaluate.compute import comparable_loss, final_zero_shot


def _own_is_lowest(
    loss: pd.DataFrame, names: list[str], evidence: Callable[[str, str, pd.Series], str]
) -> tuple[list[bool], list[str], float | None]:
    """For each name, whether the lowest loss of column ``loss[name]`` is at its own row,
    and the evidence ``evidence(name, lowest, column)``; and the smallest margin over the
    names of the lowest other row's loss above the own row's (negative: another is lower)."""
    flags, ev, margins = [], [], []
    for name in names:
        col = loss[name].dropna()
        best = col.idxmin()
        flags.append(best == name)
        ev.append(evidence(name, best, col))
        others = col.drop(name)
        if not others.empty:
            margins.append(float(others.min() - col[name]))
    return flags, ev, (min(margins) if margins else None)


def claims(tables: Tables) -> list[Claim]:
    """Own corpus lowest, own model best, and the study's hardest foreign corpus."""
    if "zero_shot" not in tables or tables["zero_shot"].empty:
        return [unmeasured(published.OWN_CORPUS_LOWEST, "no zero-shot matrix")]
    fin = final_zero_shot(tables["zero_shot"])
    column, _ = comparable_loss(fin)
    loss = fin.pivot_table(index="model", columns="corpus", values=column)
    models = [m for m in study_order(loss.index) if m in loss.columns]
    scope = ", ".join(display(m) for m in models)
    out = []
    flags, ev, margin = _own_is_lowest(
        loss.T,
        models,
        lambda m, best, row: (
            f"{display(m)} model: own {row[m]:.2f}, best {display(best)} {row[best]:.2f}"
        ),
    )
    out.append(
        Claim(
            published.OWN_CORPUS_LOWEST,
            verdict_of(flags),
            "; ".join(ev) or "no in-domain pair",
            scope,
            {f"own_{m}": float(loss.loc[m, m]) for m in models}
            | ({} if margin is None else {"smallest_margin": margin}),
            effect=margin,
        )
    )
    flags, ev, margin = _own_is_lowest(
        loss,
        models,
        lambda c, best, col: (
            f"{display(c)}: own model {col[c]:.2f}, best {display(best)} model {col[best]:.2f}"
        ),
    )
    out.append(
        Claim(
            published.OWN_MODEL_BEST,
            verdict_of(flags),
            "; ".join(ev) or "no in-domain pair",
            scope,
            {} if margin is None else {"smallest_margin": margin},
            effect=margin,
        )
    )
    flags, ev, margins = [], [], []
    for m, row in published.ZERO_SHOT.items():
        if m not in loss.index:
            continue
        foreign = [c for c in row if c != m and c in loss.columns]
        if len(foreign) < 2:
            continue
        theirs = max(foreign, key=lambda c: row[c])
        ours_row = loss.loc[m, foreign].dropna()
        if ours_row.empty:
            continue
        ours = ours_row.idxmax()
        flags.append(ours == theirs)
        # the study's hardest corpus above the hardest of the others (negative: not ours)
        rest = ours_row.drop(theirs, errors="ignore")
        if theirs in ours_row and not rest.empty:
            margins.append(float(ours_row[theirs] - rest.max()))
        ev.append(
            f"{display(m)} model: hardest {display(ours)} ({ours_row[ours]:.2f}); study: {display(theirs)}"
        )
    out.append(
        Claim(
            published.HARDEST_FOREIGN,
            verdict_of(flags),
            "; ".join(ev) or "needs the three built-in corpora",
            ", ".join(display(c) for c in published.CORPORA),
            {"smallest_margin": min(margins)} if margins else {},
            effect=min(margins) if margins else None,
        )
    )
    return out
