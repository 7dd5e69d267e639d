"""The similarity stage's claims on hand-made CKA and jackknife tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Verdict
from domaingpt.stages.similarity import claims, hardening

PROMPTS = 8


class Tables:
    """Builds ``cka`` and ``jackknife`` rows: each comparison's leave-one-prompt-out values
    spread a little around its value."""

    def __init__(self) -> None:
        self.cka: list[dict] = []
        self.jack: list[dict] = []

    def add(self, kind: str, values: dict[int, float], **keys) -> None:
        comparison = f"{kind}:{len(self.cka)}"
        wiggle = np.random.default_rng(len(self.cka)).normal(0, 0.002, PROMPTS)
        for layer, value in values.items():
            self.cka.append(
                {
                    "comparison": comparison,
                    "kind": kind,
                    "prompts": "target" if kind == "adaptation" else "all",
                    "layer": layer,
                    "cka": value,
                    "ci_low": value - 0.02,
                    "ci_high": value + 0.02,
                    **keys,
                }
            )
            for p in range(PROMPTS):
                self.jack.append(
                    {
                        "comparison": comparison,
                        "layer": layer,
                        "prompt_id": p,
                        "cka": value + wiggle[p],
                    }
                )

    def training(self, model: str, pairs: list[tuple[int, int, float]]) -> None:
        for a, b, value in pairs:
            self.add(
                "training",
                {0: 0.99, 2: value},
                model_a=model,
                iteration_a=a,
                model_b=model,
                iteration_b=b,
            )

    def adaptation(self, source: str, target: str, start: str, value: float, seed: int) -> None:
        self.add(
            "adaptation",
            {0: 0.95, 1: (0.95 + value) / 2, 2: value},
            model_a=source,
            model_b=f"{source}→{target}",
            source=source,
            target=target,
            start=start,
            seed=f"seed{seed}",
        )

    def tables(self) -> dict[str, pd.DataFrame]:
        return {"cka": pd.DataFrame(self.cka), "jackknife": pd.DataFrame(self.jack)}


def by_claim(found: list) -> dict:
    return {c.claim: c for c in found}


def test_representations_harden_for_one_model_of_two():
    t = Tables()
    t.training("shakespeare", [(0, 10, 0.3), (10, 100, 0.8), (100, 1000, 0.97)])
    t.training("math", [(0, 10, 0.9), (10, 100, 0.9)])
    found = by_claim(claims(t.tables()))
    hard = found[published.SIM_HARDENS]
    assert hard.verdict is Verdict.PARTLY and hard.scope == "layer 2"
    assert hard.numbers["shakespeare_first"] == 0.3 and hard.numbers["shakespeare_last"] == 0.97
    assert "Shakespeare 0.300 (0→10) → 0.970 (100→1000)" in hard.evidence
    # the effect: the smallest last-minus-first CKA (math's, unchanged)
    assert hard.effect == pytest.approx(0.0) == hard.numbers["smallest_change"]
    only = Tables()
    only.training("shakespeare", [(0, 10, 0.3), (10, 100, 0.8)])
    hard = by_claim(claims(only.tables()))[published.SIM_HARDENS]
    assert hard.verdict is Verdict.HOLDS and hard.effect == pytest.approx(0.5)
    apart = Tables()
    apart.training("shakespeare", [(0, 10, 0.9), (10, 100, 0.5)])
    hard = by_claim(claims(apart.tables()))[published.SIM_HARDENS]
    assert hard.verdict is Verdict.FAILS and hard.effect == pytest.approx(-0.4)
    assert not hard.per_model


def test_the_hardening_iteration():
    t = Tables()
    t.training("a", [(0, 10, 0.3), (10, 100, 0.97), (100, 1000, 0.96)])
    t.training("b", [(0, 10, 0.3), (10, 100, 0.97), (100, 1000, 0.5)])
    t.training("c", [(0, 10, 0.99), (10, 100, 0.97)])
    h = hardening(t.tables()["cka"], 0.95).set_index(["model", "layer"])["hardened_at"]
    assert h[("a", 2)] == 10 and np.isnan(h[("b", 2)]) and h[("c", 2)] == 0
    assert h[("a", 0)] == 0


def test_domain_models_diverge_with_depth():
    t = Tables()
    t.add("domains", {0: 0.9, 1: 0.8, 2: 0.4}, model_a="shakespeare", model_b="math")
    t.add("domains", {0: 0.9, 1: 0.6, 2: 0.6}, model_a="shakespeare", model_b="wikipedia")
    found = by_claim(claims(t.tables()))
    diverge = found[published.SIM_DOMAINS]
    assert diverge.verdict is Verdict.PARTLY
    assert diverge.numbers["shakespeare_math_layer1"] == 0.8
    assert diverge.numbers["shakespeare_math_layer2"] == 0.4
    # layer 1 minus the last: +0.4 for math, 0 for wikipedia; the smaller is the effect
    assert diverge.effect == pytest.approx(0.0)
    apart = Tables()
    apart.add("domains", {0: 0.9, 1: 0.8, 2: 0.4}, model_a="shakespeare", model_b="math")
    diverge = by_claim(claims(apart.tables()))[published.SIM_DOMAINS]
    assert diverge.verdict is Verdict.HOLDS and diverge.effect == pytest.approx(0.4)
    closer = Tables()
    closer.add("domains", {0: 0.9, 1: 0.4, 2: 0.7}, model_a="shakespeare", model_b="math")
    diverge = by_claim(claims(closer.tables()))[published.SIM_DOMAINS]
    assert diverge.verdict is Verdict.FAILS and diverge.effect == pytest.approx(-0.3)
    one_layer = Tables()
    one_layer.add("domains", {0: 0.9, 1: 0.8}, model_a="shakespeare", model_b="math")
    assert by_claim(claims(one_layer.tables()))[published.SIM_DOMAINS].verdict is Verdict.UNMEASURED
    # a 2-block model (trained elsewhere) beside 3-block ones: each pair at its own last
    # layer (the shallower model's), and the hardening at each model's own
    mixed = Tables()
    mixed.add("domains", {0: 0.9, 1: 0.8, 2: 0.4}, model_a="gpt2", model_b="math")
    mixed.add("domains", {0: 0.9, 1: 0.7, 2: 0.5, 3: 0.3}, model_a="math", model_b="wiki")
    mixed.add("training", {0: 0.99, 2: 0.5}, model_a="gpt2", iteration_a=0, iteration_b=10)
    mixed.add("training", {0: 0.99, 2: 0.9}, model_a="gpt2", iteration_a=10, iteration_b=20)
    mixed.add("training", {0: 0.99, 3: 0.6}, model_a="math", iteration_a=0, iteration_b=10)
    mixed.add("training", {0: 0.99, 3: 0.8}, model_a="math", iteration_a=10, iteration_b=20)
    found = by_claim(claims(mixed.tables()))
    diverge = found[published.SIM_DOMAINS]
    assert diverge.verdict is Verdict.HOLDS
    assert diverge.numbers["gpt2_math_layer2"] == 0.4 and diverge.numbers["math_wiki_layer3"] == 0.3
    hard = found[published.SIM_HARDENS]
    assert hard.scope == "the last layer of each" and hard.verdict is Verdict.HOLDS
    assert hard.numbers["gpt2_last"] == 0.9 and hard.numbers["math_last"] == 0.8


def test_which_start_moves_its_representations_more():
    t = Tables()
    for seed in (0, 1):  # seeds are averaged
        t.adaptation("math", "wikipedia", "final", 0.4, seed)
        t.adaptation("math", "wikipedia", "early", 0.6, seed)
        t.adaptation("shakespeare", "math", "final", 0.8 + 0.01 * seed, seed)
        t.adaptation("shakespeare", "math", "early", 0.5, seed)
    found = by_claim(claims(t.tables()))
    moved = found[published.EARLY_MOVES_MORE]
    assert moved.verdict is Verdict.PARTLY
    assert moved.numbers["shakespeare_math_final"] == pytest.approx(0.805)
    assert moved.numbers["shakespeare_math_early"] == pytest.approx(0.5)
    assert "early moves more" in moved.evidence and "final moves more" in moved.evidence
    assert moved.evidence.index("Shakespeare → Math") < moved.evidence.index("Math → Wikipedia")
    # final minus early: +0.305 shakespeare → math, -0.2 math → wikipedia
    assert moved.effect == pytest.approx(-0.2) == moved.numbers["smallest_difference"]
    final_only = Tables()
    final_only.adaptation("shakespeare", "math", "final", 0.8, 0)
    verdict = by_claim(claims(final_only.tables()))[published.EARLY_MOVES_MORE].verdict
    assert verdict is Verdict.UNMEASURED


def test_nothing_to_check():
    found = claims({})
    assert [c.verdict for c in found] == [Verdict.UNMEASURED] * 3
    t = Tables()
    t.training("a", [(0, 10, 0.5)])
    found = by_claim(claims(t.tables()))
    assert found[published.SIM_HARDENS].verdict is Verdict.UNMEASURED  # one pair only
    assert found[published.EARLY_MOVES_MORE].verdict is Verdict.UNMEASURED
    assert found[published.SIM_HARDENS].effect is None
