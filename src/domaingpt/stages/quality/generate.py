"""Sampling, with ``samples.jsonl`` as a cache: a text whose checkpoint file (SHA-256),
seed and generation settings are unchanged is never generated again, and a run stopped
half-way keeps every sample it finished.

The samples of one checkpoint are drawn as one batch (:func:`generate_batch`): one
forward pass per character for all its seeds, each sample drawn with its own
``torch.Generator`` seeded with its seed, so a text depends on its own seed only, not on
which other seeds share its batch (the cache may hold some of them already). Each
sample consumes its generator exactly as :func:`domaingpt.model.generate.generate_text`
does, so a text is that of ``domaingpt sample --seed S`` unless the batched forward pass
rounds a logit differently from a single row's and that flips a draw (a change of
method the batching brings: rare, see the tests)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path
from typing import Any

import torch

from domaingpt.core.device import full_precision, pick_device
from domaingpt.core.distributed import Ranks, map_ranks
from domaingpt.core.io import append_jsonl, read_jsonl
from domaingpt.core.processes import auto_processes
from domaingpt.core.progress import Log, progress_bar
from domaingpt.core.threads import torch_threads
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, load_checkpoint
from domaingpt.model.generate import check_sampling, encode_prompt, sample_threads
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.stages.quality.settings import QualitySettings
from domaingpt.stages.quality.targets import Target
from domaingpt.training.memory import parameter_count

Samples = dict[tuple, dict[str, Any]]


def request(settings: QualitySettings) -> dict[str, Any]:
    """What a text depends on besides the weights and the seed (the device too: another
    device computes other floating-point numbers, and may sample another text)."""
    return {
        "prompt": settings.prompt,
        "chars": settings.chars,
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "device": pick_device(settings.device).type,
    }


def sample_key(row: dict[str, Any]) -> tuple:
    """The cache key of a sample row (see :func:`request`)."""
    return (
        row["tensor_sha256"],
        row["seed"],
        row["prompt"],
        row["chars"],
        row["temperature"],
        row["top_k"],
        row["device"],
    )


def target_key(base: dict[str, Any], t: Target, seed: int) -> tuple:
    """The cache key of ``t``'s sample with ``seed`` under the request ``base``."""
    return sample_key({**base, "tensor_sha256": t.info.tensor_sha256, "seed": seed})


def _read_cache(cache_path: Path, log: Log) -> Samples:
    cache: Samples = {}
    if cache_path.exists():
        try:
            for row in read_jsonl(cache_path):
                cache[sample_key(row)] = row
        except (DomainGPTError, KeyError):
            log(f"{cache_path} is damaged: generating every sample again")
            cache = {}
    return cache


@dataclass(frozen=True)
class _Checkpoint:
    """One checkpoint's samples to generate (a job of :func:`map_ranks`)."""

    target: Target
    seeds: tuple[int, ...]
    settings: QualitySettings
    device: torch.device
    base: dict[str, Any]


def generate_batch(
    model: GPT,
    vocab: AnyVocab,
    prompt: str,
    n_chars: int,
    seeds: list[int] | tuple[int, ...],
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
) -> list[str]:
    """``n_chars`` new characters after ``prompt`` for each of ``seeds``, as one batch.

    One forward pass per character serves every seed (the model's cost per character
    hardly grows with the batch on a CPU); each row is drawn with its own generator
    seeded with its seed, as :func:`~domaingpt.model.generate.generate_text` draws it, in
    float32 and, on a CPU, single-threaded (:func:`~domaingpt.model.generate.sample_threads`).
    """
    for seed in seeds:
        check_sampling(n_chars, temperature, top_k, seed)
    if not seeds:
        return []
    ids = encode_prompt(vocab, prompt, warn=False)
    device = next(model.parameters()).device
    block = model.config.block_size
    generators = [torch.Generator(device=device).manual_seed(seed) for seed in seeds]
    context = torch.tensor([ids] * len(seeds), dtype=torch.long, device=device)[:, -block:]
    out = torch.empty((len(seeds), n_chars), dtype=torch.long)
    was_training = model.training
    model.eval()
    try:
        with (
            torch.inference_mode(),
            full_precision(device),
            torch_threads(sample_threads(device)),
        ):
            steps = model.generate_ids(
                context, n_chars, temperature=temperature, top_k=top_k, generator=generators
            )
            for j, nxt in enumerate(steps):
                out[:, j] = nxt[:, 0].cpu()
    finally:
        model.train(was_training)
    return [vocab.decode(row.tolist()) for row in out]


def _generate(job: _Checkpoint) -> list[dict[str, Any]]:
    """The sample rows of one checkpoint, one per seed, drawn as one batch (the seconds
    of a row: the batch's, shared equally)."""
    settings, info = job.settings, job.target.info
    loaded = load_checkpoint(info, job.device)
    t0 = time.perf_counter()
    texts = generate_batch(
        loaded.model,
        loaded.vocab,
        settings.prompt,
        settings.chars,
        job.seeds,
        temperature=settings.temperature,
        top_k=settings.top_k or None,
    )
    seconds = (time.perf_counter() - t0) / max(len(job.seeds), 1)
    return [
        {
            **job.base,
            "tensor_sha256": info.tensor_sha256,
            "seed": seed,
            "checkpoint": str(info.json_path),
            "seconds": round(seconds, 4),
            "text": text,
        }
        for seed, text in zip(job.seeds, texts, strict=True)
    ]


def generation_flops(info: CheckpointInfo, chars: int) -> float:
    """Floating-point operations of sampling ``chars`` ids from a checkpoint, about: two
    per parameter per id, each id's forward pass over a full context."""
    cfg = GPTConfig.from_dict(info.model_config or {}, str(info.json_path))
    return 2.0 * parameter_count(cfg, cfg.vocab_size) * cfg.block_size * chars


def generate_all(
    targets: list[Target],
    settings: QualitySettings,
    cache_path: Path,
    *,
    progress: bool,
    log: Log,
    ranks: Ranks | None = None,
) -> tuple[Samples, dict[str, float]]:
    """Every (checkpoint, seed) text, from the cache or generated (and appended to it),
    and how many were generated, reused, and the seconds generation took. Under torchrun
    the checkpoints are sampled side by side over the ranks; rank 0 appends every row."""
    device = pick_device(settings.device)
    cache = _read_cache(cache_path, log)
    base = request(settings)
    keys = [(t, seed, target_key(base, t, seed)) for t in targets for seed in t.seeds]
    todo = [(t, seed, key) for t, seed, key in keys if key not in cache]
    stats = {"generated": float(len(todo)), "cached": 0.0, "seconds": 0.0}
    stats["cached"] = float(len(keys) - len(todo))
    if not todo:
        log(f"all {int(stats['cached'])} samples reused from {cache_path.name}")
        return cache, stats
    # One job per checkpoint (loaded once), its seeds in order.
    jobs = [
        _Checkpoint(t, tuple(seed for _, seed, _ in group), settings, device, base)
        for t, group in groupby(todo, key=lambda x: x[0])
    ]
    bar = progress_bar(len(todo), "samples", enabled=progress, unit="sample")

    def keep(i: int, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            append_jsonl(cache_path, row)  # a stop here keeps every finished sample
            cache[sample_key(row)] = row
            stats["seconds"] += row["seconds"]
            bar.update(1)

    # Side by side in worker processes of one thread each, where it pays: a text is
    # sampled on one thread either way (the same text), so only its speed changes.
    work = sum(len(j.seeds) * generation_flops(j.target.info, settings.chars) for j in jobs)
    processes = auto_processes(settings.processes, len(jobs), device, work)
    if settings.threads != 1 and settings.processes == 0:
        processes = 1  # more threads per text: they stay in this process, as asked
    with torch_threads(settings.threads):
        threads = torch.get_num_threads()
        map_ranks(
            _generate,
            jobs,
            ranks=ranks,
            log=log,
            each=keep,
            processes=processes,
            what="checkpoints sampled",
        )
    bar.close()
    rate = stats["generated"] * settings.chars / stats["seconds"] if stats["seconds"] else 0.0
    log(
        f"generated {int(stats['generated'])} samples in {stats['seconds']:.1f} s "
        f"({rate:,.0f} characters/s, {device.type}, {threads} thread(s)); "
        f"{int(stats['cached'])} reused from {cache_path.name}"
    )
    return cache, stats
