"""How replicate models are named: one place for the scheme.

A study may train several replicate models per corpus (``[train] seeds = N``).
Replicate 0 of corpus C is the model ``C`` (so a run made before replicates is replicate
0 of every corpus) and replicate k >= 1 is ``C__r<k>``; an adaptation pair, a comparison
label or any other name built from model names carries the suffix with it
(``math__r1__to__wikipedia``, ``domains:math__r1@60:wikipedia__r1@60:all``).
"""

from __future__ import annotations

import re

SEPARATOR = "__r"
# ``__r<k>`` at the end of a name or before another part of a label built from names
_SUFFIX = re.compile(r"__r([1-9][0-9]*)(?=$|__|[@:/ ,;)\]])")


def replicate_name(corpus: str, replicate: int) -> str:
    """The model name of ``replicate`` of ``corpus``'s model (``corpus`` for replicate 0)."""
    return corpus if replicate == 0 else f"{corpus}{SEPARATOR}{replicate}"


def split_replicate(name: str) -> tuple[str, int]:
    """``(corpus, replicate)`` of a model name: the inverse of :func:`replicate_name`."""
    m = _SUFFIX.search(name)
    if m is None or m.end() != len(name):
        return name, 0
    return name[: m.start()], int(m.group(1))


def replicate_of(name: object) -> int:
    """The replicate a model name, or a label holding model names, belongs to (0: none)."""
    if not isinstance(name, str):
        return 0
    m = _SUFFIX.search(name)
    return int(m.group(1)) if m else 0


def base_name(text: str) -> str:
    """``text`` with every replicate suffix removed (``math__r2`` -> ``math``)."""
    return _SUFFIX.sub("", text)


def is_reserved(name: str) -> bool:
    """A corpus cannot be named like a replicate model (``notes__r2``, ``a__r1__b``)."""
    return _SUFFIX.search(name) is not None


def replicate_seed(seed: int, replicate: int) -> int:
    """The training seed (initial weights and batch order) of ``replicate``: every
    corpus's model of one replicate starts from the same weights (the paired design),
    replicates from different ones."""
    return seed + replicate
