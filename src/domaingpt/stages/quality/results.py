"""The stage: sample every checkpoint, measure the samples, write the tables, the figures
and ``summary.md``; and read the tables back.

For every trained model (``runs/NAME/models/<corpus>``) at every history checkpoint,
``samples`` texts of ``chars`` characters are generated with
:func:`domaingpt.model.generate.generate_text` (seeds ``first_seed ...``, prompt a
newline), so each one can be reproduced with ``domaingpt sample --iter I --seed S``. Each
text is measured with :func:`~domaingpt.stages.quality.textmetrics.sample_measures`
against the reference profile of the model's corpus, and its style distance to every
study corpus is recorded. Adapted models (``runs/NAME/adapt/<source>__to__<target>/
<start>/seed<k>/``) are measured against both the target and the source corpus: after
adaptation (their last checkpoint) and before (the source checkpoint they started from,
whose samples are those of the timeline, so they cost nothing more); see
:mod:`~domaingpt.stages.quality.targets`.

Writes ``runs/NAME/quality/``::

    profile_<corpus>.json   reference profile of each corpus (cached; see profiles)
    samples.jsonl           every generated text with its checkpoint, seed and timing;
                            also a cache: a text whose checkpoint file (SHA-256), seed
                            and generation settings are unchanged is never regenerated
    settings.json           the settings, thresholds of the claims included
    timeline.csv            one row per (model, iteration, seed): val_loss + measures
    checkpoints.csv         one row per (model, iteration): means over the seeds
    milestones.csv          when each model first has corpus-like spacing, mostly real
                            long words, word formation past the coherence threshold
    style.csv               one row per (sample, reference corpus): JS distances
    adapted.csv             one row per (adapted model, seed), phase "after", and per
                            (pair, start, seed) for its start checkpoint, phase "before"
    reference.csv           each corpus's own values (whole train split, held-out slices)
    summary.md              the study's judgements (see claims) as a Markdown table
    timeline_iteration.png, timeline_val_loss.png, adapted_style.png

(``claims.csv`` is written by the stage runner from :func:`load`.)
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Results, StageContext, Tables
from domaingpt.core.claims import Claim
from domaingpt.core.io import atomic_write_text, read_jsonl, write_jsonl
from domaingpt.core.progress import Log
from domaingpt.core.replicates import split_replicate
from domaingpt.errors import DomainGPTError
from domaingpt.stages.quality.claims import quality_claims
from domaingpt.stages.quality.figures import draw
from domaingpt.stages.quality.generate import Samples, generate_all, request, target_key
from domaingpt.stages.quality.milestones import checkpoint_summary, milestones
from domaingpt.stages.quality.profiles import (
    check_corpus,
    corpus_profile,
    reference_table,
    resolve_corpora,
)
from domaingpt.stages.quality.settings import QualitySettings
from domaingpt.stages.quality.targets import Target, adapt_targets, model_targets
from domaingpt.stages.quality.textmetrics import (
    CorpusProfile,
    nearest_corpus,
    sample_measures,
    style_distances,
    word_formation,
)

#: The CSV tables of the stage: the first always, the others when there is something to
#: write (``adapted`` with adapted models).
TABLES = ("timeline",)
OPTIONAL = ("checkpoints", "milestones", "style", "adapted", "reference")


def run(ctx: StageContext, settings: QualitySettings) -> dict[str, Path]:
    """Generate, measure, derive the claims, draw; returns the written files by name."""
    run, log, progress = ctx.run, ctx.log, ctx.progress
    out = ctx.out
    targets = _targets(run, settings, log)
    profiles = _profiles(run, settings, targets, out, log)
    cache_path = out / "samples.jsonl"
    cache, gen_stats = generate_all(targets, settings, cache_path, progress=progress, log=log)
    sample_rows, tables = _measure(targets, cache, profiles, settings)
    claims = quality_claims(tables, settings)

    written: dict[str, Path] = {}
    write_jsonl(cache_path, sample_rows)  # exactly the samples these tables are made from
    written["samples"] = cache_path
    for name, df in tables.items():
        if name == "adapted" and df.empty:
            (out / "adapted.csv").unlink(missing_ok=True)
            continue
        written[name] = ctx.write_table(name, df)
    for name in profiles:
        written[f"profile_{name}"] = out / f"profile_{name}.json"
    written["summary"] = atomic_write_text(
        out / "summary.md", summary_markdown(claims, gen_stats, settings)
    )
    written.update(draw(tables, out))
    verdicts = dict(Counter(str(c.verdict) for c in claims).most_common())
    log(
        f"sample quality: {len(tables['timeline'])} samples along training, "
        f"{len(tables['adapted'])} after adaptation; claims {verdicts}; tables in {out}"
    )
    return written


def _targets(run: RunDir, settings: QualitySettings, log: Log) -> list[Target]:
    """The trained models' checkpoints, then the adapted models'; an error when there is
    nothing to sample."""
    targets = model_targets(run, settings)
    adapted = adapt_targets(run, settings, log)
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
    return targets + adapted


def _profiles(
    run: RunDir, settings: QualitySettings, targets: list[Target], out: Path, log: Log
) -> dict[str, CorpusProfile]:
    """The reference profile of every corpus the samples are compared with (the models'
    own, the adaptations' sources and targets, and ``settings.corpora``)."""
    needed = [t.corpus for t in targets if t.kind == "train"]
    needed += [c for t in targets if t.kind == "adapt" for c in (t.source, t.target)]
    needed = list(dict.fromkeys(needed))
    corpora = resolve_corpora(run, settings, needed)
    for name in needed:
        check_corpus(run, corpora[name], log)
    return {name: corpus_profile(run, c, settings, out, log) for name, c in corpora.items()}


def _measure(
    targets: list[Target],
    cache: Samples,
    profiles: dict[str, CorpusProfile],
    settings: QualitySettings,
) -> tuple[list[dict[str, Any]], Tables]:
    """The samples' rows, and the stage's tables: every sample measured against its
    corpus (and an adapted model's also against its source), its style distance to
    every reference corpus, and the derived per-checkpoint tables."""
    sample_rows, timeline, style, adapted_rows = [], [], [], []
    base = request(settings)
    for t in targets:
        for seed in t.seeds:
            row = cache[target_key(base, t, seed)]
            text = row["text"]
            ident = t.identity(seed)
            sample_rows.append({**ident, **{k: v for k, v in row.items() if k != "seed"}})
            dist = style_distances(text, profiles.values())
            style += [{**ident, "reference": ref, **d} for ref, d in dist.items()]
            measures = sample_measures(text, profiles[t.corpus])
            nearest = {
                "nearest_corpus": nearest_corpus(dist, "js_unigram"),
                "nearest_corpus_class": nearest_corpus(dist, "js_class"),
            }
            if t.kind == "train":
                timeline.append({**ident, **measures, **nearest})
                continue
            source = split_replicate(t.source)[0]  # the source model's corpus
            vs_source = word_formation(text, profiles[source].lexicon)
            adapted_rows.append(
                {
                    **ident,
                    **measures,
                    "js_class_source": dist[source]["js_class"],
                    "js_unigram_source": dist[source]["js_unigram"],
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
    return sample_rows, tables


def load(results: Results) -> Tables:
    """The tables :func:`run` wrote: timeline, checkpoints, milestones, style, reference,
    adapted (when there were adapted models), and as tables the settings it ran with (the
    claims' thresholds) and the samples."""
    tables = results.tables()
    settings = results.settings()
    if settings is not None:
        tables["settings"] = pd.DataFrame([settings]).astype(object)
    if (results.folder / "samples.jsonl").exists():
        tables["samples"] = pd.DataFrame(read_jsonl(results.folder / "samples.jsonl"))
    return tables


def summary_markdown(
    claims: list[Claim], gen_stats: dict[str, float], settings: QualitySettings
) -> str:
    """The claims as a Markdown section the report can include."""
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
    for c in claims:
        cells = [c.claim, c.scope, str(c.verdict), c.evidence]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    if gen_stats.get("generated"):
        rate = gen_stats["generated"] * settings.chars / max(gen_stats["seconds"], 1e-9)
        lines += [
            "",
            f"Generation: {int(gen_stats['generated'])} new samples, {rate:,.0f} characters/s.",
        ]
    return "\n".join(lines) + "\n"
