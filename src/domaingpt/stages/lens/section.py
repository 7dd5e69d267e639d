"""The report's section on the logit lens."""

from __future__ import annotations

import pandas as pd

from domaingpt.context.stage import StageView
from domaingpt.report.document import Section
from domaingpt.report.format import ordered
from domaingpt.stages.lens.compute import formation_threshold


def _final(df: pd.DataFrame) -> pd.DataFrame:
    return df[df["iteration"] == df.groupby("model")["iteration"].transform("max")]


def _interval(df: pd.DataFrame, col: str) -> pd.Series:
    return df.apply(
        lambda r: f"{r[col]:.2f} [{r[f'{col}_low']:.2f}, {r[f'{col}_high']:.2f}]", axis=1
    )


def _threshold(view: StageView) -> str:
    return f"{formation_threshold(view.tables or {}):g}"


def section(view: StageView) -> Section:
    """What the lens is, each layer at the final checkpoint, formation depth along training."""
    s = Section("lens", view.stage.heading)
    s.p(
        "The logit lens reads each layer's residual stream as the model reads its last one "
        "(through the final LayerNorm and the tied head), on the same validation prompts at "
        "every history checkpoint: layer 0 is the embeddings, layer ℓ the output of block "
        "ℓ, and the last layer is the model's own prediction. The formation depth of a "
        f"prompt is the depth from which on its lens reading stays within {_threshold(view)} "
        "bits of KL of the final prediction, interpolated linearly between the last layer "
        "still above that and the next: 0 when the embeddings' reading already is within "
        "it, between k − 1 and k when block k brings it there. The threshold is fixed in "
        "bits, not a share of the embeddings' KL, which grows by orders of magnitude over "
        "training and would make the depth fall with it."
    )
    tables = view.tables or {}
    layers, formation = tables.get("layers"), tables.get("formation")
    if layers is None or layers.empty or formation is None:
        s.missing("no lens results in this run")
        return s
    order = ordered(layers["model"], view.corpora)
    final = _final(layers).copy()
    final["model"] = pd.Categorical(final["model"], order, ordered=True)
    final = final.sort_values(["model", "domain", "layer"])
    shown = final[["model", "iteration", "domain", "layer"]].copy()
    for col in ("loss_nats", "kl_bits", "top1_agreement"):
        shown[col.replace("_", " ") + " [95 % CI]"] = _interval(final, col)
    s.table(
        shown,
        "Each layer through the lens at the final checkpoint: loss of the true next "
        "character, KL to the final prediction and the share of positions whose top-1 "
        "is already the final one",
        "lens/layers.csv",
        max_rows=-1,
    )
    f = formation.copy()
    f["model"] = pd.Categorical(f["model"], order, ordered=True)
    f = f.sort_values(["model", "domain", "iteration"])
    wide = f.assign(depth=_interval(f, "depth")).pivot_table(
        index=["model", "iteration"],
        columns="domain",
        values="depth",
        aggfunc="first",
        observed=True,
    )
    wide.columns = [f"formation depth, {d}-domain [95 % CI]" for d in wide.columns]
    s.table(
        wide.reset_index(),
        "Formation depth (layers) along training",
        "lens/formation.csv",
        max_rows=-1,
    )
    s.figure(view.out / "formation.png")
    s.figure(view.out / "layers.png")
    s.note("Its claims are checked against these numbers in the Conclusions.")
    return s
