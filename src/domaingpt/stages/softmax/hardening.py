"""Where probabilities harden: how much each model's next-character distribution still
moves between consecutive checkpoints.

For consecutive history checkpoints ``t_{j-1}, t_j`` the Jensen–Shannon divergence (bits,
in [0, 1]) between the two next-character distributions at a prompt's last position is
averaged over the prompts of a domain (``js.csv``). The **hardening iteration** is the
first checkpoint ``t_i`` after which this mean divergence stays below ``epsilon`` (default
0.05 bits) for every later pair of consecutive checkpoints. It is "not reached" when the
last pair still moves by ``epsilon`` or more, and undefined with a single checkpoint.
Because the checkpoint schedule is log-spaced, later pairs span more iterations, which
makes the criterion stricter late in training, not looser. A second, simpler reading is
reported beside it: the first checkpoint after which mean p(true) stays within ``delta``
of its final value. With a decaying learning rate the last checkpoints move less by
construction, so compare models trained on one schedule.

The study's absolute iterations (Math by ~1000, Shakespeare by ~4000, Wikipedia after
14000) are tested only where the run is long enough to see them; the ordering (Math
before Shakespeare before Wikipedia) is tested on any run (see :mod:`.claims`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from domaingpt.core.statistics import js_divergence_bits
from domaingpt.core.tables import read_table

JS_COLUMNS = ["model", "domain", "prev_iteration", "iteration", "js_bits", "js_std", "n"]


def js_rows(
    model: str,
    domains: list[str],
    previous: tuple[int, np.ndarray],
    iteration: int,
    probs: np.ndarray,
) -> list[dict]:
    """Mean JS divergence by domain between the last-position distributions ``probs`` at
    ``iteration`` and those of the previous checkpoint ``previous = (iteration, probs)``."""
    js = js_divergence_bits(previous[1], probs)
    rows = []
    for dom in sorted(set(domains)):
        sel = np.array([d == dom for d in domains])
        rows.append(
            {
                "model": model,
                "domain": dom,
                "prev_iteration": previous[0],
                "iteration": iteration,
                "js_bits": float(js[sel].mean()),
                "js_std": float(js[sel].std(ddof=1)) if sel.sum() > 1 else 0.0,
                "n": int(sel.sum()),
            }
        )
    return rows


def _hardening_iteration(pairs: pd.DataFrame, iters: list[int], epsilon: float) -> dict:
    if len(pairs) == 0:
        return {"hardening_iteration": np.nan, "reached": None}
    above = pairs[pairs["js_bits"] >= epsilon]
    if len(above) == 0:
        return {"hardening_iteration": iters[0], "reached": True}
    if int(above["iteration"].iloc[-1]) == iters[-1]:
        return {"hardening_iteration": np.nan, "reached": False}
    return {"hardening_iteration": int(above["iteration"].iloc[-1]), "reached": True}


def _settled(p_true: np.ndarray, iters: list[int], delta: float) -> int:
    """The first iteration from which mean p(true) stays within ``delta`` of its last value."""
    within = np.abs(p_true - p_true[-1]) <= delta
    settled = len(p_true) - 1
    while settled > 0 and within[settled - 1]:
        settled -= 1
    return iters[settled]


def hardening(
    js: pd.DataFrame, summary: pd.DataFrame, epsilon: float, delta: float
) -> pd.DataFrame:
    """The hardening iteration per (model, domain) (see the module docstring)."""
    rows = []
    for (model, domain), g in summary.groupby(["model", "domain"], sort=True):
        g = g.sort_values("iteration")
        iters = g["iteration"].to_list()
        pairs = js[(js["model"] == model) & (js["domain"] == domain)].sort_values("iteration")
        row: dict = {
            "model": model,
            "domain": domain,
            "epsilon": epsilon,
            "first_iteration": iters[0],
            "final_iteration": iters[-1],
            "n_checkpoints": len(iters),
            "last_js_bits": float(pairs["js_bits"].iloc[-1]) if len(pairs) else np.nan,
            "max_js_bits": float(pairs["js_bits"].max()) if len(pairs) else np.nan,
        }
        row.update(_hardening_iteration(pairs, iters, epsilon))
        pt = g["p_true_mean"].to_numpy()
        row.update(
            delta=delta,
            p_true_final=float(pt[-1]),
            p_true_settled_iteration=_settled(pt, iters, delta),
        )
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["hardening_iteration"] = out["hardening_iteration"].astype("Int64")
    return out


def read_hardening(path: Path) -> pd.DataFrame:
    """``hardening.csv`` with its types back: ``hardening_iteration`` an integer or <NA>,
    ``reached`` True, False or None (undefined with a single checkpoint)."""
    table = read_table(path)
    if "hardening_iteration" in table:
        table["hardening_iteration"] = table["hardening_iteration"].astype("Int64")
    if "reached" in table:
        table["reached"] = [
            None if isinstance(r, float) else r in (True, "True") for r in table["reached"]
        ]
    return table
