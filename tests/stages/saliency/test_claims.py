"""The saliency claims on small hand-made tables: each of the study's Part 4 statements
holds, does not hold, or is not measured, from the numbers it rests on alone."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict
from domaingpt.core.statistics import bonferroni, mean_ci
from domaingpt.stages.saliency.claims import claims
from domaingpt.stages.saliency.faithfulness import method_verdicts


def by_class(rows: dict[tuple[str, int, str], dict[str, tuple[float, float]]]) -> pd.DataFrame:
    """``{(model, iteration, domain): {class: (mean magnitude, lift)}}`` as grad_norm rows."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "iteration": it,
                "method": "grad_norm",
                "domain": domain,
                "char_class": c,
                "mean_magnitude": mag,
                "lift": lift,
            }
            for (model, it, domain), classes in rows.items()
            for c, (mag, lift) in classes.items()
        ]
    )


def by_relpos(lifts: dict[str, dict[str, float]], iteration: int = 60) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "model": model,
                "iteration": iteration,
                "method": "grad_norm",
                "domain": "in",
                "relpos": g,
                "lift": lift,
            }
            for model, groups in lifts.items()
            for g, lift in groups.items()
        ],
        columns=["model", "iteration", "method", "domain", "relpos", "lift"],
    )


def by_checkpoint(series: dict[str, list[tuple[int, float, float]]]) -> pd.DataFrame:
    """``{model: [(iteration, total norm, share entropy), ...]}`` as in-domain rows."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "iteration": it,
                "method": "grad_norm",
                "domain": "in",
                "total_magnitude_mean": norm,
                "share_entropy_bits_mean": ent,
            }
            for model, points in series.items()
            for it, norm, ent in points
        ]
    )


def verdicts(*rows: tuple[str, str, object]) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "method": method,
                "verdict": verdict,
                "faithful_at_k": at_k,
                "models": "math,shakespeare",
                "evidence": "k=1: ...; k=3: ...",
            }
            for method, verdict, at_k in rows
        ]
    )


def find(found: list[Claim], claim: str, scope: str) -> Claim:
    (match,) = [c for c in found if c.claim == claim and c.scope == scope]
    return match


#: Shakespeare as the study says (vowels, consonants, punctuation); Math led by newlines.
CLASSES = by_class(
    {
        ("shakespeare", 60, "in"): {
            "vowel": (0.9, 1.4),
            "consonant": (0.5, 1.1),
            "punctuation": (0.2, 0.6),
            "whitespace": (0.1, 0.5),
        },
        # an earlier checkpoint and out-of-domain prompts are not what the claims read
        ("shakespeare", 10, "in"): {"vowel": (0.1, 1.0), "punctuation": (0.9, 1.0)},
        ("shakespeare", 60, "out"): {"vowel": (0.1, 1.0), "punctuation": (0.9, 1.0)},
        ("math", 60, "in"): {
            "newline": (0.9, 3.0),
            "vowel": (0.3, 0.8),
            "consonant": (0.1, 0.7),
            "punctuation": (0.2, 0.9),
            "digit": (0.4, 1.3),
            "math_symbol": (0.5, 2.8),
        },
    }
)
RELPOS = by_relpos(
    {
        "shakespeare": {"current_word": 3.1, "boundary": 1.5, "previous_word": 1.2},
        "math": {"current_word": 9.0, "previous_word": 0.4, "further_back": 0.3},
    }
)


CLASS_CLAIMS = (published.VOWELS_TOP, published.CONSONANTS_NEXT, published.PREVIOUS_WORD)


def test_class_claims_hold_or_not_per_model():
    found = claims({"by_class": CLASSES, "by_relpos": RELPOS})
    vowels = find(found, published.VOWELS_TOP, "Shakespeare model")
    assert vowels.verdict == Verdict.HOLDS
    assert vowels.numbers["mean_vowel"] == 0.9 and vowels.numbers["mean_whitespace"] == 0.1
    assert find(found, published.VOWELS_TOP, "Math model").verdict == Verdict.FAILS
    assert (
        "newline 0.9, math_symbol 0.5" in find(found, published.VOWELS_TOP, "Math model").evidence
    )
    consonants = find(found, published.CONSONANTS_NEXT, "Shakespeare model")
    assert consonants.verdict == Verdict.HOLDS
    assert consonants.numbers == pytest.approx(
        {"mean_consonant": 0.5, "mean_punctuation": 0.2, "consonant_minus_punctuation": 0.3}
    )
    assert find(found, published.CONSONANTS_NEXT, "Math model").verdict == Verdict.FAILS
    previous = find(found, published.PREVIOUS_WORD, "Shakespeare model")
    assert previous.verdict == Verdict.HOLDS and previous.numbers["lift_previous_word"] == 1.2
    assert find(found, published.PREVIOUS_WORD, "Math model").verdict == Verdict.FAILS
    # effects: vowels over the next class (Shakespeare: 0.9 - 0.5; Math: 0.3 - newline 0.9),
    # consonants over punctuation (0.5 - 0.2; Math 0.1 - 0.2), previous-word lift above 1
    effects = {(c.claim, c.scope): c.effect for c in found if c.claim in CLASS_CLAIMS}
    assert effects == pytest.approx(
        {
            (published.VOWELS_TOP, "Shakespeare model"): 0.4,
            (published.VOWELS_TOP, "Math model"): -0.6,
            (published.CONSONANTS_NEXT, "Shakespeare model"): 0.3,
            (published.CONSONANTS_NEXT, "Math model"): -0.1,
            (published.PREVIOUS_WORD, "Shakespeare model"): 0.2,
            (published.PREVIOUS_WORD, "Math model"): -0.6,
        }
    )


def test_a_model_without_vowels_in_its_prompts_is_not_measured():
    table = by_class({("math", 60, "in"): {"digit": (0.4, 1.3), "math_symbol": (0.5, 2.8)}})
    found = claims({"by_class": table, "by_relpos": by_relpos({})})
    assert find(found, published.VOWELS_TOP, "Math model").verdict == Verdict.UNMEASURED
    assert not [c for c in found if c.claim == published.CONSONANTS_NEXT]


def test_domain_claims_rest_on_the_lift_of_their_classes():
    found = claims({"by_class": CLASSES, "by_relpos": RELPOS})
    math_digits = find(found, published.MATH_DIGITS, "Math model")
    assert math_digits.verdict == Verdict.HOLDS
    assert math_digits.numbers == pytest.approx(
        {"lift_digit": 1.3, "lift_math_symbol": 2.8, "lowest_lift_above_1": 0.3}
    )
    assert math_digits.effect == pytest.approx(0.3)  # the lower of the two lifts, above 1
    # no Wikipedia model in this run: the claim is not measured, not failed
    assert find(found, published.WIKI_SPACE, "Wikipedia model").verdict == Verdict.UNMEASURED

    low_digits = CLASSES.copy()
    low_digits.loc[
        (low_digits["model"] == "math") & (low_digits["char_class"] == "digit"), "lift"
    ] = 0.9
    found = claims({"by_class": low_digits, "by_relpos": RELPOS})
    assert find(found, published.MATH_DIGITS, "Math model").verdict == Verdict.FAILS
    assert find(found, published.MATH_DIGITS, "Math model").effect == pytest.approx(-0.1)

    wiki = by_class({("wikipedia", 60, "in"): {"whitespace": (0.2, 2.4), "vowel": (0.1, 0.9)}})
    found = claims({"by_class": wiki, "by_relpos": by_relpos({})})
    space = find(found, published.WIKI_SPACE, "Wikipedia model")
    assert space.verdict == Verdict.HOLDS and space.numbers["lift_whitespace"] == 2.4
    assert space.effect == pytest.approx(1.4)
    # a Math model whose prompts have no math symbols cannot test the claim
    found = claims(
        {
            "by_class": by_class({("math", 60, "in"): {"digit": (0.4, 1.3)}}),
            "by_relpos": by_relpos({}),
        }
    )
    assert find(found, published.MATH_DIGITS, "Math model").verdict == Verdict.UNMEASURED


def test_norms_shrink_and_attributions_focus_along_training():
    table = by_checkpoint(
        {
            # rises, peaks at 10, ends lower; entropy falls
            "shakespeare": [(0, 2.0, 3.0), (10, 6.0, 2.5), (60, 1.5, 2.0)],
            # still rising at the end; entropy rises
            "math": [(0, 1.0, 2.0), (10, 2.0, 2.5), (60, 3.0, 3.1)],
            # two checkpoints cannot show a trend
            "wikipedia": [(0, 2.0, 3.0), (60, 1.0, 2.0)],
        }
    )
    found = claims({"by_checkpoint": table})
    shrink = find(found, published.GRADIENTS_SHRINK, "Shakespeare model")
    assert shrink.verdict == Verdict.HOLDS
    assert shrink.numbers == {
        "peak_norm": 6.0,
        "peak_iteration": 10,
        "last_norm": 1.5,
        "last_iteration": 60,
        "earlier_peak_minus_last": 4.5,
    }
    # effects: the earlier peak above the last norm; the fall of the shares' entropy
    assert shrink.effect == 4.5
    assert find(found, published.GRADIENTS_SHRINK, "Math model").effect == -1.0  # 2 - 3
    assert find(found, published.GRADIENTS_FOCUS, "Shakespeare model").effect == 1.0
    assert find(found, published.GRADIENTS_FOCUS, "Math model").effect == pytest.approx(-1.1)
    assert find(found, published.GRADIENTS_FOCUS, "Shakespeare model").verdict == Verdict.HOLDS
    assert find(found, published.GRADIENTS_SHRINK, "Math model").verdict == Verdict.FAILS
    focus = find(found, published.GRADIENTS_FOCUS, "Math model")
    assert focus.verdict == Verdict.FAILS and focus.numbers["last_entropy_bits"] == 3.1
    for claim in (published.GRADIENTS_SHRINK, published.GRADIENTS_FOCUS):
        c = find(found, claim, "Wikipedia model")
        assert c.verdict == Verdict.UNMEASURED and "checkpoints = 'all'" in c.evidence


def test_partly_faithful_is_partly():
    table = verdicts(
        ("grad_norm", "faithful", "1,3"),
        ("input_x_grad", "partly faithful", 3),
        ("integrated_gradients", "not faithful", math.nan),
    )
    found = {
        c.scope: c for c in claims({"verdicts": table}) if c.claim == published.TRULY_IMPORTANT
    }
    assert set(found) == {
        "grad_norm on the Shakespeare, Math models",
        "input_x_grad on the Shakespeare, Math models",
        "integrated_gradients on the Shakespeare, Math models",
    }
    assert all(c.claim == published.TRULY_IMPORTANT for c in found.values())
    partly = found["input_x_grad on the Shakespeare, Math models"]
    assert partly.verdict == Verdict.PARTLY
    assert partly.numbers == {"verdict": "partly faithful", "faithful_at_k": "3"}
    assert partly.evidence.startswith("partly faithful: k=1")
    assert found["grad_norm on the Shakespeare, Math models"].verdict == Verdict.HOLDS
    none = found["integrated_gradients on the Shakespeare, Math models"]
    assert none.verdict == Verdict.FAILS and none.numbers["faithful_at_k"] == ""


def test_faithful_at_some_k_only_is_partly_from_the_drops_on():
    """Per-prompt drops -> the pooled verdict -> the claim: at k=1 the top character
    always costs more than a random one, at k=3 no more than chance."""
    rows = []
    for model in ("shakespeare", "math"):
        for i in range(20):
            rows.append({"model": model, "method": "input_x_grad", "k": 1, "diff": 0.5 + i / 100})
            rows.append({"model": model, "method": "input_x_grad", "k": 3, "diff": (-1) ** i})
    drops = pd.DataFrame(rows).assign(drop_random=0.1)
    drops["drop_top"] = drops["drop_random"] + drops["diff"]
    table = method_verdicts(drops, n_boot=200, seed=0)
    assert table[["verdict", "faithful_at_k", "models"]].values.tolist() == [
        ["partly faithful", "1", "math,shakespeare"]
    ]
    (c,) = [c for c in claims({"verdicts": table}) if c.claim == published.TRULY_IMPORTANT]
    assert c.verdict == Verdict.PARTLY and c.scope == "input_x_grad on the Shakespeare, Math models"
    assert c.effect is None  # no per-model faithfulness table to take the drops from


def test_the_faithfulness_effect_is_the_smallest_pooled_extra_drop():
    """Per k the models' mean extra drops weighted by their prompts (the pooled mean the
    verdict tests), then the smallest over k."""
    faithfulness = pd.DataFrame(
        [
            {"model": model, "method": method, "k": k, "iteration": 60, "n": n, "diff_mean": d}
            for method, rows in {
                "grad_norm": [(1, 0.4, 0.2), (3, -0.1, 0.1)],
                "input_x_grad": [(1, 0.1, -0.3), (3, 0.2, 0.2)],
            }.items()
            for k, sh, ma in rows
            for model, n, d in (("shakespeare", 10, sh), ("math", 30, ma))
        ]
    )
    table = verdicts(("grad_norm", "faithful", "1,3"), ("input_x_grad", "partly faithful", "3"))
    found = claims({"verdicts": table, "faithfulness": faithfulness})
    effects = {c.scope.split()[0]: c.effect for c in found if c.claim == published.TRULY_IMPORTANT}
    # grad_norm: k=1 (10·0.4 + 30·0.2) / 40 = 0.25, k=3 (−1 + 3) / 40 = 0.05
    # input_x_grad: k=1 (1 − 9) / 40 = −0.2, k=3 0.2
    assert effects == pytest.approx({"grad_norm": 0.05, "input_x_grad": -0.2})


def test_an_unknown_faithfulness_verdict_is_not_measured():
    (c,) = [
        c
        for c in claims({"verdicts": verdicts(("grad_norm", "not tested", ""))})
        if c.claim == published.TRULY_IMPORTANT
    ]
    assert c.verdict == Verdict.UNMEASURED


@pytest.mark.parametrize("tables", [{}, {"by_class": CLASSES.assign(method="input_x_grad")}])
def test_without_grad_norm_the_gradient_claims_are_not_measured(tables):
    found = claims(tables)
    assert [(c.claim, c.verdict) for c in found] == [
        (published.VOWELS_TOP, Verdict.UNMEASURED),
        (published.GRADIENTS_SHRINK, Verdict.UNMEASURED),
    ]
    assert all("grad_norm was not run" in c.evidence for c in found)


# --- occlusion against the gradient norm -------------------------------------------------


def agreement(rows: dict[tuple[str, int, str, str], tuple[float, float, float]]) -> pd.DataFrame:
    """``{(model, iteration, baseline, method): (mean ρ, ci_low, ci_high)}``, in-domain."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "iteration": it,
                "baseline": baseline,
                "method": method,
                "domain": "in",
                "n": 8,
                "spearman": rho,
                "ci_low": lo,
                "ci_high": hi,
            }
            for (model, it, baseline, method), (rho, lo, hi) in rows.items()
        ]
    )


def agreement_prompts(values: dict[tuple[str, int], list[float]]) -> pd.DataFrame:
    """``{(model, iteration): [ρ of prompt 0, 1, ...]}``: grad_norm, <unk>, in-domain."""
    return pd.DataFrame(
        [
            {
                "model": model,
                "iteration": it,
                "baseline": "unk",
                "method": "grad_norm",
                "prompt_id": i,
                "prompt_corpus": model,
                "domain": "in",
                "spearman": rho,
            }
            for (model, it), rhos in values.items()
            for i, rho in enumerate(rhos)
        ]
    )


def test_the_caution_holds_when_gradient_norms_rank_unlike_occlusion():
    table = agreement(
        {
            ("shakespeare", 60, "unk", "grad_norm"): (0.1, -0.1, 0.3),
            ("shakespeare", 60, "unk", "integrated_gradients"): (0.7, 0.6, 0.8),
            ("shakespeare", 10, "unk", "grad_norm"): (0.9, 0.8, 1.0),  # not the final one
            ("math", 60, "unk", "grad_norm"): (0.2, 0.05, 0.35),
            ("shakespeare", 60, "space", "grad_norm"): (0.8, 0.7, 0.9),
            ("math", 60, "space", "grad_norm"): (0.3, 0.15, 0.45),
        }
    )
    prompts = agreement_prompts({("shakespeare", 60): [0.1, 0.2]})
    found = claims({"agreement": table, "agreement_prompts": prompts})
    unk = find(found, published.NORM_CAUTION, "grad_norm vs occlusion with <unk>")
    assert unk.verdict is Verdict.HOLDS
    assert unk.numbers == pytest.approx(
        {"shakespeare_spearman": 0.1, "math_spearman": 0.2, "below_agree": 0.3}
    )
    assert unk.effect == pytest.approx(0.3)  # the highest ρ, 0.2, is 0.3 below 0.5
    assert "Shakespeare ρ 0.10 [-0.10, 0.30] (other methods: integrated_gradients 0.70)" in (
        unk.evidence
    )
    space = find(found, published.NORM_CAUTION, "grad_norm vs occlusion with a space")
    assert space.verdict is Verdict.PARTLY
    strong = agreement({("math", 60, "unk", "grad_norm"): (0.8, 0.6, 0.9)})
    found = claims({"agreement": strong, "agreement_prompts": prompts})
    assert find(found, published.NORM_CAUTION, "grad_norm vs occlusion with <unk>").verdict is (
        Verdict.FAILS
    )
    assert find(found, published.NORM_CAUTION, "grad_norm vs occlusion with <unk>").effect == (
        pytest.approx(-0.3)
    )
    unclear = agreement({("math", 60, "unk", "grad_norm"): (0.5, 0.3, 0.7)})
    found = claims({"agreement": unclear, "agreement_prompts": prompts})
    assert find(found, published.NORM_CAUTION, "grad_norm vs occlusion with <unk>").verdict is (
        Verdict.PARTLY
    )


def test_agreement_falls_after_training_for_one_model_of_two():
    prompts = agreement_prompts(
        {
            ("shakespeare", 10): [0.6, 0.5, 0.7, 0.55],
            ("shakespeare", 60): [0.2, 0.1, 0.3, 0.15],
            ("math", 10): [0.6, 0.5, 0.7, 0.55],
            ("math", 60): [0.62, 0.45, 0.72, 0.56],
        }
    )
    table = agreement({("math", 60, "unk", "grad_norm"): (0.2, 0.1, 0.3)})
    found = claims({"agreement": table, "agreement_prompts": prompts})
    (harder,) = [c for c in found if c.claim == published.NORM_HARDER]
    assert harder.verdict is Verdict.PARTLY
    assert harder.numbers["shakespeare_first"] == pytest.approx(0.5875)
    assert harder.numbers["shakespeare_last"] == pytest.approx(0.1875)
    # effect: the smaller fall of ρ over the two models (Shakespeare 0.4, Math none)
    assert harder.effect == pytest.approx(0.0) and harder.numbers["smallest_fall"] == harder.effect
    assert "iteration 10 → 60" in harder.evidence
    rising = prompts.assign(iteration=prompts["iteration"].map({10: 60, 60: 10}))
    (harder,) = [
        c
        for c in claims({"agreement": table, "agreement_prompts": rising})
        if c.claim == published.NORM_HARDER
    ]  # Shakespeare's ρ rises 0.4 along training: a negative effect
    assert harder.verdict is Verdict.FAILS and harder.effect == pytest.approx(-0.4)
    one = prompts[prompts["iteration"] == 60]
    (harder,) = [
        c
        for c in claims({"agreement": table, "agreement_prompts": one})
        if c.claim == published.NORM_HARDER
    ]
    assert harder.verdict is Verdict.UNMEASURED


# --- zero- vs few-shot, answered ------------------------------------------------------


def zero_few_prompts(values: dict[tuple[str, str, str], tuple[list, list]]) -> pd.DataFrame:
    """``{(source, target, start): (ρ zero-own per prompt, ρ few-own per prompt)}``, the
    same for two seeds."""
    return pd.DataFrame(
        [
            {
                "source": s,
                "target": t,
                "start": start,
                "seed": f"seed{seed}",
                "method": "grad_norm",
                "own_model": t,
                "prompt_id": i,
                "log_p_zero": -3.0,
                "log_p_few": -2.0,
                "rho_zero_few": 0.6,
                "rho_zero_own": zero,
                "rho_few_own": few + 0.01 * seed,
            }
            for (s, t, start), (zeros, fews) in values.items()
            for seed in (0, 1)
            for i, (zero, few) in enumerate(zip(zeros, fews, strict=True))
        ]
    )


def zero_few_classes(shifts: dict[tuple[str, str, str], dict[str, list[float]]]) -> pd.DataFrame:
    """``{(source, target, start): {class: [few − zero share per prompt]}}``."""
    return pd.DataFrame(
        [
            {
                "source": s,
                "target": t,
                "start": start,
                "seed": "seed0",
                "method": "grad_norm",
                "own_model": t,
                "prompt_id": i,
                "char_class": c,
                "share_zero": 0.3,
                "share_few": 0.3 + d,
                "share_own": 0.5,
            }
            for (s, t, start), classes in shifts.items()
            for c, deltas in classes.items()
            for i, d in enumerate(deltas)
        ]
    )


def test_few_shot_attributions_move_towards_the_targets_own_model():
    prompts = zero_few_prompts(
        {
            ("math", "wikipedia", "final"): ([0.3, 0.35, 0.25, 0.3], [0.3, 0.34, 0.27, 0.29]),
            ("shakespeare", "math", "final"): ([0.3, 0.35, 0.25, 0.3], [0.7, 0.8, 0.6, 0.72]),
        }
    )
    classes = zero_few_classes(
        {
            ("shakespeare", "math", "final"): {
                "vowel": [0.2, 0.21, 0.19, 0.2],
                "digit": [0.0, 0.01, -0.01, 0.0],
            },
            # a class in one prompt only: a share but no interval, never "[+nan, +nan]"
            ("math", "wikipedia", "final"): {"vowel": [0.01, -0.01, 0.02, -0.02], "digit": [0.3]},
        }
    )
    found = claims({"zero_few_prompts": prompts, "zero_few_classes": classes})
    (towards,) = [c for c in found if c.claim == published.ZERO_FEW_TOWARDS]
    assert towards.verdict is Verdict.PARTLY
    assert towards.numbers["shakespeare_math_final_change"] == pytest.approx(0.705 + 0.005 - 0.3)
    assert towards.evidence.index("Shakespeare → Math") < towards.evidence.index("Math → Wikipedia")
    # effect: the smaller change of ρ over the pairs (Math → Wikipedia: 0.305 - 0.3)
    assert towards.effect == pytest.approx(0.005)
    (shift,) = [c for c in found if c.claim == published.ZERO_FEW_SHIFT]
    assert shift.verdict is Verdict.PARTLY
    assert "Shakespeare → Math from final: vowel +0.200" in shift.evidence
    assert "Math → Wikipedia from final: none (largest vowel" in shift.evidence
    assert "nan" not in shift.evidence
    # effect: per pair the class whose interval (Bonferroni over its classes) lies furthest
    # from zero, |mean| minus half its width; the smaller over the pairs: Math → Wikipedia,
    # whose vowel shift (mean 0) has an interval across zero (a one-prompt class has none)
    vowel = mean_ci(np.array([0.01, -0.01, 0.02, -0.02]), bonferroni(2))
    assert shift.effect == pytest.approx(-(vowel["ci_high"] - vowel["ci_low"]) / 2)
    assert shift.effect < 0


def test_zero_few_without_the_targets_own_model_is_not_measured():
    prompts = zero_few_prompts({("shakespeare", "math", "final"): ([0.3, 0.3], [0.7, 0.7])})
    prompts["rho_zero_own"] = math.nan
    prompts["rho_few_own"] = math.nan
    empty = zero_few_classes({})
    found = claims({"zero_few_prompts": prompts, "zero_few_classes": empty})
    verdicts_ = {c.claim: c.verdict for c in found}
    assert verdicts_[published.ZERO_FEW_TOWARDS] is Verdict.UNMEASURED
    assert verdicts_[published.ZERO_FEW_SHIFT] is Verdict.UNMEASURED
