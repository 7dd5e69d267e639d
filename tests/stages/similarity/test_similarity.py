"""The similarity stage in the smoke study: every comparison at every layer, its
leave-one-prompt-out values, and its claims."""

from __future__ import annotations

import numpy as np
import pytest

from domaingpt.study import Study


@pytest.fixture(scope="module")
def study(smoke_study):
    return Study.load(smoke_study.root)


def test_every_comparison_at_every_layer(study):
    cka = study["similarity"]["cka"]
    layers = 3  # embeddings + 2 blocks
    counts = cka.groupby("kind")["comparison"].nunique().to_dict()
    # 3 models x 3 consecutive pairs; 3 pairs of models; 3 adapted pairs x 2 starts x
    # 2 seeds, each on the target's and the source's prompts
    assert counts == {"training": 9, "domains": 3, "adaptation": 24}
    assert (cka.groupby("comparison").size() == layers).all()
    assert cka["cka"].between(-0.3, 1.0 + 1e-9).all()
    assert (cka["ci_low"] <= cka["cka"]).all() and (cka["cka"] <= cka["ci_high"]).all()
    adapt = cka[cka["kind"] == "adaptation"]
    assert set(adapt["start"]) == {"early", "final"} and set(adapt["prompts"]) == {
        "target",
        "source",
    }
    assert (adapt["n_prompts"] == 8).all() and (adapt["n_tokens"] == 8 * 8).all()
    every = cka[cka["kind"] != "adaptation"]
    assert (every["n_prompts"] == 24).all()


def test_the_jackknife_leaves_each_prompt_out_once(study):
    cka, jack = study["similarity"]["cka"], study["similarity"]["jackknife"]
    sizes = jack.groupby(["comparison", "layer"]).size()
    expected = cka.set_index(["comparison", "layer"])["n_prompts"]
    assert (sizes.reindex(expected.index) == expected).all()
    # leaving one prompt out of 24 moves the estimate little
    merged = jack.merge(cka[["comparison", "layer", "cka"]], on=["comparison", "layer"])
    assert np.nanmax(np.abs(merged["cka_x"] - merged["cka_y"])) < 0.5


def test_its_claims_reach_the_conclusions(study):
    mine = study.conclusions[study.conclusions["stage"] == "similarity"]
    assert len(mine) == 3
    assert "not measured" not in set(mine["verdict"])
    assert study.figures["similarity"] == [
        study.root / "similarity" / "across.png",
        study.root / "similarity" / "training.png",
    ]


def test_models_of_two_depths_compare_at_the_same_relative_depth():
    from domaingpt.stages.similarity.compute import layer_pairs

    assert layer_pairs(3, 3) == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert layer_pairs(2, 3) == [(0, 0), (1, 2), (2, 3)]  # 1.5 rounds to 2
    assert layer_pairs(6, 2) == [(0, 0), (3, 1), (6, 2)]
