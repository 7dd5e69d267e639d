"""A study with replicate models per corpus, end to end on the smoke preset."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from domaingpt.cli import main
from domaingpt.context.rundir import RunDir
from domaingpt.core.claims import Verdict
from domaingpt.data.corpus import resolve_corpus
from domaingpt.errors import CorpusError
from domaingpt.model.checkpoint import find_checkpoint
from domaingpt.study import Study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def replicated(tmp_path_factory: pytest.TempPathFactory, corpora) -> Path:
    root = tmp_path_factory.mktemp("replicates")
    study = root / "two.toml"
    # two corpora, one pair, one adaptation seed: the smallest study with replicates
    study.write_text(
        f'[study]\nname = "two"\ncorpora = ["{corpora.path("shakespeare")}", '
        f'"{corpora.path("math")}"]\n'
        '[train]\nseeds = 2\n[adapt]\npairs = ["shakespeare:math"]\nseeds = 1\n'
    )
    out = root / "run"
    code = main(["run", str(study), "--preset", "smoke", "--out", str(out)])
    assert code == 0
    return out


def _weights(run: RunDir, model: str, iteration: int) -> dict[str, torch.Tensor]:
    info = find_checkpoint(run.model(model), iteration)
    return load_file(str(info.tensor_path))


def test_replicates_share_initial_weights_within_and_differ_across(replicated):
    run = RunDir(replicated)
    assert run.trained_models() == ["math", "math__r1", "shakespeare", "shakespeare__r1"]
    w = {m: _weights(run, m, 0) for m in run.trained_models()}
    key = (
        "blocks.0.attn.c_attn.weight"
        if "blocks.0.attn.c_attn.weight" in w["math"]
        else next(k for k in w["math"] if k.endswith("weight") and w["math"][k].ndim == 2)
    )
    assert torch.equal(w["math"][key], w["shakespeare"][key])  # paired within replicate 0
    assert torch.equal(w["math__r1"][key], w["shakespeare__r1"][key])  # and within 1
    assert not torch.equal(w["math"][key], w["math__r1"][key])  # replicates differ


def test_every_stage_runs_on_every_replicate(replicated):
    study = Study.load(replicated)
    zero = study["evaluate"]["zero_shot"]
    assert sorted(set(zero["model"])) == ["math", "math__r1", "shakespeare", "shakespeare__r1"]
    assert set(zero["replicate"]) == {0, 1}
    final = study["adapt"]["final"]
    assert sorted(set(final["source"])) == ["shakespeare", "shakespeare__r1"]
    for stage in ("softmax", "lens", "saliency", "attention", "quality"):
        tables = study[stage]
        models = {m for t in tables.values() if "model" in t for m in t["model"]}
        assert {"math__r1", "shakespeare__r1"} <= models, stage
    cka = study["similarity"]["cka"]
    domains = cka[cka["kind"] == "domains"]
    # domain models are compared within a replicate only
    pairs = {tuple(sorted(p)) for p in zip(domains["model_a"], domains["model_b"], strict=True)}
    assert pairs == {("math", "shakespeare"), ("math__r1", "shakespeare__r1")}


def test_domain_claims_are_decided_across_models(replicated):
    table = Study.load(replicated).conclusions
    across = table[table["evidence"].str.contains("across 2 models", regex=False)]
    assert len(across) >= 10
    assert not (table["verdict"] == str(Verdict.ONE_MODEL)).all()
    assert (table["evidence"].str.contains("Holm-adjusted p =", regex=False)).sum() == len(across)


def test_a_corpus_named_like_a_replicate_is_refused(tmp_path):
    path = tmp_path / "notes__r2.txt"
    path.write_text("some text " * 100)
    with pytest.raises(CorpusError, match="replicate"):
        resolve_corpus(str(path))
