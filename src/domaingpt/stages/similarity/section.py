"""The report's section on representation similarity."""

from __future__ import annotations

import pandas as pd

from domaingpt.context.stage import StageView
from domaingpt.report.document import Section


def _interval(df: pd.DataFrame) -> pd.Series:
    return df.apply(lambda r: f"{r['cka']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]", axis=1)


def section(view: StageView) -> Section:
    """The estimator, hardening along training, domains and adaptation, the figures."""
    s = Section("similarity", view.stage.heading)
    s.p(
        "Linear CKA of each layer's residual stream (layer 0: the embeddings; layer ℓ: the "
        "output of block ℓ) on the same validation prompts, with the debiased estimator "
        "(unbiased HSIC, so independent representations score 0 whatever the number of "
        "tokens), on every 4th position of each prompt; intervals are 95 % jackknife "
        "intervals leaving one prompt out. 1 means the same representation up to rotation "
        "and scale."
    )
    tables = view.tables or {}
    cka = tables.get("cka")
    if cka is None or cka.empty:
        s.missing("no similarity results in this run")
        return s
    hard = tables.get("hardening")
    if hard is not None and not hard.empty:
        wide = hard.pivot_table(index="model", columns="layer", values="hardened_at", sort=False)
        wide.columns = [f"layer {int(c)}" for c in wide.columns]
        threshold = float(hard["threshold"].iloc[0])
        s.table(
            wide.reset_index(),
            f"Iteration after which consecutive checkpoints keep a CKA of {threshold:g} or "
            "more, per layer (empty: not by the last checkpoint)",
            "similarity/hardening.csv",
        )
    s.figure(view.out / "training.png")
    across = cka[cka["kind"] != "training"].copy()
    if not across.empty:
        across["CKA [95 % CI]"] = _interval(across)
        # each comparison at its last layer (models of two depths: the shallower one's)
        last = across.groupby("comparison")["layer"].transform("max")
        shown = across[across["layer"] == last]
        where = (
            f"at layer {int(last.iloc[0])}" if last.nunique() == 1 else "at the last layer of each"
        )
        cols = ["kind", "model_a", "iteration_a", "model_b", "start", "seed", "prompts"]
        s.table(
            shown[[*cols, "CKA [95 % CI]"]],
            f"Domain models against each other, and each source model (at the checkpoint "
            f"its adaptation started from) against its adapted version, {where}",
            "similarity/cka.csv",
            max_rows=-1,
        )
        s.figure(view.out / "across.png")
    s.note("Its claims are checked against these numbers in the Conclusions.")
    return s
