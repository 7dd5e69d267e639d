"""The zero-shot claims on hand-made loss tables: the study's own matrix makes them hold;
a matrix that breaks them, one with only some of the study's corpora, and a fourth corpus."""

from __future__ import annotations

import pandas as pd
import pytest

from domaingpt.core.claims import Verdict
from domaingpt.core.published import (
    HARDEST_FOREIGN,
    OWN_CORPUS_LOWEST,
    OWN_MODEL_BEST,
    ZERO_SHOT,
)
from domaingpt.stages.evaluate.claims import claims


def zero_shot(matrix: dict[str, dict[str, float]], iteration: int = 500) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"model": m, "corpus": c, "iteration": iteration, "loss_nats": loss}
            for m, row in matrix.items()
            for c, loss in row.items()
        ]
    )


def study() -> dict[str, dict[str, float]]:
    return {m: dict(row) for m, row in ZERO_SHOT.items()}


def verdicts(matrix: dict[str, dict[str, float]]) -> list[Verdict]:
    return [c.verdict for c in claims({"zero_shot": zero_shot(matrix)})]


def test_the_study_s_matrix_makes_every_claim_hold():
    out = claims({"zero_shot": zero_shot(study())})
    assert [c.claim for c in out] == [OWN_CORPUS_LOWEST, OWN_MODEL_BEST, HARDEST_FOREIGN]
    assert [c.verdict for c in out] == [Verdict.HOLDS] * 3
    assert out[0].scope == out[2].scope == "Shakespeare, Math, Wikipedia"
    assert out[0].numbers == {
        "own_shakespeare": 1.3966,
        "own_math": 1.2258,
        "own_wikipedia": 1.3786,
        "smallest_margin": pytest.approx(2.3861 - 1.3966),
    }
    # effects, the smallest margin over the models (nats): the Shakespeare model's own
    # corpus 1.3966 under its next best (Wikipedia 2.3861); Wikipedia's own model 1.3786
    # under the next best model on it (Shakespeare's 2.3861); the Wikipedia model's
    # hardest corpus, the study's Math 2.7195, over Shakespeare 2.5144
    assert [c.effect for c in out] == pytest.approx(
        [2.3861 - 1.3966, 2.3861 - 1.3786, 2.7195 - 2.5144]
    )
    assert not any(c.per_model for c in out)
    assert "Shakespeare model: hardest Math (3.95); study: Math" in out[2].evidence


def test_only_the_final_checkpoint_counts():
    early = {m: {c: 1.0 if c != m else 4.0 for c in row} for m, row in study().items()}
    table = pd.concat([zero_shot(early, iteration=0), zero_shot(study(), iteration=500)])
    assert [c.verdict for c in claims({"zero_shot": table})] == [Verdict.HOLDS] * 3


def test_broken_matrices_fail_or_hold_partly():
    m = study()
    m["math"]["math"] = 3.0  # the Math model does better on Wikipedia (2.53), and the
    # Wikipedia model on Math (2.72) than the Math model
    assert verdicts(m)[:2] == [Verdict.PARTLY, Verdict.PARTLY]
    # the Math model's own corpus 3.0 against its Wikipedia 2.5259; the Math corpus's own
    # model 3.0 against the Wikipedia model's 2.7195: negative effects
    out = claims({"zero_shot": zero_shot(m)})
    assert [c.effect for c in out[:2]] == pytest.approx([2.5259 - 3.0, 2.7195 - 3.0])
    flat = {m: {c: 2.0 + (0.5 if c == m else 0.0) for c in row} for m, row in study().items()}
    assert verdicts(flat)[:2] == [Verdict.FAILS, Verdict.FAILS]
    out = claims({"zero_shot": zero_shot(flat)})
    assert [c.effect for c in out[:2]] == pytest.approx([-0.5, -0.5])
    swapped = study()  # Shakespeare model finds Wikipedia hardest, unlike the study
    swapped["shakespeare"]["wikipedia"] = 5.0
    assert verdicts(swapped) == [Verdict.HOLDS, Verdict.HOLDS, Verdict.PARTLY]
    hardest = claims({"zero_shot": zero_shot(swapped)})[2]
    assert hardest.effect == pytest.approx(3.9497 - 5.0)  # Math 3.95 below Wikipedia 5.0


def test_no_table_or_too_few_corpora_is_not_measured():
    assert [c.verdict for c in claims({})] == [Verdict.UNMEASURED]
    assert claims({"zero_shot": pd.DataFrame()})[0].claim == OWN_CORPUS_LOWEST
    two = {m: {c: v for c, v in row.items() if c != "wikipedia"} for m, row in study().items()}
    two.pop("wikipedia")
    out = claims({"zero_shot": zero_shot(two)})
    assert [c.verdict for c in out] == [Verdict.HOLDS, Verdict.HOLDS, Verdict.UNMEASURED]
    assert out[2].evidence == "needs the three built-in corpora" and out[2].effect is None


def test_a_fourth_corpus_joins_the_own_corpus_claims_but_not_the_study_s_matrix():
    m = study()
    for model in m:
        m[model]["code"] = 6.0
    m["code"] = {"shakespeare": 3.0, "math": 2.0, "wikipedia": 2.5, "code": 0.9}
    out = claims({"zero_shot": zero_shot(m)})
    assert [c.verdict for c in out] == [Verdict.HOLDS] * 3
    assert out[0].scope == "Shakespeare, Math, Wikipedia, Code"
    assert out[2].scope == "Shakespeare, Math, Wikipedia"
    assert "Code" not in out[2].evidence  # the hardest foreign corpus among the study's
