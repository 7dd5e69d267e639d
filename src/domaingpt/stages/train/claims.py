"""The study's statements about training, checked on the training summary.

Effects (positive supports the claim, zero is its null; see :class:`Claim`): the
smallest fall of the val loss over the models ("every model"), and nanoGPT's val loss
minus the Shakespeare model's (a claim about that one model, listed per replicate).
"""

from __future__ import annotations

import pandas as pd

from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, display, holds_if, unmeasured, verdict_of


def claims(tables: Tables) -> list[Claim]:
    """Loss falls for every model; the Shakespeare model against nanoGPT's CPU recipe."""
    summary = tables.get("summary", pd.DataFrame())
    if summary.empty:
        return [unmeasured(published.LOSS_DECREASES, "no trained model")]
    flags, ev, numbers, falls = [], [], {}, []
    for r in summary.to_dict("records"):
        a, b = r["initial_val_loss"], r["final_val_loss"]
        if a is None or b is None or pd.isna(a) or pd.isna(b):
            continue
        flags.append(b < a)
        falls.append(a - b)
        ev.append(
            f"{display(r['model'])}: {a:.2f} → {b:.2f} nats between iterations 0 and "
            f"{r['iterations']}"
        )
        numbers[f"initial_{r['model']}"], numbers[f"final_{r['model']}"] = a, b
    # "every model": the weakest model's fall decides, as the verdict does
    smallest_fall = min(falls) if falls else None
    if smallest_fall is not None:
        numbers["smallest_fall"] = smallest_fall
    out = [
        Claim(
            published.LOSS_DECREASES,
            verdict_of(flags),
            "; ".join(ev) or "no losses",
            ", ".join(display(m) for m in summary["model"]),
            numbers,
            effect=smallest_fall,
        )
    ]
    sh = summary[summary["model"] == "shakespeare"]
    if not sh.empty:
        v = float(sh["final_val_loss"].iloc[0])
        margin = published.NANOGPT_CPU_VAL_LOSS - v
        out.append(
            Claim(
                published.BEATS_NANOGPT,
                holds_if(v < published.NANOGPT_CPU_VAL_LOSS),
                f"Shakespeare val loss {v:.4f} after {int(sh['iterations'].iloc[0])} iterations",
                "Shakespeare",
                {
                    "val_loss": v,
                    "nanogpt_val_loss": published.NANOGPT_CPU_VAL_LOSS,
                    "margin": margin,
                },
                effect=margin,
                per_model=True,
            )
        )
    return out
