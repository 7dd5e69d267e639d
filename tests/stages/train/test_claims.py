"""The training claims on hand-made training summaries."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from domaingpt.core.claims import Verdict
from domaingpt.core.published import BEATS_NANOGPT, LOSS_DECREASES, NANOGPT_CPU_VAL_LOSS
from domaingpt.stages.train.claims import claims


def summary(*rows: tuple[str, int, float | None, float | None]) -> dict[str, pd.DataFrame]:
    columns = ["model", "iterations", "initial_val_loss", "final_val_loss"]
    return {"summary": pd.DataFrame([dict(zip(columns, r, strict=True)) for r in rows])}


def test_loss_falls_for_every_model_and_shakespeare_beats_nanogpt():
    out = claims(summary(("shakespeare", 2000, 4.2, 1.6), ("math", 2000, 4.3, 1.4)))
    assert [c.claim for c in out] == [LOSS_DECREASES, BEATS_NANOGPT]
    assert [c.verdict for c in out] == [Verdict.HOLDS, Verdict.HOLDS]
    assert out[0].scope == "Shakespeare, Math"
    assert out[0].evidence == (
        "Shakespeare: 4.20 → 1.60 nats between iterations 0 and 2000; "
        "Math: 4.30 → 1.40 nats between iterations 0 and 2000"
    )
    assert out[0].numbers == {
        "initial_shakespeare": 4.2,
        "final_shakespeare": 1.6,
        "initial_math": 4.3,
        "final_math": 1.4,
        "smallest_fall": pytest.approx(2.6),
    }
    assert out[1].numbers == {
        "val_loss": 1.6,
        "nanogpt_val_loss": NANOGPT_CPU_VAL_LOSS,
        "margin": pytest.approx(NANOGPT_CPU_VAL_LOSS - 1.6),
    }
    # effects: the smallest fall over the models (Shakespeare's 2.6 nats), and the margin
    # under nanoGPT's val loss, a claim about the one Shakespeare model
    assert out[0].effect == pytest.approx(2.6) and not out[0].per_model
    assert out[1].effect == pytest.approx(NANOGPT_CPU_VAL_LOSS - 1.6) and out[1].per_model
    assert out[1].evidence == "Shakespeare val loss 1.6000 after 2000 iterations"


def test_a_rising_loss_and_a_weak_shakespeare_model():
    out = claims(summary(("shakespeare", 100, 4.2, 2.5), ("math", 100, 4.0, 4.1)))
    assert [c.verdict for c in out] == [Verdict.PARTLY, Verdict.FAILS]
    # the weakest model's fall is negative (Math rises 0.1 nats); 2.5 is above 1.8857
    assert out[0].effect == pytest.approx(-0.1)
    assert out[1].effect == pytest.approx(NANOGPT_CPU_VAL_LOSS - 2.5) and out[1].per_model
    out = claims(summary(("shakespeare", 100, 4.2, 4.3)))
    assert [c.verdict for c in out] == [Verdict.FAILS, Verdict.FAILS]
    at_the_reference = claims(summary(("shakespeare", 100, 4.2, NANOGPT_CPU_VAL_LOSS)))
    assert at_the_reference[1].verdict == Verdict.FAILS  # "beats" is strictly lower


def test_no_model_or_no_initial_loss_is_not_measured():
    out = claims({})
    assert [(c.claim, c.verdict) for c in out] == [(LOSS_DECREASES, Verdict.UNMEASURED)]
    assert claims({"summary": pd.DataFrame()})[0].verdict == Verdict.UNMEASURED
    out = claims(summary(("math", 100, None, 1.5), ("wikipedia", 100, math.nan, 1.4)))
    assert [c.verdict for c in out] == [Verdict.UNMEASURED]  # no Shakespeare: one claim
    assert out[0].evidence == "no losses" and out[0].effect is None
