"""Training one model on one corpus, with a checkpoint history and a sample of each.

The hot loop is kept lean: one batched gather per micro-batch, fused AdamW where the
platform has it, losses kept as tensors (no per-step ``.item()``), periodic work
(evaluation, checkpoints) only at scheduled iterations, and the history checkpoints'
samples drawn once training ends, side by side (:mod:`domaingpt.training.samples`).

A model directory holds::

    run.json            config, corpus checksum, vocabulary fingerprint
    metrics.jsonl       iteration, train/val loss, lr, tokens/s, elapsed
    samples.jsonl       a fixed-seed sample of every history checkpoint (drawn when the
                        run ends, several checkpoints side by side: training.samples)
    checkpoints/        iter-*.{safetensors,json} (history) and resume-* (resumable)
    loss.png, loss.svg  the loss curve
    tensorboard/        event files, with train.loggers = ["tensorboard"] (see
                        core.loggers): the scalars below, the samples, loss.png, hparams
    wandb-run-id        with "wandb": the model's W&B run (its files are in <run>/wandb/)

What goes to ``train.loggers`` (tags): every ``train.log_interval`` iterations the
step's own loss ``train/loss``, ``train/lr``, ``train/tokens_per_s`` (over the interval)
and ``train/grad_norm`` (total L2 norm before clipping); at each evaluation
``train/loss_mean`` (the mean since the previous evaluation, metrics.jsonl's
``train_loss``) and ``val/loss_estimate`` (``eval_tokens`` of the validation split), and
at the end ``val/loss_full`` (the whole split) instead: the estimate and the whole-split
loss never share a tag.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from domaingpt.core.config import RunConfig, TrainSpec, log_schedule
from domaingpt.core.distributed import (
    DistContext,
    all_reduce_mean,
    barrier,
    check_batch,
    init_distributed,
)
from domaingpt.core.faults import fault_point
from domaingpt.core.io import append_jsonl, read_jsonl, write_jsonl
from domaingpt.core.loggers import (
    Loggers,
    RunInfo,
    flat_hparams,
    open_loggers,
)
from domaingpt.core.progress import Log, progress_bar
from domaingpt.core.threads import torch_threads
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointMeta,
    damaged_checkpoints,
    list_checkpoints,
    newest_valid,
    save_checkpoint,
)
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import score_windows
from domaingpt.training.memory import check_fits, out_of_memory
from domaingpt.training.modeldir import (
    prepare_model_dir,
    run_record,
)
from domaingpt.training.samples import write_samples
from domaingpt.training.trainer import Trainer, lr_at

#: The per-step scalars of ``train.loggers``, every ``train.log_interval`` iterations.
STEP_TAGS = ("train/loss", "train/lr", "train/tokens_per_s", "train/grad_norm")
#: The tags of an evaluation row of ``metrics.jsonl`` (the last one: ``val/loss_full``).
TRAIN_MEAN_TAG, ESTIMATE_TAG, FULL_TAG = "train/loss_mean", "val/loss_estimate", "val/loss_full"


@dataclass(frozen=True)
class TrainResult:
    model_dir: Path
    iterations: int
    val_loss: float  # on the whole validation split
    train_seconds: float
    tokens_per_second: float
    resumed_from: int | None
    is_main: bool = True  # False on the non-writing ranks of a DDP job


def history_schedule(spec: TrainSpec) -> list[int]:
    points = log_schedule(spec.max_iters) if spec.checkpoints == "log" else list(spec.checkpoints)
    return sorted({p for p in points if p <= spec.max_iters} | {spec.max_iters})


class _Recorder:
    """What a training run writes at scheduled iterations: metrics rows, history
    checkpoints with their samples, and resumable checkpoints (main rank only)."""

    def __init__(
        self,
        model: GPT,
        trainer: Trainer,
        vocab: AnyVocab,
        cfg: RunConfig,
        corpus: tuple[str, str],
        val_ids: np.ndarray,
        model_dir: Path,
        resumed_from: int | None,
    ) -> None:
        self.model, self.trainer, self.vocab, self.cfg = model, trainer, vocab, cfg
        self.spec = cfg.train
        self.corpus_name, self.corpus_sha = corpus
        self.val_ids = val_ids
        self.ckpt_dir = model_dir / "checkpoints"
        self.metrics_path = model_dir / "metrics.jsonl"
        self.samples_path = model_dir / "samples.jsonl"
        self.history = set(history_schedule(self.spec))
        # History checkpoints past the resume point are redone, so their samples match them.
        self.done = {
            c.iteration
            for c in list_checkpoints(self.ckpt_dir, "iter")
            if resumed_from is not None and c.iteration <= resumed_from
        }
        self.eval_windows = max(1, self.spec.eval_tokens // model.config.block_size)
        self.t_start = time.perf_counter()
        self.elapsed_before = _elapsed_before(self.metrics_path)
        self.loggers = Loggers([])  # train.loggers, opened by train() on the main rank

    def evaluate(
        self, it: int, train_loss: float | None, tps: float | None, full: bool = False
    ) -> float:
        """Score the val split (``eval_tokens`` of it, or all of it at the end) and log."""
        windows = None if full else self.eval_windows
        val = score_windows(self.model, self.val_ids, max_windows=windows).mean_loss
        row = {
            "iter": it,
            "train_loss": train_loss,
            "val_loss": val,
            "lr": lr_at(max(it - 1, 0), self.spec),
            "tokens_per_s": tps,
            "elapsed": round(self.elapsed_before + time.perf_counter() - self.t_start, 3),
        }
        if full:
            row["val_loss_full"] = val
        append_jsonl(self.metrics_path, row)
        self.loggers.log(it, {TRAIN_MEAN_TAG: train_loss, FULL_TAG if full else ESTIMATE_TAG: val})
        return val

    def log_step(self, it: int, loss: torch.Tensor, tokens_per_s: float) -> None:
        """The per-step scalars of iteration ``it`` (the main rank's loss under DDP)."""
        norm = self.trainer.grad_norm
        values = (float(loss), lr_at(it - 1, self.spec), tokens_per_s, norm)
        self.loggers.log(it, dict(zip(STEP_TAGS, values, strict=True)))

    def meta(self, it: int, val: float | None) -> CheckpointMeta:
        return CheckpointMeta(
            corpus=self.corpus_name,
            corpus_sha256=self.corpus_sha,
            val_loss=val,
            tokens_seen=it * self.trainer.tokens_per_iter,
            config=self.cfg.to_dict(),
        )

    def history_point(self, it: int, val: float) -> None:
        """A history checkpoint, at the scheduled iterations (its sample is drawn when
        the run ends: :meth:`samples`)."""
        if it not in self.history or it in self.done:
            return
        save_checkpoint(self.ckpt_dir, "iter", it, self.model, self.vocab, self.meta(it, val))

    def samples(self) -> None:
        """The fixed-seed sample of every history checkpoint that has none yet."""
        device = next(self.model.parameters()).device
        rows = write_samples(self.ckpt_dir, self.samples_path, self.vocab, self.spec, device)
        for row in rows:
            self.loggers.text(row["iter"], "samples", row["text"])

    def resume_point(self, it: int, val: float | None) -> None:
        save_checkpoint(
            self.ckpt_dir,
            "resume",
            it,
            self.model,
            self.vocab,
            self.meta(it, val),
            self.trainer.state_tensors(),
        )
        _prune_resume(self.ckpt_dir, keep=2)


@dataclass
class _Throughput:
    """Time and tokens of the training steps (evaluation and checkpoints left out)."""

    seconds: float = 0.0
    tokens: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else float("nan")


def train(
    corpus_name: str,
    corpus_sha: str,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: AnyVocab,
    cfg: RunConfig,
    model_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Log = print,
    corpus_path: str | Path | None = None,
    dist: DistContext | None = None,
) -> TrainResult:
    """Train a model from scratch (or resume it) and write its directory (see module doc).

    ``corpus_path``: the corpus file, recorded in ``run.json`` so that the stages find a
    user's own text again. With ``resume``, a model is continued from its newest valid
    resumable checkpoint; a larger ``train.max_iters`` than it was trained with extends it
    (see :mod:`domaingpt.training.modeldir`, and the README on the learning rate).
    ``dist``: the process context (default: DDP over torchrun's ranks, if launched so; a
    study's job passes its own rank's single-process context). ``train.loggers`` are
    checked by the caller, before it writes anything (see
    :func:`domaingpt.context.training.train_one`).
    """
    spec = cfg.train
    with torch_threads(spec.threads):  # restored when training ends
        ctx = dist or init_distributed(spec.device)
        check_batch(ctx, spec.batch_size)  # before anything is written
        check_fits(cfg, vocab.size, device_type=ctx.device.type)
        main = ctx.is_main  # only the main rank writes; the others compute the same steps
        record = run_record(cfg, corpus_name, corpus_sha, vocab, corpus_path)
        has_work = resume
        if main:
            has_work = prepare_model_dir(model_dir, record, resume=resume, overwrite=overwrite)
        barrier(ctx)

        torch.manual_seed(spec.seed)
        with out_of_memory("creating the model"):
            model = GPT(GPTConfig(vocab_size=vocab.size, **cfg.model.__dict__))
            trainer = Trainer(model, spec, train_ids, ctx.device, ctx)
        resumed_from = None
        if has_work:
            resumed_from = _restore(model, trainer, model_dir, corpus_name, main, log)
        elif spec.max_iters < 1:
            raise DomainGPTError("train.max_iters must be at least 1")
        rec = _Recorder(
            model, trainer, vocab, cfg, (corpus_name, corpus_sha), val_ids, model_dir, resumed_from
        )
        val_loss = full = float("nan")
        if main:
            info = RunInfo(
                model_dir,
                model_dir.name,
                "train",
                cfg.to_dict(),
                resumed_from,
                root=model_dir.parent.parent,  # <run>/models/<name>
                corpus_sha256=corpus_sha,
            )
            rec.loggers = open_loggers(spec.loggers, info)
        try:
            if resumed_from is None and main:  # a fresh start: score and keep the initial model
                val_loss = rec.evaluate(0, None, None)
                rec.history_point(0, val_loss)
                rec.resume_point(0, val_loss)
            speed = _train_steps(rec, ctx, val_loss, progress=progress and main)
            if main:
                full = _final_loss(rec)
                rec.samples()
                _plot_loss(rec.metrics_path, model_dir / "loss.png", corpus_name)
                rec.loggers.image("loss", model_dir / "loss.png")
                final = read_jsonl(rec.metrics_path)[-1]
                rec.loggers.summary(
                    flat_hparams({"model": cfg.model.__dict__, "train": spec.__dict__}),
                    {FULL_TAG: full, TRAIN_MEAN_TAG: final.get("train_loss")},
                )
        finally:
            rec.loggers.close()
        if not main:  # the main rank scores and writes the final results
            barrier(ctx)
            return TrainResult(
                model_dir,
                spec.max_iters,
                float("nan"),
                speed.seconds,
                speed.tokens_per_second,
                resumed_from,
                False,
            )
        barrier(ctx)
        log(
            f"{corpus_name}: {spec.max_iters} iterations, val loss {full:.4f} (whole split), "
            f"{speed.tokens_per_second:,.0f} tokens/s"
        )
        return TrainResult(
            model_dir, spec.max_iters, full, speed.seconds, speed.tokens_per_second, resumed_from
        )


def _restore(
    model: GPT, trainer: Trainer, model_dir: Path, corpus_name: str, main: bool, log: Log
) -> int | None:
    """Load the newest valid resumable checkpoint (None: there is none) and drop the
    metrics and sample rows written after it, which will be written again.

    A damaged history checkpoint (truncated, altered, its record unreadable) is never
    kept as if it were whole: training resumes from before the first damaged one (from
    the start if no resumable checkpoint is that old), so that it is written again.
    """
    resumed_from = None
    ckpt_dir = model_dir / "checkpoints"
    damaged = damaged_checkpoints(ckpt_dir, "iter")
    before = None
    if damaged:
        before, why = min(damaged)
        log(f"warning: {why}: {corpus_name} is retrained from before iteration {before}")
    loaded = newest_valid(ckpt_dir, "resume", warn=log, before=before)
    if loaded is not None:
        model.load_state_dict(loaded.model.state_dict())
        trainer.load_state(loaded.tensors, loaded.iteration)
        resumed_from = loaded.iteration
        log(f"resuming {corpus_name} from iteration {resumed_from}")
    keep_until = -1 if resumed_from is None else resumed_from
    for path in (model_dir / "metrics.jsonl", model_dir / "samples.jsonl"):
        if main and path.exists():
            write_jsonl(path, [r for r in read_jsonl(path) if r["iter"] <= keep_until])
    return resumed_from


def _train_steps(
    rec: _Recorder, ctx: DistContext, val_loss: float, *, progress: bool
) -> _Throughput:
    """Step from the trainer's iteration to ``max_iters``, evaluating and checkpointing
    at the scheduled iterations; returns the time and tokens of the steps."""
    spec, trainer, main = rec.spec, rec.trainer, ctx.is_main
    speed = _Throughput()
    window_loss = torch.zeros((), device=ctx.device)
    window_steps = 0
    window_t0 = time.perf_counter()
    it = trainer.iteration
    eval_every = spec.eval_interval or spec.max_iters
    # Per-step scalars only where a logger takes them (one device sync each).
    log_every = spec.log_interval if main and rec.loggers.active else 0
    log_t0, log_steps = time.perf_counter(), 0
    bar = progress_bar(spec.max_iters, f"train {rec.corpus_name}", enabled=progress, initial=it)
    while it < spec.max_iters:
        log_now = log_every > 0 and (it + 1) % log_every == 0
        loss = trainer.step(grad_norm=True) if log_now else trainer.step()
        window_loss += loss
        fault_point("train.step")
        window_steps += 1
        log_steps += 1
        it = trainer.iteration
        bar.update(1)
        if log_now:
            dt = time.perf_counter() - log_t0
            rec.log_step(it, loss, log_steps * trainer.tokens_per_iter / dt)
            log_t0, log_steps = time.perf_counter(), 0
        at_end = it == spec.max_iters
        is_eval = it % eval_every == 0 or it in rec.history or at_end
        is_resume = it % spec.resume_interval == 0 or it in rec.history or at_end
        if not (is_eval or is_resume):
            continue
        # Never checkpoint weights that a non-finite loss has already ruined.
        train_loss = float(all_reduce_mean(window_loss, ctx)) / window_steps
        if not math.isfinite(train_loss):
            bar.close()
            raise DomainGPTError(
                f"training {rec.corpus_name} diverged: loss is {train_loss} between iterations "
                f"{it - window_steps} and {it}; the last good checkpoint is kept. "
                "Lower train.lr or raise train.warmup_iters"
            )
        if is_eval:
            dt = time.perf_counter() - window_t0
            speed.seconds += dt
            tokens = window_steps * trainer.tokens_per_iter
            speed.tokens += tokens
            if main:
                val_loss = rec.evaluate(it, train_loss, tokens / dt, full=at_end)
                bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                rec.history_point(it, val_loss)
            window_loss.zero_()
            window_steps = 0
            window_t0 = time.perf_counter()
        if is_resume and main:
            rec.resume_point(it, val_loss if window_steps == 0 else None)
        log_t0, log_steps = time.perf_counter(), 0  # tokens/s of training steps only
    bar.close()
    return speed


def _final_loss(rec: _Recorder) -> float:
    """The loss on the whole validation split at the last iteration (scored now when the
    run was resumed after it had already reached ``max_iters``)."""
    final_rows = read_jsonl(rec.metrics_path)
    if "val_loss_full" in final_rows[-1]:
        return final_rows[-1]["val_loss_full"]
    full = score_windows(rec.model, rec.val_ids).mean_loss
    final_rows[-1]["val_loss_full"] = full
    write_jsonl(rec.metrics_path, final_rows)
    rec.loggers.log(final_rows[-1]["iter"], {FULL_TAG: full})
    return full


def _elapsed_before(metrics_path: Path) -> float:
    if not metrics_path.exists():
        return 0.0
    rows = read_jsonl(metrics_path)
    return float(rows[-1]["elapsed"]) if rows else 0.0


def _prune_resume(ckpt_dir: Path, keep: int) -> None:
    """Keep the ``keep`` newest resumable checkpoints; the JSON goes first so a half-pruned
    checkpoint is never mistaken for a valid one."""
    for info in list_checkpoints(ckpt_dir, "resume")[:-keep]:
        info.json_path.unlink(missing_ok=True)
        info.tensor_path.unlink(missing_ok=True)


def _plot_loss(metrics_path: Path, out: Path, title: str) -> None:
    # Imported here: a run needs matplotlib only at its end, so it does not pay the import
    # at its start.
    from domaingpt.training.plots import plot_loss_curves

    plot_loss_curves({title: read_jsonl(metrics_path)}, out)
