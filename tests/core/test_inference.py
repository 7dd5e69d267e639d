"""Claims across replicate models: hand-made tables, numbers checked by hand and scipy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from domaingpt.context.stage import Stage
from domaingpt.core.claims import Claim, Verdict
from domaingpt.core.inference import (
    adjust,
    combine,
    holm,
    replicate_tables,
    replicates_of,
    verdict,
    with_replicate_column,
)
from domaingpt.core.replicates import (
    base_name,
    is_reserved,
    replicate_name,
    replicate_of,
    split_replicate,
)
from domaingpt.core.statistics import mean_ci

CLAIM = "out-of-domain prompts show higher entropy"


def test_replicate_names_round_trip():
    assert replicate_name("math", 0) == "math" and replicate_name("math", 3) == "math__r3"
    assert split_replicate("math__r3") == ("math", 3) and split_replicate("math") == ("math", 0)
    assert split_replicate("my__r0") == ("my__r0", 0)  # r0 is never written: not a replicate
    assert replicate_of("domains:math__r2@60:wikipedia__r2@60:all") == 2
    assert replicate_of("shakespeare__r1__to__math") == 1 and replicate_of(float("nan")) == 0
    assert (
        base_name("domains:math__r2@60:wikipedia__r2@60:all") == "domains:math@60:wikipedia@60:all"
    )
    assert base_name("shakespeare__r12__to__math") == "shakespeare__to__math"
    assert is_reserved("a__r1__b") and is_reserved("notes__r2") and not is_reserved("a__rb")


def test_replicate_tables_split_rows_and_restore_names():
    tables = {
        "per_prompt": pd.DataFrame(
            {
                "model": ["math", "math__r1", "wikipedia__r1", "wikipedia"],
                "value": [1.0, 2.0, 3.0, 4.0],
            }
        ),
        "cka": pd.DataFrame(
            {
                "comparison": [
                    "domains:math@9:wikipedia@9:all",
                    "domains:math__r1@9:wikipedia__r1@9:all",
                ]
            }
        ),
        "matrix": pd.DataFrame({"math": [1.0, 2.0]}, index=["math", "math__r1"]),
        "prompts": pd.DataFrame({"corpus": ["math", "wikipedia"]}),  # no model: shared
    }
    assert replicates_of(tables) == [0, 1]
    one = replicate_tables(tables, 1)
    assert one["per_prompt"]["model"].tolist() == ["math", "wikipedia"]
    assert one["per_prompt"]["value"].tolist() == [2.0, 3.0]
    assert one["cka"]["comparison"].tolist() == ["domains:math@9:wikipedia@9:all"]
    assert one["matrix"].index.tolist() == ["math"] and one["matrix"]["math"].tolist() == [2.0]
    assert one["prompts"].equals(tables["prompts"])
    assert replicate_tables(tables, 0)["per_prompt"]["value"].tolist() == [1.0, 4.0]
    # a row about two models (no adaptation source) belongs to its models' replicate
    cka = pd.DataFrame({"model_a": ["math", "math__r1"], "source": [None, None]})
    assert replicate_tables({"cka": cka}, 1)["cka"]["model_a"].tolist() == ["math"]
    marked = with_replicate_column(tables)
    assert marked["per_prompt"].columns.tolist() == ["model", "replicate", "value"]
    assert marked["per_prompt"]["replicate"].tolist() == [0, 1, 1, 0]
    assert "replicate" not in marked["prompts"]
    assert replicate_tables(marked, 1)["per_prompt"].columns.tolist() == ["model", "value"]


def _entropy_claims(tables):
    """A stage's claim on one model: out- minus in-domain entropy over prompts, holds when
    the per-prompt Welch interval excludes zero (the within-model test)."""
    df = tables["per_prompt"]
    out = df.loc[df["domain"] == "out", "entropy"].to_numpy()
    inside = df.loc[df["domain"] == "in", "entropy"].to_numpy()
    ci = mean_ci(out - inside)
    holds = ci["ci_low"] > 0
    return [
        Claim(
            CLAIM,
            Verdict.HOLDS if holds else Verdict.FAILS,
            f"{ci['mean']:+.2f} [{ci['ci_low']:+.2f}, {ci['ci_high']:+.2f}]",
            "math model",
            {"gap": ci["mean"]},
            effect=ci["mean"],
        )
    ]


def _per_prompt(gaps: dict[str, float], n: int = 40) -> pd.DataFrame:
    """Per-prompt entropies of each model with out-of-domain gap ``gaps[model]`` and a
    little per-prompt noise: each model's own interval is narrow."""
    rng = np.random.default_rng(0)
    rows = []
    for model, gap in gaps.items():
        base = rng.normal(3.0, 0.1, n)
        for i in range(n):
            rows.append({"model": model, "prompt": i, "domain": "in", "entropy": base[i]})
            noise = rng.normal(0, 0.02)
            rows.append(
                {"model": model, "prompt": i, "domain": "out", "entropy": base[i] + gap + noise}
            )
    return pd.DataFrame(rows)


STAGE = Stage(
    "softmax",
    "softmax",
    settings=object,
    run=lambda c, s: {},
    load=lambda r: {},
    claims=_entropy_claims,
)


def test_replicates_that_disagree_do_not_make_a_claim_hold():
    # each model's per-prompt interval excludes zero, but one model goes the other way
    tables = {"per_prompt": _per_prompt({"math": 0.5, "math__r1": -0.3, "math__r2": 0.4})}
    per = {r: _entropy_claims(replicate_tables(tables, r)) for r in (0, 1, 2)}
    assert [c[0].verdict for c in per.values()] == [Verdict.HOLDS, Verdict.FAILS, Verdict.HOLDS]
    (claim,) = STAGE.checked_claims(tables)
    assert claim.verdict is Verdict.FAILS and claim.numbers["models"] == 3
    assert claim.numbers["all_models_agree"] is False
    effects = [per[r][0].effect for r in (0, 1, 2)]
    assert claim.effect == pytest.approx(np.mean(effects))
    assert claim.numbers["p"] == pytest.approx(stats.ttest_1samp(effects, 0).pvalue, rel=1e-9)
    lo, hi = stats.ttest_1samp(effects, 0).confidence_interval()
    assert (claim.numbers["effect_ci_low"], claim.numbers["effect_ci_high"]) == pytest.approx(
        (lo, hi), rel=1e-9
    )


def test_replicates_that_agree_hold_or_partly_hold():
    agree = {"per_prompt": _per_prompt({"math": 0.50, "math__r1": 0.52, "math__r2": 0.49})}
    (claim,) = STAGE.checked_claims(agree)
    assert claim.verdict is Verdict.HOLDS and claim.numbers["p"] < 0.001
    spread = {"per_prompt": _per_prompt({"math": 0.05, "math__r1": 0.9, "math__r2": 0.3})}
    (claim,) = STAGE.checked_claims(spread)  # same direction, across-model t not significant
    assert claim.numbers["p"] > 0.05 and claim.verdict is Verdict.PARTLY


def test_one_replicate_is_one_model_with_its_own_verdict():
    (claim,) = STAGE.checked_claims({"per_prompt": _per_prompt({"math": 0.5})})
    assert claim.verdict is Verdict.ONE_MODEL
    assert claim.numbers["model_verdict"] == "holds" and claim.evidence.startswith("one model")
    assert "p" not in claim.numbers  # not a tested claim: Holm leaves it out
    assert adjust([claim]) == [claim]


def test_per_model_and_unmeasured_claims_are_not_combined():
    named = Claim("beats nanoGPT", Verdict.FAILS, "3.3 vs 1.9", "shakespeare", per_model=True)
    none = Claim("hardens at 4000", Verdict.UNMEASURED, "run ends at 2000", "math model")
    out = combine({0: [named, none], 1: [named, none]})
    assert [c.scope for c in out] == [
        "shakespeare, replicate 0",
        "math model",
        "shakespeare, replicate 1",
    ]
    assert out[0].verdict is Verdict.FAILS and out[1].verdict is Verdict.UNMEASURED


def test_identical_effects_fall_back_to_the_sign_test():
    """A discrete effect (a checkpoint iteration) the same in every model is no infinite
    certainty: the t-test is undefined, the signs are what is known."""
    same = [Claim("c", Verdict.HOLDS, "", "s", effect=0.7) for _ in range(3)]
    (c,) = combine(dict(enumerate([[x] for x in same])))
    assert c.numbers["p"] == pytest.approx(0.25) and c.verdict is Verdict.PARTLY
    assert "identical effects, exact sign test" in c.evidence


def test_claims_without_an_effect_use_an_exact_sign_test():
    holds = Claim("c", Verdict.HOLDS, "", "s")
    fails = Claim("c", Verdict.FAILS, "", "s")
    (c,) = combine({r: [holds] for r in range(6)})
    assert c.numbers["p"] == pytest.approx(stats.binomtest(6, 6).pvalue)  # 2/64
    assert c.verdict is Verdict.HOLDS
    (c,) = combine({0: [holds], 1: [holds], 2: [holds]})
    assert c.numbers["p"] == pytest.approx(0.25) and c.verdict is Verdict.PARTLY
    (c,) = combine({0: [holds], 1: [fails], 2: [holds]})
    assert c.verdict is Verdict.FAILS


def test_holm_by_hand():
    p = [0.01, 0.04, 0.03, 0.005]
    # sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> max so far 0.06
    assert holm(p) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


def test_adjust_decides_on_the_holm_adjusted_p():
    def tested(p: float) -> Claim:
        numbers = {"models": 3, "effect_direction": 1.0, "all_models_agree": True, "p": p}
        return Claim("c", verdict(3, 1.0, True, p), "e", f"s{p}", numbers)

    raw = [tested(0.03), tested(0.04), tested(0.001)]
    assert [c.verdict for c in raw] == [Verdict.HOLDS] * 3
    out = adjust([*raw, Claim("stats", Verdict.HOLDS, "about a corpus")])
    assert [c.numbers.get("p_adjusted") for c in out[:3]] == pytest.approx([0.06, 0.06, 0.003])
    assert [c.verdict for c in out] == [
        Verdict.PARTLY,
        Verdict.PARTLY,
        Verdict.HOLDS,
        Verdict.HOLDS,
    ]
    assert "Holm-adjusted p = 0.06 over 3 tested claims" in out[0].evidence


def test_the_verdict_rule():
    assert verdict(1, 1.0, True, 0.0) is Verdict.ONE_MODEL
    assert verdict(3, 1.0, True, 0.01) is Verdict.HOLDS
    assert verdict(3, -1.0, False, 0.01) is Verdict.FAILS  # significant the other way
    assert verdict(3, 1.0, True, 0.2) is Verdict.PARTLY
    assert verdict(3, 1.0, False, 0.2) is Verdict.FAILS
