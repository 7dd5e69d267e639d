"""The study's few-shot statements, checked on the adaptation tables.

Partial adaptation and the slow Shakespeare model are read from the target losses of
the final starts; early vs final from the source models as the independent units (see
:func:`~domaingpt.stages.adapt.summary.across_sources`): the pairs that share a source
model share its two start checkpoints, so they are not independent.

Effects (positive supports the claim, zero is its null; nats): the smallest margin over
the pairs of partial adaptation; the smallest fall of another source's target loss above
Shakespeare's; the mean over source models of final − early target loss.
"""

from __future__ import annotations

import pandas as pd

from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict, display, holds_if, unmeasured, verdict_of
from domaingpt.stages.adapt.summary import across_sources, outcome

#: The sign-flip test's p below which the early-vs-final difference is shown.
ALPHA = 0.05


def claims(tables: Tables) -> list[Claim]:
    final, summary = tables.get("final"), tables.get("summary")
    if final is None or summary is None:
        why = "no adaptation results"
        return [
            unmeasured(published.PARTIAL_ADAPTATION, why),
            unmeasured(published.EARLY_EASIER, why),
        ]
    out = _loss_claims(final, tables.get("in_domain", pd.DataFrame()))
    out.append(_early_claim(summary, final))
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
    flags, ev, margins = [], [], []
    for (src, tgt), r in fin.iterrows():
        better = r["target_loss"] < r["target_loss_step0"]
        gap = own.get(tgt)
        flags.append(bool(better and (gap is None or r["target_loss"] > gap)))
        # the fall, and the distance above the in-domain model: both positive when it holds
        fall = r["target_loss_step0"] - r["target_loss"]
        margins.append(min(fall, r["target_loss"] - gap) if gap is not None else fall)
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
            {"smallest_margin": min(margins)} if margins else {},
            effect=min(margins) if margins else None,
        )
    ]
    drops = (fin["target_loss_step0"] - fin["target_loss"]).groupby(level="source").mean()
    if "shakespeare" in drops.index and len(drops) >= 2:
        # how much less Shakespeare's target loss falls than the next slowest source's
        slower_by = float(drops.drop("shakespeare").min() - drops["shakespeare"])
        out.append(
            Claim(
                published.SHAKESPEARE_SLOW,
                holds_if(drops.idxmin() == "shakespeare"),
                "mean fall of the target loss over the adaptation: "
                + ", ".join(f"{display(m)} model {v:.2f}" for m, v in drops.items()),
                "final starts",
                {f"drop_{m}": float(v) for m, v in drops.items()} | {"slower_by": slower_by},
                effect=slower_by,
            )
        )
    return out


def _pretraining(final: pd.DataFrame) -> tuple[str, dict[str, float]]:
    """What the two starts had behind them: their iterations and the source-corpus loss
    there (the pretraining loss), per source model, in words and as numbers."""
    need = {"source", "start", "source_iteration", "source_loss_step0"}
    if final is None or not need <= set(final.columns):
        return "", {}
    parts, numbers = [], {}
    starts = final[final["start"].isin(["early", "final"])]
    by = starts.groupby(["source", "start"], sort=False)[["source_iteration", "source_loss_step0"]]
    means = by.mean()
    for src in dict.fromkeys(starts["source"]):
        if (src, "early") not in means.index or (src, "final") not in means.index:
            continue
        e, f = means.loc[(src, "early")], means.loc[(src, "final")]
        parts.append(
            f"{display(src)} iteration {e['source_iteration']:.0f} vs {f['source_iteration']:.0f}, "
            f"pretraining loss {e['source_loss_step0']:.2f} vs {f['source_loss_step0']:.2f}"
        )
        numbers.update(
            {
                f"early_iteration_{src}": float(e["source_iteration"]),
                f"final_iteration_{src}": float(f["source_iteration"]),
                f"early_pretraining_loss_{src}": float(e["source_loss_step0"]),
                f"final_pretraining_loss_{src}": float(f["source_loss_step0"]),
            }
        )
    if not parts:
        return "", {}
    text = (
        "; the early start also has less pretraining (early vs final start: "
        + "; ".join(parts)
        + "), so the comparison confounds the training stage with the amount of "
        "pretraining. It cannot be made at equal pretraining loss in this design: both "
        "starts are checkpoints of one training run of the source model, whose loss falls "
        "with the iterations, so at equal pretraining loss they are the same checkpoint "
        "(that comparison needs a second, shorter training run of each source ending at "
        "the early checkpoint's loss)"
    )
    return text, numbers


def _early_claim(summary: pd.DataFrame, final: pd.DataFrame | None = None) -> Claim:
    """:data:`published.EARLY_EASIER`, over the source models (the independent units):
    holds when the mean final − early target loss is positive and the exact sign-flip
    test over the sources gives p < :data:`ALPHA`; partly when every source's difference
    is positive but not significantly so; does not hold otherwise. With three source
    models the smallest possible p is 0.25: one replicate alone cannot show it, the
    replicates together can (their effects are combined)."""
    rows = summary.to_dict("records")
    outcomes = [outcome(r) for r in rows]
    counts = {k: outcomes.count(k) for k in ("early", "final", "unclear")}
    pooled = across_sources(summary)
    pretraining, pre_numbers = _pretraining(final)
    numbers: dict = {
        "early_better_pairs": counts["early"],
        "final_better_pairs": counts["final"],
        "unclear_pairs": counts["unclear"],
        **pre_numbers,
    }
    if pooled is None:
        return Claim(
            published.EARLY_EASIER,
            Verdict.UNMEASURED,
            f"{len(rows)} pairs: fewer than 2 source models with both an early and a final "
            "start (the source model is the independent unit)" + pretraining,
            "source models",
            numbers,
        )
    effect = pooled["mean_final_minus_early"]
    numbers.update(pooled)
    if effect > 0 and pooled["permutation_p"] < ALPHA:
        verdict = Verdict.HOLDS
    elif pooled["early_better"] == pooled["n_sources"]:
        verdict = Verdict.PARTLY
    else:
        verdict = Verdict.FAILS
    per = ", ".join(
        f"{display(k.removeprefix('final_minus_early_'))} {v:+.3f}"
        for k, v in pooled.items()
        if k.startswith("final_minus_early_")
    )
    seeded = sum(counts.values())
    pairs = (
        f"; per pair (over seeds): early start better in {counts['early']}, final start "
        f"better in {counts['final']}, no clear difference in {counts['unclear']} of "
        f"{seeded} pairs"
        if seeded
        else ""
    )
    evidence = (
        f"final − early target loss per source model, averaged over its targets and seeds "
        f"(positive: the early start ends lower): {per}; mean {effect:+.3f} nats over "
        f"{pooled['n_sources']} source models (Student-t 95 % CI {pooled['ci_low']:+.3f} to "
        f"{pooled['ci_high']:+.3f}), exact sign-flip permutation p = "
        f"{pooled['permutation_p']:.3g}, sign test p = {pooled['sign_p']:.3g} (adapt/summary.csv)"
        + pairs
        + pretraining
    )
    return Claim(published.EARLY_EASIER, verdict, evidence, "source models", numbers, effect=effect)
