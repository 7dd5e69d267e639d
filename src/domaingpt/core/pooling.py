"""Out-of-domain claims made per prompt corpus, and the pooled line beside them.

A model's out-of-domain prompts come from several corpora, and pooling them can hide
opposite effects (an entropy gap below zero on one corpus's prompts and above zero on
another's pools to whichever weighs more). So a stage makes each out-of-domain claim once
per (model, prompt corpus) (:func:`per_corpus`), and :func:`pooled_line` turns the claim
it makes on all of a model's out-of-domain prompts at once into a line that can hold only
where every corpus points the same way.

The pooled line is kept (not dropped) when the corpora disagree: the claim is combined
across replicate models by its (claim, scope), and a line present only in the replicates
whose corpora happen to agree would be combined over those alone.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pandas as pd

from domaingpt.core.claims import Claim, Verdict, display


def pooled_line(per_corpus: Mapping[str, Claim], whole: Claim) -> Claim | None:
    """``whole`` (the claim made on every out-of-domain prompt of a model at once) as the
    pooled line beside ``per_corpus`` (``{prompt corpus: its claim}``, each with its
    ``effect``); None with fewer than two measured corpora (the per-corpus claim then is
    the whole story).

    Its effect is the smallest per-corpus effect: positive only when every corpus's is,
    so the pooled line cannot hold across replicates on one corpus's strength. Where the
    corpora's effects differ in sign, its verdict is "partly" (some corpus holds) or "does
    not hold", never "holds", and the evidence names each corpus's direction.
    """
    measured = {c: k for c, k in per_corpus.items() if k.effect is not None}
    if len(measured) < 2:
        return None
    effects = {c: float(k.effect) for c, k in measured.items() if k.effect is not None}
    smallest = min(effects.values())
    signs = {float(np.sign(e)) for e in effects.values()}
    numbers = {**whole.numbers, "smallest_corpus_effect": smallest}
    if len(signs) == 1:
        numbers["corpora_agree"] = "yes"
        return replace(whole, effect=smallest, numbers=numbers)
    parts = "; ".join(
        f"{display(c)} prompts {e:+.3f} [{measured[c].verdict}]" for c, e in effects.items()
    )
    numbers["corpora_agree"] = "no"
    return replace(
        whole,
        verdict=Verdict.PARTLY
        if any(k.verdict is Verdict.HOLDS for k in measured.values())
        else Verdict.FAILS,
        evidence=(
            f"not pooled: the prompt corpora point in opposite directions ({parts}); "
            f"pooled, {whole.evidence}"
        ),
        effect=smallest,
        numbers=numbers,
    )


def per_corpus(
    rows: pd.DataFrame,
    name: str,
    build: Callable[[pd.DataFrame, str], Claim],
    label: Callable[[str], str] = str,
) -> list[Claim]:
    """One model's claim once per out-of-domain prompt corpus, and pooled.

    ``rows``: the model's rows (``domain`` "in"/"out" and ``prompt_corpus`` columns);
    ``build(rows, scope)`` makes the claim on the in-domain rows and the out-of-domain
    rows given. Scopes: ``"<name>, <corpus> prompts"`` (the corpus through ``label``),
    and ``"<name>, all out-of-domain prompts"`` for the pooled line (:func:`pooled_line`)
    where there are two corpora or more; with one (or none) the one claim is made on
    every row.
    """
    out = rows["domain"] == "out"
    corpora = sorted(rows.loc[out, "prompt_corpus"].unique()) if "prompt_corpus" in rows else []
    if len(corpora) < 2:
        return [build(rows, name + (f", {label(corpora[0])} prompts" if corpora else ""))]
    claims = {
        c: build(rows[~out | (rows["prompt_corpus"] == c)], f"{name}, {label(c)} prompts")
        for c in corpora
    }
    pooled = pooled_line(claims, build(rows, f"{name}, all out-of-domain prompts"))
    return [*claims.values(), *([pooled] if pooled is not None else [])]
