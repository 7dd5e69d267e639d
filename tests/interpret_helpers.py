"""One small model trained on real Shakespeare, shared by test_probe and test_saliency.

Module-scoped fixtures cannot be shared across files, so the run is cached here at module
level: the first test that needs it trains it (a few seconds), the rest reuse it
read-only. One torch thread: on a busy 2-core machine two OpenMP threads make these small
matrix products many times slower (spinning at barriers), never faster. An adapted model (Shakespeare -> Math, 30 steps from the
final checkpoint) is laid out as ``adapt`` writes it, for the zero- vs few-shot table.
:func:`train_quietly` and :func:`one_thread` also serve test_samplequality.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import torch

from domaingpt.core.config import RunConfig, build_config
from domaingpt.core.rundir import RunDir, study_vocab
from domaingpt.data.corpus import Corpus, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab
from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint, save_checkpoint
from domaingpt.training.trainer import Trainer, TrainResult, train

ITERS = 300
CHECKPOINTS = [0, 50, 150, ITERS]
OVERRIDES = [
    f"train.max_iters={ITERS}",
    "train.batch_size=32",
    "train.lr=6e-3",
    "train.min_lr=6e-4",
    "model.n_embd=64",
    "model.n_head=4",
    "train.eval_interval=0",
    "train.eval_tokens=2048",
    "train.sample_chars=10",
    f"train.checkpoints={CHECKPOINTS}",
    "train.threads=1",
]

_CACHE: dict[str, RunDir] = {}


def train_quietly(run: RunDir, corpus: Corpus, vocab: Vocab, cfg: RunConfig) -> TrainResult:
    """Train ``corpus``'s model into ``run`` on its train/val split, with no output."""
    enc = encode_corpus(corpus, vocab)
    tr, va = enc.checked_split(cfg.data.val_fraction, cfg.model.block_size)
    model_dir = run.model(corpus.name)
    return train(
        corpus.name,
        corpus.sha256,
        tr,
        va,
        vocab,
        cfg,
        model_dir,
        progress=False,
        log=lambda m: None,
    )


def trained_run(base: Path, data_dir: Path) -> RunDir:
    """``base/interpret-run`` with models/shakespeare and one adapted model (cached)."""
    if "run" in _CACHE:
        return _CACHE["run"]
    run = RunDir(base / "interpret-run")
    corpora = [resolve_corpus(n, data_dir) for n in ("shakespeare", "math", "wikipedia")]
    vocab = study_vocab(run, corpora)
    cfg = build_config("smoke", OVERRIDES)
    shakespeare, math = corpora[0], corpora[1]
    train_quietly(run, shakespeare, vocab, cfg)
    # A few-shot model as `adapt` lays it out: 30 steps on Math from the final checkpoint.
    start = load_checkpoint(find_checkpoint(run.model("shakespeare")))
    math_train, _ = encode_corpus(math, vocab).split(cfg.data.val_fraction)
    spec = replace(cfg.train, max_iters=30, warmup_iters=0, seed=5)
    trainer = Trainer(start.model, spec, math_train, torch.device("cpu"))
    for _ in range(30):
        trainer.step()
    out = run.adapt / "shakespeare__to__math" / "final" / "seed0" / "checkpoints"
    save_checkpoint(out, "iter", 30, start.model.eval(), vocab, {"corpus": "math"})
    _CACHE["run"] = run
    return run


@contextmanager
def one_thread() -> Iterator[None]:
    """One torch thread inside the block, the previous count restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
