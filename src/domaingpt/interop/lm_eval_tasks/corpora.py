"""The documents and metric of domaingpt's lm-eval tasks (loaded by lm-eval from the
task files beside this module: ``!function corpora.NAME``).

A task's one document is a corpus's validation split without its first character: lm-eval
predicts a document's first token from the model's prefix token, and domaingpt predicts
the split's second character from its first, so with ``prefix_token_id`` = that first
character's id the two score exactly the same characters with exactly the same contexts
(lm-eval's rolling windows with ``context_len=1`` are disjoint blocks of
``max_length`` = ``block_size`` tokens, as domaingpt's evaluation windows are). With
another prefix only the first character's context differs.

Settings (``--metadata '{"val_fraction": 0.1, ...}'``): ``val_fraction`` (0.1, the
training default), ``data_dir`` (default ``$DOMAINGPT_DATA``, then the cache),
``max_chars`` (0: the whole split; else its first ``max_chars`` characters).
"""

from __future__ import annotations

import math
from typing import Any

from domaingpt.data.corpus import resolve_corpus


def split_text(
    corpus: str, val_fraction: float = 0.1, data_dir: str | None = None, max_chars: int = 0
) -> str:
    """The validation split's characters, as ``EncodedCorpus.split`` cuts the ids (one
    id per character)."""
    text = resolve_corpus(corpus, data_dir or None, download=False).read_text()
    val = text[int(len(text) * (1.0 - float(val_fraction))) :]
    return val[: int(max_chars) + 1] if max_chars else val


def validation_split(
    corpus: str,
    val_fraction: float = 0.1,
    data_dir: str | None = None,
    max_chars: int = 0,
    **_: Any,
) -> Any:
    """The task's dataset: one document, the split less its first character (``first``)."""
    import datasets

    val = split_text(corpus, val_fraction, data_dir, max_chars)
    doc = {"corpus": corpus, "first": val[0], "text": val[1:]}
    return datasets.DatasetDict({"validation": datasets.Dataset.from_list([doc])})


def process_results(doc: dict[str, Any], results: list[float]) -> dict[str, Any]:
    """Summed log-likelihood and the number of characters it covers, per metric."""
    (loglikelihood,) = results
    n = len(doc["text"])
    return {"nats_per_char": (loglikelihood, n), "bits_per_char": (loglikelihood, n)}


def nats_per_char(items: list[tuple[float, int]]) -> float:
    """Cross-entropy in nats per character over every document (domaingpt's unit)."""
    return -sum(ll for ll, _ in items) / sum(n for _, n in items)


def bits_per_char(items: list[tuple[float, int]]) -> float:
    return nats_per_char(items) / math.log(2.0)
