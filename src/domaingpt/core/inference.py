"""Claims across replicate models: the model is the unit of inference.

A study trains ``[train] seeds = N`` replicate models per corpus (named as
:mod:`domaingpt.core.replicates` says: replicate k of corpus C is the model ``C__r<k>``). A claim
about a domain is made once per replicate, by the stage's own ``claims`` function on that
replicate's rows (:func:`replicate_tables`), and the per-model claims are then combined
(:func:`combine`):

* each replicate contributes its ``effect`` (signed: positive supports the claim, zero is
  its null); across the replicates: the mean, a Student-t 95 % interval and a two-sided
  one-sample t-test (n - 1 degrees of freedom). A claim without a scalar effect is
  combined by its replicates' verdicts with an exact sign test (holds against does not
  hold);
* the per-prompt intervals a stage computes stay as within-model detail: they say how
  sure one network is, not whether another training seed agrees;
* the p-values of every tested claim of a report are adjusted together with Holm's
  step-down method (:func:`adjust`). Holm rather than Benjamini–Hochberg: the claims of
  one report share their models, so their tests are dependent in ways BH's guarantee
  (independence or positive dependence) does not cover, while Holm controls the
  family-wise error under any dependence; the report is read claim by claim, and a
  "holds" should stand on its own.

The verdict rule is :func:`verdict`, written once.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

import numpy as np
import pandas as pd

from domaingpt.core.claims import Claim, Verdict
from domaingpt.core.replicates import base_name, replicate_of
from domaingpt.core.statistics import mean_ci, sign_test, t_test_p

ALPHA = 0.05
#: Columns of a stage's tables that name a model of the run; the first one a table has
#: says which replicate a row belongs to.
MODEL_COLUMNS = ("model", "source", "model_a", "own_model", "comparison")


def _model_column(df: pd.DataFrame) -> str | None:
    return next((c for c in MODEL_COLUMNS if c in df.columns), None)


def _row_replicates(df: pd.DataFrame) -> pd.Series:
    """The replicate of each row: the one its model columns name (a row never mixes two
    replicates; an empty cell, such as an adaptation's ``source`` on a row about one
    model, names none)."""
    cols = [c for c in MODEL_COLUMNS if c in df.columns]
    return pd.concat([df[c].map(replicate_of) for c in cols], axis=1).max(axis=1)


def _named_index(df: pd.DataFrame) -> bool:
    index = df.index
    return not isinstance(index, pd.RangeIndex) and (
        pd.api.types.is_object_dtype(index) or pd.api.types.is_string_dtype(index)
    )


def with_replicate_column(tables: Mapping[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """``tables`` with a ``replicate`` column beside the first model column of each table
    that has one (how a notebook tells replicate models apart)."""
    out = {}
    for name, df in tables.items():
        col = _model_column(df) if isinstance(df, pd.DataFrame) else None
        if col is not None and "replicate" not in df.columns:
            df = df.copy()
            df.insert(df.columns.get_loc(col) + 1, "replicate", _row_replicates(df))
        out[name] = df
    return out


def replicates_of(tables: Mapping[str, pd.DataFrame]) -> list[int]:
    """The replicates whose models appear in ``tables`` (empty: no table names a model)."""
    found: set[int] = set()
    for df in tables.values():
        if not isinstance(df, pd.DataFrame):
            continue
        if _model_column(df) is not None:
            found |= set(_row_replicates(df).tolist())
        elif _named_index(df):
            found |= {replicate_of(v) for v in df.index}
    return sorted(found)


def replicate_tables(tables: Mapping[str, pd.DataFrame], replicate: int) -> dict[str, pd.DataFrame]:
    """The rows of ``tables`` that belong to ``replicate``, its model names made the
    corpus names again, so a stage's claims see one model per domain as they always did.

    A row belongs to the replicate its model columns name (:data:`MODEL_COLUMNS`; a
    matrix: its index label); a table without one (corpus statistics, prompts) is the
    same for every replicate.
    """
    out = {}
    for name, df in tables.items():
        if not isinstance(df, pd.DataFrame):
            out[name] = df
            continue
        col = _model_column(df)
        if col is not None:
            keep = _row_replicates(df) == replicate
            df = df[keep.to_numpy()].drop(columns="replicate", errors="ignore")
        elif _named_index(df):
            df = df[[replicate_of(i) == replicate for i in df.index]]
            df = df.rename(index=lambda i: base_name(i) if isinstance(i, str) else i)
        df = df.copy()
        for c in df.columns:
            if pd.api.types.is_object_dtype(df[c]) or pd.api.types.is_string_dtype(df[c]):
                df[c] = df[c].map(lambda v: base_name(v) if isinstance(v, str) else v)
        out[name] = df.reset_index(drop=True) if col is not None else df
    return out


# --- the verdict rule --------------------------------------------------------------------
def verdict(models: int, mean: float, all_agree: bool, p: float, alpha: float = ALPHA) -> Verdict:
    """The verdict of a claim over ``models`` replicate models.

    holds: the across-model test rejects the null (``p``, Holm-adjusted in a report, below
    ``alpha``) in the claim's direction (``mean`` > 0); partly: every replicate agrees
    with the claim's direction (``all_agree``) but the test does not reject; does not
    hold: otherwise; one model: fewer than two replicates measured it.
    """
    if models < 2:
        return Verdict.ONE_MODEL
    if math.isfinite(p) and p < alpha and mean > 0:
        return Verdict.HOLDS
    return Verdict.PARTLY if all_agree else Verdict.FAILS


def _scope(claim: Claim, replicate: int, replicates: int) -> str:
    if replicates < 2:
        return claim.scope
    tag = f"replicate {replicate}"
    return f"{claim.scope}, {tag}" if claim.scope else tag


def _fmt(x: float) -> str:
    return f"{x:+.3g}"


def _combined(group: list[tuple[int, Claim]], replicates: int) -> Claim:
    """One claim from its per-replicate versions (``group``: (replicate, claim))."""
    first = group[0][1]
    measured = [(r, c) for r, c in group if c.verdict not in (Verdict.UNMEASURED,)]
    if not measured:
        return first
    detail = f"model {measured[0][0]}: {measured[0][1].evidence}"
    verdicts = ", ".join(f"{c.verdict}" for _, c in measured)
    base = {k: v for k, v in measured[0][1].numbers.items()}
    if len(measured) < 2:
        _, c = measured[0]
        why = "one model" if replicates < 2 else f"measured on one of {replicates} models"
        return replace(
            c,
            verdict=Verdict.ONE_MODEL,
            evidence=f"{why} (its own verdict: {c.verdict}): {c.evidence}",
            numbers={**base, "models": 1, "model_verdict": str(c.verdict)},
        )
    effects = [c.effect for _, c in measured]
    if all(e is not None for e in effects):
        e = np.array(effects, dtype=np.float64)
        ci = mean_ci(e)
        mean, agree = ci["mean"], bool((e > 0).all())
        if ci["std"] > 1e-12 * max(1.0, abs(mean)):  # not identical up to rounding
            p = t_test_p(mean, ci["std"] / math.sqrt(len(e)), len(e) - 1)
            how = "t-test"
        else:  # identical effects (a discrete one, such as a checkpoint): no t, signs only
            p = sign_test(int((e > 0).sum()), int((e < 0).sum()))
            how = "identical effects, exact sign test"
        test = (
            f"across {len(e)} models: mean effect {_fmt(mean)} (95% t-interval "
            f"{_fmt(ci['ci_low'])} to {_fmt(ci['ci_high'])}; per model "
            f"{', '.join(_fmt(x) for x in e)}), {how} p = {p:.3g}"
        )
        numbers = {
            "effect_mean": mean,
            "effect_ci_low": ci["ci_low"],
            "effect_ci_high": ci["ci_high"],
        }
    else:  # no scalar effect: the replicates' verdicts, by an exact sign test
        wins = sum(c.verdict is Verdict.HOLDS for _, c in measured)
        losses = sum(c.verdict is Verdict.FAILS for _, c in measured)
        p = sign_test(wins, losses)
        mean, agree = float(wins - losses), wins == len(measured)
        test = (
            f"across {len(measured)} models: holds in {wins}, does not hold in {losses} "
            f"(exact sign test p = {p:.3g})"
        )
        numbers = {"models_holding": wins, "models_failing": losses}
        mean = mean if wins != losses else 0.0
    numbers |= {
        "models": len(measured),
        "effect_direction": 1.0 if mean > 0 else -1.0 if mean < 0 else 0.0,
        "all_models_agree": agree,
        "p": p,
    }
    return replace(
        first,
        verdict=verdict(len(measured), mean, agree, p),
        evidence=f"{test}; model verdicts: {verdicts}. In detail, {detail}",
        numbers={**base, **numbers},
        effect=mean if all(e is not None for e in effects) else None,
    )


def combine(per_replicate: Mapping[int, Sequence[Claim]]) -> list[Claim]:
    """The claims of every replicate combined into one per (claim, scope), in the order
    they were first made; claims about one named model (``per_model``) are listed for
    every replicate instead."""
    replicates = len(per_replicate)
    groups: dict[tuple[str, str], list[tuple[int, Claim]]] = {}
    out: list[tuple[tuple[str, str], Claim | None]] = []
    for r in sorted(per_replicate):
        for c in per_replicate[r]:
            if c.per_model:
                out.append(((c.claim, c.scope), replace(c, scope=_scope(c, r, replicates))))
                continue
            key = (c.claim, c.scope)
            if key not in groups:
                groups[key] = []
                out.append((key, None))
            groups[key].append((r, c))
    return [c if c is not None else _combined(groups[key], replicates) for key, c in out]


def holm(p: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (monotone, at most 1), in the input's order."""
    n = len(p)
    order = sorted(range(n), key=lambda i: p[i])
    adjusted = [1.0] * n
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (n - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def adjust(claims: Iterable[Claim]) -> list[Claim]:
    """Every tested claim (a ``p`` across models) with its Holm-adjusted p over all of
    them, and its verdict decided on the adjusted p; the rest unchanged."""
    claims = list(claims)
    tested = [i for i, c in enumerate(claims) if _p(c) is not None]
    adjusted = holm([_p(claims[i]) for i in tested])
    out = list(claims)
    for i, p_adj in zip(tested, adjusted, strict=True):
        c = claims[i]
        n = c.numbers
        decided = verdict(
            int(n["models"]), float(n["effect_direction"]), bool(n["all_models_agree"]), p_adj
        )
        out[i] = replace(
            c,
            verdict=decided,
            evidence=f"{c.evidence} (Holm-adjusted p = {p_adj:.3g} over {len(tested)} "
            "tested claims)",
            numbers={**n, "p_adjusted": p_adj, "tested_claims": len(tested)},
        )
    return out


def _p(c: Claim) -> float | None:
    p = c.numbers.get("p")
    if c.per_model or "models" not in c.numbers or not isinstance(p, int | float):
        return None
    return float(p) if math.isfinite(p) else None
