"""The study's Part 4 statements (gradient-based interpretability), checked on the
saliency tables.

The gradient-norm claims read ``grad_norm`` (the study's method) on in-domain prompts at
each model's last checkpoint; "norms shrink" and "more focused" need the saliency of
several checkpoints (``checkpoints = "all"``). The deletion test's verdict per method
(pooled over the models) says whether the characters a method ranks highest matter.

Occlusion answers the study's caution (``agreement``): does the gradient norm rank
characters as occlusion does, and less so after training? The zero- vs few-shot tables
answer its "less clear": do the attributions move towards the target domain's own model,
and between character classes?

Each claim carries an ``effect``, positive when it supports the claim and zero at its null:
a margin in the unit the verdict compares (gradient norm, lift, bits, Spearman ρ, nats).
A claim made of several models, pairs or checkpoints at once ("for every model") carries
the smallest of their margins, since the weakest one decides the verdict.
"""

from __future__ import annotations

import math

import pandas as pd

from domaingpt.context.rundir import study_order
from domaingpt.context.stage import Tables
from domaingpt.core import published
from domaingpt.core.claims import (
    Claim,
    Verdict,
    display,
    holds_if,
    smallest_effect,
    unmeasured,
    verdict_of,
)
from domaingpt.core.statistics import bonferroni, first_to_last, mean_ci
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
        # the vowels' mean norm above the highest other class's
        lead = float(m["vowel"] - m.drop("vowel").max()) if "vowel" in m and len(m) > 1 else None
        if lead is not None:
            numbers["vowel_lead"] = lead
        out.append(
            Claim(
                published.VOWELS_TOP,
                holds_if(bool(order.index[0] == "vowel") if "vowel" in m else None),
                f"mean gradient norm per character by class, highest first: {ranking}",
                _scope(model),
                numbers,
                effect=lead,
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
                        "consonant_minus_punctuation": float(m["consonant"] - m["punctuation"]),
                    },
                    effect=float(m["consonant"] - m["punctuation"]),
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
                    {f"lift_{g}": float(r[g]) for g in present}
                    | {"previous_word_lift_above_1": float(r["previous_word"] - 1.0)},
                    effect=float(r["previous_word"] - 1.0),
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
        lowest = float(min(m[c] for c in classes) - 1.0)  # every class must lift above 1
        out.append(
            Claim(
                claim,
                holds_if(bool(all(m[c] > 1.0 for c in classes))),
                ", ".join(f"{c} lift {m[c]:.2f}" for c in classes),
                _scope(model),
                {f"lift_{c}": float(m[c]) for c in classes} | {"lowest_lift_above_1": lowest},
                effect=lowest,
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
        # the highest earlier norm above the last one: positive exactly when the norm peaks
        # before the last checkpoint and ends below that peak
        shrink = float(mag[:-1].max() - mag[-1])
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
                    "earlier_peak_minus_last": shrink,
                },
                effect=shrink,
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
                    "entropy_fall_bits": float(ent[0] - ent[-1]),
                },
                effect=float(ent[0] - ent[-1]),
            )
        )
    return out


def _smallest_extra_drop(faithfulness: pd.DataFrame | None, method: str) -> float | None:
    """The deletion test's effect for ``method``: at each ``k`` the extra drop of log p(true)
    (top-k minus random deletions, nats) averaged over every model's prompts, as the pooled
    verdict does (each model's mean weighted by its prompts); the smallest over ``k``, since
    "faithful" means faithful at every k."""
    need = {"method", "k", "n", "diff_mean"}
    if faithfulness is None or faithfulness.empty or not need <= set(faithfulness.columns):
        return None
    f = faithfulness[faithfulness["method"] == method]
    if f.empty:
        return None
    pooled = [
        float((g["diff_mean"] * g["n"]).sum() / g["n"].sum())
        for _, g in f.groupby("k")
        if g["n"].sum() > 0
    ]
    return min(pooled) if pooled else None


def faithfulness_claims(
    verdicts: pd.DataFrame, faithfulness: pd.DataFrame | None = None
) -> list[Claim]:
    """Per method: faithful at every k (holds), at some (partly), at none (does not hold)."""
    out = []
    # the models of these rows (one replicate's, when claims are made per replicate): the
    # verdicts table lists every model the stage explained
    here = None
    if faithfulness is not None and "model" in faithfulness.columns and len(faithfulness):
        here = list(dict.fromkeys(str(m) for m in faithfulness["model"]))
    for r in verdicts.to_dict("records"):
        models = study_order(here or str(r.get("models", "")).split(","))
        names = ", ".join(display(m) for m in models if m)
        at_k = r.get("faithful_at_k")
        at_k = "" if pd.isna(at_k) else str(at_k)
        extra = _smallest_extra_drop(faithfulness, r["method"])
        numbers = {"verdict": str(r["verdict"]), "faithful_at_k": at_k}
        if extra is not None:
            numbers["smallest_extra_drop"] = extra
        out.append(
            Claim(
                published.TRULY_IMPORTANT,
                FAITHFUL.get(r["verdict"], Verdict.UNMEASURED),
                f"{r['verdict']}: {r['evidence']}",
                f"{r['method']} on the {names} model{'s' if len(models) > 1 else ''}",
                numbers,
                effect=extra,
            )
        )
    return out


#: A Spearman correlation with occlusion at or above this: the method ranks characters
#: as occlusion does (0.5: at least a moderate rank correlation).
AGREE = 0.5
_BASELINE = {"unk": "<unk>", "space": "a space"}


def _final_rows(table: pd.DataFrame) -> pd.DataFrame:
    last = table.groupby("model")["iteration"].transform("max") == table["iteration"]
    return table[last & (table["domain"] == "in")]


def _interval(mean: float, low: float, high: float, digits: int = 2) -> str:
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def caution_claims(agreement: pd.DataFrame) -> list[Claim]:
    """Per occlusion baseline: does the gradient norm rank characters as occlusion does
    (in-domain prompts, final checkpoint)? The caution holds for a model when the 95 %
    interval of its mean Spearman correlation lies below :data:`AGREE`, fails when it
    lies at or above; holds for every model: holds, for none (all above): does not hold."""
    final = _final_rows(agreement)
    out = []
    for baseline, b in final.groupby("baseline", sort=False):
        weak, strong, parts, numbers = [], [], [], {}
        for model in study_order(b["model"].unique()):
            m = b[b["model"] == model].set_index("method")
            if METHOD not in m.index:
                continue
            r = m.loc[METHOD]
            weak.append(bool(r["ci_high"] < AGREE))
            strong.append(bool(r["ci_low"] >= AGREE))
            others = ", ".join(
                f"{meth} {m.loc[meth, 'spearman']:.2f}" for meth in m.index if meth != METHOD
            )
            parts.append(
                f"{display(model)} ρ {_interval(r['spearman'], r['ci_low'], r['ci_high'])}"
                + (f" (other methods: {others})" if others else "")
            )
            numbers[f"{model}_spearman"] = float(r["spearman"])
        if not weak:
            continue
        # how far the most occlusion-like model's ρ stays below AGREE (every model must)
        below = AGREE - max(v for k, v in numbers.items() if k.endswith("_spearman"))
        numbers["below_agree"] = below
        verdict = Verdict.HOLDS if all(weak) else Verdict.FAILS if all(strong) else Verdict.PARTLY
        evidence = (
            f"Spearman correlation of the gradient norm with |occlusion| ({_BASELINE.get(baseline, baseline)} "
            f"as baseline), in-domain prompts at the final checkpoint; {AGREE} or more would "
            f"rank characters alike: " + "; ".join(parts)
        )
        scope = f"grad_norm vs occlusion with {_BASELINE.get(baseline, baseline)}"
        out.append(Claim(published.NORM_CAUTION, verdict, evidence, scope, numbers, effect=below))
    return out or [unmeasured(published.NORM_CAUTION, f"{METHOD} was not compared with occlusion")]


def harder_claim(per_prompt: pd.DataFrame) -> Claim:
    """Per model: the gradient norm's agreement with occlusion (``<unk>``, in-domain)
    lower at the last occluded checkpoint than at the first, paired over prompts."""
    d = per_prompt[(per_prompt["method"] == METHOD) & (per_prompt["domain"] == "in")]
    baseline = "unk" if (d["baseline"] == "unk").any() else next(iter(d["baseline"]), "unk")
    d = d[d["baseline"] == baseline]
    flags, parts, numbers, falls = [], [], {}, []
    for model in study_order(d["model"].unique()):
        wide = d[d["model"] == model].pivot_table(
            index="prompt_id", columns="iteration", values="spearman"
        )
        change = first_to_last(wide)
        if change is None:
            continue
        first, last, ci = change
        flags.append(bool(ci["ci_high"] < 0))
        parts.append(
            f"{display(model)} ρ {wide[first].mean():.2f} → {wide[last].mean():.2f} (iteration "
            f"{int(first)} → {int(last)}; change {_interval(ci['mean'], ci['ci_low'], ci['ci_high'])})"
        )
        numbers[f"{model}_first"] = float(wide[first].mean())
        numbers[f"{model}_last"] = float(wide[last].mean())
        falls.append(-ci["mean"])  # the fall of ρ, paired over prompts
    if not flags:
        return unmeasured(published.NORM_HARDER, "needs occlusion at two trained checkpoints")
    numbers["smallest_fall"] = min(falls)
    evidence = (
        f"Spearman correlation of the gradient norm with |occlusion| ({_BASELINE.get(baseline, baseline)}), "
        "in-domain prompts: " + "; ".join(parts)
    )
    return Claim(
        published.NORM_HARDER,
        verdict_of(flags),
        evidence,
        "grad_norm vs occlusion",
        numbers,
        effect=min(falls),
    )


def _by_start(table: pd.DataFrame) -> list[tuple[tuple[str, str, str], pd.DataFrame]]:
    """The rows of ``grad_norm`` by (source, target, start), sources in the study's order."""
    if table.empty or "method" not in table.columns:
        return []
    t = table[table["method"] == METHOD]
    groups = dict(list(t.groupby(["source", "target", "start"], sort=True)))
    order = study_order({k[0] for k in groups})
    return sorted(groups.items(), key=lambda kv: (order.index(kv[0][0]), kv[0][1], kv[0][2]))


def _scope_pair(source: str, target: str, start: str) -> str:
    return f"{display(source)} → {display(target)} from {start}"


def towards_claim(prompts: pd.DataFrame) -> Claim:
    """Per adapted pair and start: the few-shot attributions rank the target prompts'
    characters more like the target's own model than the zero-shot ones do (paired over
    prompts, seeds averaged; interval above 0)."""
    flags, parts, numbers = [], [], {}
    for (source, target, start), g in _by_start(prompts):
        g = g.dropna(subset=["rho_few_own", "rho_zero_own"])
        if g.empty:
            continue
        per = g.groupby("prompt_id")[["rho_zero_own", "rho_few_own", "rho_zero_few"]].mean()
        ci = mean_ci((per["rho_few_own"] - per["rho_zero_own"]).to_numpy())
        if ci["n"] < 2:
            continue
        flags.append(bool(ci["ci_low"] > 0))
        parts.append(
            f"{_scope_pair(source, target, start)}: ρ with the {display(target)} model "
            f"{per['rho_zero_own'].mean():.2f} → {per['rho_few_own'].mean():.2f} (change "
            f"{_interval(ci['mean'], ci['ci_low'], ci['ci_high'])}); before vs after "
            f"{per['rho_zero_few'].mean():.2f}"
        )
        numbers[f"{source}_{target}_{start}_change"] = ci["mean"]
    if not flags:
        return unmeasured(
            published.ZERO_FEW_TOWARDS, "needs adapted models and the target corpora's own models"
        )
    changes = [v for k, v in numbers.items() if k.endswith("_change")]
    numbers["smallest_change"] = min(changes)
    evidence = (
        "Spearman correlation of gradient-norm attributions on the target's prompts, "
        "zero-shot → few-shot, with the target domain's own model: " + "; ".join(parts)
    )
    return Claim(
        published.ZERO_FEW_TOWARDS,
        verdict_of(flags),
        evidence,
        "adapted pairs and starts",
        numbers,
        effect=min(changes),
    )


def _shift(name: str, ci: dict) -> str:
    if ci["n"] < 2:  # a class in one prompt only has a share but no interval
        return f"{name} {ci['mean']:+.3f} (one prompt)"
    return f"{name} {ci['mean']:+.3f} [{ci['ci_low']:+.3f}, {ci['ci_high']:+.3f}]"


def shift_claim(classes: pd.DataFrame) -> Claim:
    """Per adapted pair and start: some character class's share of the attribution moves
    (few − zero, paired over prompts, seeds averaged; intervals Bonferroni-widened over
    the classes)."""
    flags, parts, numbers, clears = [], [], {}, []
    for (source, target, start), g in _by_start(classes):
        per = g.groupby(["char_class", "prompt_id"])[["share_zero", "share_few"]].mean()
        shift = (per["share_few"] - per["share_zero"]).groupby(level="char_class")
        if shift.ngroups == 0:
            continue
        confidence = bonferroni(shift.ngroups)
        cis = {c: mean_ci(v.to_numpy(), confidence) for c, v in shift}
        moved = [c for c, ci in cis.items() if ci["ci_low"] > 0 or ci["ci_high"] < 0]
        # the largest shift among the classes with an interval (else any)
        top = max(cis, key=lambda c: (cis[c]["n"] >= 2, abs(cis[c]["mean"]) if cis[c]["n"] else -1))
        flags.append(bool(moved))
        # the shift is two-sided: the signed margin of the class whose Bonferroni interval
        # lies furthest from zero (|mean| minus the half-width; positive: it moved)
        margins = [
            abs(ci["mean"]) - (ci["ci_high"] - ci["ci_low"]) / 2
            for ci in cis.values()
            if ci["n"] >= 2
        ]
        clears.append(max(margins, default=math.nan))
        what = (
            ", ".join(_shift(c, cis[c]) for c in moved)
            if moved
            else f"none (largest {_shift(top, cis[top])})"
        )
        parts.append(f"{_scope_pair(source, target, start)}: {what}")
        numbers[f"{source}_{target}_{start}_moved"] = len(moved)
    if not flags:
        return unmeasured(published.ZERO_FEW_SHIFT, "no adapted models in this run")
    effect = smallest_effect(clears)  # every pair and start must move
    if effect is not None:
        numbers["smallest_clearance"] = effect
    evidence = (
        "change of each character class's share of the gradient-norm attribution, few-shot "
        "minus zero-shot, on the target's prompts (intervals Bonferroni-widened over the "
        "classes); the classes that moved: " + "; ".join(parts)
    )
    return Claim(
        published.ZERO_FEW_SHIFT,
        verdict_of(flags),
        evidence,
        "adapted pairs and starts",
        numbers,
        effect=effect,
    )


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
        out += faithfulness_claims(verdicts, tables.get("faithfulness"))
    agreement, agree_prompts = tables.get("agreement"), tables.get("agreement_prompts")
    if agreement is not None and not agreement.empty and agree_prompts is not None:
        out += caution_claims(agreement)
        out.append(harder_claim(agree_prompts))
    zf_prompts, zf_classes = tables.get("zero_few_prompts"), tables.get("zero_few_classes")
    if zf_prompts is not None and zf_classes is not None:
        out.append(towards_claim(zf_prompts))
        out.append(shift_claim(zf_classes))
    return out
