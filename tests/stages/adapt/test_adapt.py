"""Few-shot adaptation with tiny models on the synthetic corpora: step 0 is the
zero-shot loss, seeds reproduce, finished runs are reused, and the verdict follows the
numbers."""

from __future__ import annotations

import math
import shutil
import types

import numpy as np
import pandas as pd
import pytest
from tests.conftest import read_one, run_one

from domaingpt.context.rundir import RunDir
from domaingpt.context.splits import CorpusCache
from domaingpt.context.stage import StageContext
from domaingpt.core.config import build_config
from domaingpt.core.io import read_jsonl
from domaingpt.data.encoding import encode_corpus
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint
from domaingpt.scoring import score_windows
from domaingpt.stages.adapt import (
    AdaptSettings,
    across_sources,
    per_source,
    pick_early,
    sign_flip_p,
    summarize,
    summary_markdown,
    verdict,
)
from domaingpt.stages.adapt import jobs as jobs_mod
from domaingpt.stages.adapt import stage as adapt_stage
from domaingpt.stages.evaluate import EvaluateSettings
from domaingpt.stages.evaluate import stage as evaluate_stage

VAL_FRACTION = 0.1  # 2,000 characters of each synthetic corpus
QUIET = {"progress": False, "log": lambda m: None}


@pytest.fixture(scope="module")
def run(train_smoke, tmp_path_factory) -> RunDir:
    """Two smoke models (Shakespeare, math), 60 iterations, history 0, 10, 30, 60."""
    root = tmp_path_factory.mktemp("adaptrun")
    for corpus in ("shakespeare", "math"):
        code = train_smoke(
            root,
            "train.max_iters=60",
            "train.checkpoints=[0, 10, 30, 60]",
            f"data.val_fraction={VAL_FRACTION}",
            "train.threads=1",
            corpus=corpus,
        )
        assert code == 0
    return RunDir(root)


def settings(**kw) -> AdaptSettings:
    base = {
        "iters": 20,
        "seeds": 2,
        "schedule": [0, 10, 20],
        "pairs": ["shakespeare:math"],
        "eval_windows": 16,
        "final_windows": 64,
        "sample_chars": 40,
        "threads": 1,
    }
    return AdaptSettings(**{**base, **kw})


@pytest.fixture(scope="module")
def adapted(run) -> dict[str, pd.DataFrame]:
    run_one(adapt_stage, run, settings())
    return read_one(adapt_stage, run)


def test_tables_and_files(run, adapted):
    curves, final, summary = adapted["curves"], adapted["final"], adapted["summary"]
    assert len(curves) == 3 * 2 * 3  # starts × seeds × schedule steps
    assert set(curves["start"]) == {"final", "early", "scratch"}
    assert sorted(set(curves["step"])) == [0, 10, 20]
    assert len(final) == 6 and len(summary) == 1
    early = final[final["start"] == "early"]
    assert set(early["source_iteration"]) == {10}  # nearest 10 % of 60 iterations
    # training on the target lowers the target loss from every start
    for start in ("final", "early", "scratch"):
        c = curves[(curves["start"] == start) & (curves["seed"] == 0)].set_index("step")
        assert c.loc[20, "target_loss"] < c.loc[0, "target_loss"]
    for name in ("curves.png", "forgetting.png", "summary.md", "samples.jsonl"):
        assert (run.adapted / name).stat().st_size > 0
    assert summary.loc[0, "verdict"] in (run.adapted / "summary.md").read_text()


def test_step0_equals_zero_shot_loss_same_windows(run, corpora, adapted):
    curves = adapted["curves"]
    info = find_checkpoint(run.model("shakespeare"), "final")
    loaded = load_checkpoint(info)
    enc = encode_corpus(corpora.resolve("math"), loaded.vocab)
    val = enc.split(VAL_FRACTION)[1]
    zero_shot = score_windows(loaded.model, val, max_windows=16).mean_loss
    rows = curves[(curves["start"] == "final") & (curves["step"] == 0)]
    assert list(rows["target_loss"]) == [pytest.approx(zero_shot, rel=1e-6)] * 2


def test_step0_equals_evaluate_on_whole_split(run, corpora, tmp_path):
    """With eval_windows=0 the curve uses the whole split: step 0 is the matrix's cell."""
    other = RunDir(tmp_path / "r")
    shutil.copytree(run.models, other.models)
    shutil.copy(run.vocab_path, other.vocab_path)
    run_one(
        adapt_stage,
        other,
        settings(
            iters=1,
            seeds=1,
            schedule=[0],
            starts=["final"],
            eval_windows=0,
            final_windows=0,
        ),
    )
    step0 = read_one(adapt_stage, other)["curves"].query("step == 0").iloc[0]
    ev = EvaluateSettings(
        models=["shakespeare"],
        corpora=[str(corpora.path("math")), str(corpora.path("shakespeare"))],
        bootstrap=0,
        threads=1,
    )
    run_one(evaluate_stage, other, ev)
    table = read_one(evaluate_stage, other)["zero_shot"].set_index("corpus")
    assert step0["target_loss"] == pytest.approx(table.loc["math", "loss_nats"], rel=1e-6)
    assert step0["source_loss"] == pytest.approx(table.loc["shakespeare", "loss_nats"], rel=1e-6)


def test_seeds_reproduce_and_differ(run, adapted, tmp_path):
    """A seed's run is the same again, also side by side in worker processes (on one
    thread each, as here)."""
    curves = adapted["curves"]
    other = RunDir(tmp_path / "r")
    shutil.copytree(run.models, other.models)
    shutil.copy(run.vocab_path, other.vocab_path)
    run_one(adapt_stage, other, settings(seeds=1, starts=["final", "scratch"], processes=2))
    again = read_one(adapt_stage, other)["curves"]
    cols = ["step", "target_loss", "source_loss"]
    for start in ("final", "scratch"):
        a = curves[(curves["start"] == start) & (curves["seed"] == 0)][cols].reset_index(drop=True)
        b = again[(again["start"] == start) & (again["seed"] == 0)][cols].reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True)
        s1 = curves[(curves["start"] == start) & (curves["seed"] == 1)]
        assert list(s1["target_loss"])[1:] != list(a["target_loss"])[1:]


def test_adapted_checkpoints_samples_and_reuse(run, adapted):
    job = run.adapted / "shakespeare__to__math" / "early" / "seed1"
    info = find_checkpoint(job, "final")
    assert info.iteration == 20
    meta = info.meta.adapt
    assert (meta["source_model"], meta["source_iteration"]) == ("shakespeare", 10)
    assert (meta["target_corpus"], meta["start"], meta["seed"]) == ("math", "early", 1)
    top = info.meta  # the same, at the top of the record, for other analyses
    assert (top.source_model, top.source_iteration, top.start) == ("shakespeare", 10, "early")
    assert top.target_corpus == top.corpus == "math"
    assert load_checkpoint(info).model.config.n_layer == 2
    sample = read_jsonl(job / "samples.jsonl")[0]
    assert len(sample["text"]) == 40 and sample["iter"] == 20
    # finished runs are not redone: same settings, nothing trained, same files
    mtimes = {p: p.stat().st_mtime_ns for p in run.adapted.rglob("*.safetensors")}
    lines: list[str] = []
    run_one(adapt_stage, run, settings(), log=lines.append)
    assert any("reused 6" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in run.adapted.rglob("*.safetensors")} == mtimes
    pd.testing.assert_frame_equal(read_one(adapt_stage, run)["final"], adapted["final"])


def test_pick_early_and_its_errors(run):
    history = list_checkpoints(run.model("math") / "checkpoints", "iter")
    assert pick_early(history, AdaptSettings()).iteration == 10
    assert pick_early(history, AdaptSettings(early_fraction=0.45)).iteration == 30
    assert pick_early(history, AdaptSettings(early="0")).iteration == 0
    with pytest.raises(DomainGPTError, match="at 0, 10, 30, 60"):
        pick_early(history, AdaptSettings(early=7))
    with pytest.raises(DomainGPTError, match="no history checkpoint between 0 and 60"):
        pick_early([history[0], history[-1]], AdaptSettings())


def test_verdict_follows_the_numbers():
    rows = []
    for seed, (early, final, scratch) in enumerate([(2.40, 2.55, 2.9), (2.42, 2.55, 2.9)]):
        for start, loss in (("early", early), ("final", final), ("scratch", scratch)):
            it = {"early": 100, "final": 1000, "scratch": math.nan}[start]
            rows.append(
                {
                    "source": "a",
                    "target": "b",
                    "start": start,
                    "seed": seed,
                    "source_iteration": it,
                    "target_loss": loss,
                    "forgetting": 0.1,
                }
            )
    s = summarize(pd.DataFrame(rows)).iloc[0]
    assert s["early_mean"] == pytest.approx(2.41) and s["final_mean"] == pytest.approx(2.55)
    assert s["delta_early_minus_final"] == pytest.approx(-0.14)
    assert s["delta_spread"] == pytest.approx(0.0141421, rel=1e-4)
    assert s["verdict"].startswith("early start adapts better: 2.41 vs 2.55 (Δ −0.140 ± 0.014")
    assert s["verdict"].endswith("over 2 seeds); scratch 2.90")
    base = {"early_mean": 2.5, "final_mean": 2.45, "n_paired": 3, "scratch_mean": 3.0}
    noisy = verdict({**base, "delta_early_minus_final": 0.05, "delta_spread": 0.03})
    assert noisy.startswith("no clear difference")
    clear = verdict({**base, "delta_early_minus_final": 0.05, "delta_spread": 0.02})
    assert clear.startswith("final start adapts better")
    one = verdict({**base, "n_paired": 1, "delta_early_minus_final": -0.05, "delta_spread": 0})
    assert "one seed" in one


def test_across_sources_exact_tests_and_interval():
    """The source model is the unit: each source's pairs averaged first."""
    six = pd.DataFrame(
        {
            "source": ["a", "a", "b", "b", "c", "c"],
            "delta_early_minus_final": [0.31, 0.24, 0.19, 0.22, 0.31, 0.53],
        }
    )
    r = across_sources(six)
    assert (r["n_sources"], r["n_pairs"], r["final_better"], r["early_better"]) == (3, 6, 3, 0)
    assert r["sign_p"] == pytest.approx(2 / 8) and r["permutation_p"] == pytest.approx(2 / 8)
    assert r["final_minus_early_a"] == pytest.approx(-0.275)
    assert r["mean_final_minus_early"] == pytest.approx(-0.3)
    assert r["ci_low"] < -0.3 < r["ci_high"]
    assert list(per_source(six).index) == ["a", "b", "c"]
    assert across_sources(six[six["source"] == "a"]) is None  # one source: no test
    # the sign-flip p against a few by-hand values
    assert sign_flip_p(np.array([1.0, 1.0, 1.0, 1.0])) == pytest.approx(2 / 16)
    assert sign_flip_p(np.array([1.0, -1.0])) == pytest.approx(1.0)
    # sums of ±3 ±1 ±1 (observed 3 + 1 − 1 = 3): 5, 3, 3, 1 and their negatives, 6 of 8
    assert sign_flip_p(np.array([3.0, 1.0, -1.0])) == pytest.approx(6 / 8)
    many = sign_flip_p(np.full(20, 0.5))  # Monte Carlo beyond 16 sources
    assert many < 1e-3
    rows = [
        {"source": src, "target": "t", "start": start, "seed": 0, "forgetting": 0.1,
         "source_iteration": {"early": 100, "final": 1000}[start], "target_loss": loss}
        for src, early in (("a", 2.4), ("b", 2.5), ("c", 2.6))
        for start, loss in (("early", early), ("final", 2.2))
    ]  # fmt: skip
    md = summary_markdown(summarize(pd.DataFrame(rows)), AdaptSettings())
    assert "**over the 3 source models**" in md
    assert "the early start ends lower for 0, the final start for 3" in md
    assert "mean final − early −0.300 nats" in md and "permutation p = 0.25" in md


def test_cli_errors(cli_error, capsys, run):
    common = ("--out", run.root, "-q")
    assert "at least 1 iteration" in cli_error("adapt", "--iters", "0", *common)
    assert "at least 1 iteration" in cli_error("adapt", "--iters", "-5", *common)
    err = cli_error("adapt", "--early", "7", *common)
    assert "no checkpoint at iteration 7" in err and "0, 10, 30, 60" in err
    err = cli_error("adapt", "--pairs", "wikipedia:math", *common)
    assert "trained: shakespeare, math" in err and "domaingpt train wikipedia" in err
    err = cli_error("adapt", "--pairs", "math:math", *common)
    assert "its own corpus" in err
    assert "SOURCE:TARGET" in cli_error("adapt", "--pairs", "math", *common)


def test_adaptation_curves_reach_the_loggers(run, tmp_path):
    """Each adaptation run's curve goes to TensorBoard in its own folder (the path names
    source → target, start and seed), with the values and steps of curves.csv."""
    accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    other = RunDir(tmp_path / "r")
    shutil.copytree(run.models, other.models)
    shutil.copy(run.vocab_path, other.vocab_path)
    chosen = {"seeds": 1, "starts": ["final", "early"], "loggers": ["tensorboard"]}
    run_one(adapt_stage, other, settings(**chosen))
    curves = read_one(adapt_stage, other)["curves"]
    for start in ("final", "early"):
        folder = other.adapted / "shakespeare__to__math" / start / "seed0" / "tensorboard"
        events = accumulator.EventAccumulator(str(folder))
        events.Reload()
        tags = ["source_loss", "target_loss", "train/grad_norm", "train/loss", "train/lr"]
        assert sorted(events.Tags()["scalars"]) == tags
        # every train.log_interval (10) steps: the step's loss, lr and gradient norm
        for tag in ("train/loss", "train/lr", "train/grad_norm"):
            assert [e.step for e in events.Scalars(tag)] == [10, 20], tag
        assert all(e.value > 0 for e in events.Scalars("train/grad_norm"))
        rows = curves[curves["start"] == start]
        for tag in ("target_loss", "source_loss"):
            logged = [(e.step, e.value) for e in events.Scalars(tag)]
            assert [s for s, _ in logged] == [0, 10, 20]
            assert [v for _, v in logged] == pytest.approx(list(rows[tag]), rel=1e-6, abs=1e-6)
    # loggers are a runtime setting: the same runs with other loggers are reused
    lines: list[str] = []
    run_one(adapt_stage, other, settings(**{**chosen, "loggers": ["csv"]}),
            log=lines.append)  # fmt: skip
    assert any("reused 2" in line for line in lines)


def test_adapt_loggers_default_to_the_source_models(run, monkeypatch):
    """Without adapt.loggers a run logs where its source model was trained to log, and
    the run name tells source → target, start and seed."""

    cache = CorpusCache(download=False, run=run)
    plan = jobs_mod.plan_jobs(run, settings(seeds=1, starts=["early"]), cache)
    (job,) = plan
    assert job.run_name == "shakespeare→math early@10 seed0"
    assert jobs_mod.job_loggers(job, settings()) == ["csv"]
    assert jobs_mod.job_loggers(job, settings(loggers=["wandb"])) == ["wandb"]


def test_adapt_in_a_study_logs_where_the_study_trains(run, monkeypatch):
    """Under ``domaingpt run``, adapt.loggers left empty takes the study's train.loggers;
    set, it is kept."""
    import domaingpt.stages.adapt as adapt_pkg
    from domaingpt.stages.adapt import results as adapt_results

    seen = []
    monkeypatch.setattr(adapt_results, "adapt_all", lambda ctx, s: seen.append(s.loggers) or {})
    cfg = build_config("smoke", ["train.loggers=csv,tensorboard"])
    study = types.SimpleNamespace(config=lambda: cfg)
    ctx = StageContext(run=run, stage=adapt_pkg.stage, study=study)
    adapt_pkg.stage.run(ctx, AdaptSettings())
    adapt_pkg.stage.run(ctx, AdaptSettings(loggers=["wandb"]))
    adapt_pkg.stage.run(StageContext(run=run, stage=adapt_pkg.stage), AdaptSettings())
    assert seen == [["csv", "tensorboard"], ["wandb"], []]
