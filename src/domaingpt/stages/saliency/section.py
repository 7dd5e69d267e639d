"""The report's section on gradient-based interpretability (the study's Part 4)."""

from __future__ import annotations

import pandas as pd

from domaingpt.context.stage import StageView
from domaingpt.report.document import Section, figures_and_heatmap
from domaingpt.report.format import ordered


def _final_rows(
    df: pd.DataFrame, method: str = "grad_norm", domain: str | None = "in"
) -> pd.DataFrame:
    """Rows of each model's last iteration for one method (and domain)."""
    d = df[df["method"] == method] if "method" in df.columns else df
    if domain is not None and "domain" in d.columns:
        d = d[d["domain"] == domain]
    if "iteration" in d.columns and not d.empty:
        last = d.groupby("model")["iteration"].transform("max")
        d = d[d["iteration"] == last]
    return d


def _final_by_model(df: pd.DataFrame, columns: str, order: list[str]) -> pd.DataFrame:
    """Mean magnitude of each model's final rows (grad_norm, in-domain) by ``columns``,
    one row per model in the study's order."""
    wide = _final_rows(df).pivot_table(index="model", columns=columns, values="mean_magnitude")
    return wide.reindex(ordered(wide.index, order))


def _answers(s: Section, tables: dict[str, pd.DataFrame], order: list[str]) -> None:
    """Zero- vs few-shot answered, and the agreement of each method with occlusion."""
    zp = tables.get("zero_few_prompts")
    if zp is not None and not zp.empty:
        g = zp[zp["method"] == "grad_norm"]
        cols = ["rho_zero_few", "rho_zero_own", "rho_few_own"]
        answer = g.groupby(["source", "target", "start"], sort=False)[cols].mean().reset_index()
        answer.columns = [
            "source",
            "target",
            "start",
            "ρ zero vs few",
            "ρ zero vs target's model",
            "ρ few vs target's model",
        ]
        s.table(
            answer,
            "Zero- vs few-shot, answered: Spearman correlation of the gradient-norm "
            "attributions of the same target prompts before and after adaptation, and with "
            "the target domain's own model (mean over prompts and seeds)",
            "saliency/zero_few_prompts.csv",
        )
    ag = tables.get("agreement")
    if ag is not None and not ag.empty:
        a = ag[ag["domain"] == "in"]
        wide = a.pivot_table(
            index=["model", "iteration"], columns=["baseline", "method"], values="spearman"
        )
        wide.columns = [f"{m} ({b})" for b, m in wide.columns]
        s.table(
            wide.reindex(ordered(wide.index.get_level_values(0), order), level=0).reset_index(),
            "Agreement with occlusion: Spearman correlation of each method's ranking of a "
            "prompt's characters with occlusion's (<unk> or a space as the replacement; "
            "the gradient norm against |occlusion|), in-domain prompts, mean over prompts",
            "saliency/agreement.csv",
        )


def section(view: StageView) -> Section:
    """Attributions by class, by position, along training, zero- vs few-shot, faithfulness."""
    s = Section("interpretability", view.stage.heading)
    tables = view.tables or {}
    s.p(
        "Attribution of log p(true next character) to each input character, by the study's "
        "method (the L2 norm of the gradient with respect to the input embedding) and by "
        "input × gradient and integrated gradients; aggregated by character class, by position "
        "relative to the target, along training, zero- vs few-shot; a deletion test of "
        "how faithful each method is; and occlusion (each character replaced in turn, the drop "
        "in log p(true)) as the reference the gradient methods are checked against."
    )
    order = view.corpora
    bc = tables.get("by_class")
    if bc is not None and not bc.empty:
        s.table(
            _final_by_model(bc, "char_class", order).reset_index(),
            "Mean gradient norm per character, by class (final checkpoint, in-domain prompts)",
            "saliency/by_class.csv",
        )
    rp = tables.get("by_relpos")
    if rp is not None and not rp.empty:
        s.table(
            _final_by_model(rp, "relpos", order).reset_index(),
            "Mean gradient norm per character, by position relative to the target "
            "(final checkpoint, in-domain prompts)",
            "saliency/by_relpos.csv",
        )
    ck = tables.get("by_checkpoint")
    if ck is not None and not ck.empty:
        d = ck[(ck["method"] == "grad_norm") & (ck["domain"] == "in")]
        cols = [
            c for c in ("model", "iteration", "total_magnitude_mean", "log_p_true_mean") if c in d
        ]
        s.table(
            d[cols],
            "Total gradient norm per prompt along training (in-domain prompts)",
            "saliency/by_checkpoint.csv",
        )
    zf = tables.get("zero_few")
    if zf is not None and not zf.empty:
        t = zf[(zf["group_kind"] == "total") & (zf["method"] == "grad_norm")]
        if not t.empty:
            wide = t.pivot_table(
                index=["source", "target", "start"],
                columns="stage",
                values=["mean_magnitude", "log_p_true_mean"],
            )
            wide.columns = [f"{a} {b}".replace("_", " ") for a, b in wide.columns]
            s.table(
                wide.reset_index(),
                "Zero- vs few-shot: the same target-corpus prompts through the source model "
                "before and after adaptation (gradient norm, mean over seeds)",
                "saliency/zero_few.csv",
            )
    _answers(s, tables, order)
    ver = tables.get("verdicts")
    if ver is not None and not ver.empty:
        s.table(
            ver,
            "Faithfulness (deletion test): deleting the top-k attributed characters vs k "
            "random ones; faithful when the extra drop in log p(true) has a 95 % CI above zero",
            "saliency/verdicts.csv",
        )
    figures_and_heatmap(s, view.out)
    s.note("The study's Part 4 claims are checked against these numbers in the Conclusions.")
    return s
