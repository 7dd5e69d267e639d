"""The study's Part 4 statements (gradient-based interpretability), checked on the
saliency tables.

The gradient-norm claims read ``grad_norm`` (the study's method) on in-domain prompts at
each model's last checkpoint; "norms shrink" and "more focused" need the saliency of
several checkpoints (``checkpoints = "all"``). The deletion test's verdict per method
(pooled over the models) says whether the characters a method ranks highest matter.
"""

from __future__ import annotations

import pandas as pd

from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict, holds_if, unmeasured
from domaingpt.core.rundir import study_order
from domaingpt.core.stage import Tables
from domaingpt.report.format import display
from domaingpt.stages.saliency.aggregate import RELPOS
from domaingpt.stages.saliency.faithfulness import VERDICTS

METHOD = "grad_norm"
#: The deletion test's verdict per method, in the claims' vocabulary.
FAITHFUL = dict(zip(VERDICTS, (Verdict.HOLDS, Verdict.PARTLY, Verdict.FAILS), strict=True))
#: The classes each domain claim rests on: (model, claim, classes).
DOMAIN_CLASSES = (
    ("math", published.MATH_DIGITS, ("digit", "math_symbol")),
    ("wikipedia", published.WIKI_SPACE, ("whitespace",)),
)
_SEVERAL = "needs the saliency of several checkpoints (checkpoints = 'all')"


def _scope(model: str) -> str:
    return f"{display(model)} model"


def _has(table: pd.DataFrame | None) -> bool:
    return table is not None and not table.empty and bool((table["method"] == METHOD).any())


def _final_in(table: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``grad_norm`` at each model's last checkpoint, in-domain prompts."""
    t = table[table["method"] == METHOD]
    last = t.groupby("model")["iteration"].transform("max") == t["iteration"]
    return t[last & (t["domain"] == "in")]


def class_claims(by_class: pd.DataFrame, by_relpos: pd.DataFrame) -> list[Claim]:
    """Per model: vowels first, consonants before punctuation, the previous word."""
    bc, rp = _final_in(by_class), _final_in(by_relpos)
    out = []
    for model in study_order(bc["model"].unique()):
        m = bc[bc["model"] == model].set_index("char_class")["mean_magnitude"]
        order = m.sort_values(ascending=False)
        ranking = ", ".join(f"{c} {v:.3g}" for c, v in order.items())
        numbers = {f"mean_{c}": float(v) for c, v in order.items()}
        out.append(
            Claim(
                published.VOWELS_TOP,
                holds_if(bool(order.index[0] == "vowel") if "vowel" in m else None),
                f"mean gradient norm per character by class, highest first: {ranking}",
                _scope(model),
                numbers,
            )
        )
        if "consonant" in m and "punctuation" in m:
            out.append(
                Claim(
                    published.CONSONANTS_NEXT,
                    holds_if(bool(m["consonant"] > m["punctuation"])),
                    f"consonant {m['consonant']:.3g} vs punctuation {m['punctuation']:.3g}",
                    _scope(model),
                    {
                        "mean_consonant": float(m["consonant"]),
                        "mean_punctuation": float(m["punctuation"]),
                    },
                )
            )
        r = rp[rp["model"] == model].set_index("relpos")["lift"]
        if "previous_word" in r:
            present = [g for g in RELPOS if g in r]
            lifts = ", ".join(f"{g} {r[g]:.2f}" for g in present)
            out.append(
                Claim(
                    published.PREVIOUS_WORD,
                    holds_if(bool(r["previous_word"] > 1.0)),
                    f"lift (1 = the prompt's average character): {lifts}",
                    _scope(model),
                    {f"lift_{g}": float(r[g]) for g in present},
                )
            )
    return out


def domain_claims(by_class: pd.DataFrame) -> list[Claim]:
    """Math leans on digits and math symbols, Wikipedia on <space> (lift above 1)."""
    bc = _final_in(by_class)
    out = []
    for model, claim, classes in DOMAIN_CLASSES:
        m = bc[bc["model"] == model].set_index("char_class")["lift"]
        if m.empty or not all(c in m for c in classes):
            why = f"no {model} model or no such characters in its prompts"
            out.append(unmeasured(claim, why, _scope(model)))
            continue
        out.append(
            Claim(
                claim,
                holds_if(bool(all(m[c] > 1.0 for c in classes))),
                ", ".join(f"{c} lift {m[c]:.2f}" for c in classes),
                _scope(model),
                {f"lift_{c}": float(m[c]) for c in classes},
            )
        )
    return out


def training_claims(by_checkpoint: pd.DataFrame) -> list[Claim]:
    """Per model: the total gradient norm falls from its peak, the shares' entropy falls."""
    t = by_checkpoint[(by_checkpoint["method"] == METHOD) & (by_checkpoint["domain"] == "in")]
    out = []
    for model in study_order(t["model"].unique()):
        g = t[t["model"] == model].sort_values("iteration")
        if len(g) < 3:
            out.append(unmeasured(published.GRADIENTS_SHRINK, _SEVERAL, _scope(model)))
            out.append(unmeasured(published.GRADIENTS_FOCUS, _SEVERAL, _scope(model)))
            continue
        mag = g["total_magnitude_mean"].to_numpy()
        its = g["iteration"].to_numpy()
        peak = int(mag.argmax())
        out.append(
            Claim(
                published.GRADIENTS_SHRINK,
                holds_if(bool(peak < len(mag) - 1 and mag[-1] < mag[peak])),
                f"total gradient norm per prompt peaks at {mag[peak]:.3g} (iteration "
                f"{its[peak]}) and is {mag[-1]:.3g} at the last checkpoint ({its[-1]})",
                _scope(model),
                {
                    "peak_norm": float(mag[peak]),
                    "peak_iteration": int(its[peak]),
                    "last_norm": float(mag[-1]),
                    "last_iteration": int(its[-1]),
                },
            )
        )
        ent = g["share_entropy_bits_mean"].to_numpy()
        out.append(
            Claim(
                published.GRADIENTS_FOCUS,
                holds_if(bool(ent[-1] < ent[0])),
                f"entropy of the attribution shares {ent[0]:.2f} bits at iteration {its[0]} "
                f"-> {ent[-1]:.2f} bits at {its[-1]} (lower = fewer characters matter)",
                _scope(model),
                {
                    "first_entropy_bits": float(ent[0]),
                    "first_iteration": int(its[0]),
                    "last_entropy_bits": float(ent[-1]),
                    "last_iteration": int(its[-1]),
                },
            )
        )
    return out


def faithfulness_claims(verdicts: pd.DataFrame) -> list[Claim]:
    """Per method: faithful at every k (holds), at some (partly), at none (does not hold)."""
    out = []
    for r in verdicts.to_dict("records"):
        models = study_order(str(r.get("models", "")).split(","))
        names = ", ".join(display(m) for m in models if m)
        at_k = r.get("faithful_at_k")
        at_k = "" if pd.isna(at_k) else str(at_k)
        out.append(
            Claim(
                published.TRULY_IMPORTANT,
                FAITHFUL.get(r["verdict"], Verdict.UNMEASURED),
                f"{r['verdict']}: {r['evidence']}",
                f"{r['method']} on the {names} model{'s' if len(models) > 1 else ''}",
                {"verdict": str(r["verdict"]), "faithful_at_k": at_k},
            )
        )
    return out


def claims(tables: Tables) -> list[Claim]:
    """Vowels, previous word, digits and symbols, shrinking norms, faithfulness."""
    by_class, by_ckpt = tables.get("by_class"), tables.get("by_checkpoint")
    verdicts = tables.get("verdicts")
    out: list[Claim] = []
    if _has(by_class):
        out += class_claims(by_class, tables["by_relpos"])
        out += domain_claims(by_class)
    else:
        out.append(unmeasured(published.VOWELS_TOP, f"{METHOD} was not run"))
    if _has(by_ckpt):
        out += training_claims(by_ckpt)
    else:
        out.append(unmeasured(published.GRADIENTS_SHRINK, f"{METHOD} was not run"))
    if verdicts is not None and not verdicts.empty:
        out += faithfulness_claims(verdicts)
    return out
