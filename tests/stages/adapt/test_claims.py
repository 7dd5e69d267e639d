"""The few-shot claims on hand-made adaptation tables: partial adaptation and the slow
Shakespeare model from the target losses; early vs final from the pairs' outcomes (with
seeds), or from the pairs taken together (one seed per pair)."""

from __future__ import annotations

import math

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


def pairs(*deltas: tuple[float, float, int]) -> pd.DataFrame:
    """A summary table: one pair per (Δ early − final, its spread, seeds paired)."""
    return pd.DataFrame(
        [
            {
                "source": f"s{i}",
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
    assert slow.numbers == {"drop_shakespeare": 0.5, "drop_math": 1.0, "drop_wikipedia": 1.5}


def test_adaptation_that_fails_to_move_or_overshoots_does_not_hold():
    t = tables(pairs(), drops={"shakespeare": 1.5, "math": 1.0, "wikipedia": 0.5})
    t["final"]["target_loss_step0"] = t["final"]["target_loss"] - 0.1  # the loss rises
    partial, slow = claims(t)[:2]
    assert partial.verdict == Verdict.FAILS
    assert slow.verdict == Verdict.FAILS  # Shakespeare's target loss does not fall least
    below = tables(pairs())
    below["in_domain"] = IN_DOMAIN.assign(loss_nats=3.0)  # adapted models beat in-domain ones
    assert claims(below)[0].verdict == Verdict.FAILS
    some = tables(pairs())
    some["in_domain"] = IN_DOMAIN.assign(loss_nats=[1.4, 3.0, 1.4])  # better than Math's own
    assert claims(some)[0].verdict == Verdict.PARTLY


def test_no_results_is_not_measured():
    out = claims({})
    assert [c.verdict for c in out] == [Verdict.UNMEASURED] * 2
    assert [c.claim for c in out] == [PARTIAL_ADAPTATION, EARLY_EASIER]


def test_early_vs_final_from_conclusive_pairs():
    clear_early = (-0.2, 0.05, 3)
    clear_final = (0.2, 0.05, 3)
    unclear = (-0.05, 0.05, 3)  # |Δ| below twice its spread
    claim = early_claim(pairs(clear_early, clear_early))
    assert claim.verdict == Verdict.HOLDS
    assert claim.numbers == {"early_better": 2, "final_better": 0, "unclear": 0}
    assert early_claim(pairs(clear_final, clear_final)).verdict == Verdict.FAILS
    assert early_claim(pairs(unclear, unclear)).verdict == Verdict.FAILS
    mixed = early_claim(pairs(clear_early, clear_final, unclear))
    assert mixed.verdict == Verdict.PARTLY
    assert mixed.evidence.startswith(
        "early start better in 1, final start better in 1, no clear difference in 1 of 3 pairs"
    )
    assert mixed.numbers["n_pairs"] == 3  # three pairs: the pooled test is reported too
    assert "sign test p = " in mixed.evidence


def test_one_seed_per_pair_uses_the_pooled_sign_test():
    six_early = early_claim(pairs(*[(-0.3, math.nan, 1)] * 6))
    assert six_early.verdict == Verdict.HOLDS
    assert six_early.numbers["sign_p"] == pytest.approx(2 / 64)
    assert six_early.numbers["early_better"] == 6
    assert "the pairs are the replicates" in six_early.evidence
    six_final = early_claim(pairs(*[(0.3, math.nan, 1)] * 6))
    assert six_final.verdict == Verdict.FAILS  # significant, but the other way
    three_early = early_claim(pairs(*[(-0.3, math.nan, 1)] * 3))
    assert three_early.verdict == Verdict.FAILS  # p = 0.25: not shown
    assert three_early.numbers["sign_p"] == pytest.approx(0.25)


def test_too_few_pairs_for_the_pooled_test_is_not_measured():
    two = early_claim(pairs((-0.3, math.nan, 1), (-0.2, math.nan, 1)))
    assert two.verdict == Verdict.UNMEASURED
    assert two.evidence.startswith("2 pairs, none with a spread across seeds")
    assert "n_pairs" not in two.numbers
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
    assert early_claim(summary).verdict == Verdict.HOLDS
