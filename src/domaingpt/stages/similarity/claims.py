"""The similarity stage's claims: a pure function of its ``cka`` and ``jackknife`` tables.

A difference between two CKAs on the same prompts gets a jackknife interval from the
leave-one-prompt-out values of both (95 %, Student's t with G − 1 degrees of freedom).
Layer ``L`` is the last block's output, the residual stream the head reads.

Each claim is checked on every model (or pair of models, or adapted pair) at once and
holds where it holds for every one; its ``effect`` (:class:`~domaingpt.core.claims.Claim`)
is the smallest of their CKA differences, so positive only where every one is. No claim
here pools out-of-domain prompts of several corpora, and none is about one named model.
"""

from __future__ import annotations

import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.cka import jackknife_ci
from domaingpt.core.claims import Claim, display, smallest_effect, unmeasured, verdict_of


def _side(tables: Tables, names: list[str], layer: int) -> tuple[float, pd.Series]:
    """Mean CKA of the comparisons ``names`` at ``layer`` (e.g. over seeds) and their mean
    leave-one-prompt-out values, by prompt."""
    cka, jack = tables["cka"], tables["jackknife"]
    value = float(cka[cka["comparison"].isin(names) & (cka["layer"] == layer)]["cka"].mean())
    j = jack[jack["comparison"].isin(names) & (jack["layer"] == layer)]
    return value, j.groupby("prompt_id")["cka"].mean()


def _difference(
    tables: Tables, first: tuple[list[str], int], second: tuple[list[str], int]
) -> tuple[float, float, float]:
    """``CKA(first) − CKA(second)``, each ``(comparisons, layer)``, and the jackknife
    interval of the difference over the prompts both have."""
    (va, la), (vb, lb) = _side(tables, *first), _side(tables, *second)
    common = la.index.intersection(lb.index)
    diff = va - vb
    low, high = jackknife_ci(diff, (la[common] - lb[common]).to_numpy())
    return diff, low, high


def _fmt(diff: float, low: float, high: float) -> str:
    return f"{diff:+.3f} [{low:+.3f}, {high:+.3f}]"


def _last_layer(cka: pd.DataFrame) -> int:
    return int(cka["layer"].max())


def _layer_words(layers: set[int]) -> str:
    """``layer L`` when every model compared has ``L`` layers, else what each uses (an
    imported model may be shallower or deeper than the run's own)."""
    return f"layer {layers.pop()}" if len(layers) == 1 else "the last layer of each"


def hardens(tables: Tables) -> Claim:
    """Per model: the last consecutive pair's CKA (last layer) above the first pair's;
    the effect is the smallest last-minus-first CKA."""
    cka = tables["cka"]
    t = cka[cka["kind"] == "training"]
    if t.empty:
        return unmeasured(published.SIM_HARDENS, "needs two checkpoints of a model")
    flags, parts, numbers, effects, used = [], [], {}, [], set()
    for model in study_order(t["model_a"].unique()):
        layer = _last_layer(t[t["model_a"] == model])
        m = t[(t["model_a"] == model) & (t["layer"] == layer)].sort_values("iteration_b")
        if len(m) < 2:
            continue
        first, last = m.iloc[0], m.iloc[-1]
        diff, low, high = _difference(
            tables, ([last["comparison"]], layer), ([first["comparison"]], layer)
        )
        flags.append(low > 0)
        effects.append(diff)
        used.add(layer)
        parts.append(
            f"{display(model)} {first['cka']:.3f} ({int(first['iteration_a'])}→"
            f"{int(first['iteration_b'])}) → {last['cka']:.3f} ({int(last['iteration_a'])}→"
            f"{int(last['iteration_b'])}), change {_fmt(diff, low, high)}"
        )
        numbers[f"{model}_first"] = float(first["cka"])
        numbers[f"{model}_last"] = float(last["cka"])
    if not flags:
        return unmeasured(published.SIM_HARDENS, "needs three checkpoints of a model")
    where = _layer_words(used)
    evidence = f"CKA of consecutive checkpoints at {where}: " + "; ".join(parts)
    effect = numbers["smallest_change"] = smallest_effect(effects)
    return Claim(
        published.SIM_HARDENS,
        verdict_of(flags),
        evidence,
        where,
        numbers,
        effect=effect,
    )


def domains_diverge(tables: Tables) -> Claim:
    """Per pair of domain models: CKA at layer 1 above CKA at the last layer; the effect
    is the smallest layer-1-minus-last CKA."""
    cka = tables["cka"]
    d = cka[cka["kind"] == "domains"]
    if d.empty or _last_layer(d) < 2:
        return unmeasured(published.SIM_DOMAINS, "needs two domain models of two layers or more")
    flags, parts, numbers, effects = [], [], {}, []
    for comparison, g in d.groupby("comparison", sort=False):
        layer = _last_layer(g)  # the shallower model's, for models of two depths
        if layer < 2:
            continue
        by = g.set_index("layer")["cka"]
        diff, low, high = _difference(tables, ([comparison], 1), ([comparison], layer))
        flags.append(low > 0)
        effects.append(diff)
        a, b = g["model_a"].iloc[0], g["model_b"].iloc[0]
        parts.append(
            f"{display(a)} vs {display(b)}: layer 1 {by[1]:.3f}, layer {layer} {by[layer]:.3f} "
            f"(difference {_fmt(diff, low, high)})"
        )
        numbers[f"{a}_{b}_layer1"] = float(by[1])
        numbers[f"{a}_{b}_layer{layer}"] = float(by[layer])
    if not flags:
        return unmeasured(published.SIM_DOMAINS, "needs two domain models of two layers or more")
    evidence = "CKA of the final checkpoints on every prompt: " + "; ".join(parts)
    effect = numbers["smallest_difference"] = smallest_effect(effects)
    return Claim(
        published.SIM_DOMAINS, verdict_of(flags), evidence, "domain models", numbers, effect=effect
    )


def early_moves_more(tables: Tables) -> Claim:
    """Per adapted pair: on the target's prompts at the last layer, the final start keeps
    more of its representation than the early start (CKA source-vs-adapted higher),
    seeds averaged; the effect is the smallest final-minus-early CKA."""
    cka = tables["cka"]
    a = cka[(cka["kind"] == "adaptation") & (cka["prompts"] == "target")]
    if a.empty:
        return unmeasured(published.EARLY_MOVES_MORE, "no adapted models in this run")
    flags, parts, numbers, effects, used = [], [], {}, [], set()
    pairs = dict(list(a.groupby(["source", "target"], sort=True)))
    order = study_order({s for s, _ in pairs})
    for (source, target), g in sorted(pairs.items(), key=lambda kv: order.index(kv[0][0])):
        layer = _last_layer(g)  # the source model's depth
        g = g[g["layer"] == layer]
        starts = {s: list(x["comparison"]) for s, x in g.groupby("start")}
        if not {"early", "final"} <= set(starts):
            continue
        diff, low, high = _difference(tables, (starts["final"], layer), (starts["early"], layer))
        final = float(g.loc[g["start"] == "final", "cka"].mean())
        early = float(g.loc[g["start"] == "early", "cka"].mean())
        flags.append(low > 0)
        effects.append(diff)
        used.add(layer)
        moved = "early moves more" if low > 0 else "final moves more" if high < 0 else "unclear"
        parts.append(
            f"{display(source)} → {display(target)}: final start keeps {final:.3f}, early "
            f"start {early:.3f} (difference {_fmt(diff, low, high)}; {moved}; "
            f"{len(starts['final'])} seed(s))"
        )
        numbers[f"{source}_{target}_final"] = final
        numbers[f"{source}_{target}_early"] = early
    if not flags:
        return unmeasured(published.EARLY_MOVES_MORE, "needs adaptations from early and final")
    where = _layer_words(used)
    evidence = (
        f"CKA of the source model at its start and the adapted model, {where}, on the "
        "target corpus's prompts (higher: the representation moved less): " + "; ".join(parts)
    )
    effect = numbers["smallest_difference"] = smallest_effect(effects)
    return Claim(
        published.EARLY_MOVES_MORE,
        verdict_of(flags),
        evidence,
        f"representations (CKA, {where})",
        numbers,
        effect=effect,
    )


def claims(tables: Tables) -> list[Claim]:
    cka = tables.get("cka")
    if cka is None or cka.empty or "jackknife" not in tables:
        why = "no similarity results in this run"
        return [
            unmeasured(c, why)
            for c in (published.SIM_HARDENS, published.SIM_DOMAINS, published.EARLY_MOVES_MORE)
        ]
    return [hardens(tables), domains_diverge(tables), early_moves_more(tables)]
