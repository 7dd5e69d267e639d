"""The report's section on the softmax output layer (the study's Part 3)."""

from __future__ import annotations

from domaingpt.context.stage import StageView
from domaingpt.report.document import Section, figures_and_heatmap
from domaingpt.report.format import by_model_and_iteration


def section(view: StageView) -> Section:
    """Entropy and p(true) by checkpoint, hardening, over-predicted characters, figures."""
    s = Section("softmax", view.stage.heading)
    tables = view.tables or {}
    s.p(
        "The next-character distribution of every model at every history checkpoint, on "
        "prompts drawn from every corpus's validation split (in-domain: the prompt comes from "
        "the model's own corpus): entropy in bits, the probability of the true next "
        "character, where the distributions harden, and which characters are over-predicted "
        "out of domain."
    )
    order = view.corpora
    sm = tables.get("summary")
    if sm is not None and not sm.empty:
        wide = sm.pivot_table(
            index=["model", "iteration"], columns="domain", values=["entropy_mean", "p_true_mean"]
        )
        wide.columns = [
            f"{'entropy (bits)' if v == 'entropy_mean' else 'p(true)'} {d}-domain"
            for v, d in wide.columns
        ]
        s.table(
            by_model_and_iteration(wide.reset_index(), order),
            "Mean entropy and p(true) at the last position of the prompts, by checkpoint",
            "softmax/summary.csv",
        )
    hard = tables.get("hardening")
    if hard is not None and not hard.empty:
        cols = [
            c
            for c in (
                "model",
                "domain",
                "hardening_iteration",
                "reached",
                "final_iteration",
                "last_js_bits",
                "p_true_settled_iteration",
            )
            if c in hard.columns
        ]
        eps = hard["epsilon"].iloc[0] if "epsilon" in hard.columns else None
        s.table(
            hard[cols],
            "Where probabilities harden: the first iteration from which the mean Jensen–Shannon "
            f"divergence between consecutive checkpoints stays below {eps} bits",
            "softmax/hardening.csv",
        )
    over = tables.get("overpredicted")
    if over is not None and not over.empty:
        top = over[over["rank"] <= 5] if "rank" in over.columns else over
        cols = [c for c in ("model", "label", "mean_prob", "corpus_freq", "excess") if c in top]
        s.table(
            top[cols],
            "Most over-predicted characters on out-of-domain prompts (final checkpoint): mean "
            "predicted probability minus the character's frequency in the prompts' corpus",
            "softmax/overpredicted.csv",
        )
    figures_and_heatmap(s, view.out)
    s.note("The study's Part 3 claims are checked against these numbers in the Conclusions.")
    return s
