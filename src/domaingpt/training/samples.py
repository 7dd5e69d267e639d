"""The fixed-seed sample of every history checkpoint (``samples.jsonl``), written when a
training run ends rather than while it trains.

A sample is drawn single-threaded on a CPU (:func:`domaingpt.model.generate.sample_threads`:
so that its text does not depend on the machine's core count), which leaves the other
cores idle while it is drawn. Drawn at the end, the samples of several checkpoints run
side by side, one checkpoint per core (:func:`domaingpt.core.threads.map_workers`),
each from its checkpoint file with its own generator: the same weights, seed and
single-threaded arithmetic as a sample drawn during training, so the same text.

Each checkpoint has one sample, so there is nothing to batch within a checkpoint (the
quality stage batches its many seeds per checkpoint); batching rows of *different*
checkpoints would need their weights stacked, and a batched forward pass rounds
differently from a single row's (it could flip a draw).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from domaingpt.core.config import TrainSpec
from domaingpt.core.io import read_jsonl, write_jsonl
from domaingpt.core.threads import map_workers
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.model.checkpoint import CheckpointInfo, list_checkpoints, load_checkpoint
from domaingpt.model.generate import generate_text


def missing_samples(ckpt_dir: Path, samples_path: Path) -> list[CheckpointInfo]:
    """The history checkpoints that have no row in ``samples.jsonl`` yet."""
    have = {r["iter"] for r in read_jsonl(samples_path)} if samples_path.exists() else set()
    return [c for c in list_checkpoints(ckpt_dir, "iter") if c.iteration not in have]


def sample_row(
    info: CheckpointInfo, vocab: AnyVocab, spec: TrainSpec, device: torch.device
) -> dict:
    """The ``samples.jsonl`` row of one history checkpoint, drawn from its file."""
    model = load_checkpoint(info, device).model
    text = generate_text(model, vocab, spec.sample_prompt, spec.sample_chars, seed=spec.sample_seed)
    return {
        "iter": info.iteration,
        "val_loss": info.meta.val_loss,
        "prompt": spec.sample_prompt,
        "seed": spec.sample_seed,
        "temperature": 1.0,
        "text": text,
    }


def write_samples(
    ckpt_dir: Path, samples_path: Path, vocab: AnyVocab, spec: TrainSpec, device: torch.device
) -> list[dict[str, Any]]:
    """Draw the sample of every history checkpoint that lacks one and rewrite
    ``samples.jsonl`` in iteration order; returns the new rows.

    On a CPU one checkpoint per torch thread at a time (each single-threaded), elsewhere
    one after the other on ``device``.
    """
    todo = missing_samples(ckpt_dir, samples_path)
    if not todo:
        return []
    workers = torch.get_num_threads() if device.type == "cpu" else 1
    new = map_workers(lambda info: sample_row(info, vocab, spec, device), todo, workers)
    old = read_jsonl(samples_path) if samples_path.exists() else []
    write_jsonl(samples_path, sorted([*old, *new], key=lambda r: r["iter"]))
    return new
