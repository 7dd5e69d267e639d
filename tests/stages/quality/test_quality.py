"""The sample-quality stage on a tiny trained (and adapted) model (the claim logic on
hand-made tables is in test_claims.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
from tests.conftest import read_one, run_one

from domaingpt.cli import main
from domaingpt.context.rundir import RunDir
from domaingpt.context.vocabulary import shared_vocab
from domaingpt.core import published
from domaingpt.core.claims import Verdict
from domaingpt.core.config import build_config
from domaingpt.data.encoding import encode_corpus
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointMeta,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from domaingpt.model.generate import generate_text
from domaingpt.stages.quality import (
    QualitySettings,
    claims,
)
from domaingpt.stages.quality import stage as quality_stage
from domaingpt.stages.quality.generate import generate_batch
from domaingpt.training.trainer import Trainer

CORPORA = ["shakespeare", "math"]  # the vocabulary is built from all three
CHECKPOINTS = [0, 20, 40]


def _settings(corpora, **kw) -> QualitySettings:
    base = dict(
        samples=2,
        chars=64,
        n_slices=4,
        adapt_samples=1,
        corpora=[str(corpora.path(n)) for n in CORPORA],
    )
    return QualitySettings(**{**base, **kw})


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpora, quiet_trainer) -> RunDir:
    """A run with a smoke model of the verse (checkpoints 0, 20, 40), no adaptation."""
    root = tmp_path_factory.mktemp("quality") / "run"
    run = RunDir(root)
    found = [corpora.resolve(n) for n in [*CORPORA, "wikipedia"]]
    vocab = shared_vocab(run, found, print)
    cfg = build_config(
        "smoke",
        ["train.max_iters=40", f"train.checkpoints={CHECKPOINTS}", "train.eval_interval=20"],
    )
    quiet_trainer(run, found[0], vocab, cfg)
    return run


@pytest.fixture(scope="module")
def first_run(trained, corpora) -> tuple[dict[str, Path], list[str]]:
    logs: list[str] = []
    written = run_one(quality_stage, trained, _settings(corpora), log=logs.append)
    return written, logs


def test_timeline_is_tidy_with_val_loss(trained, first_run) -> None:
    written, _ = first_run
    tables = read_one(quality_stage, trained)
    tl = tables["timeline"]
    assert len(tl) == len(CHECKPOINTS) * 2
    assert not tl.duplicated(["model", "iteration", "seed"]).any()
    assert sorted(tl["iteration"].unique()) == CHECKPOINTS
    assert set(tl["seed"]) == {1, 2}
    for info in list_checkpoints(trained.model("shakespeare") / "checkpoints", "iter"):
        got = tl.loc[tl["iteration"] == info.iteration, "val_loss"]
        assert got.to_numpy() == pytest.approx([info.meta.val_loss] * 2)
    # 64 sampled ids each; an untrained model may draw <unk> (id 0), written "<unk>"
    texts = tables["samples"].query("kind == 'train'")["text"]
    assert (texts.str.replace("<unk>", "?").str.len() == 64).all()
    assert sorted(tl["n_chars"]) == sorted(texts.str.len())
    for col in ("long_word_known", "space_share", "distinct_char_4", "zlib_ratio", "js_unigram"):
        assert col in tl.columns
    assert tl["nearest_corpus"].isin(CORPORA).all()
    # every sample has a style distance to each of the three corpora
    assert len(tables["style"]) == len(tl) * len(CORPORA)
    assert set(tables["reference"]["corpus"]) == set(CORPORA)
    for name in (
        "timeline",
        "checkpoints",
        "milestones",
        "style",
        "reference",
        "summary",
        "timeline_iteration",
        "timeline_val_loss",
        "profile_shakespeare",
    ):
        assert written[name].is_file(), name
    assert "adapted" not in written


def test_samples_are_those_of_generate_text(trained, first_run) -> None:
    samples = read_one(quality_stage, trained)["samples"]
    row = samples[(samples["iteration"] == 40) & (samples["seed"] == 2)].iloc[0]
    loaded = load_checkpoint(find_checkpoint(trained.model("shakespeare"), 40))
    assert row["text"] == generate_text(loaded.model, loaded.vocab, "\n", 64, seed=2)


def test_a_batch_of_samples_is_each_seed_s_own_text(trained) -> None:
    """Drawn together, each seed's text is the one generate_text draws alone, whichever
    seeds share its batch (the cache may hold the others): with top-k and temperature
    too, and greedy decoding gives one text for every seed."""
    loaded = load_checkpoint(find_checkpoint(trained.model("shakespeare"), 40))
    model, vocab = loaded.model, loaded.vocab
    seeds = [5, 1, 9, 2]
    batch = generate_batch(model, vocab, "\n", 48, seeds, temperature=0.8, top_k=10)
    alone = [
        generate_text(model, vocab, "\n", 48, seed=s, temperature=0.8, top_k=10) for s in seeds
    ]
    assert batch == alone and len(set(batch)) == 4
    assert generate_batch(model, vocab, "\n", 48, [9], temperature=0.8, top_k=10) == [batch[2]]
    greedy = generate_batch(model, vocab, "\n", 20, [1, 2], temperature=0.0)
    assert greedy[0] == greedy[1] == generate_text(model, vocab, "\n", 20, temperature=0.0)
    assert generate_batch(model, vocab, "\n", 20, []) == []


def test_missing_adaptation_is_a_logged_note_and_unmeasured_claims(trained, first_run) -> None:
    _, logs = first_run
    assert any("no adapted models" in m for m in logs)
    found = claims(read_one(quality_stage, trained))
    moved = [c for c in found if c.claim == published.ADAPT_STYLE]
    assert len(moved) == 1 and moved[0].verdict is Verdict.UNMEASURED
    assert all(len(c.evidence) > 10 for c in found)


def test_adapted_models_against_target_and_source(trained, first_run, corpora) -> None:
    """A real adaptation: the final model trained 10 more steps on Math, written where the
    adaptation stage writes it; the second run reuses every cached sample of the first."""
    run = RunDir(trained.root.parent / "adapted")
    shutil.copytree(trained.root, run.root)
    start = find_checkpoint(run.model("shakespeare"), "final")
    loaded = load_checkpoint(start)
    cfg = build_config("smoke", ["train.max_iters=10", "train.warmup_iters=2"])
    vocab = loaded.vocab
    enc = encode_corpus(corpora.resolve("math"), vocab)
    tr, _ = enc.checked_split(0.1, cfg.model.block_size)
    torch.manual_seed(0)
    trainer = Trainer(loaded.model, cfg.train, tr, torch.device("cpu"))
    for _ in range(10):
        trainer.step()
    meta = CheckpointMeta(val_loss=3.0, adapt={"source_iteration": 40, "target_loss_step0": 4.0})
    directory = run.adapted / "shakespeare__to__math" / "final" / "seed0" / "checkpoints"
    save_checkpoint(directory, "iter", 10, loaded.model, vocab, meta)

    logs: list[str] = []
    run_one(quality_stage, run, _settings(corpora), log=logs.append)
    # only the adapted model's one sample is new: the start checkpoint's are cached
    assert any("generated 1 samples" in m and "reused" in m for m in logs), logs
    tables = read_one(quality_stage, run)
    ad = tables["adapted"]
    assert set(ad["phase"]) == {"before", "after"}
    after, before = ad[ad["phase"] == "after"], ad[ad["phase"] == "before"]
    assert len(after) == 1 and len(before) == 2
    assert (before["iteration"] == 40).all() and (before["val_loss"] == 4.0).all()
    assert after["corpus"].iloc[0] == "math" and after["val_loss"].iloc[0] == 3.0
    for col in ("js_unigram", "js_unigram_source", "long_word_known_source"):
        assert ad[col].notna().all(), col
    # the before samples are the source model's own samples at iteration 40
    tl = tables["timeline"]
    before_texts = set(tables["samples"].query("phase == 'before'")["text"])
    assert before_texts == set(
        tables["samples"].query("kind == 'train' and iteration == 40")["text"]
    )
    assert len(tl) == len(CHECKPOINTS) * 2
    moved = [c for c in claims(tables) if c.claim == published.ADAPT_STYLE]
    assert len(moved) == 1 and moved[0].verdict in (Verdict.HOLDS, Verdict.FAILS)
    assert "shakespeare→math" in moved[0].evidence
    assert set(moved[0].numbers) >= {
        "shakespeare__to__math_js_before",
        "shakespeare__to__math_js_after",
        "shakespeare__to__math_fall_ci_low",  # one after sample: no interval (NaN)
    }
    assert moved[0].effect == pytest.approx(
        before["js_unigram"].mean() - after["js_unigram"].mean()
    )
    assert (run.root / "quality" / "adapted_style.png").is_file()


def test_cli_quality_and_errors(trained, first_run, corpora, capsys, tmp_path) -> None:
    code = main(
        [
            "quality",
            "--out",
            str(trained.root),
            "--samples",
            "1",
            "--chars",
            "64",
            "--slices",
            "4",
            "--corpora",
            ",".join(str(corpora.path(n)) for n in CORPORA),
            "-q",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "## What the samples show" in out and "| claim" in out
    assert len(read_one(quality_stage, trained)["timeline"]) == len(CHECKPOINTS)
    # an empty run directory, an unknown model, bad settings: one-line errors
    assert main(["quality", "--out", str(tmp_path / "empty"), "-q"]) == 2
    assert "no trained models" in capsys.readouterr().err
    with pytest.raises(DomainGPTError, match="no model trained on 'nope'"):
        run_one(quality_stage, trained, _settings(corpora, models=["nope"]))
    with pytest.raises(ConfigError, match="samples"):
        QualitySettings(samples=0)
    with pytest.raises(DomainGPTError, match="run `domaingpt quality"):
        read_one(quality_stage, RunDir(tmp_path / "empty"))


def test_checkpoints_sampled_in_worker_processes_give_the_same_texts(
    trained, first_run, corpora, tmp_path
) -> None:
    """``processes = 2``: the checkpoints sampled side by side, each text on one thread
    as in this process, so the same tables; the processes setting reruns nothing."""
    tables, logs = [], []
    for processes in (1, 2):
        copy = RunDir(tmp_path / f"run{processes}")
        shutil.copytree(trained.root, copy.root)
        (copy.root / "quality" / "samples.jsonl").unlink()
        run_one(quality_stage, copy, _settings(corpora, processes=processes), log=logs.append)
        tables.append(read_one(quality_stage, copy))
    assert any("worker processes of 1 torch thread" in line for line in logs)
    key = ["kind", "model", "iteration", "seed"]
    a, b = (t["samples"].sort_values(key).reset_index(drop=True) for t in tables)
    assert len(a) >= len(CHECKPOINTS) * 2
    pd.testing.assert_frame_equal(
        a.drop(columns=["seconds", "checkpoint"]), b.drop(columns=["seconds", "checkpoint"])
    )
    assert _settings(corpora, processes=2).key_dict() == _settings(corpora).key_dict()
