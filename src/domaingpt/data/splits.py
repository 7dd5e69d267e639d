"""A corpus encoded with a model's vocabulary and split as that model's run split it.

Stages that score models on corpora (zero-shot evaluation, adaptation) encode each
corpus once per vocabulary and validation fraction, whatever the number of models.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domaingpt.data.corpus import REGISTRY, Corpus, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import UNK_ID, Vocab
from domaingpt.errors import CorpusError, DomainGPTError


@dataclass(frozen=True)
class Split:
    """A corpus encoded with one vocabulary and split as one model's run split it."""

    corpus: str
    train: np.ndarray
    val: np.ndarray
    unk_fraction: float  # share of the scored validation characters that are <unk>


class CorpusCache:
    """Corpora resolved once, and their encoded splits per (vocabulary, val_fraction).

    Corpora given by path are also found under their name (the file stem), which is how
    a model trained on a user file is matched to its corpus.
    """

    def __init__(self, data_dir: str | Path | None = None, *, download: bool = True) -> None:
        self.data_dir = data_dir or None
        self.download = download
        self._corpora: dict[str, Corpus] = {}
        self._splits: dict[tuple[str, str, float], Split] = {}

    def corpus(self, ref: str, *, model_name: str | None = None) -> Corpus:
        if ref in self._corpora:
            return self._corpora[ref]
        try:
            corpus = resolve_corpus(ref, self.data_dir, download=self.download)
        except CorpusError as e:
            if model_name is None or ref in REGISTRY:
                raise
            raise DomainGPTError(
                f"cannot find the corpus of model {model_name!r} ({e}); "
                "pass its text file with --corpora PATH"
            ) from None
        self._corpora[ref] = corpus
        self._corpora.setdefault(corpus.name, corpus)
        return corpus

    def split(self, corpus: Corpus, vocab: Vocab, val_fraction: float, block_size: int) -> Split:
        """The split a model with this vocabulary and ``val_fraction`` trained on."""
        key = (corpus.name, vocab.fingerprint, float(val_fraction))
        if key not in self._splits:
            encoded = encode_corpus(corpus, vocab)
            train, val = encoded.split(val_fraction)
            n_unk = int(np.count_nonzero(np.asarray(val[1:]) == UNK_ID))
            self._splits[key] = Split(corpus.name, train, val, n_unk / max(len(val) - 1, 1))
        split = self._splits[key]
        need = block_size + 1
        if len(split.train) < need or len(split.val) < need:
            raise CorpusError(
                f"corpus {corpus.name!r} is too short for block_size {block_size} with "
                f"val_fraction {val_fraction} (each split needs at least {need} characters); "
                "use a longer text"
            )
        return split
