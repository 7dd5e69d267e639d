"""The adapt stage's computation: every job of the settings, then its tables and figures
(:mod:`.results` runs it and reads the tables back).

Layout under ``runs/NAME/adapt/``::

    <source>__to__<target>/<start>/seed<k>/
        checkpoints/iter-<iters>.{json,safetensors}   the adapted model
        curve.jsonl                                   its rows of curves.csv
        samples.jsonl                                 a fixed-seed text sample
    curves.csv     source, target, start, seed, step, target_loss, source_loss
    final.csv      whole-split losses after the last step, one row per run
    summary.csv    per pair: final target loss mean ± std per start, early − final, verdict
    summary.md     the same as a table, and the verdicts
    samples.jsonl  every adapted model's sample
    curves.png     target loss against step, per pair; forgetting.png: source loss
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from domaingpt.context.rundir import RunDir, run_config_of
from domaingpt.context.splits import CorpusCache, Split
from domaingpt.context.stage import StageContext
from domaingpt.core.device import pick_device
from domaingpt.core.distributed import Ranks, map_ranks
from domaingpt.core.io import atomic_write_text, read_jsonl, write_jsonl
from domaingpt.core.loggers import require_loggers
from domaingpt.core.processes import auto_processes
from domaingpt.core.progress import Log, progress_bar
from domaingpt.data.tokenizer import vocab_from_json
from domaingpt.stages.adapt.figures import plot_adaptation_curves
from domaingpt.stages.adapt.jobs import (
    CURVE_COLUMNS,
    Job,
    job_loggers,
    plan_jobs,
    run_job,
    stored_result,
    training_spec,
)
from domaingpt.stages.adapt.settings import AdaptSettings
from domaingpt.stages.adapt.summary import summarize, summary_markdown
from domaingpt.training.memory import training_flops

FINAL_COLUMNS = [
    "source",
    "target",
    "start",
    "seed",
    "source_iteration",
    "steps",
    "target_loss",
    "source_loss",
    "target_loss_step0",
    "source_loss_step0",
    "forgetting",
]


def adapt_all(ctx: StageContext, settings: AdaptSettings) -> dict[str, Path]:
    """Run (or finish) every adaptation of ``settings`` and write ``adapt/`` (module doc).

    The corpora of ``ctx`` (a study's, already resolved) are where the models' corpora
    are looked for first; the others are found from the models' ``run.json``."""
    run, log, progress = ctx.run, ctx.log, ctx.progress
    run.check_writable()
    cache = CorpusCache(
        settings.data_dir, download=not settings.offline, run=run, known=ctx.corpora
    )
    device = pick_device(settings.device)
    jobs = plan_jobs(run, settings, cache)
    require_loggers({name: None for job in jobs for name in job_loggers(job, settings)})

    def splits(job: Job) -> tuple[Split, Split]:
        vocab = vocab_from_json(job.shape_info.vocab)
        block = int(job.shape_info.block_size)
        vf = float(run_config_of(job.shape_info).get("data", {}).get("val_fraction", 0.1))
        tgt = cache.split(cache.corpus(job.target), vocab, vf, block)
        src = cache.split(cache.model_corpus(job.source), vocab, vf, block)
        return tgt, src

    for job in jobs:  # corpora found and split before any training
        tgt, _ = splits(job)
        if tgt.unk_fraction > 0 and job.start == settings.starts[0] and job.seed == settings.seed:
            log(
                f"warning: {tgt.unk_fraction:.3%} of {job.target}'s validation characters "
                f"are not in model {job.source}'s vocabulary; they are read as <unk>"
            )
    results = _run_jobs(jobs, settings, splits, ctx.out, device, progress, log, ctx.ranks)
    return _write_outputs(ctx, jobs, results, settings)


@dataclass(frozen=True)
class _Todo:
    """One adaptation to run (a job of :func:`map_ranks`)."""

    job: Job
    settings: AdaptSettings
    target: Split
    source: Split
    directory: Path
    device: torch.device


def _adapt_one(todo: _Todo) -> dict[str, Any]:
    """Run one adaptation into its directory (an interrupted run's is redone)."""
    if todo.directory.exists():
        shutil.rmtree(todo.directory)  # an interrupted run or other settings: redo it
    return run_job(todo.job, todo.settings, todo.target, todo.source, todo.directory, todo.device)


def _run_jobs(
    jobs: list[Job],
    settings: AdaptSettings,
    splits: Callable[[Job], tuple[Split, Split]],
    root: Path,
    device: torch.device,
    progress: bool,
    log: Log,
    ranks: Ranks | None,
) -> list[dict[str, Any]]:
    """Each job's result: reused when its directory holds one with the same key, else run
    (spread over the ranks under torchrun; a directory left by an interrupted run or
    other settings is redone)."""
    bar = progress_bar(len(jobs), "adapt", enabled=progress)
    results: list[dict[str, Any] | None] = []
    todo: list[tuple[int, _Todo]] = []
    for i, job in enumerate(jobs):
        directory = job.directory(root)
        _, spec = training_spec(job, settings)
        key = job.key(settings, spec.lr, spec.min_lr, spec.batch_size)
        stored = stored_result(directory, key)
        results.append(stored)
        if stored is None:
            todo.append((i, _Todo(job, settings, *splits(job), directory, device)))
        else:
            bar.update(1)

    def finished(k: int, result: dict[str, Any]) -> None:
        job = todo[k][1].job
        results[todo[k][0]] = result
        with bar.external_write_mode(file=sys.stderr):  # the line above the bar
            log(
                f"{job.source} → {job.target} [{job.start}"
                f"{'' if job.source_iteration is None else f' @{job.source_iteration}'}, "
                f"seed {job.seed}]: target {result['target_loss_step0']:.3f} → "
                f"{result['target_loss']:.3f}, source {result['source_loss_step0']:.3f} → "
                f"{result['source_loss']:.3f} ({result['seconds']:.0f} s)"
            )
        bar.update(1)

    # Decided on every run of the stage, finished or not: a run redone alone gets the
    # same share of the cores as beside the others (the same bits).
    flops = 0.0
    for job in jobs:
        cfg, spec = training_spec(job, settings)
        flops += training_flops(cfg.model, spec, vocab_from_json(job.shape_info.vocab).size)
    processes = auto_processes(settings.processes, len(jobs), device, flops)
    map_ranks(
        _adapt_one,
        [t for _, t in todo],
        ranks=ranks,
        log=log,
        each=finished,
        processes=processes,
        what="adaptations",
    )
    bar.close()
    if len(todo) < len(jobs):
        log(f"reused {len(jobs) - len(todo)} finished adaptation run(s) from {root}")
    return [r for r in results if r is not None]


def _write_outputs(
    ctx: StageContext, jobs: list[Job], results: list[dict[str, Any]], settings: AdaptSettings
) -> dict[str, Path]:
    """The stage's tables, summary, samples and figures, from every job's files."""
    root, log = ctx.out, ctx.log
    curves = pd.DataFrame(
        [r for job in jobs for r in read_jsonl(job.directory(root) / "curve.jsonl")],
        columns=CURVE_COLUMNS,
    )
    final = pd.DataFrame(
        [{**r, "source": r["source_model"], "target": r["target_corpus"]} for r in results]
    )[FINAL_COLUMNS]
    summary = summarize(final)
    samples = [s for job in jobs for s in read_jsonl(job.directory(root) / "samples.jsonl")]
    written = {
        "curves_csv": ctx.write_table("curves", curves),
        "final_csv": ctx.write_table("final", final),
        "summary_csv": ctx.write_table("summary", summary),
        "summary_md": atomic_write_text(root / "summary.md", summary_markdown(summary, settings)),
        "samples": write_jsonl(root / "samples.jsonl", samples),
        "curves_png": plot_adaptation_curves(curves, root / "curves.png"),
        "forgetting_png": plot_adaptation_curves(
            curves,
            root / "forgetting.png",
            value="source_loss",
            ylabel="source-corpus loss (nats / character)",
            title="Forgetting: source-corpus loss during adaptation",
        ),
    }
    for r in summary.to_dict("records"):
        log(f"{r['source']} → {r['target']}: {r['verdict']}")
    log(f"wrote {len(written)} files to {root}")
    return written


def in_domain_losses(run: RunDir) -> pd.DataFrame:
    """Each trained model's loss on its own corpus (the whole validation split, from its
    training record): how far an adapted model is from a model trained on the target."""
    rows = []
    for name in run.trained_models():
        metrics = run.model(name) / "metrics.jsonl"
        last = read_jsonl(metrics)[-1] if metrics.is_file() else {}
        if "val_loss_full" in last:
            rows.append({"corpus": name, "loss_nats": float(last["val_loss_full"])})
    return pd.DataFrame(rows, columns=["corpus", "loss_nats"])
