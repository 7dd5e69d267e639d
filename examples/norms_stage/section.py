"""The stage's part of the report, built from its table."""

from __future__ import annotations

from domaingpt import api


def section(view: api.StageView) -> api.Section:
    """What the measure is, the final checkpoint's norms by layer, the figure."""
    s = api.Section("norms", view.stage.heading)
    norms = (view.tables or {}).get("norms")
    s.p(
        "How large the residual stream is after each layer: the L2 norm of the stream "
        "(layer 0: the embeddings; layer ℓ: the output of block ℓ), averaged over the "
        "positions of a prompt and over the validation prompts of each corpus (in-domain: "
        "the prompt comes from the model's own corpus). This stage is not part of "
        "domaingpt: the study file added it."
    )
    if norms is None or norms.empty:
        s.missing("no residual-stream norms in this run")
        return s
    final = norms[norms["iteration"] == norms.groupby("model")["iteration"].transform("max")]
    wide = final.pivot_table(
        index=["model", "iteration", "layer"], columns="domain", values="mean_norm"
    )
    wide.columns = [f"mean norm, {d}-domain" for d in wide.columns]
    s.table(
        wide.reset_index(),
        "Mean residual-stream norm at the final checkpoint, by layer (0: the embeddings)",
        "norms/norms.csv",
    )
    s.figure(view.out / "norms.png")  # captioned where it is drawn (figures.py)
    s.note("Its claims are checked against these numbers in the Conclusions.")
    return s
