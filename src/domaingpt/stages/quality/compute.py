"""What the samples show: spelling, layout, repetitiveness and style, along training and
after adaptation, and the study's by-eye judgements checked against those numbers.

For every trained model (``runs/NAME/models/<corpus>``) at every history checkpoint,
``samples`` texts of ``chars`` characters are generated with
:func:`domaingpt.sample.generate_text` (seeds ``first_seed ...``, prompt a newline), so
each one can be reproduced with ``domaingpt sample --iter I --seed S``. Each text is
measured with :func:`domaingpt.textmetrics.sample_measures` against the reference profile
of the model's corpus, and its style distance to every study corpus is recorded.
Adapted models (``runs/NAME/adapt/<source>__to__<target>/<start>/seed<k>/``) are measured
against both the target and the source corpus: after adaptation (their last checkpoint)
and before (the source checkpoint they started from, whose samples are those of the
timeline, so they cost nothing more).

Writes ``runs/NAME/quality/``::

    profile_<corpus>.json   reference profile of each corpus (cached; see textmetrics)
    samples.jsonl           every generated text with its checkpoint, seed and timing;
                            also a cache: a text whose checkpoint file (SHA-256), seed
                            and generation settings are unchanged is never regenerated
    timeline.csv            one row per (model, iteration, seed): val_loss + measures
    checkpoints.csv         one row per (model, iteration): means over the seeds
    milestones.csv          when each model first has corpus-like spacing, mostly real
                            long words, word formation past the coherence threshold
    style.csv               one row per (sample, reference corpus): JS distances
    adapted.csv             one row per (adapted model, seed), phase "after", and per
                            (pair, start, seed) for its start checkpoint, phase "before"
    reference.csv           each corpus's own values (whole train split, held-out slices)
    claims.csv              the study's judgements: holds True / False / empty (not
                            measured), with the numbers that decide it
    summary.md              the claims as a Markdown table, for the report
    timeline_iteration.png, timeline_val_loss.png, adapted_style.png
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from domaingpt.core import published
from domaingpt.core.device import pick_device
from domaingpt.core.io import (
    append_jsonl,
    atomic_write_text,
    read_json,
    read_jsonl,
    write_json,
    write_jsonl,
)
from domaingpt.core.progress import Log
from domaingpt.core.rundir import RunDir
from domaingpt.core.settings import StageSettings, setting
from domaingpt.core.tables import read_table, write_table
from domaingpt.data.corpus import Corpus, resolve_corpus
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, list_checkpoints, load_checkpoint
from domaingpt.model.generate import generate_text
from domaingpt.stages.quality.figures import plot_metric_timeline, plot_style_shift
from domaingpt.stages.quality.textmetrics import (
    REPETITION_METRICS,
    CorpusProfile,
    build_profile,
    nearest_corpus,
    sample_measures,
    style_distances,
    word_formation,
)

SUBDIR = "quality"

# The study's own words and numbers (domaingpt.core.published).
STUDY_SPACING = published.SPACING
STUDY_WORDS = published.WORDS
STUDY_LOSS = published.COHERENT_LOSS
CLAIM_MATH_SPACING = published.MATH_SPACING
CLAIM_WIKI_LOSS = published.WIKI_LOSS
CLAIM_REPEAT = published.NOT_REPETITIVE
CLAIM_TONE = published.ADAPT_TONE
CLAIM_SYMBOLS = published.ADAPT_SYMBOLS
CLAIM_MOVED = published.ADAPT_STYLE
CLAIM_EARLY = published.EARLY_SHIFT

# Measures drawn in the timeline figures, with a readable label.
FIGURE_METRICS: dict[str, str] = {
    "space_share": "share of spaces",
    "newline_share": "share of newlines",
    "heading_share": "speaker-heading lines",
    "long_word_known": "long words (≥4) that are real",
    "word_known": "words that are real",
    "mean_word_len": "mean word length",
    "distinct_char_4": "distinct 4-grams (chars)",
    "longest_repeat": "longest repeat (chars)",
    "zlib_ratio": "zlib ratio (lower = repetitive)",
    "js_unigram": "JS distance to corpus (chars)",
    "js_class": "JS distance to corpus (classes)",
}


@dataclass(frozen=True)
class SampleQualitySettings(StageSettings):
    """What to generate and the thresholds the study's claims are checked with.

    ``models`` / ``iterations`` empty: every trained model / every history checkpoint.
    ``corpora``: reference corpora for style distance (names or paths); empty: the
    corpora of the models (and of the adaptation runs). ``top_k`` 0: no top-k cut.
    ``adapt_samples``: seeds per adapted model (each pair and start has several adapted
    models, one per adaptation seed, so the spread comes from those too); 0 or
    ``adapt = False`` skips adapted models.
    """

    SECTION = "quality"
    samples: int = setting(5, "seeds per checkpoint")
    chars: int = setting(500, "characters per sample")
    prompt: str = setting("\n", "prompt of every sample (default: a newline)")
    temperature: float = setting(1.0, "sampling temperature")
    top_k: int = setting(0, "top-k cut of the sampling (0: none)", cli=False)
    first_seed: int = setting(1, "first sampling seed", cli=False)
    models: list[str] = setting([], "models to sample (default: every trained model)")
    iterations: list[int] = setting([], "iterations to sample (default: every checkpoint)")
    corpora: list[str] = setting(
        [], "reference corpora, names or paths (default: the models' corpora)"
    )
    n_slices: int = setting(
        20, "held-out corpus slices the samples are compared with", flag="--slices"
    )
    adapt: bool = setting(True, "measure the adapted models too")
    adapt_samples: int = setting(1, "seeds per adapted model; its adaptation seeds add the spread")
    device: str = setting("cpu", "device for generation")
    threads: int = setting(1, "torch threads for generation")
    # claim thresholds
    spacing_tolerance: float = setting(
        0.2, "|space share - corpus| <= this × corpus share", cli=False
    )
    word_majority: float = setting(0.5, '"most long words are real words"', cli=False)
    coherent_words: float = setting(
        0.75, 'long-word share meaning "word formation passes"', cli=False
    )
    loss_tolerance: float = setting(0.15, "nats either side of the study's loss range", cli=False)
    iteration_factor: float = setting(
        2.5, "iterations within [lo / f, hi · f] match the study", cli=False
    )
    repeat_sigmas: float = setting(
        2.0, '"repetitive": beyond corpus slice mean ± this many std', cli=False
    )

    def check(self) -> None:
        super().check()
        positive = {"samples": self.samples, "chars": self.chars, "n_slices": self.n_slices}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"quality.{name} must be at least 1, got {value}")
        if self.adapt_samples < 0 or self.top_k < 0 or self.threads < 0:
            raise ConfigError("quality.adapt_samples, top_k and threads must be zero or more")
        if not self.prompt:
            raise ConfigError("quality.prompt must not be empty (the default is a newline)")
        if self.temperature < 0:
            raise ConfigError(f"quality.temperature must be zero or more, got {self.temperature}")
        for name in ("spacing_tolerance", "loss_tolerance", "repeat_sigmas"):
            if getattr(self, name) < 0:
                raise ConfigError(f"quality.{name} must be zero or more")
        for name in ("word_majority", "coherent_words"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"quality.{name} must be in (0, 1]")
        if self.iteration_factor < 1:
            raise ConfigError("quality.iteration_factor must be at least 1")

    @property
    def seeds(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.samples))


# --- what is sampled -------------------------------------------------------------------


@dataclass(frozen=True)
class _Target:
    """One checkpoint to sample: a trained model's or an adapted model's."""

    kind: str  # "train" | "adapt"
    model: str  # corpus name, or "<source>__to__<target>/<start>/seed<k>"
    info: CheckpointInfo
    corpus: str  # the corpus its samples are compared with (own / adaptation target)
    seeds: tuple[int, ...]
    source: str = ""
    target: str = ""
    start: str = ""
    adapt_seed: int | None = None
    phase: str = ""  # adapted: before / after
    val_loss: float | None = None  # overrides the checkpoint's own val_loss


def _model_targets(run: RunDir, settings: SampleQualitySettings) -> list[_Target]:
    have = run.trained_models()
    names = settings.models or _study_order(have)
    missing = [m for m in names if m not in have]
    if missing:
        raise DomainGPTError(
            f"no trained model for {', '.join(missing)} in {run.models} (trained: "
            f"{', '.join(have) or 'none'}); train it first or drop it from --models"
        )
    targets = []
    for name in names:
        history = list_checkpoints(run.model(name) / "checkpoints", "iter")
        if settings.iterations:
            wanted = set(settings.iterations)
            history = [c for c in history if c.iteration in wanted]
        for info in history:
            targets.append(_Target("train", name, info, name, tuple(settings.seeds)))
    return targets


def _adapt_targets(run: RunDir, settings: SampleQualitySettings, log: Log) -> list[_Target]:
    """The last checkpoint of every adapted model ("after"), and once per (pair, start)
    the checkpoint it started from ("before"): the adapted directory's iteration 0 if it
    has one, else the source model's checkpoint at the ``source_iteration`` its record
    names. A start from scratch has no before."""
    root = run.adapt
    if not settings.adapt or settings.adapt_samples == 0:
        return []
    pairs = sorted(d for d in root.glob("*__to__*") if d.is_dir()) if root.is_dir() else []
    if not pairs:
        log(f"no adapted models in {root}: skipping the after-adaptation measures")
        return []
    seeds = tuple(settings.seeds[: settings.adapt_samples])
    targets = []
    for pair in pairs:
        source, target = pair.name.split("__to__", 1)
        for start_dir in sorted(d for d in pair.iterdir() if d.is_dir()):
            start = start_dir.name
            before: _Target | None = None
            for seed_dir in sorted(d for d in start_dir.glob("seed*") if d.is_dir()):
                ckdir = seed_dir / "checkpoints"
                history = list_checkpoints(ckdir if ckdir.is_dir() else seed_dir, "iter")
                if not history:
                    continue
                after = history[-1]
                try:
                    adapt_seed: int | None = int(seed_dir.name[len("seed") :])
                except ValueError:
                    adapt_seed = None
                label = f"{pair.name}/{start}/{seed_dir.name}"
                targets.append(
                    _Target(
                        "adapt",
                        label,
                        after,
                        target,
                        seeds,
                        source,
                        target,
                        start,
                        adapt_seed,
                        "after",
                    )
                )
                if before is None:
                    info = _start_checkpoint(run, source, history)
                    if info is not None:
                        record = after.meta.get("adapt", {})
                        before = _Target(
                            "adapt",
                            f"{pair.name}/{start}/before",
                            info,
                            target,
                            tuple(settings.seeds),
                            source,
                            target,
                            start,
                            None,
                            "before",
                            _num(record.get("target_loss_step0")),
                        )
            if before is not None:
                targets.append(before)
    n_after = sum(t.phase == "after" for t in targets)
    log(f"found {n_after} adapted models in {root}")
    return targets


def _start_checkpoint(
    run: RunDir, source: str, history: list[CheckpointInfo]
) -> CheckpointInfo | None:
    if len(history) > 1 and history[0].iteration == 0:
        return history[0]
    iteration = history[-1].meta.get("adapt", {}).get("source_iteration")
    if iteration is None:
        return None
    for info in list_checkpoints(run.model(source) / "checkpoints", "iter"):
        if info.iteration == iteration:
            return info
    return None


# --- reference profiles ----------------------------------------------------------------


def _val_fraction(run: RunDir, corpus: str) -> float:
    try:
        record = json.loads((run.model(corpus) / "run.json").read_text(encoding="utf-8"))
        return float(record["config"]["data"]["val_fraction"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.1


def _resolve_corpora(
    run: RunDir, settings: SampleQualitySettings, needed: Iterable[str]
) -> dict[str, Corpus]:
    data_dir = settings.data_dir or None
    found: dict[str, Corpus] = {}
    for item in settings.corpora:
        corpus = resolve_corpus(item, data_dir)
        found.setdefault(corpus.name, corpus)
    for name in needed:
        if name in found:
            continue
        try:
            found[name] = resolve_corpus(name, data_dir)
        except DomainGPTError as e:
            raise DomainGPTError(
                f"cannot find the corpus {name!r} that models in {run.root} were trained on "
                f"({e}); pass its file with --corpora PATH"
            ) from None
    return found


def corpus_profile(
    run: RunDir, corpus: Corpus, settings: SampleQualitySettings, log: Log = print
) -> CorpusProfile:
    """The corpus's reference profile, read from ``quality/profile_<corpus>.json`` when it
    was built for the same text and settings, else built and cached there."""
    path = run.root / SUBDIR / f"profile_{corpus.name}.json"
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


# --- generation with a cache -----------------------------------------------------------


def _sample_key(row: dict[str, Any]) -> tuple:
    return (
        row["tensor_sha256"],
        row["seed"],
        row["prompt"],
        row["chars"],
        row["temperature"],
        row["top_k"],
        row["device"],
    )


def _request(settings: SampleQualitySettings) -> dict[str, Any]:
    """What a text depends on besides the weights and the seed (the device too: another
    device computes other floating-point numbers, and may sample another text)."""
    return {
        "prompt": settings.prompt,
        "chars": settings.chars,
        "temperature": settings.temperature,
        "top_k": settings.top_k,
        "device": pick_device(settings.device).type,
    }


def _generate_all(
    targets: list[_Target],
    settings: SampleQualitySettings,
    cache_path: Path,
    *,
    progress: bool,
    log: Log,
) -> tuple[dict[tuple, dict[str, Any]], dict[str, float]]:
    """Every (checkpoint, seed) text, from the cache or generated (and appended to it)."""
    device = pick_device(settings.device)
    cache: dict[tuple, dict[str, Any]] = {}
    if cache_path.exists():
        try:
            for row in read_jsonl(cache_path):
                cache[_sample_key(row)] = row
        except (DomainGPTError, KeyError):
            log(f"{cache_path} is damaged: generating every sample again")
            cache = {}
    base = _request(settings)
    todo = []
    for t in targets:
        for seed in t.seeds:
            key = _sample_key({**base, "tensor_sha256": t.info.meta["tensor_sha256"], "seed": seed})
            if key not in cache:
                todo.append((t, seed, key))
    stats = {"generated": float(len(todo)), "cached": 0.0, "seconds": 0.0}
    stats["cached"] = float(sum(len(t.seeds) for t in targets) - len(todo))
    if not todo:
        log(f"all {int(stats['cached'])} samples reused from {cache_path.name}")
        return cache, stats
    from tqdm.auto import tqdm

    threads_before = torch.get_num_threads()
    if settings.threads > 0:
        torch.set_num_threads(settings.threads)
    threads = torch.get_num_threads()
    loaded_for: tuple[Path, Any] | None = None
    try:
        for t, seed, key in tqdm(
            todo, desc="samples", unit="sample", disable=not progress, leave=False
        ):
            if loaded_for is None or loaded_for[0] != t.info.json_path:
                loaded_for = (t.info.json_path, load_checkpoint(t.info, device))
            loaded = loaded_for[1]
            t0 = time.perf_counter()
            text = generate_text(
                loaded.model,
                loaded.vocab,
                settings.prompt,
                settings.chars,
                temperature=settings.temperature,
                top_k=settings.top_k or None,
                seed=seed,
                warn=False,
            )
            seconds = time.perf_counter() - t0
            stats["seconds"] += seconds
            row = {
                **base,
                "tensor_sha256": t.info.meta["tensor_sha256"],
                "seed": seed,
                "checkpoint": str(t.info.json_path),
                "seconds": round(seconds, 4),
                "text": text,
            }
            append_jsonl(cache_path, row)  # a stop here keeps every finished sample
            cache[key] = row
    finally:
        torch.set_num_threads(threads_before)
    rate = stats["generated"] * settings.chars / stats["seconds"] if stats["seconds"] else 0.0
    log(
        f"generated {int(stats['generated'])} samples in {stats['seconds']:.1f} s "
        f"({rate:,.0f} characters/s, {device.type}, {threads} thread(s)); "
        f"{int(stats['cached'])} reused from {cache_path.name}"
    )
    return cache, stats


# --- the stage -------------------------------------------------------------------------


def run_sample_quality(
    run: RunDir,
    settings: SampleQualitySettings | None = None,
    *,
    progress: bool = True,
    log: Log = print,
) -> dict[str, Path]:
    """Generate, measure, derive the claims, draw; returns the written files by name."""
    settings = settings or SampleQualitySettings()
    out = run.root / SUBDIR
    targets = _model_targets(run, settings)
    adapted = _adapt_targets(run, settings, log)
    if not targets and not adapted:
        raise DomainGPTError(
            f"no trained models in {run.models}; run `domaingpt train CORPUS --out {run.root}` "
            "first"
        )
    if settings.iterations and not targets:
        raise DomainGPTError(
            f"no model in {run.models} has a history checkpoint at iterations "
            f"{settings.iterations}; leave --iterations out to use every checkpoint"
        )
    needed = list(
        dict.fromkeys(
            [t.corpus for t in targets] + [c for t in adapted for c in (t.source, t.target)]
        )
    )
    corpora = _resolve_corpora(run, settings, needed)
    for name in needed:
        _check_corpus(run, corpora[name], log)
    profiles = {name: corpus_profile(run, c, settings, log) for name, c in corpora.items()}

    cache_path = out / "samples.jsonl"
    cache, gen_stats = _generate_all(
        targets + adapted, settings, cache_path, progress=progress, log=log
    )

    sample_rows, timeline, style, adapted_rows = [], [], [], []
    base = _request(settings)
    for t in targets + adapted:
        for seed in t.seeds:
            row = cache[
                _sample_key({**base, "tensor_sha256": t.info.meta["tensor_sha256"], "seed": seed})
            ]
            text = row["text"]
            ident = _identity(t, seed)
            sample_rows.append({**ident, **{k: v for k, v in row.items() if k != "seed"}})
            dist = style_distances(text, profiles.values())
            for ref, d in dist.items():
                style.append({**ident, "reference": ref, **d})
            measures = sample_measures(text, profiles[t.corpus])
            nearest = {
                "nearest_corpus": nearest_corpus(dist, "js_unigram"),
                "nearest_corpus_class": nearest_corpus(dist, "js_class"),
            }
            if t.kind == "train":
                timeline.append({**ident, **measures, **nearest})
            else:
                src = profiles[t.source]
                vs_source = word_formation(text, src.lexicon)
                adapted_rows.append(
                    {
                        **ident,
                        **measures,
                        "js_class_source": dist[t.source]["js_class"],
                        "js_unigram_source": dist[t.source]["js_unigram"],
                        "word_known_source": vs_source["word_known"],
                        "long_word_known_source": vs_source["long_word_known"],
                        **nearest,
                    }
                )

    tables = {
        "timeline": pd.DataFrame(timeline),
        "style": pd.DataFrame(style),
        "adapted": pd.DataFrame(adapted_rows),
        "reference": reference_table(profiles.values()),
    }
    if timeline:
        tables["checkpoints"] = checkpoint_summary(tables["timeline"])
        tables["milestones"] = milestones(tables["checkpoints"], tables["reference"], settings)
    tables["claims"] = sample_quality_claims(tables, settings)

    written: dict[str, Path] = {}
    write_jsonl(cache_path, sample_rows)  # exactly the samples these tables are made from
    written["samples"] = cache_path
    written["settings"] = write_json(out / "settings.json", settings.to_dict())
    for name, df in tables.items():
        if name == "claims":  # the stage's claims.csv is written from load() (see claims.py)
            continue
        if name == "adapted" and df.empty:
            (out / "adapted.csv").unlink(missing_ok=True)
            continue
        written[name] = write_table(df, out / f"{name}.csv")
    for name in profiles:
        written[f"profile_{name}"] = out / f"profile_{name}.json"
    written["summary"] = atomic_write_text(
        out / "summary.md", summary_markdown(tables, gen_stats, settings)
    )
    written.update(_draw(tables, out))
    n_claims = tables["claims"]["holds"].map(_holds_word).value_counts().to_dict()
    log(
        f"sample quality: {len(timeline)} samples along training, {len(adapted_rows)} after "
        f"adaptation; claims {n_claims}; tables in {out}"
    )
    return written


def _identity(t: _Target, seed: int) -> dict[str, Any]:
    ident: dict[str, Any] = {"kind": t.kind, "model": t.model}
    if t.kind == "adapt":
        ident.update(
            source=t.source,
            target=t.target,
            start=t.start,
            adapt_seed=t.adapt_seed,
            phase=t.phase,
        )
    ident.update(
        corpus=t.corpus,
        iteration=t.info.iteration,
        val_loss=t.val_loss if t.val_loss is not None else _num(t.info.meta.get("val_loss")),
        seed=seed,
    )
    return ident


def _num(value: Any) -> float:
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def _check_corpus(run: RunDir, corpus: Corpus, log: Log) -> None:
    run_json = run.model(corpus.name) / "run.json"
    if not run_json.exists():
        return
    try:
        sha = json.loads(run_json.read_text(encoding="utf-8")).get("corpus_sha256")
    except (OSError, ValueError):
        return
    if sha and sha != corpus.sha256:
        log(
            f"warning: {corpus.name} at {corpus.path} is not the text its model was trained "
            "on (checksum differs); its reference profile describes the file found"
        )


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


def load_sample_quality(run: RunDir) -> dict[str, pd.DataFrame]:
    """The tables :func:`run_sample_quality` wrote: timeline, style, reference, claims,
    samples, and adapted when there were adapted models."""
    out = run.root / SUBDIR
    if not (out / "timeline.csv").exists():
        raise DomainGPTError(
            f"no sample-quality results in {out}; run `domaingpt quality --out {run.root}` first"
        )
    tables = {}
    for name in (
        "timeline",
        "checkpoints",
        "milestones",
        "style",
        "adapted",
        "reference",
    ):
        path = out / f"{name}.csv"
        if path.exists():
            tables[name] = read_table(path)
    if (out / "settings.json").is_file():
        tables["settings"] = pd.DataFrame([read_json(out / "settings.json")]).astype(object)
    if (out / "samples.jsonl").exists():
        tables["samples"] = pd.DataFrame(read_jsonl(out / "samples.jsonl"))
    return tables


# --- claims ----------------------------------------------------------------------------


def _study_order(names: Iterable[str]) -> list[str]:
    """Shakespeare, Math, Wikipedia (the study's order), then any other corpus by name."""
    known = list(STUDY_LOSS)
    return sorted(set(names), key=lambda n: (known.index(n) if n in known else len(known), n))


def _pooled(df: pd.DataFrame, share: str, count: str) -> float:
    """Share pooled over samples: Σ share·count / Σ count (samples without words drop out)."""
    ok = df[share].notna() & (df[count] > 0)
    total = df.loc[ok, count].sum()
    return float((df.loc[ok, share] * df.loc[ok, count]).sum() / total) if total else math.nan


def checkpoint_summary(timeline: pd.DataFrame) -> pd.DataFrame:
    """One row per (model, iteration): val_loss, mean measures, pooled word shares."""
    if timeline.empty:
        return pd.DataFrame()
    rows = []
    for (model, it), g in timeline.groupby(["model", "iteration"], sort=True):
        rows.append(
            {
                "model": model,
                "corpus": g["corpus"].iloc[0],
                "iteration": int(it),
                "val_loss": float(g["val_loss"].iloc[0]),
                "n_samples": len(g),
                "space_share": float(g["space_share"].mean()),
                "word_known": _pooled(g, "word_known", "n_words"),
                "long_word_known": _pooled(g, "long_word_known", "n_long_words"),
                "n_long_words": float(g["n_long_words"].sum()),
                **{m: float(g[m].mean()) for m in REPETITION_METRICS},
            }
        )
    return pd.DataFrame(rows)


def _ref(reference: pd.DataFrame, corpus: str, metric: str, col: str = "slice_mean") -> float:
    hit = reference[(reference["corpus"] == corpus) & (reference["metric"] == metric)]
    return float(hit[col].iloc[0]) if len(hit) else math.nan


def _first_event(summary: pd.DataFrame, passed: pd.Series) -> tuple[Any, Any]:
    """(first row where ``passed``, the row just before it) or (None, last row)."""
    hits = np.flatnonzero(passed.to_numpy())
    if not len(hits):
        return None, summary.iloc[-1]
    i = int(hits[0])
    return summary.iloc[i], (summary.iloc[i - 1] if i else None)


def _interval_verdict(
    observed: float | None, lo_end: float, hi_end: float, window: tuple[float, float]
) -> bool | None:
    """The event lies between ``lo_end`` and ``hi_end`` (first seen at ``observed``).
    True: seen inside ``window``; False: the whole interval is outside it; else None
    (the checkpoints are too sparse to tell)."""
    w_lo, w_hi = window
    if observed is not None and w_lo <= observed <= w_hi:
        return True
    if hi_end < w_lo or lo_end > w_hi:
        return False
    return None


def _fmt_it(v: Any) -> str:
    return "—" if v is None else f"{int(v):,}"


def _claim(claim: str, scope: str, measure: str, holds: bool | None, evidence: str) -> dict:
    """One claims row; the evidence names its scope, so it reads on its own."""
    return {
        "claim": claim,
        "scope": scope,
        "measure": measure,
        "holds": holds,
        "evidence": f"{scope}: {evidence}",
    }


EVENTS: dict[str, str] = {
    "spacing": "first iteration whose mean share of spaces is within the tolerance of the corpus's",
    "words": "first iteration where most long words (≥ 4 letters) are real words",
    "coherent": "first iteration where word formation passes the coherence threshold",
}


def milestones(
    summary: pd.DataFrame, reference: pd.DataFrame, settings: SampleQualitySettings | None = None
) -> pd.DataFrame:
    """When each model first reaches each milestone of :data:`EVENTS`: one row per (model,
    event) with the iteration, val loss and value there, and the checkpoint before it
    (the event happened between the two). ``iteration`` is empty when never reached."""
    s = settings or SampleQualitySettings()
    rows = []
    for model in _study_order(summary["model"].unique()):
        g = summary[summary["model"] == model]
        g = g.sort_values("iteration").reset_index(drop=True)
        corpus = g["corpus"].iloc[0]
        space = _ref(reference, corpus, "space_share")
        tests = {
            "spacing": (
                "space_share",
                (g["space_share"] - space).abs() <= s.spacing_tolerance * space,
            ),
            "words": ("long_word_known", g["long_word_known"] >= s.word_majority),
            "coherent": ("long_word_known", g["long_word_known"] >= s.coherent_words),
        }
        for event, (col, passed) in tests.items():
            first, prev = _first_event(g, passed)
            best = g.loc[g["val_loss"].idxmin()] if g["val_loss"].notna().any() else g.iloc[-1]
            rows.append(
                {
                    "model": model,
                    "corpus": corpus,
                    "event": event,
                    "measure": col,
                    "iteration": None if first is None else int(first["iteration"]),
                    "val_loss": None if first is None else float(first["val_loss"]),
                    "value": None if first is None else float(first[col]),
                    "prev_iteration": None if prev is None else int(prev["iteration"]),
                    "prev_val_loss": None if prev is None else float(prev["val_loss"]),
                    "prev_value": None if prev is None else float(prev[col]),
                    "last_iteration": int(g["iteration"].iloc[-1]),
                    "best_value": float(g[col].max()),
                    "lowest_val_loss": float(best["val_loss"]),
                    "lowest_val_loss_iteration": int(best["iteration"]),
                }
            )
    return pd.DataFrame(rows)


def _iteration_claims(
    events: pd.DataFrame, reference: pd.DataFrame, s: SampleQualitySettings
) -> list[dict]:
    """The study's iteration and loss claims, per model whose corpus it made them for."""
    rows = []
    f = s.iteration_factor
    for _, e in events.iterrows():
        corpus, model, event = e["corpus"], e["model"], e["event"]
        reached = pd.notna(e["iteration"])
        has_prev = pd.notna(e["prev_iteration"])
        if event in ("spacing", "words"):
            study = (STUDY_SPACING if event == "spacing" else STUDY_WORDS).get(corpus)
            if study is None:
                continue
            lo, hi, words = study
            window = (lo / f, hi * f)
            label = "space share" if event == "spacing" else "long words real"
            if event == "spacing":
                ref = _ref(reference, corpus, "space_share")
                measure = (
                    f"first iteration where the mean share of spaces is within "
                    f"±{s.spacing_tolerance:.0%} of the corpus's ({ref:.3f}, held-out slices)"
                )
            else:
                ref = _ref(reference, corpus, "long_word_known")
                measure = (
                    f"first iteration where ≥ {s.word_majority:.0%} of generated words of ≥ 4 "
                    f"letters occur in the corpus (its own held-out text: {ref:.2f})"
                )
            if not reached:
                holds = _interval_verdict(None, e["last_iteration"] + 1, math.inf, window)
                evidence = (
                    f"not reached by iteration {e['last_iteration']:,} (best {label} "
                    f"{e['best_value']:.3f})"
                )
            else:
                it = float(e["iteration"])
                since = float(e["prev_iteration"]) + 1 if has_prev else it
                holds = _interval_verdict(it, since, it, window)
                evidence = f"iteration {int(it):,} ({label} {e['value']:.3f})"
                if has_prev:
                    evidence += (
                        f"; previous checkpoint {int(e['prev_iteration']):,}: {e['prev_value']:.3f}"
                    )
            evidence += (
                f"; study: {_range(lo, hi, ',.0f')} (accepted {window[0]:,.0f}–{window[1]:,.0f})"
            )
        else:  # coherent: the val loss at which word formation passes
            study = STUDY_LOSS.get(corpus)
            if study is None:
                continue
            lo, hi, words = study
            window = (lo - s.loss_tolerance, hi + s.loss_tolerance)
            measure = (
                f"val loss at the first checkpoint where ≥ {s.coherent_words:.0%} of long words "
                "are real words"
            )
            if not reached:
                evidence = (
                    f"not reached: best {e['best_value']:.2f} of long words real; lowest val loss "
                    f"{e['lowest_val_loss']:.3f} (iteration {e['lowest_val_loss_iteration']:,})"
                )
                holds = False if e["lowest_val_loss"] < window[0] else None
            else:
                loss = float(e["val_loss"])
                upper = float(e["prev_val_loss"]) if has_prev else math.inf
                evidence = (
                    f"{e['value']:.2f} of long words real at iteration {int(e['iteration']):,}, "
                    f"val loss {loss:.3f}"
                )
                if has_prev:
                    evidence += f" (previous checkpoint: {e['prev_value']:.2f} at loss {upper:.3f})"
                holds = _interval_verdict(loss, loss, upper, window)
            evidence += (
                f"; study: loss {_range(lo, hi, '.1f')} (accepted {window[0]:.2f}–{window[1]:.2f})"
            )
        rows.append(_claim(words, model, measure, holds, evidence))
    return rows


def _range(lo: float, hi: float, fmt: str) -> str:
    return f"{lo:{fmt}}" if lo == hi else f"{lo:{fmt}}–{hi:{fmt}}"


def _repetition_claims(
    summary: pd.DataFrame, reference: pd.DataFrame, s: SampleQualitySettings
) -> list[dict]:
    rows = []
    for model in _study_order(summary["model"].unique()):
        g = summary[summary["model"] == model]
        g = g.sort_values("iteration").reset_index(drop=True)
        corpus = g["corpus"].iloc[0]
        last_it = int(g["iteration"].iloc[-1])
        late = g[g["iteration"] >= last_it / 2]
        flagged, parts = [], []
        for metric, direction in REPETITION_METRICS.items():
            mean, std = (
                _ref(reference, corpus, metric),
                _ref(reference, corpus, metric, "slice_std"),
            )
            bound = (
                mean - s.repeat_sigmas * std if direction == "low" else mean + s.repeat_sigmas * std
            )
            for _, r in late.iterrows():
                bad = r[metric] < bound if direction == "low" else r[metric] > bound
                if bad:
                    flagged.append(f"{metric} {r[metric]:.3f} at iteration {int(r['iteration']):,}")
            parts.append(f"{metric} {g[metric].iloc[-1]:.3f} (corpus {mean:.3f} ± {std:.3f})")
        # a rise: more repetitive than the first late checkpoint by over one corpus std,
        # and more repetitive than the corpus's own mean (random text becoming less random
        # on its way to real text is not a rise)
        rising = []
        if len(late) >= 2:
            a, b = late.iloc[0], late.iloc[-1]
            for metric, direction in REPETITION_METRICS.items():
                mean = _ref(reference, corpus, metric)
                std = _ref(reference, corpus, metric, "slice_std")
                delta = b[metric] - a[metric]
                if direction == "low":
                    up = delta < -std and b[metric] < mean
                else:
                    up = delta > std and b[metric] > mean
                if up:
                    rising.append(f"{metric} {a[metric]:.3f} → {b[metric]:.3f}")
        evidence = f"at iteration {last_it:,}: " + ", ".join(parts)
        if flagged:
            evidence += "; more repetitive than the corpus: " + ", ".join(flagged)
        if len(late) >= 2:
            evidence += f"; from iteration {int(late['iteration'].iloc[0]):,} to {last_it:,}: " + (
                "more repetitive in " + ", ".join(rising) if rising else "no rise"
            )
        holds = not flagged and len(rising) < 2
        evidence += f" (the study trained 40,000+ iterations; measured up to {last_it:,})"
        measure = (
            f"late checkpoints (iteration ≥ {last_it // 2:,}) within {s.repeat_sigmas:g} std of "
            "the corpus's held-out slices in distinct 4-grams, zlib ratio and longest repeat, "
            "and not more repetitive than the corpus and than the first late checkpoint (by > "
            "one std) in two of them"
        )
        rows.append(_claim(CLAIM_REPEAT, model, measure, holds, evidence))
    return rows


def _relative_claims(events: pd.DataFrame) -> list[dict]:
    rows = []
    first = {
        (r["corpus"], r["event"]): (None if pd.isna(r["iteration"]) else r)
        for _, r in events.iterrows()
    }
    corpora = set(events["corpus"])
    if {"math", "shakespeare"} <= corpora:
        m, sh = first[("math", "spacing")], first[("shakespeare", "spacing")]
        mi = None if m is None else int(m["iteration"])
        si = None if sh is None else int(sh["iteration"])
        if si is None:
            holds = None
        elif mi is None:
            holds = True
        else:
            holds = None if mi == si else mi > si
        rows.append(
            _claim(
                CLAIM_MATH_SPACING,
                "math vs shakespeare",
                "first iteration with corpus-like spacing: later for math than for shakespeare",
                holds,
                f"math: {_fmt_it(mi)}, shakespeare: {_fmt_it(si)}"
                + (
                    " (same checkpoint: too coarse to order)" if mi is not None and mi == si else ""
                ),
            )
        )
    if "wikipedia" in corpora and {"shakespeare", "math"} & corpora:

        def loss(c: str) -> float | None:
            r = first[(c, "coherent")]
            return None if r is None else float(r["val_loss"])

        w = loss("wikipedia")
        others = {c: loss(c) for c in ("shakespeare", "math") if c in corpora}
        known = [v for v in others.values() if v is not None]
        holds = None if w is None or not known else all(w < v for v in known)
        rows.append(
            _claim(
                CLAIM_WIKI_LOSS,
                "wikipedia vs " + " and ".join(others),
                "val loss at which word formation passes: lower for wikipedia",
                holds,
                f"wikipedia: {_fmt_loss(w)}, "
                + ", ".join(f"{c}: {_fmt_loss(v)}" for c, v in others.items()),
            )
        )
    return rows


def _fmt_loss(v: float | None) -> str:
    return "not reached" if v is None else f"{v:.3f}"


def _adapt_groups(adapted: pd.DataFrame) -> pd.DataFrame:
    """One row per (source, target, start): before/after means over seeds and samples."""
    rows = []
    if adapted.empty:
        return pd.DataFrame()
    for (src, tgt, start), g in adapted.groupby(["source", "target", "start"], sort=True):
        before, after = g[g["phase"] == "before"], g[g["phase"] == "after"]
        row = {"source": src, "target": tgt, "start": start, "n_after": len(after)}
        for phase, d in (("before", before), ("after", after)):
            row[f"js_target_{phase}"] = float(d["js_unigram"].mean()) if len(d) else math.nan
            row[f"js_source_{phase}"] = float(d["js_unigram_source"].mean()) if len(d) else math.nan
            row[f"nearest_target_{phase}"] = (
                float((d["nearest_corpus"] == tgt).mean()) if len(d) else math.nan
            )
            row[f"long_word_known_{phase}"] = (
                _pooled(d, "long_word_known", "n_long_words") if len(d) else math.nan
            )
            row[f"heading_share_{phase}"] = float(d["heading_share"].mean()) if len(d) else math.nan
            row[f"math_symbol_{phase}"] = (
                float(d["class_math_symbol"].mean()) if len(d) else math.nan
            )
        b, a = row["js_target_before"], row["js_target_after"]
        row["gap_closed"] = (
            (b - a) / b if b and not math.isnan(b) and not math.isnan(a) else math.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def _adapt_claims(
    adapted: pd.DataFrame, reference: pd.DataFrame, s: SampleQualitySettings
) -> list[dict]:
    groups = _adapt_groups(adapted)
    if groups.empty:
        return [
            _claim(
                c, "adaptation", "adapted models' samples", None, "no adapted models in this run"
            )
            for c in (CLAIM_MOVED, CLAIM_TONE, CLAIM_SYMBOLS, CLAIM_EARLY)
        ]
    rows = []
    # style moved to the target: one row per start point, over every pair
    for start, gs in groups[groups["start"] != "scratch"].groupby("start", sort=True):
        moved, parts = [], []
        for _, g in gs.iterrows():
            b, a = g["js_target_before"], g["js_target_after"]
            if not (math.isnan(b) or math.isnan(a)):
                moved.append(bool(a < b))
            parts.append(
                f"{g['source']}→{g['target']} JS to target {_f(b)} → {_f(a)} "
                f"(target's own text {_f(_ref(reference, g['target'], 'js_unigram'))}), "
                f"nearest the target {_pct(g['nearest_target_before'])} → "
                f"{_pct(g['nearest_target_after'])} of samples"
            )
        rows.append(
            _claim(
                CLAIM_MOVED,
                f"every pair, start {start}",
                "JS distance (characters) of the samples to the target corpus falls from "
                "before to after adaptation, in every pair",
                all(moved) if moved else None,
                "; ".join(parts),
            )
        )

    # play-like tone, but weak word formation (math/wikipedia -> shakespeare)
    tone = groups[
        (groups["target"] == "shakespeare")
        & groups["source"].isin(["math", "wikipedia"])
        & (groups["start"] != "scratch")
    ]
    heading_ref = _ref(reference, "shakespeare", "heading_share")
    for _, g in tone.iterrows():
        hb, ha = g["heading_share_before"], g["heading_share_after"]
        words = g["long_word_known_after"]
        play = (not math.isnan(ha)) and ha >= 0.5 * heading_ref and (math.isnan(hb) or ha > hb)
        struggled = (not math.isnan(words)) and words < s.coherent_words
        holds = None if math.isnan(ha) or math.isnan(words) else bool(play and struggled)
        rows.append(
            _claim(
                CLAIM_TONE,
                f"{g['source']} → shakespeare ({g['start']})",
                "speaker-heading lines after ≥ half of Shakespeare's share and above before; "
                f"long words real after < {s.coherent_words:.0%}",
                holds,
                f"heading lines {_pct(hb)} → {_pct(ha)} (Shakespeare {_pct(heading_ref)}); "
                f"long words real after {_pct(words)}",
            )
        )
    if tone.empty:
        rows.append(
            _claim(
                CLAIM_TONE,
                "math/wikipedia → shakespeare",
                "—",
                None,
                "no math or wikipedia model adapted to shakespeare in this run",
            )
        )

    # mathematical symbols (wikipedia -> math)
    sym = groups[
        (groups["source"] == "wikipedia")
        & (groups["target"] == "math")
        & (groups["start"] != "scratch")
    ]
    ref_math = _ref(reference, "math", "class_math_symbol")
    ref_wiki = _ref(reference, "wikipedia", "class_math_symbol")
    for _, g in sym.iterrows():
        before, after = g["math_symbol_before"], g["math_symbol_after"]
        holds = (
            None
            if math.isnan(after) or math.isnan(before)
            else bool(after > before and abs(after - ref_math) < abs(after - ref_wiki))
        )
        rows.append(
            _claim(
                CLAIM_SYMBOLS,
                f"wikipedia → math ({g['start']})",
                "share of math-symbol characters rises and ends nearer Math's share than "
                "Wikipedia's",
                holds,
                f"math symbols {_pct(before)} → {_pct(after)} (Math {_pct(ref_math)}, "
                f"Wikipedia {_pct(ref_wiki)})",
            )
        )
    if sym.empty:
        rows.append(
            _claim(
                CLAIM_SYMBOLS,
                "wikipedia → math",
                "—",
                None,
                "no wikipedia model adapted to math in this run",
            )
        )

    trained = groups[groups["start"] != "scratch"]

    # early vs final start: which one closes more of the gap?
    pivot = trained.pivot_table(index=["source", "target"], columns="start", values="gap_closed")
    early_cols = [c for c in pivot.columns if c != "final"]
    if "final" in pivot.columns and early_cols:
        early = pivot[early_cols].mean(axis=1)
        diff = (early - pivot["final"]).dropna()
        holds = (
            None
            if diff.empty or (diff > 0).sum() == (diff < 0).sum()
            else bool((diff > 0).sum() > (diff < 0).sum())
        )
        evidence = "; ".join(
            f"{s_}→{t_}: early {_pct(early[(s_, t_)])} vs final {_pct(pivot['final'][(s_, t_)])}"
            for s_, t_ in diff.index
        )
    else:
        holds, evidence = None, "needs adaptation from both an early and the final checkpoint"
    rows.append(
        _claim(
            CLAIM_EARLY,
            "early vs final start",
            "share of the JS gap to the target closed: larger from the early checkpoint in "
            "most pairs",
            holds,
            evidence,
        )
    )
    return rows


def _f(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{v:.3f}"


def _pct(v: float) -> str:
    return "—" if v is None or math.isnan(v) else f"{100 * v:.1f}%"


def sample_quality_claims(
    tables: dict[str, pd.DataFrame], settings: SampleQualitySettings | None = None
) -> pd.DataFrame:
    """The study's judgements of its samples checked from the measured numbers.

    Tidy rows: claim (the study's words), scope (model or pair), measure (what number
    decides it), holds (True / False / None = not measured or not decidable with these
    checkpoints), evidence (the numbers).
    """
    s = settings or SampleQualitySettings()
    timeline = tables.get("timeline", pd.DataFrame())
    reference = tables["reference"]
    rows: list[dict] = []
    if not timeline.empty:
        summary = checkpoint_summary(timeline)
        events = milestones(summary, reference, s)
        rows += _iteration_claims(events, reference, s)
        rows += _relative_claims(events)
        rows += _repetition_claims(summary, reference, s)
    rows += _adapt_claims(tables.get("adapted", pd.DataFrame()), reference, s)
    df = pd.DataFrame(rows, columns=["claim", "scope", "measure", "holds", "evidence"])
    df["holds"] = df["holds"].astype(object)
    return df


def _holds_word(v: Any) -> str:
    return (
        "not measured"
        if v is None or (isinstance(v, float) and math.isnan(v))
        else ("holds" if v else "does not hold")
    )


def summary_markdown(
    tables: dict[str, pd.DataFrame], gen_stats: dict[str, float], settings: SampleQualitySettings
) -> str:
    """The claims as a Markdown section the report can include."""
    claims = tables["claims"]
    lines = [
        "## What the samples show",
        "",
        f"{settings.samples} samples of {settings.chars} characters per checkpoint (prompt "
        f"{settings.prompt!r}, temperature {settings.temperature:g}), measured against the "
        "corpus each model learned from; the corpus's own values come from equally long "
        "held-out slices.",
        "",
        "| claim (the study's words) | scope | verdict | evidence |",
        "| --- | --- | --- | --- |",
    ]
    for _, r in claims.iterrows():
        cells = [str(r["claim"]), str(r["scope"]), _holds_word(r["holds"]), str(r["evidence"])]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if gen_stats.get("generated"):
        rate = gen_stats["generated"] * settings.chars / max(gen_stats["seconds"], 1e-9)
        lines += [
            "",
            f"Generation: {int(gen_stats['generated'])} new samples, {rate:,.0f} characters/s.",
        ]
    return "\n".join(lines) + "\n"


def _draw(tables: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    written = {}
    timeline = tables["timeline"]
    if not timeline.empty:
        for x, name in (("iteration", "timeline_iteration"), ("val_loss", "timeline_val_loss")):
            written[name] = plot_metric_timeline(
                timeline, tables["reference"], FIGURE_METRICS, out / f"{name}.png", x=x
            )
    adapted = tables.get("adapted", pd.DataFrame())
    if not adapted.empty:
        written["adapted_style"] = plot_style_shift(
            _adapt_groups(adapted), out / "adapted_style.png"
        )
    else:
        (out / "adapted_style.png").unlink(missing_ok=True)
    return written
