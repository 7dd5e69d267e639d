"""Few-shot adaptation, summarized: per pair, the final target loss of each start point
over seeds, early − final paired by seed, and which start adapts better; over the run,
the same question with the source models as the independent units (``summary.csv`` and
``summary.md``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from domaingpt.core.statistics import mean_ci, sign_test
from domaingpt.stages.adapt.settings import START_POINTS, AdaptSettings


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: final target loss per start (mean ± std over seeds), early − final
    paired by seed (mean ± std), forgetting, and the verdict."""
    rows = []
    for (source, target), g in final.groupby(["source", "target"], sort=False):
        row: dict[str, Any] = {"source": source, "target": target}
        by_start = {s: g[g["start"] == s].set_index("seed") for s in START_POINTS}
        row["n_seeds"] = int(g["seed"].nunique())
        for start, part in by_start.items():
            vals = part["target_loss"]
            row[f"{start}_iteration"] = (
                int(part["source_iteration"].iloc[0])
                if len(part) and pd.notna(part["source_iteration"].iloc[0])
                else None
            )
            row[f"{start}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{start}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"forgetting_{start}"] = float(part["forgetting"].mean()) if len(part) else math.nan
        seeds = by_start["early"].index.intersection(by_start["final"].index)
        delta = (
            by_start["early"].loc[seeds, "target_loss"]
            - by_start["final"].loc[seeds, "target_loss"]
        )
        row["n_paired"] = len(delta)
        row["delta_early_minus_final"] = float(delta.mean()) if len(delta) else math.nan
        row["delta_spread"] = float(delta.std(ddof=1)) if len(delta) > 1 else math.nan
        row["outcome"] = outcome(row)
        row["verdict"] = verdict(row)
        rows.append(row)
    return pd.DataFrame(rows)


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.3f}".replace("-", "−")


#: Up to this many source models the sign-flip test enumerates every flip (2^n, exact);
#: beyond, it draws :data:`FLIP_DRAWS` random flips (seeded).
EXACT_FLIPS = 16
FLIP_DRAWS = 65536


def sign_flip_p(values: np.ndarray, *, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p-value of ``mean(values) = 0``: the share of the
    2^n sign assignments whose mean is at least as far from zero as the observed one
    (the observed included). Under the null each unit's difference is as likely to have
    either sign, so the test needs no distribution; the smallest p it can give is
    2 / 2^n (0.25 for 3 units). Exact up to :data:`EXACT_FLIPS` units, else a seeded
    Monte Carlo estimate ((hits + 1) / (draws + 1))."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return 1.0
    observed = abs(v.mean())
    if n <= EXACT_FLIPS:
        bits = (np.arange(2**n)[:, None] >> np.arange(n)[None, :]) & 1
        means = np.abs(((1 - 2 * bits) * v).mean(axis=1))
        # a tolerance, so a flip whose mean equals the observed one by symmetry counts
        return float((means >= observed - 1e-12 * max(1.0, observed)).mean())
    rng = np.random.default_rng(seed)
    signs = rng.choice(np.array([-1.0, 1.0]), size=(FLIP_DRAWS, n))
    hits = int((np.abs((signs * v).mean(axis=1)) >= observed - 1e-12 * max(1.0, observed)).sum())
    return (hits + 1) / (FLIP_DRAWS + 1)


def per_source(summary: pd.DataFrame) -> pd.Series:
    """Per source model, final − early target loss (nats) averaged over its targets (each
    pair's Δ is already the mean over its paired seeds): positive when the early start
    ends lower. Within one trained model per corpus the source model is the independent
    unit: the pairs that share a source share its two start checkpoints."""
    if not {"source", "delta_early_minus_final"} <= set(summary.columns):
        return pd.Series(dtype=float)
    d = pd.to_numeric(summary["delta_early_minus_final"], errors="coerce")
    d = (-d).groupby(summary["source"], sort=False).mean().dropna()
    return d.astype(float)


def across_sources(summary: pd.DataFrame) -> dict[str, float] | None:
    """Early vs final start over the run, the source models as the units: per source the
    final − early target loss averaged over its targets and seeds (:func:`per_source`),
    then over the sources their mean, its Student-t 95 % interval, the exact sign-flip
    permutation p (:func:`sign_flip_p`) and the exact sign test. ``None`` below 2 sources.
    """
    d = per_source(summary)
    if len(d) < 2:
        return None
    values = d.to_numpy()
    ci = mean_ci(values)
    early_better, final_better = int((values > 0).sum()), int((values < 0).sum())
    return {
        "n_sources": len(values),
        "n_pairs": int(
            pd.to_numeric(summary["delta_early_minus_final"], errors="coerce").notna().sum()
        ),
        "early_better": early_better,
        "final_better": final_better,
        "mean_final_minus_early": ci["mean"],
        "ci_low": ci["ci_low"],
        "ci_high": ci["ci_high"],
        "permutation_p": sign_flip_p(values),
        "sign_p": sign_test(early_better, final_better),
        **{f"final_minus_early_{src}": float(v) for src, v in d.items()},
    }


def outcome(row: dict[str, Any]) -> str:
    """Which start adapts better for one pair, from its numbers: ``early``, ``final``,
    ``unclear`` (|Δ| below twice its spread over seeds), ``one_seed`` (no spread to judge
    by) or ``none`` (no paired runs)."""
    delta, spread, n = row["delta_early_minus_final"], row["delta_spread"], row["n_paired"]
    if not n or delta is None or math.isnan(delta):
        return "none"
    if n == 1:
        return "one_seed"
    if delta == 0 or abs(delta) < 2 * spread:
        return "unclear"
    return "early" if delta < 0 else "final"


def verdict(row: dict[str, Any]) -> str:
    """A one-line answer to "does partial training make adaptation easier?" for one pair,
    from its numbers: a difference smaller than twice its spread across seeds is none."""
    early, final = row.get("early_mean", math.nan), row.get("final_mean", math.nan)
    delta, spread, n = row["delta_early_minus_final"], row["delta_spread"], row["n_paired"]
    scratch = row.get("scratch_mean", math.nan)
    tail = f"; scratch {scratch:.2f}" if not math.isnan(scratch) else ""
    if n == 0 or math.isnan(delta):
        if math.isnan(early) or math.isnan(final):
            return "no comparison: run both the early and the final start" + tail
        return "no comparison: early and final runs share no seed" + tail
    if n == 1:
        head = "early start ends lower" if delta < 0 else "final start ends lower"
        if delta == 0:
            head = "no difference"
        return (
            f"{head}: {early:.2f} vs {final:.2f} (Δ {_signed(delta)}, one seed: "
            f"no spread, not conclusive){tail}"
        )
    if delta == 0 or abs(delta) < 2 * spread:
        head = "no clear difference"
    elif delta < 0:
        head = "early start adapts better"
    else:
        head = "final start adapts better"
    return f"{head}: {early:.2f} vs {final:.2f} (Δ {_signed(delta)} ± {spread:.3f} over {n} seeds){tail}"


def summary_markdown(summary: pd.DataFrame, settings: AdaptSettings) -> str:
    def cell(mean: float, std: float) -> str:
        if math.isnan(mean):
            return "–"
        return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")

    def it(value: Any) -> str:
        return (
            ""
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(int(value))
        )

    where = (
        f"{settings.final_windows} windows spread over the validation split"
        if settings.final_windows
        else "the whole validation split"
    )
    lines = [
        "# Few-shot adaptation",
        "",
        f"Each source model trained {settings.iters} more iterations on the target corpus "
        f"from its final checkpoint, from an early one, and from scratch (same shape, fresh "
        f"weights), over {settings.seeds} seed(s). Losses: target-corpus cross-entropy "
        f"(nats per character) on {where} after the last step, mean ± "
        "standard deviation over seeds. Δ: early − final, paired by seed (same batches), "
        "± its standard deviation; a Δ smaller than twice that spread counts as no clear "
        "difference. Forgetting: rise of the source-corpus loss over the adaptation.",
        "",
        "| source → target | final (iter) | early (iter) | scratch | Δ early − final | "
        "forgetting final / early |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary.to_dict("records"):
        spread = "" if math.isnan(r["delta_spread"]) else f" ± {r['delta_spread']:.3f}"
        delta = (
            "–"
            if math.isnan(r["delta_early_minus_final"])
            else (_signed(r["delta_early_minus_final"]) + spread)
        )
        lines.append(
            f"| {r['source']} → {r['target']} "
            f"| {cell(r['final_mean'], r['final_std'])} ({it(r['final_iteration'])}) "
            f"| {cell(r['early_mean'], r['early_std'])} ({it(r['early_iteration'])}) "
            f"| {cell(r['scratch_mean'], r['scratch_std'])} "
            f"| {delta} "
            f"| {_signed(r['forgetting_final'])} / {_signed(r['forgetting_early'])} |"
        )
    lines += ["", "## Does partial training make adaptation easier?", ""]
    lines += [
        f"- **{r['source']} → {r['target']}**: {r['verdict']}" for r in summary.to_dict("records")
    ]
    pooled = across_sources(summary)
    if pooled is not None:
        lines += [
            f"- **over the {pooled['n_sources']} source models** (each source's final − early "
            f"target loss averaged over its targets and seeds): the early start ends lower "
            f"for {pooled['early_better']}, the final start for {pooled['final_better']}; "
            f"mean final − early {_signed(pooled['mean_final_minus_early'])} nats (Student-t "
            f"95 % CI {_signed(pooled['ci_low'])} to {_signed(pooled['ci_high'])}), "
            f"sign-flip permutation p = {pooled['permutation_p']:.3g}, sign test "
            f"p = {pooled['sign_p']:.3g}"
        ]
    return "\n".join(lines) + "\n"
