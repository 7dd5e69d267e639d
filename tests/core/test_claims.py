"""The verdict vocabulary's small rules: a claim of several parts at once."""

from __future__ import annotations

import math

from domaingpt.core.claims import Verdict, smallest_effect, verdict_of


def test_a_claim_of_several_parts_carries_the_smallest_finite_effect() -> None:
    assert smallest_effect([0.4, -0.1, 0.2]) == -0.1
    assert smallest_effect([0.3, math.nan, math.inf, 0.5]) == 0.3
    assert smallest_effect([math.nan, -math.inf]) is None
    assert smallest_effect([]) is None


def test_a_claim_of_several_parts_holds_where_every_part_does() -> None:
    assert verdict_of([True, True]) is Verdict.HOLDS
    assert verdict_of([True, False]) is Verdict.PARTLY
    assert verdict_of([False]) is Verdict.FAILS
    assert verdict_of([]) is Verdict.UNMEASURED
