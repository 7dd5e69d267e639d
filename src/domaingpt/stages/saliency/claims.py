"""The study's Part 4 statements (gradient-based interpretability), checked on the
saliency tables."""

from __future__ import annotations

import pandas as pd

from domaingpt.core.claims import Claim, Verdict, holds_if
from domaingpt.core.stage import Tables
from domaingpt.stages.saliency.aggregate import RELPOS

#: The deletion test's verdict per method, in the claims' vocabulary.
FAITHFUL = {
    "faithful": Verdict.HOLDS,
    "partly faithful": Verdict.PARTLY,
    "not faithful": Verdict.FAILS,
}


def _final_in(table: pd.DataFrame, method: str) -> pd.DataFrame:
    """Rows of ``method`` at each model's last checkpoint, in-domain prompts."""
    t = table[table["method"] == method]
    last = t.groupby("model")["iteration"].transform("max") == t["iteration"]
    return t[last & (t["domain"] == "in")]


def saliency_claims(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The study's Part 4 statements checked against this run's attributions.

    Columns: claim, model, holds (True / False / None = this run cannot test it),
    evidence. Gradient-norm claims use ``grad_norm`` on in-domain prompts at each model's
    last checkpoint; "norms shrink" and "more focused" need ``checkpoints = "all"``.
    """
    rows: list[dict] = []

    def add(claim: str, model: str, holds: bool | Verdict | None, evidence: str) -> None:
        rows.append({"claim": claim, "model": model, "holds": holds, "evidence": evidence})

    by_class, by_relpos = tables.get("by_class"), tables.get("by_relpos")
    by_ckpt, verdicts = tables.get("by_checkpoint"), tables.get("verdicts")
    method = "grad_norm"
    has = by_class is not None and not by_class.empty and (by_class["method"] == method).any()
    if not has:
        add("Vowels receive the highest gradient norms", "-", None, "grad_norm was not run")
    else:
        bc = _final_in(by_class, method)
        rp = _final_in(by_relpos, method)
        for model in sorted(bc["model"].unique()):
            m = bc[bc["model"] == model].set_index("char_class")["mean_magnitude"]
            order = m.sort_values(ascending=False)
            ranking = ", ".join(f"{c} {v:.3g}" for c, v in order.items())
            add(
                "Vowels receive the highest gradient norms",
                model,
                bool(order.index[0] == "vowel") if "vowel" in m else None,
                f"mean gradient norm per character by class, highest first: {ranking}",
            )
            if "consonant" in m and "punctuation" in m:
                add(
                    "Consonants receive higher gradient norms than punctuation",
                    model,
                    bool(m["consonant"] > m["punctuation"]),
                    f"consonant {m['consonant']:.3g} vs punctuation {m['punctuation']:.3g}",
                )
            r = rp[rp["model"] == model].set_index("relpos")["lift"]
            if "previous_word" in r:
                lifts = ", ".join(f"{g} {r[g]:.2f}" for g in RELPOS if g in r)
                add(
                    "Characters of the previous word receive stronger gradients than an "
                    "average character",
                    model,
                    bool(r["previous_word"] > 1.0),
                    f"lift (1 = the prompt's average character): {lifts}",
                )
        for model, classes in (("math", ("digit", "math_symbol")), ("wikipedia", ("whitespace",))):
            m = bc[bc["model"] == model].set_index("char_class")["lift"]
            claim = (
                "The Math model relies on digits and math symbols"
                if model == "math"
                else "The Wikipedia model relies on <space>"
            )
            if m.empty or not all(c in m for c in classes):
                add(claim, model, None, f"no {model} model or no such characters in its prompts")
            else:
                ev = ", ".join(f"{c} lift {m[c]:.2f}" for c in classes)
                add(claim, model, bool(all(m[c] > 1.0 for c in classes)), ev)

    if by_ckpt is None or by_ckpt.empty or not (by_ckpt["method"] == method).any():
        add("Gradient norms shrink as training converges", "-", None, "grad_norm was not run")
    else:
        t = by_ckpt[(by_ckpt["method"] == method) & (by_ckpt["domain"] == "in")]
        for model in sorted(t["model"].unique()):
            g = t[t["model"] == model].sort_values("iteration")
            if len(g) < 3:
                why = "needs the saliency of several checkpoints (checkpoints = 'all')"
                add("Gradient norms shrink as training converges", model, None, why)
                add("Attributions become more focused with training", model, None, why)
                continue
            mag = g["total_magnitude_mean"].to_numpy()
            its = g["iteration"].to_numpy()
            peak = int(mag.argmax())
            add(
                "Gradient norms shrink as training converges",
                model,
                bool(peak < len(mag) - 1 and mag[-1] < mag[peak]),
                f"total gradient norm per prompt peaks at {mag[peak]:.3g} (iteration "
                f"{its[peak]}) and is {mag[-1]:.3g} at the last checkpoint ({its[-1]})",
            )
            ent = g["share_entropy_bits_mean"].to_numpy()
            add(
                "Attributions become more focused with training",
                model,
                bool(ent[-1] < ent[0]),
                f"entropy of the attribution shares {ent[0]:.2f} bits at iteration {its[0]} "
                f"-> {ent[-1]:.2f} bits at {its[-1]} (lower = fewer characters matter)",
            )
    if verdicts is not None and not verdicts.empty:
        for r in verdicts.itertuples():
            add(
                f"{r.method} attributions are faithful (deletion test)",
                str(r.models),
                FAITHFUL.get(r.verdict, Verdict.UNMEASURED),
                f"{r.verdict}: {r.evidence}",
            )
    return pd.DataFrame(rows, columns=["claim", "model", "holds", "evidence"])


def claims(tables: Tables) -> list[Claim]:
    """Vowels, previous word, digits and symbols, shrinking norms, faithfulness."""
    rows = saliency_claims(tables)
    out = []
    for r in rows.to_dict("records"):
        holds = r["holds"]
        verdict = holds if isinstance(holds, Verdict) else holds_if(holds)
        scope = "" if r["model"] in ("-", "") else f"{r['model']} model"
        out.append(Claim(r["claim"], verdict, r["evidence"], scope))
    return out
