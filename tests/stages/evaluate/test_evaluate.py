"""Zero-shot evaluation on the real corpora with a tiny model: the evaluator's loss is
the textbook per-window cross-entropy, every validation character is scored exactly
once, training lowers the in-domain loss, and the bootstrap interval is deterministic."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from tests.conftest import read_one, run_one

from domaingpt.context.rundir import RunDir
from domaingpt.core.statistics import bootstrap_ratio_ci
from domaingpt.data.encoding import encode_corpus, window_mask, window_starts
from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint, parse_checkpoint_selection
from domaingpt.scoring import WindowScores, score_windows
from domaingpt.stages.evaluate import EvaluateSettings
from domaingpt.stages.evaluate import stage as evaluate_stage

VAL_FRACTION = 0.05


@pytest.fixture(scope="module")
def run(train_smoke, tmp_path_factory) -> RunDir:
    """A run with one smoke model trained 100 iterations on the verse (history 0, 100)."""
    root = tmp_path_factory.mktemp("evalrun")
    code = train_smoke(
        root,
        "train.max_iters=100",
        "train.checkpoints=[0, 100]",
        f"data.val_fraction={VAL_FRACTION}",
        "train.threads=1",
    )
    assert code == 0
    return RunDir(root)


@pytest.fixture(scope="module")
def table(run, corpora) -> pd.DataFrame:
    settings = EvaluateSettings(
        checkpoints="all",
        corpora=[str(p) for p in corpora.paths],
        bootstrap=200,
        threads=1,
        batch_size=256,
    )
    run_one(evaluate_stage, run, settings, log=lambda m: None)
    return read_one(evaluate_stage, run)["zero_shot"]


def shakespeare_val(run: RunDir, corpora, vocab) -> np.ndarray:
    enc = encode_corpus(corpora.resolve("shakespeare"), vocab)
    return enc.split(VAL_FRACTION)[1]


def direct_loss(model, ids: np.ndarray, T: int) -> tuple[float, int]:
    """Cross-entropy window by window, written out: disjoint windows of T inputs; the last
    one ends at the final id and scores only the targets not scored before."""
    total, count, pos = 0.0, 0, 0  # pos: index of the next target to score
    with torch.no_grad():
        while pos < len(ids) - 1:
            start = min(pos, len(ids) - 1 - T)
            x = torch.tensor(ids[start : start + T].astype(np.int64))[None]
            y = torch.tensor(ids[start + 1 : start + T + 1].astype(np.int64))
            logits, _ = model(x)
            losses = F.cross_entropy(logits[0], y, reduction="none")
            fresh = losses[pos - start :]
            total += float(fresh.sum())
            count += len(fresh)
            pos = start + T
    return total / count, count


def test_loss_equals_direct_per_window_computation(run, corpora):
    loaded = load_checkpoint(find_checkpoint(run.model("shakespeare"), "final"))
    ids = shakespeare_val(run, corpora, loaded.vocab)[: 20 * 32 + 17]  # ragged last window
    expected, n = direct_loss(loaded.model, ids, loaded.model.config.block_size)
    scores = score_windows(loaded.model, ids, batch_size=7)
    assert n == len(ids) - 1 == scores.n_scored
    assert scores.mean_loss == pytest.approx(expected, rel=1e-5)
    assert scores.mean_loss < 4.0  # trained: well below uniform (ln 300+ ≈ 5.8)


def test_windows_score_each_val_character_once(run, corpora, table):
    loaded = load_checkpoint(find_checkpoint(run.model("shakespeare"), "final"))
    val = shakespeare_val(run, corpora, loaded.vocab)
    T = loaded.model.config.block_size
    starts = window_starts(len(val), T)
    mask = window_mask(starts, T)
    hits = np.zeros(len(val) - 1, dtype=int)  # target j is val[j + 1]
    for s, m in zip(starts, mask, strict=True):
        hits[s : s + T] += m
    assert (hits == 1).all()
    rows = table[table["corpus"] == "shakespeare"]
    assert (rows["n_chars"] == len(val) - 1).all()
    assert (rows["n_windows"] == len(starts)).all()


def test_trained_model_beats_fresh_model_in_domain(run, table):
    rows = table[(table["model"] == "shakespeare") & (table["corpus"] == "shakespeare")]
    by_iter = rows.set_index("iteration")["loss_nats"]
    assert list(by_iter.index) == [0, 100]
    assert by_iter[0] > math.log(run.vocab().size) - 0.5  # a fresh model: near uniform
    assert by_iter[100] < by_iter[0] - 1.5
    row = rows[rows["iteration"] == 100].iloc[0]
    assert bool(row["in_domain"])
    assert row["bits_per_char"] == pytest.approx(row["loss_nats"] / math.log(2))
    assert row["perplexity"] == pytest.approx(math.exp(row["loss_nats"]))
    assert row["unk_fraction"] == 0.0


def test_bootstrap_interval_contains_mean_and_is_deterministic(table):
    assert ((table["ci_low"] < table["loss_nats"]) & (table["loss_nats"] < table["ci_high"])).all()
    rng = np.random.default_rng(5)
    count = np.full(400, 32)
    scores = WindowScores(
        nll=rng.gamma(4.0, 20.0, size=400), count=count, starts=np.arange(400) * 32, chars=count
    )
    a = bootstrap_ratio_ci(scores.nll, scores.count, 500, seed=3)
    assert a == bootstrap_ratio_ci(scores.nll, scores.count, 500, seed=3)
    assert a != bootstrap_ratio_ci(scores.nll, scores.count, 500, seed=4)
    assert a[0] < scores.mean_loss < a[1]
    # a 95 % interval of a mean of 400 windows is about ±2 standard errors wide
    se = (scores.nll / count).std(ddof=1) / math.sqrt(400)
    assert a[1] - a[0] == pytest.approx(4 * se, rel=0.2)
    assert all(math.isnan(v) for v in bootstrap_ratio_ci(scores.nll, scores.count, 0))


def test_outputs_are_written_and_deterministic(run, corpora, table):
    files = {p.name for p in (run.root / "evaluate").iterdir()}
    assert {"zero_shot.csv", "zero_shot.md", "zero_shot.png", "zero_shot_training.png"} <= files
    md = (run.root / "evaluate" / "zero_shot.md").read_text()
    assert "| shakespeare (iter 100) | **" in md
    assert "the study's published matrix" in md and "1.3966" in md and "3.9497" in md
    first = ((run.root / "evaluate") / "zero_shot.csv").read_text()
    settings = EvaluateSettings(
        checkpoints="all",
        corpora=[str(p) for p in corpora.paths],
        bootstrap=200,
        threads=1,
        batch_size=256,
    )
    run_one(evaluate_stage, run, settings, log=lambda m: None)
    assert (run.root / "evaluate" / "zero_shot.csv").read_text() == first


def test_vocabulary_gaps_are_reported_as_unk_share(run, corpora, tmp_path):
    text = corpora.path("shakespeare").read_text()
    odd = text.replace("e", "\ue000")  # a private-use character no corpus has
    path = tmp_path / "odd.txt"
    path.write_text(odd)
    lines: list[str] = []
    settings = EvaluateSettings(corpora=[str(path)], bootstrap=0, threads=1, batch_size=256)
    run_one(evaluate_stage, run, settings, log=lines.append)
    row = read_one(evaluate_stage, run)["zero_shot"].iloc[0]
    val = odd[int(len(odd) * (1 - VAL_FRACTION)) :]
    assert row["corpus"] == "odd"
    assert row["unk_fraction"] == pytest.approx(val[1:].count("\ue000") / (len(val) - 1))
    assert any("<unk>" in line and "odd" in line for line in lines)
    assert math.isfinite(row["loss_nats"])


def test_checkpoint_selection_parsing():
    assert parse_checkpoint_selection("final") == "final"
    assert parse_checkpoint_selection("ALL") == "all"
    assert parse_checkpoint_selection("2000, 0,500") == [0, 500, 2000]
    assert parse_checkpoint_selection([100, 0]) == [0, 100]


def test_cli_errors(cli_error, capsys, run):
    common = ("-q",)
    err = cli_error("evaluate", "--out", run.root, "--models", "wikipedia", *common)
    assert "trained: shakespeare" in err and "domaingpt train wikipedia" in err
    err = cli_error("evaluate", "--out", run.root, "--checkpoints", "7", *common)
    assert "available: 0, 100" in err
    err = cli_error("evaluate", "--out", run.root, "--checkpoints", "x,y", *common)
    assert "final" in err and "all" in err
    err = cli_error("evaluate", "--out", run.root / "nothing", *common)
    assert "no trained models" in err
    err = cli_error("evaluate", "--out", run.root, "--batch-size", "0", *common)
    assert "batch_size" in err
