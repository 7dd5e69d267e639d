"""Training one model on one corpus, with a checkpoint history and samples along the way.

The hot loop is kept lean: one batched gather per micro-batch, fused AdamW where the
platform has it, losses kept as tensors (no per-step ``.item()``), and periodic work
(evaluation, checkpoints, samples) only at scheduled iterations.

A model directory holds::

    run.json            config, corpus checksum, vocabulary fingerprint
    metrics.jsonl       iteration, train/val loss, lr, tokens/s, elapsed
    samples.jsonl       a fixed-seed sample at every history checkpoint
    checkpoints/        iter-*.{safetensors,json} (history) and resume-* (resumable)
    loss.png            the loss curve
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from domaingpt import __version__
from domaingpt.core.config import RUNTIME_TRAIN_KEYS, RunConfig, TrainSpec, log_schedule
from domaingpt.core.device import set_threads
from domaingpt.core.distributed import (
    all_reduce_mean,
    barrier,
    check_batch,
    init_distributed,
)
from domaingpt.core.faults import fault_point
from domaingpt.core.io import append_jsonl, read_jsonl, write_json, write_jsonl
from domaingpt.core.progress import Log, progress_bar
from domaingpt.data.corpus import check_model_name
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    list_checkpoints,
    newest_valid,
    save_checkpoint,
)
from domaingpt.model.generate import generate_text
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import score_windows
from domaingpt.training.memory import check_fits, out_of_memory
from domaingpt.training.plots import plot_loss_curves
from domaingpt.training.trainer import Trainer, lr_at


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


def run_record(cfg: RunConfig, corpus_name: str, corpus_sha: str, vocab: Vocab) -> dict:
    return {
        "corpus": corpus_name,
        "corpus_sha256": corpus_sha,
        "vocab_fingerprint": vocab.fingerprint,
        "config": cfg.to_dict(),
        "domaingpt_version": __version__,
        "torch_version": torch.__version__,
    }


def config_differences(old: dict, new: dict) -> list[str]:
    diffs = []
    for key in ("corpus", "corpus_sha256", "vocab_fingerprint"):
        if old.get(key) != new.get(key):
            diffs.append(key)
    for section, values in new["config"].items():
        if not isinstance(values, dict):
            continue
        before = old.get("config", {}).get(section, {})
        for k, v in values.items():
            if k not in RUNTIME_TRAIN_KEYS and before.get(k) != v:
                diffs.append(f"{section}.{k} ({before.get(k)!r} -> {v!r})")
    return diffs


def prepare_model_dir(model_dir: Path, record: dict, *, resume: bool, overwrite: bool) -> bool:
    """Claim ``model_dir`` for this run; True when there is earlier work to resume.

    An existing directory with another configuration is never silently reused.
    """
    check_model_name(model_dir.name, f"model directory {model_dir}")
    if model_dir.is_symlink():
        raise DomainGPTError(f"{model_dir} is a symbolic link; domaingpt never writes through one")
    run_json = model_dir / "run.json"
    if overwrite and model_dir.exists():
        import shutil

        shutil.rmtree(model_dir)
    if run_json.exists():
        try:
            old = json.loads(run_json.read_text())
        except (OSError, json.JSONDecodeError):
            raise DomainGPTError(
                f"{run_json} is unreadable; remove {model_dir} or pass --overwrite"
            ) from None
        diffs = config_differences(old, record)
        if diffs:
            raise DomainGPTError(
                f"{model_dir} already holds a different run (differs in: {', '.join(diffs)}); "
                "use another --out or pass --overwrite to replace it"
            )
        if not resume:
            raise DomainGPTError(
                f"{model_dir} already holds this run; pass --resume to continue it "
                "or --overwrite to start again"
            )
        return True
    if model_dir.exists() and any(model_dir.iterdir()):
        raise DomainGPTError(
            f"{model_dir} exists and is not a domaingpt model directory; use another --out"
        )
    model_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_json, record)
    return False


def train(
    corpus_name: str,
    corpus_sha: str,
    train_ids: np.ndarray,
    val_ids: np.ndarray,
    vocab: Vocab,
    cfg: RunConfig,
    model_dir: Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Log = print,
) -> TrainResult:
    """Train a model from scratch (or resume it) and write its directory (see module doc)."""
    spec = cfg.train
    set_threads(spec.threads)
    ctx = init_distributed(spec.device)
    device = ctx.device
    check_batch(ctx, spec.batch_size)  # before anything is written
    check_fits(cfg, vocab.size, device_type=device.type)
    main = ctx.is_main  # only the main rank writes; the others compute the same steps
    record = run_record(cfg, corpus_name, corpus_sha, vocab)
    has_work = resume
    if main:
        has_work = prepare_model_dir(model_dir, record, resume=resume, overwrite=overwrite)
    barrier(ctx)
    ckpt_dir = model_dir / "checkpoints"
    metrics_path, samples_path = model_dir / "metrics.jsonl", model_dir / "samples.jsonl"

    torch.manual_seed(spec.seed)
    gpt_config = GPTConfig(vocab_size=vocab.size, **cfg.model.__dict__)
    with out_of_memory("creating the model"):
        model = GPT(gpt_config)
        trainer = Trainer(model, spec, train_ids, device, ctx)

    resumed_from = None
    if has_work:
        loaded = newest_valid(ckpt_dir, "resume", warn=log)
        if loaded is not None:
            model.load_state_dict(loaded.model.state_dict())
            trainer.load_state(loaded.tensors, loaded.iteration)
            resumed_from = loaded.iteration
            log(f"resuming {corpus_name} from iteration {resumed_from}")
        # Rows written after the resume point would be written again: drop them.
        keep_until = -1 if resumed_from is None else resumed_from
        for path in (metrics_path, samples_path):
            if main and path.exists():
                write_jsonl(path, [r for r in read_jsonl(path) if r["iter"] <= keep_until])
    elif spec.max_iters < 1:
        raise DomainGPTError("train.max_iters must be at least 1")

    history = set(history_schedule(spec))
    # History checkpoints past the resume point are redone, so their samples match them.
    done = {
        c.iteration
        for c in list_checkpoints(ckpt_dir, "iter")
        if resumed_from is not None and c.iteration <= resumed_from
    }
    eval_windows = max(1, spec.eval_tokens // gpt_config.block_size)
    t_start = time.perf_counter()
    elapsed_before = _elapsed_before(metrics_path)
    window_loss = torch.zeros((), device=device)
    window_steps = 0
    window_t0 = time.perf_counter()
    train_seconds = 0.0
    tokens_trained = 0
    val_loss = float("nan")

    def evaluate_now(
        it: int, train_loss: float | None, tps: float | None, full: bool = False
    ) -> float:
        """Score the val split (``eval_tokens`` of it, or all of it at the end) and log."""
        val = score_windows(model, val_ids, max_windows=None if full else eval_windows).mean_loss
        row = {
            "iter": it,
            "train_loss": train_loss,
            "val_loss": val,
            "lr": lr_at(max(it - 1, 0), spec),
            "tokens_per_s": tps,
            "elapsed": round(elapsed_before + time.perf_counter() - t_start, 3),
        }
        if full:
            row["val_loss_full"] = val
        append_jsonl(metrics_path, row)
        return val

    def meta(it: int, val: float | None) -> dict[str, Any]:
        return {
            "corpus": corpus_name,
            "corpus_sha256": corpus_sha,
            "val_loss": val,
            "tokens_seen": it * trainer.tokens_per_iter,
            "config": cfg.to_dict(),
        }

    def history_now(it: int, val: float) -> None:
        if it in history and it not in done:
            save_checkpoint(ckpt_dir, "iter", it, model, vocab, meta(it, val))
            text = generate_text(
                model, vocab, spec.sample_prompt, spec.sample_chars, seed=spec.sample_seed
            )
            append_jsonl(
                samples_path,
                {
                    "iter": it,
                    "val_loss": val,
                    "prompt": spec.sample_prompt,
                    "seed": spec.sample_seed,
                    "temperature": 1.0,
                    "text": text,
                },
            )
            model.train()

    def resume_point_now(it: int, val: float | None) -> None:
        save_checkpoint(
            ckpt_dir, "resume", it, model, vocab, meta(it, val), trainer.state_tensors()
        )
        _prune_resume(ckpt_dir, keep=2)

    it = trainer.iteration
    if resumed_from is None and main:  # a fresh start: score and keep the initial model
        val_loss = evaluate_now(0, None, None)
        history_now(0, val_loss)
        resume_point_now(0, val_loss)
    eval_every = spec.eval_interval or spec.max_iters
    bar = progress_bar(
        spec.max_iters, f"train {corpus_name}", enabled=progress and main, initial=it
    )
    while it < spec.max_iters:
        window_loss += trainer.step()
        fault_point("train.step")
        window_steps += 1
        it = trainer.iteration
        bar.update(1)
        at_end = it == spec.max_iters
        is_eval = it % eval_every == 0 or it in history or at_end
        is_resume = it % spec.resume_interval == 0 or it in history or at_end
        if not (is_eval or is_resume):
            continue
        # Never checkpoint weights that a non-finite loss has already ruined.
        train_loss = float(all_reduce_mean(window_loss, ctx)) / window_steps
        if not math.isfinite(train_loss):
            bar.close()
            raise DomainGPTError(
                f"training {corpus_name} diverged: loss is {train_loss} between iterations "
                f"{it - window_steps} and {it}; the last good checkpoint is kept. "
                "Lower train.lr or raise train.warmup_iters"
            )
        if is_eval:
            dt = time.perf_counter() - window_t0
            train_seconds += dt
            tokens = window_steps * trainer.tokens_per_iter
            tokens_trained += tokens
            if main:
                val_loss = evaluate_now(it, train_loss, tokens / dt, full=at_end)
                bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
                history_now(it, val_loss)
            window_loss.zero_()
            window_steps = 0
            window_t0 = time.perf_counter()
        if is_resume and main:
            resume_point_now(it, val_loss if window_steps == 0 else None)
    bar.close()
    tps = tokens_trained / train_seconds if train_seconds else float("nan")
    if not main:  # the main rank scores and writes the final results
        barrier(ctx)
        return TrainResult(
            model_dir, spec.max_iters, float("nan"), train_seconds, tps, resumed_from, False
        )

    final_rows = read_jsonl(metrics_path)
    if "val_loss_full" in final_rows[-1]:
        full = final_rows[-1]["val_loss_full"]
    else:  # resumed from a run that had already reached max_iters
        full = score_windows(model, val_ids).mean_loss
        final_rows[-1]["val_loss_full"] = full
        write_jsonl(metrics_path, final_rows)
    _plot_loss(metrics_path, model_dir / "loss.png", corpus_name)
    barrier(ctx)
    log(
        f"{corpus_name}: {spec.max_iters} iterations, val loss {full:.4f} (whole split), "
        f"{tps:,.0f} tokens/s"
    )
    return TrainResult(model_dir, spec.max_iters, full, train_seconds, tps, resumed_from)


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
    plot_loss_curves({title: read_jsonl(metrics_path)}, out)


def final_checkpoint(model_dir: Path) -> CheckpointInfo | None:
    history = list_checkpoints(model_dir / "checkpoints", "iter")
    return history[-1] if history else None


def model_outputs(model_dir: Path) -> list[Path]:
    """The files that define a trained model for the stages after training."""
    files = [model_dir / n for n in ("run.json", "metrics.jsonl", "samples.jsonl", "loss.png")]
    files += [c.json_path for c in list_checkpoints(model_dir / "checkpoints", "iter")]
    return [f for f in files if f.is_file()]


def model_state(model_dir: Path, record: dict, max_iters: int) -> str:
    """``absent``, ``different`` (another config), ``partial`` or ``finished``."""
    run_json = model_dir / "run.json"
    if not run_json.exists():
        return "absent" if not model_dir.exists() or not any(model_dir.iterdir()) else "different"
    try:
        old = json.loads(run_json.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "different"
    if config_differences(old, record):
        return "different"
    last = final_checkpoint(model_dir)
    metrics = model_dir / "metrics.jsonl"
    if last is None or last.iteration != max_iters or not metrics.exists():
        return "partial"
    rows = read_jsonl(metrics)
    if not rows or "val_loss_full" not in rows[-1] or not (model_dir / "loss.png").exists():
        return "partial"
    return "finished"
