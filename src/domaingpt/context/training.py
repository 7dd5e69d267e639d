"""Training a model of a run: the train stage's job, and ``domaingpt train``'s.

The train stage (:mod:`domaingpt.stages.train`) trains every model of a study;
``domaingpt train`` one model into a run. Both go through the same steps, here: the
run's vocabulary (:func:`~domaingpt.context.vocabulary.run_vocabulary`), the corpus
encoded and split with it (:func:`encode_for_training`, the one place a character
missing from the vocabulary is reported), a :class:`ModelJob` holding everything
checked, and :func:`train_model`. ``domaingpt train`` is :func:`train_one`.

Kept out of the stage's package, which draws figures: ``domaingpt train`` starts
without importing pandas or matplotlib.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domaingpt.context.rundir import RunDir
from domaingpt.context.vocabulary import default_vocab_corpora, run_vocabulary, save_vocab
from domaingpt.core.config import RunConfig
from domaingpt.core.device import oom_hint, pick_device
from domaingpt.core.distributed import DistContext, launched_by_torchrun
from domaingpt.core.loggers import require_loggers
from domaingpt.core.progress import Log
from domaingpt.data.corpus import Corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.training.loop import TrainResult, train
from domaingpt.training.memory import check_fits
from domaingpt.training.modeldir import Plan, check_model_dir, run_record


@dataclass(frozen=True)
class ModelJob:
    """One model to train, everything checked: what a rank needs to train it."""

    corpus: Corpus
    split: tuple[np.ndarray, np.ndarray]
    vocab: AnyVocab
    config: RunConfig
    model_dir: Path
    resume: bool  # continue the model there (its run.json says it is this one)
    overwrite: bool  # replace the model there
    progress: bool
    what: str  # what is done, for the log: "training, 2000 iterations"
    prefix: str = ""  # the log line's head: "model 2/3 (math)"


def encode_for_training(
    run: RunDir, corpus: Corpus, vocab: AnyVocab, config: RunConfig, log: Log
) -> tuple[np.ndarray, np.ndarray]:
    """``corpus`` encoded with the run's vocabulary and split (a corpus too short for
    the model's context is refused); characters the vocabulary lacks are trained as
    ``<unk>``, and said so in one log line."""
    encoded = encode_corpus(corpus, vocab)
    if encoded.n_unk:
        log(
            f"warning: {encoded.n_unk} characters of {corpus.name} are not in the run's "
            f"vocabulary ({run.vocab_path}) and are trained as <unk>"
        )
    return encoded.checked_split(config.data.val_fraction, config.model.block_size)


def train_model(job: ModelJob, log: Log, dist: DistContext | None = None) -> TrainResult:
    """Train (or continue) one model; ``dist``: the process context (default: DDP over
    torchrun's ranks, if launched so)."""
    if job.what:
        log(f"{job.prefix}: {job.what}" if job.prefix else job.what)
    with oom_hint("train.batch_size", job.config.train.batch_size):
        return train(
            job.corpus.name,
            job.corpus.sha256,
            *job.split,
            job.vocab,
            job.config,
            job.model_dir,
            resume=job.resume,
            overwrite=job.overwrite,
            progress=job.progress,
            log=log,
            corpus_path=job.corpus.path,
            dist=dist,
        )


_PLANNED = {Plan.FRESH: "training", Plan.RESUME: "continuing", Plan.REPLACE: "retraining"}


def train_one(
    run: RunDir,
    corpus: Corpus,
    config: RunConfig,
    *,
    vocab_corpora: list[Corpus] | None = None,
    vocab_names: str | None = None,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    log: Log,
    data_dir: str | Path | None = None,
    download: bool = True,
) -> TrainResult:
    """Train one model of ``run`` on ``corpus`` (``domaingpt train``): nothing is written
    until every input has been checked (the loggers, the memory a step needs, the
    vocabulary, the split, the model directory).

    The run's vocabulary is the one the train stage would use; a run without one gets
    the vocabulary of ``vocab_corpora`` (``--vocab``, named ``vocab_names``), else of
    the default study's corpora and ``corpus``. A model there is continued only with
    ``resume`` and replaced only with ``overwrite``.
    """
    require_loggers(config.train.loggers)
    check_fits(config, device_type=pick_device(config.train.device).type)
    if vocab_corpora:
        corpora = vocab_corpora
    elif run.vocab_path.exists():
        corpora = [corpus]  # the run's vocabulary, whichever corpora made it
    else:
        corpora = default_vocab_corpora([corpus], data_dir, download=download)
    vocab, record_from = run_vocabulary(
        run, corpora, log, retrains_all=False, named=vocab_names if vocab_corpora else None
    )
    split = encode_for_training(run, corpus, vocab, config, log)
    model_dir = run.model(corpus.name)
    what = ""
    # Under torchrun only rank 0 checks the model directory, writes and says what it
    # does; train() has the other ranks wait for it.
    if not launched_by_torchrun() or os.environ.get("RANK", "0") == "0":
        record = run_record(config, corpus.name, corpus.sha256, vocab, corpus.path)
        plan = check_model_dir(model_dir, record, resume=resume, overwrite=overwrite)
        if record_from is not None:  # the run's first model: its vocabulary, saved now
            save_vocab(run, vocab, record_from)
        what = f"model {corpus.name}: {_PLANNED[plan]}, {config.train.max_iters} iterations"
    job = ModelJob(corpus, split, vocab, config, model_dir, resume, overwrite, progress, what)
    return train_model(job, log)
