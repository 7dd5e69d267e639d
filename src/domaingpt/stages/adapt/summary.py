"""Few-shot adaptation, summarized: per pair, the final target loss of each start point
over seeds, early − final paired by seed, and which start adapts better; over all pairs,
the same question with the pairs as replicates (``summary.csv`` and ``summary.md``).
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from domaingpt.core.statistics import bootstrap_mean_ci, sign_test
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


def across_pairs(summary: pd.DataFrame) -> dict[str, float] | None:
    """Early vs final start over the whole run: each pair's mean Δ (early − final target
    loss) is one observation. With one seed per pair no single pair has a spread, but
    the pairs together still answer the study's question; ``None`` below 3 pairs.

    Returns the pair counts each way, the mean Δ with a bootstrap 95 % CI over pairs and
    the two-sided sign-test p-value (exact binomial; ties are dropped).
    """
    if "delta_early_minus_final" not in summary.columns:
        return None
    d = pd.to_numeric(summary["delta_early_minus_final"], errors="coerce").dropna()
    d = d.to_numpy(dtype=float)
    if len(d) < 3:
        return None
    final_better, early_better = int((d > 0).sum()), int((d < 0).sum())
    mean, low, high = bootstrap_mean_ci(d)
    return {
        "n_pairs": len(d),
        "final_better": final_better,
        "early_better": early_better,
        "mean_delta": mean,
        "ci_low": low,
        "ci_high": high,
        "sign_p": sign_test(early_better, final_better),
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
    pooled = across_pairs(summary)
    if pooled is not None:
        lines += [
            f"- **over all {pooled['n_pairs']} pairs**: the early start ends lower in "
            f"{pooled['early_better']}, the final start in {pooled['final_better']}; mean Δ "
            f"early − final {_signed(pooled['mean_delta'])} (95 % CI "
            f"{_signed(pooled['ci_low'])} to {_signed(pooled['ci_high'])}), sign test "
            f"p = {pooled['sign_p']:.3g}"
        ]
    return "\n".join(lines) + "\n"
