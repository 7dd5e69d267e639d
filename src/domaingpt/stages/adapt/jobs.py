"""Few-shot adaptation jobs: which runs a study asks for, and one run from start to finish.

For every ordered pair (source model, target corpus ≠ source) a model is trained for
``iters`` more iterations on the target corpus from each start point (see
:mod:`.settings`), once per seed.

Training is :class:`~domaingpt.training.trainer.Trainer` (the same step as ``domaingpt
train``) with a fresh AdamW, a short warm-up and a cosine decay over the ``iters``
iterations; a seed sets the batches (and, for ``scratch``, the initial weights). At each
step of ``schedule`` the target-corpus and source-corpus validation losses are recorded
on ``eval_windows`` windows spread evenly over each split (the same windows at every
step, so a curve is smooth and cheap); after the last step both are computed again on
the **whole** split, and those numbers feed the summary. Forgetting is the rise of the
source loss from step 0 to the last step, on the curve's windows.

A run whose final checkpoint exists with the same key (:meth:`Job.key`) is not redone,
so an interrupted ``domaingpt adapt`` continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from domaingpt.context.rundir import RunDir, run_config_of
from domaingpt.context.splits import CorpusCache, Split
from domaingpt.core.config import RunConfig, TrainSpec, from_dict
from domaingpt.core.io import write_jsonl
from domaingpt.core.loggers import Loggers, RunInfo, open_loggers
from domaingpt.core.replicates import replicate_name, split_replicate
from domaingpt.data.tokenizer import AnyVocab, vocab_from_json
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    CheckpointMeta,
    damaged_checkpoints,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from domaingpt.model.generate import generate_text
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import score_windows
from domaingpt.stages.adapt.settings import AdaptSettings, parse_pair
from domaingpt.training.trainer import Trainer, lr_at

CURVE_COLUMNS = [
    "source",
    "target",
    "start",
    "seed",
    "step",
    "target_loss",
    "source_loss",
    "source_iteration",
]
#: The columns of ``curve.jsonl`` that go to the loggers (``adapt.loggers``).
LOGGED_SCALARS = ("target_loss", "source_loss")
#: The per-step scalars of an adaptation run, every ``train.log_interval`` steps (the
#: source model's setting): the step's loss, its learning rate, the gradient norm.
STEP_TAGS = ("train/loss", "train/lr", "train/grad_norm")


def pick_early(history: list[CheckpointInfo], settings: AdaptSettings) -> CheckpointInfo:
    """The early start checkpoint of a model (see :class:`AdaptSettings`)."""
    wanted = settings.early_iteration()
    have = ", ".join(str(c.iteration) for c in history)
    model_dir = history[-1].json_path.parent.parent
    if wanted is not None:
        for info in history:
            if info.iteration == wanted:
                return info
        raise DomainGPTError(
            f"model {model_dir.name} has no checkpoint at iteration {wanted} for --early; "
            f"its history checkpoints are at {have}"
        )
    final = history[-1].iteration
    candidates = [c for c in history if 0 < c.iteration < final]
    if not candidates:
        raise DomainGPTError(
            f"model {model_dir.name} has no history checkpoint between 0 and {final} "
            f"(it has {have}) to adapt from early; pass --early ITER or retrain with "
            "--set train.checkpoints=log"
        )
    goal = settings.early_fraction * final
    return min(candidates, key=lambda c: (abs(c.iteration - goal), c.iteration))


@dataclass(frozen=True)
class Job:
    """One adaptation run: a pair, a start point and a seed."""

    source: str
    target: str
    start: str
    seed: int
    start_info: CheckpointInfo | None  # None for scratch
    shape_info: CheckpointInfo  # the source's final checkpoint: shape, vocab, config

    @property
    def source_iteration(self) -> int | None:
        return None if self.start_info is None else self.start_info.iteration

    @property
    def run_name(self) -> str:
        """How the loggers show the run: ``shakespeare→math final@500 seed0``."""
        at = "" if self.source_iteration is None else f"@{self.source_iteration}"
        return f"{self.source}→{self.target} {self.start}{at} seed{self.seed}"

    def directory(self, root: Path) -> Path:
        return root / f"{self.source}__to__{self.target}" / self.start / f"seed{self.seed}"

    def key(self, settings: AdaptSettings, lr: float, min_lr: float, batch: int) -> dict:
        """What the result depends on: a stored run is reused only if all of it matches."""
        return {
            "source": self.source,
            "target": self.target,
            "start": self.start,
            "seed": self.seed,
            "source_iteration": self.source_iteration,
            "start_sha256": self.start_info.tensor_sha256 if self.start_info else None,
            "shape_sha256": self.shape_info.tensor_sha256,
            "iters": settings.iters,
            "lr": lr,
            "min_lr": min_lr,
            "warmup_iters": min(settings.warmup_iters, settings.iters - 1),
            "batch_size": batch,
            "steps": settings.steps(),
            "eval_windows": settings.eval_windows,
            "final_windows": settings.final_windows,
        }


def plan_jobs(run: RunDir, settings: AdaptSettings, cache: CorpusCache) -> list[Job]:
    """Every (pair, start, seed) to run, checked before any training starts."""
    trained = run.model_names()
    # Pairs name corpora; each replicate's model of the source corpus adapts to the target
    bases = list(dict.fromkeys(split_replicate(n)[0] for n in trained))
    if settings.pairs:
        pairs = [parse_pair(p) for p in settings.pairs]
        run.model_names(list(dict.fromkeys(s for s, _ in pairs)))
    else:
        pairs = [(s, t) for s in bases for t in bases if s != t]
        if not pairs:
            raise DomainGPTError(
                f"adaptation needs two trained models (source and target); {run.models} has "
                f"only {', '.join(trained)}; train another, or pass --pairs "
                f"{trained[0]}:CORPUS"
            )
    replicates = sorted({split_replicate(n)[1] for n in trained})
    sourced = [
        (replicate_name(s, r), t)
        for r in replicates
        for s, t in dict.fromkeys(pairs)
        if replicate_name(s, r) in trained
    ]
    jobs = []
    for source, target_ref in sourced:
        # A trained model's name is its corpus, found from the model's run.json.
        found = cache.model_corpus(target_ref) if target_ref in trained else None
        target = (found or cache.corpus(target_ref)).name
        if target == split_replicate(source)[0]:
            raise DomainGPTError(
                f"pair {source}:{target_ref} adapts a model to its own corpus; "
                "give a different target"
            )
        history = list_checkpoints(run.model(source) / "checkpoints", "iter")
        starts = {"final": history[-1], "scratch": None}
        if "early" in settings.starts:
            starts["early"] = pick_early(history, settings)
        for start in settings.starts:
            for seed in settings.seed_values():
                jobs.append(Job(source, target, start, seed, starts[start], history[-1]))
    return jobs


def training_spec(job: Job, settings: AdaptSettings) -> tuple[RunConfig, TrainSpec]:
    """The source model's config and the adaptation's training spec (the budget, rates
    and seed of ``settings``)."""
    cfg = from_dict({k: v for k, v in run_config_of(job.shape_info).items() if k != "preset"})
    lr = settings.lr or cfg.train.lr
    min_lr = min(settings.min_lr or lr / 10.0, lr)
    batch = settings.batch_size or cfg.train.batch_size
    spec = dataclasses.replace(
        cfg.train,
        max_iters=settings.iters,
        lr=lr,
        min_lr=min_lr,
        warmup_iters=min(settings.warmup_iters, settings.iters - 1),
        lr_decay_iters=0,
        batch_size=batch,
        seed=job.seed,
        eval_interval=0,
        checkpoints=[settings.iters],
        compile="off",
    )
    return cfg, spec


def job_loggers(job: Job, settings: AdaptSettings) -> list[str]:
    """The loggers of a run: ``adapt.loggers``, else the source model's ``train.loggers``."""
    return list(settings.loggers) or list(training_spec(job, settings)[1].loggers)


def stored_result(directory: Path, key: dict) -> dict | None:
    """The meta of a finished run with this key, or None (absent, other settings, damaged)."""
    history = list_checkpoints(directory / "checkpoints", "iter")
    if not history or not (directory / "curve.jsonl").is_file():
        return None
    meta = history[-1].meta.adapt or {}
    if meta.get("key") != key or damaged_checkpoints(directory / "checkpoints", "iter"):
        return None  # a truncated or altered checkpoint (checked by SHA-256): redone
    return meta


def run_job(
    job: Job,
    settings: AdaptSettings,
    target: Split,
    source: Split,
    directory: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Adapt one model and write its directory; returns the checkpoint's ``adapt`` meta."""
    cfg, spec = training_spec(job, settings)
    key = job.key(settings, spec.lr, spec.min_lr, spec.batch_size)
    torch.manual_seed(job.seed)
    model, vocab = _start_model(job, device)
    trainer = Trainer(model, spec, target.train, device)
    directory.mkdir(parents=True, exist_ok=True)  # whole only once its checkpoint is there
    info = RunInfo(
        directory,
        job.run_name,
        "adapt",
        {"adapt": key},
        root=directory.parents[3],  # <run>/adapt/<pair>/<start>/seed<n>: Job.directory
        corpus_sha256=job.shape_info.meta.corpus_sha256 or "",  # the source's
    )
    loggers = open_loggers(job_loggers(job, settings), info)
    t0 = time.perf_counter()  # the run's own time, not the loggers' start-up
    try:
        rows = _train_recording(job, settings, trainer, model, (target, source), loggers)
    finally:
        loggers.close()
    target_full, source_full = _losses(model, settings, target, source, settings.final_windows)
    seconds = time.perf_counter() - t0
    # The curve and the sample first, the checkpoint last: a run with a checkpoint is whole.
    write_jsonl(directory / "curve.jsonl", rows)
    _write_sample(job, settings, model, vocab, target_full, directory)
    result = {
        "key": key,
        "source_model": job.source,
        "source_iteration": job.source_iteration,
        "target_corpus": job.target,
        "start": job.start,
        "seed": job.seed,
        "steps": settings.iters,
        "target_loss": target_full,
        "source_loss": source_full,
        "target_loss_step0": rows[0]["target_loss"],
        "source_loss_step0": rows[0]["source_loss"],
        "forgetting": rows[-1]["source_loss"] - rows[0]["source_loss"],
        "seconds": round(seconds, 2),
    }
    config = cfg.to_dict()
    config["train"] = asdict(spec)
    meta = CheckpointMeta(
        corpus=job.target,  # the corpus the model was last trained on
        source_model=job.source,
        source_iteration=job.source_iteration,
        target_corpus=job.target,
        start=job.start,
        val_loss=target_full,
        tokens_seen=settings.iters * trainer.tokens_per_iter,
        config=config,
        adapt=result,
    )
    save_checkpoint(directory / "checkpoints", "iter", settings.iters, model, vocab, meta)
    return result


def _start_model(job: Job, device: torch.device) -> tuple[GPT, AnyVocab]:
    """The model a job starts from: a history checkpoint, or fresh weights (``scratch``,
    drawn from torch's global generator, which :func:`run_job` seeds)."""
    if job.start_info is None:
        model = GPT(GPTConfig.from_dict(job.shape_info.model_config))
        return model, vocab_from_json(job.shape_info.vocab)
    loaded = load_checkpoint(job.start_info, device)
    return loaded.model, loaded.vocab


def _losses(
    model: GPT, settings: AdaptSettings, target: Split, source: Split, windows: int
) -> tuple[float, float]:
    """Target- and source-corpus validation loss on ``windows`` windows (0: every one)."""
    kw = {"batch_size": settings.eval_batch_size, "max_windows": windows or None}
    return (
        score_windows(model, target.val, **kw).mean_loss,
        score_windows(model, source.val, **kw).mean_loss,
    )


def _train_recording(
    job: Job,
    settings: AdaptSettings,
    trainer: Trainer,
    model: GPT,
    splits: tuple[Split, Split],
    loggers: Loggers,
) -> list[dict[str, Any]]:
    """Train ``settings.iters`` steps; the curve's rows at each step of the schedule (each
    also sent to ``loggers``)."""
    target, source = splits
    rows = []
    steps = settings.steps()
    log_every = trainer.spec.log_interval if loggers.active else 0
    for step in range(settings.iters + 1):
        if step > 0:
            log_now = log_every > 0 and step % log_every == 0
            loss = trainer.step(grad_norm=True) if log_now else trainer.step()
            if log_now:
                values = (float(loss), lr_at(step - 1, trainer.spec), trainer.grad_norm)
                loggers.log(step, dict(zip(STEP_TAGS, values, strict=True)))
            checked = step % 50 == 0 or step == settings.iters
            if checked and not math.isfinite(float(loss)):
                raise DomainGPTError(
                    f"adapting {job.source} to {job.target} ({job.start}, seed {job.seed}) "
                    f"diverged at step {step}; lower --lr"
                )
        if step in steps:
            tl, sl = _losses(model, settings, target, source, settings.eval_windows)
            rows.append(
                {
                    "source": job.source,
                    "target": job.target,
                    "start": job.start,
                    "seed": job.seed,
                    "step": step,
                    "target_loss": tl,
                    "source_loss": sl,
                    "source_iteration": job.source_iteration,
                }
            )
            loggers.log(step, {k: rows[-1][k] for k in LOGGED_SCALARS})
    return rows


def _write_sample(
    job: Job,
    settings: AdaptSettings,
    model: GPT,
    vocab: AnyVocab,
    val_loss: float,
    directory: Path,
) -> None:
    """A fixed-seed sample of the adapted model (``samples.jsonl``)."""
    text = generate_text(
        model, vocab, settings.sample_prompt, settings.sample_chars, seed=settings.sample_seed
    )
    sample = {
        "source": job.source,
        "target": job.target,
        "start": job.start,
        "seed": job.seed,
        "iter": settings.iters,
        "val_loss": val_loss,
        "prompt": settings.sample_prompt,
        "sample_seed": settings.sample_seed,
        "temperature": 1.0,
        "text": text,
    }
    write_jsonl(directory / "samples.jsonl", [sample])
