"""The lens stage in the smoke study: every model, checkpoint, prompt and layer; the last
layer is the model's own prediction (the probe stage's numbers); its command."""

from __future__ import annotations

import numpy as np
import pytest

from domaingpt.study import Study


@pytest.fixture(scope="module")
def lens(smoke_study):
    return Study.load(smoke_study.root)


def test_every_model_checkpoint_prompt_and_layer(lens):
    per_prompt = lens["lens"]["per_prompt"]
    # 3 models x 4 checkpoints x 24 prompts (8 per corpus) x 3 layers (embeddings + 2 blocks)
    assert len(per_prompt) == 3 * 4 * 24 * 3
    assert set(per_prompt["layer"]) == {0, 1, 2}
    last = per_prompt[per_prompt["layer"] == 2]
    assert (last["kl_bits"] == 0).all() and (last["top1_agreement"] == 1).all()
    assert (per_prompt["kl_bits"] >= 0).all()
    assert per_prompt["p_true"].between(0, 1).all()
    formation = lens["lens"]["formation"]
    trained = formation[formation["iteration"] > 0]
    assert trained["depth"].between(0, 2).all()
    assert (formation["threshold_bits"] == 0.1).all()
    assert set(lens.figures["lens"]) >= {
        lens.root / "lens" / "formation.png",
        lens.root / "lens" / "layers.png",
    }


def test_the_last_layer_is_the_probes_softmax(lens):
    """The probe reads the same prompts (8 per corpus, 32 characters) at the same
    checkpoints: its entropy and p(true) averaged over positions are the lens's last layer."""
    per_prompt = lens["lens"]["per_prompt"]
    last = per_prompt[per_prompt["layer"] == 2].set_index(["model", "iteration", "prompt_id"])
    probe = lens["softmax"]["last"].set_index(["model", "iteration", "prompt_id"])
    joined = last.join(probe[["entropy_all_bits", "p_true_all"]], how="inner")
    assert len(joined) == len(last)
    np.testing.assert_allclose(joined["entropy_bits"], joined["entropy_all_bits"], rtol=1e-4)
    np.testing.assert_allclose(joined["p_true"], joined["p_true_all"], rtol=1e-3, atol=1e-7)


def test_its_claims_reach_the_conclusions(lens):
    mine = lens.conclusions[lens.conclusions["stage"] == "lens"]
    # depth, moves; resolves later and entropy: per model x (2 prompt corpora + pooled)
    assert len(mine) == 2 + 3 * 3 * 2
    assert mine["effect"].notna().all()
    assert set(mine["verdict"]) <= {"one model", "not measured"}  # one model per domain
    html = (lens.root / "report.html").read_text(encoding="utf-8")
    assert 'id="lens"' in html and "The logit lens: where in the model" in html


def test_the_command_refuses_a_run_without_models(cli_error, tmp_path):
    err = cli_error("lens", "--out", tmp_path / "empty", "--quiet")
    assert "no trained models" in err
