"""The reference profile of each corpus: what its own text looks like, measured the way
the samples are (see :class:`~domaingpt.stages.quality.textmetrics.CorpusProfile`),
cached in ``quality/profile_<corpus>.json``."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from domaingpt.context.rundir import DEFAULT_VAL_FRACTION, RunDir, read_run_json
from domaingpt.core.io import read_json, write_json
from domaingpt.core.progress import Log
from domaingpt.data.corpus import Corpus, resolve_corpus
from domaingpt.errors import DomainGPTError
from domaingpt.stages.quality.settings import QualitySettings
from domaingpt.stages.quality.textmetrics import CorpusProfile, build_profile


def _val_fraction(run: RunDir, corpus: str) -> float:
    """The held-out fraction the corpus's model was trained with (its split is the one
    the profile's slices come from)."""
    data = read_run_json(run.model(corpus)).section("data")
    try:
        return float(data["val_fraction"])
    except (KeyError, TypeError, ValueError):
        return DEFAULT_VAL_FRACTION


def resolve_corpora(
    run: RunDir, settings: QualitySettings, needed: Iterable[str]
) -> dict[str, Corpus]:
    """``settings.corpora`` and every corpus in ``needed``, by name: a model's corpus
    found by :meth:`RunDir.corpus` (a user's file from its recorded path); an error
    names a needed corpus that cannot be found and how to pass it."""
    data_dir = settings.data_dir or None
    download = not settings.offline
    found: dict[str, Corpus] = {}
    for item in settings.corpora:
        corpus = run.known_corpus(resolve_corpus(item, data_dir, download=download))
        found.setdefault(corpus.name, corpus)
    trained = set(run.trained_models())
    for name in needed:
        if name in found:
            continue
        if name in trained:
            found[name] = run.corpus(
                name,
                data_dir=data_dir,
                download=download,
                given=list(found.values()),
                corpora_option=True,
            )
            continue
        try:
            found[name] = resolve_corpus(name, data_dir, download=download)
        except DomainGPTError as e:
            raise DomainGPTError(
                f"cannot find the corpus {name!r} that models in {run.root} were trained on "
                f"({e}); pass its file with --corpora PATH"
            ) from None
    return found


def check_corpus(run: RunDir, corpus: Corpus, log: Log) -> None:
    """Warn when the corpus file found is not the text its model was trained on."""
    sha = read_run_json(run.model(corpus.name)).corpus_sha256
    if sha and sha != corpus.sha256:
        log(
            f"warning: {corpus.name} at {corpus.path} is not the text its model was trained "
            "on (checksum differs); its reference profile describes the file found"
        )


def corpus_profile(
    run: RunDir, corpus: Corpus, settings: QualitySettings, out: Path, log: Log = print
) -> CorpusProfile:
    """The corpus's reference profile, read from ``<out>/profile_<corpus>.json`` (the
    stage's folder) when it was built for the same text and settings, else built and
    cached there."""
    path = out / f"profile_{corpus.name}.json"
    val_fraction = _val_fraction(run, corpus.name)
    if path.exists():
        try:
            profile = CorpusProfile.from_json(read_json(path))
            if profile.matches(corpus.sha256, val_fraction, settings.chars, settings.n_slices):
                return profile
        except (DomainGPTError, ValueError, KeyError, TypeError):
            pass  # stale or damaged: rebuilt below
    t0 = time.perf_counter()
    profile = build_profile(
        corpus.name,
        corpus.read_text(),
        sha256=corpus.sha256,
        val_fraction=val_fraction,
        slice_chars=settings.chars,
        n_slices=settings.n_slices,
    )
    write_json(path, profile.to_json(), indent=None)
    log(
        f"profile of {corpus.name}: {len(profile.lexicon):,} words ({time.perf_counter() - t0:.1f} s)"
    )
    return profile


def reference_table(profiles: Iterable[CorpusProfile]) -> pd.DataFrame:
    """Tidy: corpus, metric, corpus_value (whole train split, where defined), slice_mean
    and slice_std (over held-out slices as long as a sample)."""
    rows = []
    for p in profiles:
        for metric in dict.fromkeys([*p.corpus_values, *p.slice_mean]):
            rows.append(
                {
                    "corpus": p.corpus,
                    "metric": metric,
                    "corpus_value": p.corpus_values.get(metric, math.nan),
                    "slice_mean": p.slice_mean.get(metric, math.nan),
                    "slice_std": p.slice_std.get(metric, math.nan),
                    "slice_chars": p.slice_chars,
                    "n_slices": p.n_slices,
                }
            )
    return pd.DataFrame(rows)
