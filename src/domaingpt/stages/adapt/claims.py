"""The study's few-shot statements, checked on the adaptation tables.

Each is measured once: partial adaptation and the slow Shakespeare model by the target
loss, early vs final by the pairs' outcomes (see :func:`~domaingpt.stages.adapt.summary.outcome`)
and, with one seed per pair, by the pairs taken together.
"""

from __future__ import annotations

import pandas as pd

from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict, holds_if, unmeasured, verdict_of
from domaingpt.core.stage import Tables
from domaingpt.report.format import display
from domaingpt.stages.adapt.summary import across_pairs, outcome


def claims(tables: Tables) -> list[Claim]:
    final, summary = tables.get("final"), tables.get("summary")
    if final is None or summary is None:
        why = "no adaptation results"
        return [
            unmeasured(published.PARTIAL_ADAPTATION, why),
            unmeasured(published.EARLY_EASIER, why),
        ]
    out = _loss_claims(final, tables.get("in_domain", pd.DataFrame()))
    out.append(_early_claim(summary))
    return out


def _loss_claims(final: pd.DataFrame, in_domain: pd.DataFrame) -> list[Claim]:
    if not {"target_loss", "target_loss_step0", "start"} <= set(final.columns):
        return []
    fin = (
        final[final["start"] == "final"]
        .groupby(["source", "target"])[["target_loss", "target_loss_step0"]]
        .mean()
    )
    own = dict(zip(in_domain.get("corpus", []), in_domain.get("loss_nats", []), strict=True))
    flags, ev = [], []
    for (src, tgt), r in fin.iterrows():
        better = r["target_loss"] < r["target_loss_step0"]
        gap = own.get(tgt)
        flags.append(bool(better and (gap is None or r["target_loss"] > gap)))
        tail = f", in-domain model {gap:.2f}" if gap is not None else ""
        ev.append(
            f"{display(src)} → {display(tgt)}: {r['target_loss_step0']:.2f} → "
            f"{r['target_loss']:.2f}{tail}"
        )
    out = [
        Claim(
            f"{published.PARTIAL_ADAPTATION}: the target loss falls, but stays above the "
            "in-domain model's",
            verdict_of(flags),
            "; ".join(ev) or "no final-start runs",
            "final starts",
        )
    ]
    drops = (fin["target_loss_step0"] - fin["target_loss"]).groupby(level="source").mean()
    if "shakespeare" in drops.index and len(drops) >= 2:
        out.append(
            Claim(
                published.SHAKESPEARE_SLOW,
                holds_if(drops.idxmin() == "shakespeare"),
                "mean fall of the target loss over the adaptation: "
                + ", ".join(f"{display(m)} model {v:.2f}" for m, v in drops.items()),
                "final starts",
                {f"drop_{m}": float(v) for m, v in drops.items()},
            )
        )
    return out


def _early_claim(summary: pd.DataFrame) -> Claim:
    rows = summary.to_dict("records")
    outcomes = [outcome(r) for r in rows]
    early = outcomes.count("early")
    final_better = outcomes.count("final")
    unclear = outcomes.count("unclear")
    conclusive = early + final_better + unclear
    pooled = across_pairs(summary)
    if conclusive:
        verdict = (
            Verdict.HOLDS
            if early == conclusive
            else (Verdict.FAILS if early == 0 else Verdict.PARTLY)
        )
        evidence = (
            f"early start better in {early}, final start better in {final_better}, "
            f"no clear difference in {unclear} of {conclusive} pairs (adapt/summary.csv)"
        )
    elif pooled is None:
        verdict = Verdict.UNMEASURED
        evidence = f"{len(rows)} pairs, none with a spread across seeds (run adapt with seeds >= 2)"
    else:  # one seed per pair: the pairs are the replicates
        significant = pooled["sign_p"] < 0.05
        early_wins = pooled["early_better"] > pooled["final_better"]
        verdict = holds_if(bool(significant and early_wins))
        evidence = "no pair has a spread across seeds, so the pairs are the replicates"
    numbers: dict = {"early_better": early, "final_better": final_better, "unclear": unclear}
    if pooled is not None:
        numbers.update(pooled)
        evidence += (
            f"; over all {pooled['n_pairs']} pairs the early start ends lower in "
            f"{pooled['early_better']} and the final start in {pooled['final_better']}, "
            f"mean Δ early − final {pooled['mean_delta']:+.3f} nats (95 % CI "
            f"{pooled['ci_low']:+.3f} to {pooled['ci_high']:+.3f}), sign test "
            f"p = {pooled['sign_p']:.3g}"
        )
    return Claim(published.EARLY_EASIER, verdict, evidence, "every pair", numbers)
