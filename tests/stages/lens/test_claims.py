"""The lens stage's claims on hand-made per-prompt tables: formation depth by hand, and
each claim holding, partly holding, failing or not measured."""

from __future__ import annotations

import pandas as pd
import pytest

from domaingpt.core import published
from domaingpt.core.claims import Claim, Verdict
from domaingpt.errors import ConfigError
from domaingpt.stages.lens import claims, formation_depth
from domaingpt.stages.lens.claims import domain_depths
from domaingpt.stages.lens.compute import FORMATION_KL_BITS, LensSettings, formation_summary

NOISE = (-0.02, 0.01, 0.0, 0.02, -0.01, 0.0)  # six prompts, a little spread
TAU = FORMATION_KL_BITS


def kl_for(depth: float) -> list[float]:
    """KL to the final layer at layers 0, 1, 2 of a 2-block model whose formation depth
    is ``depth`` (0 < depth < 2): the reading crosses the threshold inside block 1 or 2."""
    if depth >= 1:
        return [2.0, TAU / (2 - depth), 0.0]
    return [TAU / (1 - depth), 0.0, 0.0]


def rows(
    model: str,
    iteration: int,
    domain: str,
    depth: float,
    entropy: float = 3.0,
    corpus: str = "other",
) -> list:
    """Six prompts of a 2-block model with formation depth ``depth`` (± noise); the
    out-of-domain ones come from ``corpus``."""
    out = []
    for k, e in enumerate(NOISE):
        kl = kl_for(depth + e)
        for layer in range(3):
            out.append(
                {
                    "model": model,
                    "iteration": iteration,
                    "prompt_id": k + (0 if domain == "in" else 100 + 100 * len(corpus)),
                    "prompt_corpus": model if domain == "in" else corpus,
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
    """The claims of each wording that are made once (per-corpus ones: see :func:`claim`)."""
    return {c.claim: c for c in found}


def claim(found: list[Claim], words: str, scope: str) -> Claim:
    hits = [c for c in found if c.claim == words and c.scope == scope]
    assert len(hits) == 1, [(c.claim, c.scope) for c in found]
    return hits[0]


def kl_table(kl: list[list[float]], iteration: int = 100) -> pd.DataFrame:
    """One in-domain prompt per row of ``kl`` (KL to the final layer, per layer)."""
    return pd.DataFrame(
        [
            {
                "model": "a",
                "iteration": iteration,
                "prompt_id": k,
                "prompt_corpus": "a",
                "domain": "in",
                "layer": layer,
                "entropy_bits": 3.0,
                "kl_bits": v,
            }
            for k, values in enumerate(kl)
            for layer, v in enumerate(values)
        ]
    )


def test_formation_depth_by_hand():
    kl = [
        [0.5, 0.3, 0.05, 0.0],  # crosses 0.1 bits inside block 2: 1 + 0.2 / 0.25
        [16.0, 0.3, 0.05, 0.0],  # the same past the embeddings: the same depth
        [0.05, 0.3, 0.0, 0.0],  # below at the embeddings, not from there on: 1 + 0.2 / 0.3
        [0.01, 0.01, 0.0, 0.0],  # within the threshold from the embeddings on
        [5.0, 5.0, 5.0, 0.0],  # only the last block forms it: 2 + 4.9 / 5
        [5.0, 5.0, 5.0, 0.2],  # never within: counted as formed at the last layer
    ]
    d = formation_depth(kl_table(kl))
    assert d["depth"].tolist() == pytest.approx([1.8, 1.8, 1 + 2 / 3, 0.0, 2.98, 3.0])
    assert (d["layers"] == 3).all()
    # the threshold is a setting: at 0.2 bits the first prompt forms inside block 2 too
    assert formation_depth(kl_table(kl[:1]), 0.2)["depth"].tolist() == pytest.approx([1.4])
    # the helper's tables have the depth they were built for
    t = table(rows("a", 10, "in", 1.5), rows("a", 10, "out", 0.7))
    assert formation_depth(t)["depth"].tolist() == pytest.approx(
        [1.5 + e for e in NOISE] + [0.7 + e for e in NOISE]
    )


def old_depth(kl: list[float]) -> float:
    """The stage's earlier definition: Σ over layers before the last of min(1, KL_ℓ/KL_0)."""
    return sum(min(1.0, v / kl[0]) for v in kl[:-1])


def test_depth_does_not_move_when_only_the_embeddings_drift_away():
    """Issue 22: the embeddings' KL to the final prediction grows from 0.5 to 16 bits
    between two checkpoints while every block's KL stays as it was. The old depth "falls"
    by 0.7 layers and calls that a move; the new one does not move."""
    blocks = [[0.3 + e, 0.05 + e / 4, 0.0] for e in NOISE]
    early = [[0.5, *b] for b in blocks]
    late = [[16.0, *b] for b in blocks]
    old = [old_depth(a) - old_depth(b) for a, b in zip(late, early, strict=True)]
    assert all(-0.75 < d < -0.6 for d in old)
    t = pd.concat([kl_table(early, 100), kl_table(late, 1000)], ignore_index=True)
    depth = formation_depth(t).pivot_table(index="prompt_id", columns="iteration", values="depth")
    assert depth[1000].tolist() == pytest.approx(depth[100].tolist())
    assert depth[100].between(1, 2).all()
    moves = by_claim(claims({"per_prompt": t}))[published.LENS_MOVES]
    assert moves.verdict is Verdict.FAILS and moves.numbers["a_change"] == pytest.approx(0)
    assert moves.effect == pytest.approx(0)


def test_the_threshold_is_read_from_the_formation_table():
    t = kl_table([[0.5, 0.3, 0.05, 0.0]] * 2, 100)
    t = pd.concat([t, kl_table([[0.5, 0.3, 0.3, 0.0]] * 2, 1000)], ignore_index=True)
    formation = pd.DataFrame({"threshold_bits": [0.2]})
    found = by_claim(claims({"per_prompt": t, "formation": formation}))
    moves = found[published.LENS_MOVES]
    # at 0.2 bits: 1 + 0.1 / 0.25 = 1.4 at iteration 100, 2 + 0.1 / 0.3 at 1000
    assert moves.numbers["a_change"] == pytest.approx(2 + 1 / 3 - 1.4)
    assert "within 0.2 bits of KL" in moves.evidence


def test_every_claim_holds():
    t = table(
        rows("shakespeare", 10, "in", 1.2),
        rows("shakespeare", 100, "in", 1.8),
        rows("shakespeare", 100, "out", 1.95),
        rows("math", 10, "in", 1.9),
        rows("math", 100, "in", 1.3),
        rows("math", 100, "out", 1.6),
    )
    found = claims({"per_prompt": t})
    assert not any(c.per_model for c in found)
    once = by_claim(found)
    depth = once[published.LENS_DEPTH]
    assert depth.verdict is Verdict.HOLDS
    assert depth.numbers["shakespeare_depth"] == pytest.approx(1.8)
    assert "Shakespeare 1.80 [" in depth.evidence
    # two-sided: the squared difference less its variance, 0.5² − 2 · var(noise) / 6
    assert depth.effect == pytest.approx(0.25 - 2 * 0.0002 / 6)
    assert depth.effect == depth.numbers["smallest_pair_squared_difference"]
    moves = once[published.LENS_MOVES]
    assert moves.verdict is Verdict.HOLDS
    assert moves.numbers["shakespeare_change"] == pytest.approx(0.6)
    assert moves.numbers["math_change"] == pytest.approx(-0.6)
    assert moves.effect == pytest.approx(0.36)  # either direction counts: both 0.6²
    later = claim(found, published.LENS_OOD_LATER, "Math model, Other prompts")
    assert later.verdict is Verdict.HOLDS and later.numbers["difference_layers"] == pytest.approx(
        0.3
    )
    assert later.effect == pytest.approx(0.3)
    later = claim(found, published.LENS_OOD_LATER, "Shakespeare model, Other prompts")
    assert later.verdict is Verdict.HOLDS and later.effect == pytest.approx(0.15)
    entropy = claim(
        found, published.OOD_ENTROPY, "Shakespeare model, Other prompts, every layer's lens"
    )
    assert entropy.verdict is Verdict.HOLDS and entropy.numbers["layers_tested"] == 3
    assert entropy.effect == pytest.approx(0.1)  # the gap at the last layer, the smallest


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
    found = claims({"per_prompt": t})
    once = by_claim(found)
    # shakespeare = wikipedia, both differ from math: two of three pairs
    assert once[published.LENS_DEPTH].verdict is Verdict.PARTLY
    assert once[published.LENS_DEPTH].effect == pytest.approx(-2 * 0.0002 / 6)
    assert once[published.LENS_MOVES].verdict is Verdict.PARTLY
    assert once[published.LENS_MOVES].effect == pytest.approx(0)  # shakespeare's: none
    s = claim(found, published.LENS_OOD_LATER, "Shakespeare model, Other prompts")
    m = claim(found, published.LENS_OOD_LATER, "Math model, Other prompts")
    assert s.verdict is Verdict.FAILS and s.effect == pytest.approx(0)
    assert m.verdict is Verdict.HOLDS and m.effect == pytest.approx(0.1)
    same = table(rows("a", 10, "in", 1.5), rows("a", 100, "in", 1.5), rows("a", 100, "out", 1.4))
    found = claims({"per_prompt": same})
    assert by_claim(found)[published.LENS_MOVES].verdict is Verdict.FAILS
    later = claim(found, published.LENS_OOD_LATER, "A model, Other prompts")
    assert later.verdict is Verdict.FAILS and later.effect == pytest.approx(-0.1)
    # the out-of-domain entropy gap shrinks with depth: 0.5, 0.3, 0.1 bits, all > noise
    assert by_claim(found)[published.OOD_ENTROPY].verdict is Verdict.HOLDS


def test_out_of_domain_claims_per_prompt_corpus_and_pooled():
    """Math prompts form deeper than the in-domain ones and Wikipedia prompts shallower:
    two per-corpus claims with opposite verdicts, and a pooled line that does not hold.
    The entropy gap is positive on both corpora: there the pooled line holds."""
    t = table(
        rows("shakespeare", 100, "in", 1.5),
        rows("shakespeare", 100, "out", 1.9, corpus="math"),
        rows("shakespeare", 100, "out", 1.2, corpus="wikipedia"),
    )
    found = claims({"per_prompt": t})
    math = claim(found, published.LENS_OOD_LATER, "Shakespeare model, Math prompts")
    wiki = claim(found, published.LENS_OOD_LATER, "Shakespeare model, Wikipedia prompts")
    assert math.verdict is Verdict.HOLDS and math.effect == pytest.approx(0.4)
    assert wiki.verdict is Verdict.FAILS and wiki.effect == pytest.approx(-0.3)
    pooled = claim(found, published.LENS_OOD_LATER, "Shakespeare model, all out-of-domain prompts")
    assert pooled.verdict is Verdict.PARTLY and pooled.effect == pytest.approx(-0.3)
    assert pooled.numbers["corpora_agree"] == "no"
    assert "Math prompts +0.400 [holds]" in pooled.evidence
    assert "Wikipedia prompts -0.300 [does not hold]" in pooled.evidence
    scope = "Shakespeare model, all out-of-domain prompts, every layer's lens"
    entropy = claim(found, published.OOD_ENTROPY, scope)
    assert entropy.verdict is Verdict.HOLDS and entropy.numbers["corpora_agree"] == "yes"
    assert entropy.effect == pytest.approx(0.1)
    assert len([c for c in found if c.claim == published.OOD_ENTROPY]) == 3


@pytest.mark.parametrize("bits", [0.0, -0.1, float("nan")])
def test_the_threshold_must_be_a_positive_number_of_bits(bits):
    with pytest.raises(ConfigError, match=r"formation_kl_bits"):
        LensSettings(formation_kl_bits=bits).check()
    LensSettings(formation_kl_bits=0.05).check()


def test_not_measured():
    one = table(rows("a", 100, "in", 1.5))
    found = by_claim(claims({"per_prompt": one}))
    assert found[published.LENS_DEPTH].verdict is Verdict.UNMEASURED  # one model
    assert found[published.LENS_MOVES].verdict is Verdict.UNMEASURED  # one checkpoint
    assert found[published.LENS_OOD_LATER].verdict is Verdict.UNMEASURED  # no out-of-domain
    assert found[published.OOD_ENTROPY].verdict is Verdict.UNMEASURED
    assert all(c.effect is None for c in found.values())
    empty = claims({})
    assert [c.verdict for c in empty] == [Verdict.UNMEASURED] * 3


def test_models_of_two_depths_are_measured_each_in_its_own_layers():
    """A 2-block model beside a 3-block one (a model trained elsewhere): each depth is
    read from its own layers, and their depths in layers are not set against each
    other."""
    three = kl_table([[0.5, 0.3, 0.05, 0.0]] * 4)
    three["model"] = three["prompt_corpus"] = "b"
    t = pd.concat([table(rows("a", 100, "in", 1.5)), three], ignore_index=True)
    d = formation_depth(t)
    assert d.groupby("model")["layers"].max().to_dict() == {"a": 2, "b": 3}
    assert d.loc[d["model"] == "a", "depth"].tolist() == pytest.approx([1.5 + e for e in NOISE])
    assert d.loc[d["model"] == "b", "depth"].tolist() == pytest.approx([1.8] * 4)
    summary = formation_summary(t)
    assert summary.set_index("model")["layers"].to_dict() == {"a": 2, "b": 3}
    depth_claim = domain_depths(d, TAU)
    assert depth_claim.verdict == Verdict.UNMEASURED
    assert "needs two models of one depth" in depth_claim.evidence
