"""The lens stage's claims on hand-made per-prompt tables: formation depth by hand, and
each claim holding, partly holding, failing or not measured."""

from __future__ import annotations

import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Verdict
from domaingpt.stages.lens import claims, formation_depth

NOISE = (-0.02, 0.01, 0.0, 0.02, -0.01, 0.0)  # six prompts, a little spread


def rows(model: str, iteration: int, domain: str, depth: float, entropy: float = 3.0) -> list:
    """Six prompts of a 2-block model whose KL to the final layer gives ``depth`` (± noise):
    KL = [1, depth − 1, 0] bits at layers 0, 1, 2."""
    out = []
    for k, e in enumerate(NOISE):
        kl = [1.0, depth - 1 + e, 0.0]
        for layer in range(3):
            out.append(
                {
                    "model": model,
                    "iteration": iteration,
                    "prompt_id": k + (100 if domain == "out" else 0),
                    "prompt_corpus": model if domain == "in" else "other",
                    "domain": domain,
                    "layer": layer,
                    "loss_nats": 2.0,
                    "entropy_bits": entropy + (0.5 - 0.2 * layer) * (domain == "out") + e,
                    "p_true": 0.2,
                    "kl_bits": kl[layer],
                    "top1_agreement": 1.0 if layer == 2 else 0.5,
                }
            )
    return out


def table(*parts: list) -> pd.DataFrame:
    return pd.DataFrame([r for p in parts for r in p])


def by_claim(found: list) -> dict:
    return {c.claim: c for c in found}


def test_formation_depth_by_hand():
    t = table(rows("a", 10, "in", 1.5))
    d = formation_depth(t)
    assert d["depth"].tolist() == pytest.approx([1.5 + e for e in NOISE])
    assert (d["layers"] == 2).all()
    # a layer further from the final prediction than the embeddings counts as 1 (not more)
    t.loc[t["layer"] == 1, "kl_bits"] = 3.0
    assert formation_depth(t)["depth"].tolist() == pytest.approx([2.0] * 6)
    # the embeddings already read as the final prediction: undefined
    t["kl_bits"] = 0.0
    assert formation_depth(t)["depth"].isna().all()


def test_every_claim_holds():
    t = table(
        rows("shakespeare", 10, "in", 1.2),
        rows("shakespeare", 100, "in", 1.8),
        rows("shakespeare", 100, "out", 1.95),
        rows("math", 10, "in", 1.9),
        rows("math", 100, "in", 1.3),
        rows("math", 100, "out", 1.6),
    )
    found = by_claim(claims({"per_prompt": t}))
    assert found[published.LENS_DEPTH].verdict is Verdict.HOLDS
    assert found[published.LENS_DEPTH].numbers["shakespeare_depth"] == pytest.approx(1.8)
    assert "Shakespeare 1.80 [" in found[published.LENS_DEPTH].evidence
    moves = found[published.LENS_MOVES]
    assert moves.verdict is Verdict.HOLDS
    assert moves.numbers["shakespeare_change"] == pytest.approx(0.6)
    assert moves.numbers["math_change"] == pytest.approx(-0.6)
    later = found[published.LENS_OOD_LATER]
    assert later.verdict is Verdict.HOLDS and later.numbers["math_difference"] == pytest.approx(0.3)
    entropy = found[published.OOD_ENTROPY]
    assert entropy.verdict is Verdict.HOLDS and entropy.numbers["layers_tested"] == 6


def test_partly_and_does_not_hold():
    t = table(
        rows("shakespeare", 0, "in", 1.0),  # iteration 0 is left out of "moves"
        rows("shakespeare", 10, "in", 1.5),
        rows("shakespeare", 100, "in", 1.5),
        rows("shakespeare", 100, "out", 1.5),
        rows("math", 10, "in", 1.2),
        rows("math", 100, "in", 1.8),
        rows("math", 100, "out", 1.9),
        rows("wikipedia", 100, "in", 1.5),
    )
    found = by_claim(claims({"per_prompt": t}))
    # shakespeare = wikipedia, both differ from math: two of three pairs
    assert found[published.LENS_DEPTH].verdict is Verdict.PARTLY
    assert found[published.LENS_MOVES].verdict is Verdict.PARTLY
    assert found[published.LENS_OOD_LATER].verdict is Verdict.PARTLY
    same = table(rows("a", 10, "in", 1.5), rows("a", 100, "in", 1.5), rows("a", 100, "out", 1.4))
    found = by_claim(claims({"per_prompt": same}))
    assert found[published.LENS_MOVES].verdict is Verdict.FAILS
    assert found[published.LENS_OOD_LATER].verdict is Verdict.FAILS
    # the out-of-domain entropy gap shrinks with depth: 0.5, 0.3, 0.1 bits, all > noise
    assert found[published.OOD_ENTROPY].verdict is Verdict.HOLDS


def test_not_measured():
    one = table(rows("a", 100, "in", 1.5))
    found = by_claim(claims({"per_prompt": one}))
    assert found[published.LENS_DEPTH].verdict is Verdict.UNMEASURED  # one model
    assert found[published.LENS_MOVES].verdict is Verdict.UNMEASURED  # one checkpoint
    assert found[published.LENS_OOD_LATER].verdict is Verdict.UNMEASURED  # no out-of-domain
    assert found[published.OOD_ENTROPY].verdict is Verdict.UNMEASURED
    empty = claims({})
    assert [c.verdict for c in empty] == [Verdict.UNMEASURED] * 3
