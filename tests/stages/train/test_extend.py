"""The train stage of ``domaingpt run`` (issue 17): raising ``train.max_iters`` extends
the study's models from their last checkpoint instead of retraining them, to the same
bytes as ``domaingpt train --resume --set train.max_iters=N``; and the run's
vocabulary is written only once every corpus has been checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import StageContext, run_stage
from domaingpt.data.corpus import resolve_corpus
from domaingpt.errors import CorpusError
from domaingpt.stages.train import TrainSettings
from domaingpt.stages.train import stage as train_stage

TRAIN = {"checkpoints": [0, 10, 20], "eval_tokens": 1024, "sample_chars": 16, "threads": 1}


def _train_stage(run: RunDir, corpora, max_iters: int, log: list[str]) -> None:
    settings = TrainSettings(preset="smoke", train={**TRAIN, "max_iters": max_iters})
    ctx = StageContext(run=run, stage=train_stage, corpora=corpora, progress=False, log=log.append)
    run_stage(ctx, settings)


@pytest.fixture
def notes(tmp_path: Path, corpora) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text(corpora.path("wikipedia").read_text(encoding="utf-8"))
    return path


def test_raising_max_iters_extends_the_studys_models(cli, corpora, notes, tmp_path):
    verse = corpora.path("shakespeare")
    corpora = [resolve_corpus(str(verse)), resolve_corpus(str(notes))]
    run = RunDir(tmp_path / "run")
    log: list[str] = []
    _train_stage(run, corpora, 20, log)
    ckpts = {c.name: run.model(c.name) / "checkpoints" for c in corpora}
    before = {
        name: {p.name: p.read_bytes() for p in d.glob("iter-*.safetensors")}
        for name, d in ckpts.items()
    }

    log.clear()
    _train_stage(run, corpora, 40, log)
    assert "model 1/2 (shakespeare): extending from 20 to 40 iterations" in log
    assert "model 2/2 (notes): extending from 20 to 40 iterations" in log
    assert "resuming notes from iteration 20" in log
    for name, d in ckpts.items():
        after = {p.name: p.read_bytes() for p in d.glob("iter-*.safetensors")}
        assert sorted(after) == [f"iter-{i:07d}.safetensors" for i in (0, 10, 20, 40)]
        # Iterations 0-20 were not trained again (a 40-iteration schedule from scratch
        # would give other weights at 10 and 20).
        assert {k: after[k] for k in before[name]} == before[name]
    assert run.model_entries(["notes"])[0].corpus_path == str(notes)

    # The same model extended from the command line: the same bytes.
    out = tmp_path / "cli"
    sets = [f"train.{k}={v}" for k, v in {**TRAIN, "max_iters": 20}.items()]
    base = ["train", verse, "--out", out, "-q", "--vocab", f"{verse},{notes}"]
    code, _, err = cli(*base, "--preset", "smoke", *[a for s in sets for a in ("--set", s)])
    assert code == 0, err
    code, _, err = cli(*base, "--resume", "--set", "train.max_iters=40")
    assert code == 0, err
    extended = out / "models" / "shakespeare" / "checkpoints" / "iter-0000040.safetensors"
    assert extended.read_bytes() == (ckpts["shakespeare"] / extended.name).read_bytes()

    # A third run with the same setting finds every model finished: nothing is trained.
    log.clear()
    _train_stage(run, corpora, 40, log)
    assert sum("finished earlier with this configuration, skipped" in m for m in log) == 2


def test_a_corpus_too_short_leaves_the_vocabulary_unwritten(corpora, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("ʘǂǁ€☃ʘǂǁ€☃", encoding="utf-8")
    corpora = [corpora.resolve("shakespeare"), resolve_corpus(str(short))]
    run = RunDir(tmp_path / "run")
    with pytest.raises(CorpusError, match="too short"):
        _train_stage(run, corpora, 20, [])
    assert not run.vocab_path.exists() and not run.models.exists()
