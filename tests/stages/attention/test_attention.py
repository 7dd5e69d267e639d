"""The attention stage in the smoke study: every model, checkpoint, prompt, layer and
head; shares that partition the attention; an untrained model attends uniformly."""

from __future__ import annotations

import numpy as np
import pytest

from domaingpt.context.activations import WORD_GROUPS
from domaingpt.study import Study


@pytest.fixture(scope="module")
def study(smoke_study):
    return Study.load(smoke_study.root)


def test_every_prompt_layer_and_head(study):
    tables = study["attention"]
    per_prompt, prompts, heads = tables["per_prompt"], tables["prompts"], tables["heads"]
    # 3 models x 4 checkpoints x 24 prompts x 2 layers x 2 heads
    assert len(per_prompt) == 3 * 4 * 24 * 2 * 2
    assert set(per_prompt["layer"]) == {1, 2} and set(per_prompt["head"]) == {0, 1}
    shares = per_prompt[[f"share_{g}" for g in WORD_GROUPS]].sum(axis=1)
    np.testing.assert_allclose(shares, 1.0, atol=1e-5)
    chance = prompts[[f"chance_{g}" for g in WORD_GROUPS]].sum(axis=1)
    np.testing.assert_allclose(chance, 1.0, atol=1e-5)
    assert per_prompt["distance"].between(0, 31).all()
    assert per_prompt["entropy_bits"].between(0, np.log2(32)).all()
    # 3 models x 4 checkpoints x 2 domains (in, out) x 2 layers x 2 heads
    assert len(heads) == 3 * 4 * 2 * 2 * 2


def test_an_untrained_model_attends_uniformly(study):
    """std-0.02 weights: every head spreads evenly over the visible characters, so its
    shares are the chance shares and its distance (L − 1) / 4 = 7.75 characters."""
    tables = study["attention"]
    init = tables["per_prompt"][tables["per_prompt"]["iteration"] == 0]
    merged = init.merge(tables["prompts"], on=["prompt_id", "prompt_corpus"])
    for g in WORD_GROUPS:
        np.testing.assert_allclose(merged[f"share_{g}"], merged[f"chance_{g}"], atol=0.01)
    assert np.allclose(init["distance"], 7.75, atol=0.1)


def test_its_claims_and_section(study):
    mine = study.conclusions[study.conclusions["stage"] == "attention"]
    assert len(mine) == 2
    html = (study.root / "report.html").read_text(encoding="utf-8")
    assert 'id="attention"' in html and "Attention: where each head looks" in html
    assert study.figures["attention"] == [
        study.root / "attention" / "heads.png",
        study.root / "attention" / "training.png",
    ]
