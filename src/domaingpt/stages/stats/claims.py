"""The study's Part 1 statements about its corpora, checked on the statistics tables.

Each claim is about the study's three corpora and is judged over those three only, so a
study with a fourth corpus of its own gets the same verdicts (and says so in the scope).
"""

from __future__ import annotations

import pandas as pd

from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import Claim, display, holds_if, unmeasured

SCOPE = ", ".join(display(c) for c in published.CORPORA)


def claims(tables: Tables) -> list[Claim]:
    """Unique characters, digits and symbols, unusual symbols: one claim each."""
    summary = tables.get("summary", pd.DataFrame())
    sm = summary.set_index("corpus") if "corpus" in summary.columns else summary
    missing = [c for c in published.CORPORA if c not in sm.index]
    texts = (published.MOST_VARIED, published.MATH_SYMBOLS, published.SHAKESPEARE_PLAIN)
    if missing:
        why = f"needs the study's three corpora; this run lacks {', '.join(missing)}"
        return [unmeasured(t, why, SCOPE) for t in texts]
    sm = sm.loc[list(published.CORPORA)]
    u = sm["unique_characters"]
    ours = {c: int(u[c]) for c in sm.index}
    study = published.UNIQUE_CHARS
    varied = Claim(
        f"{published.MOST_VARIED} (study: {study['wikipedia']} vs {study['math']} and "
        f"{study['shakespeare']})",
        holds_if(u.idxmax() == "wikipedia"),
        "unique characters: " + ", ".join(f"{display(c)} {ours[c]}" for c in sm.index),
        SCOPE,
        {f"unique_{c}": v for c, v in ours.items()},
    )
    num = sm["digit_share"] + sm["math_symbol_share"]
    symbols = Claim(
        published.MATH_SYMBOLS,
        holds_if(num.idxmax() == "math"),
        "digits + math symbols: "
        + ", ".join(f"{display(c)} {100 * num[c]:.2f} %" for c in sm.index),
        SCOPE,
        {f"digit_symbol_share_{c}": float(num[c]) for c in sm.index},
    )
    n_sh = int(sm.loc["shakespeare", "non_ascii_unique"])
    plain = Claim(
        published.SHAKESPEARE_PLAIN,
        holds_if(n_sh == 0),
        f"{n_sh} non-ASCII characters in Shakespeare",
        "Shakespeare",
        {"non_ascii_unique_shakespeare": n_sh},
    )
    return [varied, symbols, plain]
