"""The corpus claims on hand-made statistics tables: each holds, fails or is not measured
as the numbers say, and a fourth corpus of a user's own changes no verdict (the claims
are about the study's three corpora)."""

from __future__ import annotations

import pandas as pd

from domaingpt.core.claims import Verdict
from domaingpt.core.published import MATH_SYMBOLS, MOST_VARIED, SHAKESPEARE_PLAIN
from domaingpt.stages.stats.claims import claims

STUDY = {  # corpus: unique characters, digit share, math-symbol share, non-ASCII unique
    "shakespeare": (65, 0.0, 0.0, 0),
    "math": (110, 0.04, 0.01, 12),
    "wikipedia": (292, 0.01, 0.001, 200),
}


def summary(rows: dict[str, tuple[int, float, float, int]]) -> dict[str, pd.DataFrame]:
    columns = ["unique_characters", "digit_share", "math_symbol_share", "non_ascii_unique"]
    table = pd.DataFrame(
        [{"corpus": c, **dict(zip(columns, v, strict=True))} for c, v in rows.items()]
    )
    return {"summary": table}


def verdicts(tables: dict[str, pd.DataFrame]) -> list[str]:
    return [str(c.verdict) for c in claims(tables)]


def test_the_study_s_numbers_make_every_claim_hold():
    out = claims(summary(STUDY))
    assert [c.claim.split(" (")[0] for c in out] == [MOST_VARIED, MATH_SYMBOLS, SHAKESPEARE_PLAIN]
    assert [c.verdict for c in out] == [Verdict.HOLDS] * 3
    varied = out[0]
    assert varied.claim == f"{MOST_VARIED} (study: 292 vs 110 and 65)"
    assert varied.scope == "Shakespeare, Math, Wikipedia"
    assert varied.evidence == "unique characters: Shakespeare 65, Math 110, Wikipedia 292"
    assert varied.numbers == {"unique_shakespeare": 65, "unique_math": 110, "unique_wikipedia": 292}
    assert out[1].numbers["digit_symbol_share_math"] == 0.05
    assert out[2].evidence == "0 non-ASCII characters in Shakespeare"


def test_other_numbers_make_each_claim_fail():
    rows = {
        "shakespeare": (65, 0.09, 0.0, 3),  # the most digits, three non-ASCII characters
        "math": (300, 0.04, 0.01, 12),  # the most varied
        "wikipedia": (292, 0.01, 0.001, 200),
    }
    assert verdicts(summary(rows)) == ["does not hold"] * 3
    assert claims(summary(rows))[2].evidence == "3 non-ASCII characters in Shakespeare"


def test_a_missing_study_corpus_leaves_every_claim_unmeasured():
    two = {k: v for k, v in STUDY.items() if k != "wikipedia"}
    out = claims(summary(two))
    assert [c.verdict for c in out] == [Verdict.UNMEASURED] * 3
    assert all("lacks wikipedia" in c.evidence for c in out)
    assert verdicts({}) == ["not measured"] * 3


def test_a_fourth_corpus_does_not_change_the_verdicts():
    """A user's ``code`` corpus with more unique characters and digits than any of the
    study's: Wikipedia still has the most varied characters *of the three*."""
    with_code = {**STUDY, "code": (400, 0.2, 0.1, 250)}
    three, four = claims(summary(STUDY)), claims(summary(with_code))
    assert [c.verdict for c in four] == [c.verdict for c in three] == [Verdict.HOLDS] * 3
    assert four == three  # same wording, scope, evidence and numbers
    assert "code" not in four[0].evidence.lower() and "unique_code" not in four[0].numbers
    failing = {**with_code, "math": (300, 0.04, 0.01, 12)}
    assert verdicts(summary(failing))[0] == "does not hold"  # still judged on the three
