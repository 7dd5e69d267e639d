"""The few-shot claims on hand-made adaptation tables: partial adaptation and the slow
Shakespeare model from the target losses; early vs final over the source models (the
independent units), its exact sign-flip p checked against every flip enumerated."""

from __future__ import annotations

import itertools
import math
import statistics

import pandas as pd
import pytest

from domaingpt.core.claims import Verdict
from domaingpt.core.published import EARLY_EASIER, PARTIAL_ADAPTATION, SHAKESPEARE_SLOW
from domaingpt.stages.adapt import summarize
from domaingpt.stages.adapt.claims import claims

CORPORA = ("shakespeare", "math", "wikipedia")
IN_DOMAIN = pd.DataFrame({"corpus": list(CORPORA), "loss_nats": [1.4, 1.2, 1.4]})


def final(drops: dict[str, float], after: float = 2.0) -> pd.DataFrame:
    """Final-start runs of every ordered pair: the target loss falls by ``drops[source]``
    to ``after``; early starts beside them (which the loss claims ignore)."""
    rows = []
    for source in CORPORA:
        for target in CORPORA:
            if source == target:
                continue
            for start, step0 in (("final", after + drops[source]), ("early", 9.0)):
                rows.append(
                    {
                        "source": source,
                        "target": target,
                        "start": start,
                        "seed": 0,
                        "target_loss": after,
                        "target_loss_step0": step0,
                    }
                )
    return pd.DataFrame(rows)


def pairs(*deltas: tuple[float, float, int], sources: list[str] | None = None) -> pd.DataFrame:
    """A summary table: one pair per (Δ early − final, its spread, seeds paired); pair i
    has source ``sources[i]`` (default: its own source ``s<i>``)."""
    return pd.DataFrame(
        [
            {
                "source": sources[i] if sources else f"s{i}",
                "target": f"t{i}",
                "n_paired": n,
                "delta_early_minus_final": d,
                "delta_spread": spread,
            }
            for i, (d, spread, n) in enumerate(deltas)
        ]
    )


def tables(summary: pd.DataFrame, drops: dict[str, float] | None = None) -> dict:
    drops = drops or {"shakespeare": 0.5, "math": 1.0, "wikipedia": 1.5}
    return {"final": final(drops), "summary": summary, "in_domain": IN_DOMAIN}


def early_claim(summary: pd.DataFrame):
    (claim,) = [c for c in claims(tables(summary)) if c.claim == EARLY_EASIER]
    return claim


def test_partial_adaptation_and_a_slow_shakespeare_model_hold():
    out = claims(tables(pairs()))
    assert out[0].claim.startswith(f"{PARTIAL_ADAPTATION}: ")
    assert [c.claim for c in out[1:]] == [SHAKESPEARE_SLOW, EARLY_EASIER]
    partial, slow = out[0], out[1]
    assert partial.verdict == Verdict.HOLDS and slow.verdict == Verdict.HOLDS
    assert "Shakespeare → Math: 2.50 → 2.00, in-domain model 1.20" in partial.evidence
    assert slow.numbers == {
        "drop_shakespeare": 0.5,
        "drop_math": 1.0,
        "drop_wikipedia": 1.5,
        "slower_by": 0.5,
    }
    # effects: the smallest margin over the pairs, here the Shakespeare model's fall of 0.5
    # (its targets end at 2.0, 0.6 above Wikipedia's and 0.8 above Math's in-domain loss)
    assert partial.effect == pytest.approx(0.5) and slow.effect == pytest.approx(0.5)


def test_adaptation_that_fails_to_move_or_overshoots_does_not_hold():
    t = tables(pairs(), drops={"shakespeare": 1.5, "math": 1.0, "wikipedia": 0.5})
    fast = claims(t)[1]  # Shakespeare's target loss falls most, 1.0 more than Wikipedia's
    assert fast.verdict == Verdict.FAILS and fast.effect == pytest.approx(-1.0)
    t["final"]["target_loss_step0"] = t["final"]["target_loss"] - 0.1  # the loss rises
    partial, slow = claims(t)[:2]
    assert partial.verdict == Verdict.FAILS and partial.effect == pytest.approx(-0.1)
    assert slow.verdict == Verdict.FAILS  # Shakespeare's target loss does not fall least
    assert slow.effect == pytest.approx(0.0)  # every target loss rises 0.1: a tie, the null
    below = tables(pairs())
    below["in_domain"] = IN_DOMAIN.assign(loss_nats=3.0)  # adapted models beat in-domain ones
    assert claims(below)[0].verdict == Verdict.FAILS
    assert claims(below)[0].effect == pytest.approx(2.0 - 3.0)  # 1.0 below in-domain
    some = tables(pairs())
    some["in_domain"] = IN_DOMAIN.assign(loss_nats=[1.4, 3.0, 1.4])  # better than Math's own
    assert claims(some)[0].verdict == Verdict.PARTLY


def test_no_results_is_not_measured():
    out = claims({})
    assert [c.verdict for c in out] == [Verdict.UNMEASURED] * 2
    assert [c.claim for c in out] == [PARTIAL_ADAPTATION, EARLY_EASIER]


def flip_p_by_hand(values: list[float]) -> float:
    """The two-sided sign-flip p, every one of the 2^n sign assignments enumerated."""
    observed = abs(sum(values))
    flips = list(itertools.product((1, -1), repeat=len(values)))
    hits = sum(abs(sum(s * v for s, v in zip(f, values, strict=True))) >= observed - 1e-12
               for f in flips)  # fmt: skip
    return hits / len(flips)


def test_the_source_model_is_the_unit_of_the_early_vs_final_test():
    # five sources, two targets each: per source final − early is minus the mean Δ
    per_source = [0.4, 0.3, 0.2, 0.1, -0.05]
    deltas = [(-v + dv, 0.01, 3) for v in per_source for dv in (-0.1, 0.1)]
    summary = pairs(*deltas, sources=[f"s{i}" for i in range(5) for _ in range(2)])
    claim = early_claim(summary)
    # by hand: flipping a set S of sources moves the sum 0.95 to 0.95 − 2 Σ_S; at least as
    # far from 0 when Σ_S ≤ 0 ({}, {s4}) or Σ_S ≥ 0.95 (their complements): 4 of 32
    assert flip_p_by_hand(per_source) == 4 / 32
    assert claim.numbers["permutation_p"] == pytest.approx(4 / 32)
    assert claim.numbers["sign_p"] == pytest.approx(2 * 6 / 32)  # 4 vs 1: P(X <= 1), twice
    assert claim.numbers["n_sources"] == 5 and claim.numbers["n_pairs"] == 10
    assert claim.numbers["final_minus_early_s4"] == pytest.approx(-0.05)
    # the effect: the mean over the sources, with a Student-t interval over the five
    mean, sd = statistics.mean(per_source), statistics.stdev(per_source)
    half = 2.7764451051977987 * sd / math.sqrt(5)  # t(0.975, 4 df)
    assert claim.effect == pytest.approx(mean) and mean == pytest.approx(0.19)
    assert claim.numbers["ci_low"] == pytest.approx(mean - half)
    assert claim.numbers["ci_high"] == pytest.approx(mean + half)
    assert claim.verdict == Verdict.FAILS  # p = 0.125, and one source the other way
    assert "exact sign-flip permutation p = 0.125" in claim.evidence
    assert claim.scope == "source models"


def test_early_vs_final_verdicts_over_source_models():
    # six pairs of three sources, the final start better in each (the cpu study's case):
    # the pairs are not independent; over the three sources p = 2/8 at best
    final_better = pairs(*[(0.3, math.nan, 1)] * 6, sources=["a", "a", "b", "b", "c", "c"])
    claim = early_claim(final_better)
    assert claim.verdict == Verdict.FAILS and claim.effect == pytest.approx(-0.3)
    assert claim.numbers["permutation_p"] == pytest.approx(0.25)
    assert claim.numbers["sign_p"] == pytest.approx(0.25)
    assert claim.numbers["n_sources"] == 3 and claim.numbers["final_better"] == 3
    # every source the early way, but three sources cannot reach p < 0.05: partly
    three_early = early_claim(pairs(*[(-0.3, math.nan, 1)] * 3))
    assert three_early.verdict == Verdict.PARTLY and three_early.effect == pytest.approx(0.3)
    # six sources all the early way: p = 2/64, holds
    six_early = early_claim(pairs(*[(-0.3, math.nan, 1)] * 6))
    assert six_early.verdict == Verdict.HOLDS
    assert six_early.numbers["permutation_p"] == pytest.approx(2 / 64)
    assert flip_p_by_hand([0.3] * 6) == 2 / 64


def test_the_per_pair_outcomes_stay_as_detail():
    clear_early = (-0.2, 0.05, 3)
    clear_final = (0.2, 0.05, 3)
    unclear = (-0.05, 0.05, 3)  # |Δ| below twice its spread
    mixed = early_claim(pairs(clear_early, clear_final, unclear))
    assert mixed.numbers["early_better_pairs"] == 1
    assert (mixed.numbers["final_better_pairs"], mixed.numbers["unclear_pairs"]) == (1, 1)
    assert (
        "per pair (over seeds): early start better in 1, final start better in 1, no clear "
        "difference in 1 of 3 pairs" in mixed.evidence
    )
    # over the three sources: +0.2, −0.2, +0.05
    assert mixed.effect == pytest.approx(0.05 / 3) and mixed.verdict == Verdict.FAILS


def test_the_early_start_has_less_pretraining_and_the_claim_says_so():
    summary = pairs(*[(-0.3, math.nan, 1)] * 3, sources=["shakespeare", "math", "wikipedia"])
    t = tables(summary)
    rows = []
    for src in CORPORA:
        for start, it, loss in (("early", 250, 2.4), ("final", 2000, 1.5)):
            rows.append(
                {"source": src, "target": "x", "start": start, "seed": 0,
                 "source_iteration": it, "source_loss_step0": loss,
                 "target_loss": 2.0, "target_loss_step0": 3.0}
            )  # fmt: skip
    t["final"] = pd.DataFrame(rows)
    (claim,) = [c for c in claims(t) if c.claim == EARLY_EASIER]
    assert "the early start also has less pretraining" in claim.evidence
    assert "Shakespeare iteration 250 vs 2000, pretraining loss 2.40 vs 1.50" in claim.evidence
    assert "cannot be made at equal pretraining loss in this design" in claim.evidence
    assert claim.numbers["early_iteration_math"] == 250
    assert claim.numbers["final_pretraining_loss_wikipedia"] == 1.5


def test_too_few_source_models_is_not_measured():
    two = early_claim(pairs((-0.3, math.nan, 1), (-0.2, math.nan, 1), sources=["a", "a"]))
    assert two.verdict == Verdict.UNMEASURED and two.effect is None
    assert two.evidence.startswith("2 pairs: fewer than 2 source models")
    assert "n_sources" not in two.numbers
    none = early_claim(pairs((math.nan, math.nan, 0)))  # no early/final runs to compare
    assert none.verdict == Verdict.UNMEASURED


def test_the_claims_read_a_summary_made_by_summarize():
    rows = [
        {"source": src, "target": "t", "start": start, "seed": seed, "forgetting": 0.1,
         "source_iteration": {"early": 100, "final": 1000}[start],
         "target_loss": loss + 0.01 * seed}
        for src in ("a", "b")
        for seed in (0, 1, 2)
        for start, loss in (("early", 2.0), ("final", 2.3))
    ]  # fmt: skip
    summary = summarize(pd.DataFrame(rows))
    assert list(summary["outcome"]) == ["early", "early"]
    claim = early_claim(summary)
    assert claim.verdict == Verdict.PARTLY and claim.effect == pytest.approx(0.3)
