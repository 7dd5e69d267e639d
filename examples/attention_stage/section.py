"""The stage's part of the report, built from its table."""

from __future__ import annotations

from domaingpt.core.stage import StageView
from domaingpt.report.document import Section


def section(view: StageView) -> Section:
    """What the measure is, the final checkpoint's distances by head, the figure."""
    s = Section("attention", view.stage.heading)
    distance = (view.tables or {}).get("distance")
    s.p(
        "How far back each attention head looks: for a query at position i, the mean "
        "distance Σ_j p_ij·(i − j) in characters, averaged over the query positions of a "
        "prompt and over the validation prompts of each corpus (in-domain: the prompt comes "
        "from the model's own corpus). A head attending uniformly scores (L − 1)/4 for "
        "prompts of L characters; one that looks only at the current character scores 0. "
        "This stage is not part of domaingpt: the study file added it."
    )
    if distance is None or distance.empty:
        s.missing("no attention distances in this run")
        return s
    final = distance[
        distance["iteration"] == distance.groupby("model")["iteration"].transform("max")
    ]
    wide = final.pivot_table(
        index=["model", "iteration", "layer", "head"], columns="domain", values="mean_distance"
    )
    wide.columns = [f"mean distance, {d}-domain" for d in wide.columns]
    length = int(distance["length"].max())
    s.table(
        wide.reset_index(),
        f"Mean attention distance (characters) at the final checkpoint, prompts of {length} "
        f"characters (uniform attention: {(length - 1) / 4:.2f})",
        "attention/distance.csv",
    )
    s.figure(
        view.out / "distance.png", "Mean attention distance along training, per layer and head"
    )
    s.note("Its claims are checked against these numbers in the Conclusions.")
    return s
