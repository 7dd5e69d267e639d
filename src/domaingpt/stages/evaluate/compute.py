"""The zero-shot matrix: every (model checkpoint, corpus) pair of a run scored on the
corpus's whole validation split (:func:`domaingpt.scoring.score_windows`), with a bootstrap
confidence interval over windows.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import pandas as pd
import torch

from domaingpt.context.rundir import RunDir, val_fraction_of
from domaingpt.context.splits import CorpusCache
from domaingpt.core import published
from domaingpt.core.device import pick_device
from domaingpt.core.distributed import Ranks, map_ranks
from domaingpt.core.progress import Log, progress_bar
from domaingpt.core.statistics import bootstrap_ratio_ci
from domaingpt.core.threads import torch_threads
from domaingpt.data.corpus import Corpus
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    find_checkpoint,
    load_checkpoint,
    select_checkpoints,
)
from domaingpt.scoring import WindowScores, cpu_engine, score_windows
from domaingpt.stages.evaluate.settings import EvaluateSettings

# --- the zero-shot matrix --------------------------------------------------------------


ZERO_SHOT_COLUMNS = [
    "model",
    "iteration",
    "corpus",
    "in_domain",
    "loss_nats",
    "bits_per_char",
    "perplexity",
    "n_tokens",
    "n_chars",
    "n_windows",
    "unk_fraction",
    "ci_low",
    "ci_high",
]


def loss_summary(
    scores: WindowScores, *, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float | int]:
    """Loss in the model's unit (nats per token: per character for a character
    vocabulary, the study's unit), bits per character (the summed loss over the
    characters scored: the unit that compares tokenizers), and the interval of the loss."""
    loss = scores.mean_loss
    low, high = bootstrap_ratio_ci(
        scores.nll, scores.count, bootstrap, seed=seed, confidence=confidence
    )
    return {
        "loss_nats": loss,
        "bits_per_char": scores.bits_per_char,
        "perplexity": math.exp(loss),
        "n_tokens": scores.n_scored,
        "n_chars": scores.n_chars,
        "n_windows": len(scores.starts),
        "ci_low": low,
        "ci_high": high,
    }


def zero_shot_table(
    run: RunDir,
    settings: EvaluateSettings,
    *,
    progress: bool = True,
    log: Log = print,
    ranks: Ranks | None = None,
) -> pd.DataFrame:
    """The tidy zero-shot table: one row per (model, checkpoint iteration, corpus)."""
    with torch_threads(settings.threads):
        device = pick_device(settings.device)
        return _zero_shot_table(run, settings, device, progress, log, ranks)


def _zero_shot_table(
    run: RunDir,
    settings: EvaluateSettings,
    device: torch.device,
    progress: bool,
    log: Log,
    ranks: Ranks | None,
) -> pd.DataFrame:
    models = run.model_names(settings.models)
    cache = CorpusCache(
        settings.data_dir, download=not settings.offline, run=run, corpora_option=True
    )
    # Resolve every corpus (and every checkpoint) before scoring anything: errors come first.
    if settings.corpora:
        corpora = [cache.corpus(ref) for ref in dict.fromkeys(settings.corpora)]
    else:
        corpora = [cache.model_corpus(name) for name in models]
    plan = [
        (name, info)
        for name in models
        for info in select_checkpoints(run.model(name), settings.checkpoints)
    ]
    # Models of several vocabularies are scored on the same characters of each corpus.
    finals = {name: find_checkpoint(run.model(name)) for name in models}
    cache.share_validation(
        corpora,
        [(run.model_vocab(n), val_fraction_of(finals[n], run.model(n))) for n in models],
    )
    if cache.val_from:
        log(
            "the models read several vocabularies: every model is scored on the same "
            "characters of each corpus (the validation splits' shared part)"
        )
    bar = progress_bar(len(plan) * len(corpora), "evaluate", enabled=progress)
    # The checkpoints are scored side by side over torchrun's ranks (one process: in turn).
    score = partial(
        _score_checkpoint, run=run, corpora=corpora, cache=cache, settings=settings, device=device
    )
    done = map_ranks(score, plan, ranks=ranks, log=log, each=lambda i, r: bar.update(len(r[0])))
    bar.close()
    rows: list[dict[str, Any]] = []
    warned: set[tuple[str, str]] = set()
    for i, ((name, _), (scored, engine)) in enumerate(zip(plan, done, strict=True)):
        if i == 0:
            log(engine)
        for row, fingerprint in scored:
            corpus = row["corpus"]
            if row["unk_fraction"] > 0 and (corpus, fingerprint) not in warned:
                warned.add((corpus, fingerprint))
                log(
                    f"warning: {row['unk_fraction']:.3%} of {corpus}'s validation "
                    f"characters are not in model {name}'s vocabulary; they are scored as <unk>"
                )
            rows.append(row)
    return pd.DataFrame(rows, columns=ZERO_SHOT_COLUMNS)


def _score_checkpoint(
    job: tuple[str, CheckpointInfo],
    *,
    run: RunDir,
    corpora: list[Corpus],
    cache: CorpusCache,
    settings: EvaluateSettings,
    device: torch.device,
) -> tuple[list[tuple[dict[str, Any], str]], str]:
    """One checkpoint's row on every corpus (with its vocabulary's fingerprint), and which
    scoring engine it used."""
    name, info = job
    loaded = load_checkpoint(info, device)
    block = loaded.model.config.block_size
    val_fraction = val_fraction_of(info, run.model(name))
    out = []
    for corpus in corpora:
        split = cache.split(corpus, loaded.vocab, val_fraction, block)
        scores = score_windows(
            loaded.model, split.val, batch_size=settings.batch_size, lengths=split.val_lengths
        )
        summary = loss_summary(
            scores, bootstrap=settings.bootstrap, seed=settings.seed, confidence=settings.confidence
        )
        row = {
            "model": name,
            "iteration": info.iteration,
            "corpus": corpus.name,
            "in_domain": corpus.name == name,
            "unk_fraction": split.unk_fraction,
            **summary,
        }
        out.append((row, loaded.vocab.fingerprint))
    return out, cpu_engine.describe(loaded.model)


def final_zero_shot(zs: pd.DataFrame) -> pd.DataFrame:
    """The zero-shot rows of each model's last evaluated iteration."""
    if "iteration" not in zs.columns:
        return zs
    last = zs.groupby("model")["iteration"].transform("max")
    return zs[zs["iteration"] == last]


def comparable_loss(table: pd.DataFrame) -> tuple[str, str]:
    """The column of ``table`` in which corpora compare, and its unit: ``loss_nats``
    (nats per character) when every id is one character, else ``bits_per_char`` (a
    subword model's loss per token depends on how many characters a corpus packs into
    a token; per character it does not)."""
    if "n_tokens" in table.columns and (table["n_tokens"] != table["n_chars"]).any():
        return "bits_per_char", "bits per character"
    return "loss_nats", "nats per character"


def final_matrix(table: pd.DataFrame, value: str = "loss_nats") -> pd.DataFrame:
    """Rows = model, columns = corpus, at each model's latest evaluated checkpoint."""
    latest = table.groupby("model", sort=False)["iteration"].transform("max")
    final = table[table["iteration"] == latest]
    matrix = final.pivot(index="model", columns="corpus", values=value)
    models = list(dict.fromkeys(final["model"]))
    corpora = list(dict.fromkeys(final["corpus"]))
    return matrix.reindex(index=models, columns=corpora)


def study_matrix() -> pd.DataFrame:
    return pd.DataFrame({m: dict(row) for m, row in published.ZERO_SHOT.items()}).T.rename_axis(
        index="model", columns="corpus"
    )


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def zero_shot_markdown(table: pd.DataFrame, settings: EvaluateSettings | None = None) -> str:
    """The matrix laid out like the study's table, with the study's own beside it."""
    settings = settings or EvaluateSettings()
    loss = final_matrix(table)
    low, high = final_matrix(table, "ci_low"), final_matrix(table, "ci_high")
    bpc = final_matrix(table, "bits_per_char")
    latest = table.groupby("model", sort=False)["iteration"].max()
    corpora = list(loss.columns)
    ci = f"{settings.confidence:.0%}".replace("%", " %")
    subword = comparable_loss(table)[0] == "bits_per_char"
    unit = (
        "**nats per token** of each model's vocabulary (a subword token is not one "
        "character: bits per character, below, compare corpora and vocabularies)"
        if subword
        else "**nats per character** (the study's unit)"
    )
    ids = "tokens" if subword else "characters"
    out = [
        "# Zero-shot loss matrix",
        "",
        f"Cross-entropy in {unit} on each corpus's whole validation split, cut into "
        f"disjoint windows of `block_size` {ids} so that every {ids[:-1]} is predicted "
        "exactly once. Rows: model (checkpoint iteration); "
        f"columns: corpus; in brackets the {ci} bootstrap interval over windows "
        f"({settings.bootstrap} resamples); bold: in-domain.",
        "",
    ]
    rows = []
    for model in loss.index:
        cells = [f"{model} (iter {latest[model]})"]
        for corpus in corpora:
            v = loss.loc[model, corpus]
            text = f"{v:.4f}"
            if model == corpus:
                text = f"**{text}**"
            if not math.isnan(low.loc[model, corpus]):
                text += f" [{low.loc[model, corpus]:.3f}, {high.loc[model, corpus]:.3f}]"
            cells.append(text)
        rows.append(cells)
    out += _md_table(["Model ↓ · corpus →", *corpora], rows, ["---"] + ["---:"] * len(corpora))
    out += ["", "Bits per character:", ""]
    rows = [[str(m)] + [f"{bpc.loc[m, c]:.3f}" for c in corpora] for m in bpc.index]
    out += _md_table(["Model ↓ · corpus →", *corpora], rows, ["---"] + ["---:"] * len(corpora))
    unk = table[table["unk_fraction"] > 0].drop_duplicates(["model", "corpus"])
    if len(unk):
        out += ["", "Characters outside a model's vocabulary (scored as `<unk>`):", ""]
        out += [
            f"- model {r.model} on {r.corpus}: {r.unk_fraction:.3%} of the validation split"
            for r in unk.itertuples()
        ]
    if table.groupby("model")["iteration"].nunique().max() > 1:
        out += ["", "## Along training", "", f"Loss (nats per {ids[:-1]}) at each checkpoint:", ""]
        along = table.pivot_table(
            index=["model", "iteration"], columns="corpus", values="loss_nats", sort=False
        )
        rows = [
            [str(m), str(it)] + [f"{along.loc[(m, it), c]:.4f}" for c in corpora]
            for m, it in along.index
        ]
        out += _md_table(
            ["model", "iteration", *corpora], rows, ["---", "---:"] + ["---:"] * len(corpora)
        )
    if subword:  # the study's matrix is of character models, in nats per character
        return "\n".join(out) + "\n"
    ref = study_matrix()
    out += [
        "",
        "## For reference: the study's published matrix",
        "",
        "Copied from the study this project reproduces (nats per character). **Not "
        "comparable number for number**: the study's models were far larger and trained "
        "far longer (tens of thousands of iterations) on its own splits. Compare the "
        "pattern: which corpus each model finds hardest, and how far off-diagonal losses "
        "rise above the diagonal.",
        "",
    ]
    rows = [
        [str(m).capitalize()] + [f"{ref.loc[m, c]:.4f}" for c in ref.columns] for m in ref.index
    ]
    out += _md_table(
        ["Study's model ↓ · corpus →", *[c.capitalize() for c in ref.columns]],
        rows,
        ["---"] + ["---:"] * len(ref.columns),
    )
    return "\n".join(out) + "\n"
