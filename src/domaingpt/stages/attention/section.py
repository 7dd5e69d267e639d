"""The report's section on attention along training."""

from __future__ import annotations

import pandas as pd

from domaingpt.context.activations import WORD_GROUPS
from domaingpt.context.stage import StageView
from domaingpt.report.document import Section
from domaingpt.report.format import ordered


def section(view: StageView) -> Section:
    """The measures, each head at the final checkpoint, the figures."""
    s = Section("attention", view.stage.heading)
    s.p(
        "Per layer and head, on the validation prompts at every history checkpoint: the "
        "entropy of the attention weights (bits), how far back they look (characters), and "
        "the share of attention on the query's current word, the whitespace before it, the "
        "previous word and further back, against the share uniform attention over the "
        "visible characters would give (chance). A head that reads the previous word more "
        "than chance is a mechanism for the study's stronger gradients on the previous word."
    )
    heads = (view.tables or {}).get("heads")
    if heads is None or heads.empty:
        s.missing("no attention results in this run")
        return s
    final = heads[heads["iteration"] == heads.groupby("model")["iteration"].transform("max")]
    final = final[final["domain"] == "in"].copy()
    final["model"] = pd.Categorical(
        final["model"], ordered(final["model"], view.corpora), ordered=True
    )
    final = final.sort_values(["model", "layer", "head"])
    cols = ["model", "iteration", "layer", "head", "entropy_bits", "distance"]
    shown = final[cols].copy()
    for g in WORD_GROUPS:
        shown[f"{g.replace('_', ' ')} (chance)"] = [
            f"{a:.3f} ({b:.3f})"
            for a, b in zip(final[f"share_{g}"], final[f"chance_{g}"], strict=True)
        ]
    s.table(
        shown,
        "Each head at the final checkpoint, in-domain prompts: entropy, mean distance and "
        "the share of attention on each word group (uniform attention's share in brackets)",
        "attention/heads.csv",
        max_rows=-1,
    )
    s.figure(view.out / "heads.png")
    s.figure(view.out / "training.png")
    s.note("Its claims are checked against these numbers in the Conclusions.")
    return s
