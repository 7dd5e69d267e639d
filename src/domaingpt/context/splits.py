"""A corpus encoded with a model's vocabulary and split as that model's run split it.

Stages that score models on corpora (zero-shot evaluation, adaptation) encode each
corpus once per vocabulary and validation fraction, whatever the number of models.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from domaingpt.context.rundir import RunDir
from domaingpt.data.corpus import Corpus, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.errors import CorpusError


@dataclass(frozen=True)
class Split:
    """A corpus encoded with one vocabulary and split as one model's run split it."""

    corpus: str
    train: np.ndarray
    val: np.ndarray
    unk_fraction: float  # share of the scored validation ids that are the unknown token
    #: The characters each validation id covers (a subword vocabulary's; None: one each).
    val_lengths: np.ndarray | None = None


class CorpusCache:
    """Corpora resolved once, and their encoded splits per (vocabulary, val_fraction).

    :meth:`corpus` finds a corpus the user names (a built-in name or a path);
    :meth:`model_corpus` the corpus a model of ``run`` was trained on, by itself
    (:meth:`RunDir.corpus <domaingpt.context.rundir.RunDir.corpus>`: a user's file from the
    path its ``run.json`` recorded, its checksum verified). Either is then found under
    its name.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        *,
        download: bool = True,
        run: RunDir | None = None,
        corpora_option: bool = False,
        known: Iterable[Corpus] = (),
    ) -> None:
        self.data_dir = data_dir or None
        self.download = download
        self.run = run
        self.corpora_option = corpora_option  # the command has --corpora (for errors)
        # Corpora resolved already (a study's): found by name, and a model's corpus among them.
        self._corpora: dict[str, Corpus] = {c.name: c for c in known}
        self._models: dict[str, Corpus] = {}
        self._splits: dict[tuple[str, str, float], Split] = {}
        #: Corpus name -> the character its validation splits start at, whatever the
        #: vocabulary (:meth:`share_validation`); absent: each split's own start.
        self.val_from: dict[str, int] = {}

    def corpus(self, ref: str) -> Corpus:
        """A corpus by name or path (or one found before under that name)."""
        if ref in self._corpora:
            return self._corpora[ref]
        corpus = resolve_corpus(ref, self.data_dir, download=self.download)
        if self.run is not None:  # a copy of a model's corpus is that corpus
            corpus = self.run.known_corpus(corpus)
        self._corpora[ref] = corpus
        self._corpora.setdefault(corpus.name, corpus)
        return corpus

    def model_corpus(self, model: str) -> Corpus:
        """The corpus model ``model`` of the run was trained on (see the class doc)."""
        if model not in self._models:
            if self.run is None:
                raise ValueError("CorpusCache.model_corpus needs the run directory")
            corpus = self.run.corpus(
                model,
                data_dir=self.data_dir,
                download=self.download,
                given=list(self._corpora.values()),
                corpora_option=self.corpora_option,
            )
            self._models[model] = corpus
            self._corpora[corpus.name] = corpus
        return self._models[model]

    def split(self, corpus: Corpus, vocab: AnyVocab, val_fraction: float, block_size: int) -> Split:
        """The split a model with this vocabulary and ``val_fraction`` trained on (its
        validation part from :attr:`val_from` on, where that is set)."""
        key = (corpus.name, vocab.fingerprint, float(val_fraction))
        if key not in self._splits:
            encoded = encode_corpus(corpus, vocab)
            train, val = encoded.split(val_fraction)
            lengths = encoded.split_lengths(val_fraction)
            val_lengths = None if lengths is None else lengths[1]
            skip = 0  # the ids before the first that starts at or after ``val_from``
            if corpus.name in self.val_from:
                offsets = encoded.val_offsets(val_fraction)
                skip = int(np.searchsorted(offsets, self.val_from[corpus.name]))
            val = val[skip:]
            val_lengths = None if val_lengths is None else val_lengths[skip:]
            unk = vocab.unk_id
            n_unk = int(np.count_nonzero(np.asarray(val[1:]) == unk)) if unk is not None else 0
            self._splits[key] = Split(
                corpus.name, train, val, n_unk / max(len(val) - 1, 1), val_lengths
            )
        split = self._splits[key]
        need = block_size + 1
        if len(split.train) < need or len(split.val) < need:
            raise CorpusError(
                f"corpus {corpus.name!r} is too short for block_size {block_size} with "
                f"val_fraction {val_fraction} (each split needs at least {need} ids); "
                "use a longer text"
            )
        return split

    def share_validation(
        self, corpora: Iterable[Corpus], readers: Iterable[tuple[AnyVocab, float]]
    ) -> None:
        """Score models of several vocabularies on the same characters: each corpus's
        validation splits start, in every vocabulary, at the first token from the latest
        character where one of ``readers`` (vocabulary, val_fraction) starts its own. With
        one vocabulary nothing changes; a subword model's split (the last fraction of its
        tokens) starts a little later or earlier in the text than a character model's."""
        readers = list({(v.fingerprint, float(f)): (v, f) for v, f in readers}.values())
        if len({v.fingerprint for v, _ in readers}) < 2:
            return
        for corpus in corpora:
            starts = [int(encode_corpus(corpus, v).val_offsets(f)[0]) for v, f in readers]
            self.val_from[corpus.name] = max(starts)
            self._splits = {k: s for k, s in self._splits.items() if k[0] != corpus.name}
