"""A run's vocabulary: which one a model is trained with, decided in one place.

Every model trained in a run shares ``vocab.json``, so that every model can be scored on
every corpus (a model trained elsewhere keeps its own). :func:`run_vocabulary` is the one
policy, for the train stage and ``domaingpt train`` alike; they differ only in what they
may do to the run's other models: a study retrains all of them when its vocabulary
changes, ``domaingpt train`` trains one model beside them and so never changes it.
"""

from __future__ import annotations

import hashlib
import json
from contextlib import suppress
from pathlib import Path

from domaingpt.context.rundir import RunDir
from domaingpt.core.io import atomic_write_text, write_json
from domaingpt.core.progress import Log
from domaingpt.data.corpus import REGISTRY, Corpus, cache_dir, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.subword import SubwordVocab
from domaingpt.data.tokenizer import AnyVocab, vocab_from_json
from domaingpt.data.vocab import Vocab
from domaingpt.errors import ConfigError, DomainGPTError


def build_vocab(corpora: list[Corpus]) -> AnyVocab:
    """The vocabulary of ``corpora``: every character of them (read in chunks).

    Cached per machine under the corpora's checksums (which finding a corpus computes
    anyway): the default vocabulary reads all three built-in corpora at the start of
    every new run. A damaged or altered cache entry is rebuilt.
    """
    key = hashlib.sha256(" ".join(sorted(c.sha256 for c in corpora)).encode()).hexdigest()
    path = cache_dir() / "vocab" / f"{key[:32]}.json"
    with suppress(OSError, ValueError, DomainGPTError):
        return Vocab.from_json(json.loads(path.read_text(encoding="utf-8")))
    vocab = Vocab.from_texts(chunk for c in corpora for chunk in c.iter_text())
    with suppress(OSError):  # a read-only cache only costs the next run the rebuild
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, vocab.dumps())
    return vocab


def save_vocab(run: RunDir, vocab: AnyVocab, corpora: list[Corpus]) -> Path:
    """Write the run's ``vocab.json``, with the corpora (name: SHA-256) it was built from."""
    record = vocab.to_json()
    record["corpora"] = {c.name: c.sha256 for c in corpora}
    return write_json(run.vocab_path, record)


def default_vocab_corpora(
    extra: list[Corpus], data_dir: str | Path | None, *, download: bool = True
) -> list[Corpus]:
    """The three built-in corpora plus any user corpora being used: the default study.

    ``download=False`` (``--offline``) finds them locally or fails, never downloads.
    """
    names = {c.name for c in extra}
    builtins = [resolve_corpus(n, data_dir, download=download) for n in REGISTRY if n not in names]
    return builtins + list(extra)


def run_vocabulary(
    run: RunDir,
    corpora: list[Corpus],
    log: Log,
    *,
    retrains_all: bool,
    named: str | None = None,
    tokenizer: SubwordVocab | None = None,
) -> tuple[AnyVocab, list[Corpus] | None]:
    """The vocabulary to train with on ``corpora`` in ``run``, and the corpora to record
    it from in ``vocab.json`` (None: ``vocab.json`` stays as it is). Nothing is written.

    - No ``vocab.json`` yet: the characters of ``corpora``.
    - One that records exactly ``corpora`` (same names, same SHA-256): it.
    - One made from other corpora is kept when it holds every character of the corpora
      that changed (a corpus added with no new characters trains only its own model).
    - Else it lacks characters. With ``retrains_all`` (a study: every model of the run
      is retrained with a new vocabulary) it is rebuilt from ``corpora``; without
      (``domaingpt train``: one model beside the run's others, which keep theirs) it is
      kept, and the characters it lacks are trained as ``<unk>`` (reported when the
      corpus is encoded, :func:`domaingpt.context.training.encode_for_training`).

    ``named``: ``corpora`` were named for the vocabulary (``--vocab NAMES``); then a run
    that already has another vocabulary is an error, never silently ignored.

    A subword vocabulary (:mod:`domaingpt.data.subword`) is never built from corpora: a
    study gets one as ``tokenizer`` (the tokenizer of a model trained elsewhere), and it
    is the run's from then on; every model trained in the run is trained with it. A run whose
    ``vocab.json`` is a subword one keeps it for ``domaingpt train``; a study without a
    ``tokenizer`` goes back to characters (its models are retrained).
    """
    path = run.vocab_path
    if tokenizer is not None:
        for corpus in corpora:  # a tokenizer that changes a corpus character: refused now
            encode_corpus(corpus, tokenizer)  # (checked as it encodes; cached for the stages)
        if path.exists() and _recorded_fingerprint(path) == tokenizer.fingerprint:
            return tokenizer, None
        if path.exists():
            log(f"{path} is not the tokenizer of the study's models: replaced (models retrained)")
        return tokenizer, corpora
    if not path.exists():
        return build_vocab(corpora), corpora
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        vocab = vocab_from_json(data)
        have = data.get("corpora")
    except (OSError, ValueError, AttributeError, DomainGPTError) as e:
        if not retrains_all:
            raise DomainGPTError(f"{path} is unreadable ({e}); delete it to rebuild") from None
        data, vocab, have = None, None, None
    if (
        named is not None
        and vocab is not None
        and build_vocab(corpora).fingerprint != vocab.fingerprint
    ):
        built_from = ", ".join(run.vocab_corpora()) or "other corpora"
        raise ConfigError(
            f"--vocab {named}: the run already has another vocabulary ({path}, "
            f"{vocab.size} ids, built from {built_from}) and every model of a run shares "
            "it; drop --vocab, or use another --out"
        )
    if isinstance(vocab, SubwordVocab):
        if not retrains_all:
            return vocab, None  # domaingpt train: one more model with the run's tokenizer
        log(f"{path} is a subword tokenizer the study no longer names: characters again")
        return build_vocab(corpora), corpora
    want = {c.name: c.sha256 for c in corpora}
    if have == want and vocab is not None:
        return vocab, None
    if not retrains_all:
        return vocab, None  # the run's other models keep it; unknown characters are <unk>
    changed = [c for c in corpora if (have or {}).get(c.name) != c.sha256]
    needed = build_vocab(changed)
    if vocab is not None and set(needed.chars) <= set(vocab.chars):
        names = ", ".join(c.name for c in changed) or "the corpora"
        log(f"{path} already holds every character of {names}: kept")
        return vocab, corpora
    log(
        f"the study's corpora have characters {path} lacks: rebuilding the "
        "vocabulary (models trained with the old one are retrained)"
    )
    return build_vocab(corpora), corpora


def _recorded_fingerprint(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("fingerprint") if isinstance(data, dict) else None


def shared_vocab(run: RunDir, corpora: list[Corpus], log: Log) -> AnyVocab:
    """:func:`run_vocabulary` for a study, saved: the vocabulary of a run whose models
    are all trained with it (a notebook's, a test's)."""
    vocab, record = run_vocabulary(run, corpora, log, retrains_all=True)
    if record is not None:
        save_vocab(run, vocab, record)
    return vocab
