"""The attention stage's claims on hand-made per-prompt tables."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Verdict
from domaingpt.stages.attention import claims
from domaingpt.stages.attention.claims import cross_fitted_best

NOISE = (-0.02, 0.01, 0.0, 0.02, -0.01, 0.0)
CHANCE = 0.3


def prompts() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": range(len(NOISE)),
            "prompt_corpus": "c",
            "length": 32,
            **{f"chance_{g}": CHANCE for g in ("current_word", "boundary", "previous_word")},
            "chance_further_back": 0.1,
        }
    )


def rows(model: str, iteration: int, heads: dict[tuple[int, int], tuple[float, float]]) -> list:
    """In-domain rows: ``{(layer, head): (entropy, previous-word share)}``, six prompts."""
    return [
        {
            "model": model,
            "iteration": iteration,
            "prompt_id": k,
            "prompt_corpus": model,
            "domain": "in",
            "layer": layer,
            "head": head,
            "entropy_bits": entropy + e,
            "distance": 5.0,
            "share_previous_word": share + e,
        }
        for (layer, head), (entropy, share) in heads.items()
        for k, e in enumerate(NOISE)
    ]


def table(*parts: list) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p])


def by_claim(found: list) -> dict:
    return {c.claim: c for c in found}


def test_a_head_reads_the_previous_word_in_one_model_of_two():
    t = table(
        rows("shakespeare", 100, {(1, 0): (2.0, 0.5), (1, 1): (2.0, CHANCE), (2, 0): (2.0, 0.2)}),
        rows("math", 100, {(1, 0): (2.0, CHANCE), (1, 1): (2.0, CHANCE + 0.001)}),
        rows("math", 10, {(1, 0): (3.0, 0.9)}),  # an earlier checkpoint is not the final one
    )
    found = by_claim(claims({"per_prompt": t, "prompts": prompts()}))
    head = found[published.ATTN_PREVIOUS_WORD]
    assert head.verdict is Verdict.PARTLY
    assert head.numbers["shakespeare_best_share"] == pytest.approx(0.5)
    assert head.numbers["shakespeare_best_excess"] == pytest.approx(0.2)
    assert head.numbers["shakespeare_heads_above"] == 1 and head.numbers["math_heads_above"] == 0
    assert "layer 1 head 0 puts 0.500" in head.evidence
    assert head.evidence.index("Shakespeare") < head.evidence.index("Math")
    # the effect: the smallest cross-fitted best-head excess, math's (head 1 1, +0.001)
    assert head.numbers["shakespeare_cross_fitted_excess"] == pytest.approx(0.2)
    assert head.effect == pytest.approx(0.001) == head.numbers["smallest_cross_fitted_excess"]
    assert not head.per_model


def test_the_best_heads_excess_is_cross_fitted():
    """Two heads at chance on average, each ahead on the half of the prompts where the
    other is behind: the best of their means is above zero, a head picked on one half and
    scored on the other is not."""
    excess = pd.DataFrame(
        {
            (1, 0): [0.06, -0.04, 0.06, -0.04],
            (1, 1): [-0.04, 0.06, -0.04, 0.06],
        },
        index=pd.Index([0, 1, 2, 3], name="prompt_id"),
    )
    assert excess.mean().max() == pytest.approx(0.01)
    assert cross_fitted_best(excess) == pytest.approx(-0.04)
    assert math.isnan(cross_fitted_best(excess.iloc[:1]))  # one prompt: no two halves


def test_the_intervals_hold_together_over_a_models_heads():
    """An excess a single 95 % interval would call real is not one among many heads
    (the excess sits between the single t-interval's edge and the Bonferroni one)."""
    small = {(1, h): (2.0, CHANCE + 0.015) for h in range(12)}
    t = table(rows("a", 100, small))
    head = by_claim(claims({"per_prompt": t, "prompts": prompts()}))[published.ATTN_PREVIOUS_WORD]
    assert head.verdict is Verdict.FAILS
    assert head.effect == pytest.approx(0.015)  # the estimate stands, the test does not
    one = table(rows("a", 100, {(1, 0): (2.0, CHANCE + 0.015)}))
    head = by_claim(claims({"per_prompt": one, "prompts": prompts()}))[published.ATTN_PREVIOUS_WORD]
    assert head.verdict is Verdict.HOLDS


def test_attention_focuses_as_the_model_learns():
    t = table(
        rows("a", 0, {(1, 0): (5.0, CHANCE)}),  # iteration 0 is left out
        rows("a", 10, {(1, 0): (3.0, CHANCE), (1, 1): (3.2, CHANCE)}),
        rows("a", 100, {(1, 0): (2.0, CHANCE), (1, 1): (2.2, CHANCE)}),
        rows("b", 10, {(1, 0): (3.0, CHANCE)}),
        rows("b", 100, {(1, 0): (3.0, CHANCE)}),
    )
    focus = by_claim(claims({"per_prompt": t, "prompts": prompts()}))[published.ATTN_FOCUS]
    assert focus.verdict is Verdict.PARTLY
    assert focus.numbers["a_first"] == pytest.approx(3.1) and focus.numbers[
        "a_last"
    ] == pytest.approx(2.1)
    assert "iteration 10 → 100" in focus.evidence
    assert focus.effect == pytest.approx(0.0)  # b's entropy does not fall
    only_a = t[t["model"] == "a"]
    focus = by_claim(claims({"per_prompt": only_a, "prompts": prompts()}))[published.ATTN_FOCUS]
    assert focus.verdict is Verdict.HOLDS
    assert focus.effect == pytest.approx(1.0) == focus.numbers["smallest_fall_bits"]
    wider = table(rows("c", 10, {(1, 0): (2.0, CHANCE)}), rows("c", 100, {(1, 0): (2.5, CHANCE)}))
    focus = by_claim(claims({"per_prompt": wider, "prompts": prompts()}))[published.ATTN_FOCUS]
    assert focus.verdict is Verdict.FAILS and focus.effect == pytest.approx(-0.5)


def test_not_measured():
    assert [c.verdict for c in claims({})] == [Verdict.UNMEASURED] * 2
    assert [c.effect for c in claims({})] == [None, None]
    one = table(rows("a", 100, {(1, 0): (2.0, 0.5)}))
    found = by_claim(claims({"per_prompt": one, "prompts": prompts()}))
    assert found[published.ATTN_FOCUS].verdict is Verdict.UNMEASURED
    outside = one.assign(domain="out")
    found = by_claim(claims({"per_prompt": outside, "prompts": prompts()}))
    assert found[published.ATTN_PREVIOUS_WORD].verdict is Verdict.UNMEASURED
