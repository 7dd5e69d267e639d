"""The softmax stage's run and load: every checkpoint of every selected model on the
prompt set of its vocabulary (:func:`~domaingpt.context.prompts.build_prompt_groups`),
the tables and figures under ``softmax/``, and what ``domaingpt softmax`` prints.

The numbers are defined in :mod:`.compute` (next-character statistics) and
:mod:`.hardening` (divergence between checkpoints).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from domaingpt.context.prompts import (
    PromptSet,
    domain_of,
    prepare_prompt_stage,
    tokenizations,
)
from domaingpt.context.rundir import ModelEntry
from domaingpt.context.stage import Results, StageContext
from domaingpt.core.claims import read_claims
from domaingpt.core.distributed import map_ranks
from domaingpt.core.io import read_jsonl, write_jsonl
from domaingpt.core.progress import Log, progress_bar
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, list_checkpoints, load_checkpoint
from domaingpt.stages.softmax.compute import (
    OVERPREDICTED_COLUMNS,
    NextCharStats,
    last_table,
    next_char_stats,
    overpredicted,
    position_table,
    summarise,
    topk_table,
)
from domaingpt.stages.softmax.figures import (
    plot_entropy_positions,
    plot_softmax_curves,
    plot_topk_bars,
)
from domaingpt.stages.softmax.hardening import JS_COLUMNS, hardening, js_rows, read_hardening
from domaingpt.stages.softmax.settings import SoftmaxSettings

#: The CSV tables of ``softmax/``, in the order they are written.
TABLES = ("last", "topk", "positions", "summary", "js", "hardening", "overpredicted")


@dataclass
class _Parts:
    """The tables' pieces, collected checkpoint by checkpoint."""

    last: list[pd.DataFrame] = field(default_factory=list)
    topk: list[pd.DataFrame] = field(default_factory=list)
    positions: list[pd.DataFrame] = field(default_factory=list)
    js: list[dict] = field(default_factory=list)
    over: list[pd.DataFrame] = field(default_factory=list)


@dataclass(frozen=True)
class _Inputs:
    """What every checkpoint of every model is probed with."""

    prompts: PromptSet
    frame: pd.DataFrame
    vocab: AnyVocab
    device: torch.device
    settings: SoftmaxSettings


def _checkpoint_stats(job: tuple[CheckpointInfo, _Inputs]) -> NextCharStats:
    info, inputs = job
    loaded = load_checkpoint(info, inputs.device)
    if loaded.vocab.fingerprint != inputs.vocab.fingerprint:
        raise DomainGPTError(
            f"checkpoint {info.json_path} uses another vocabulary than its model's final "
            "checkpoint; a model's history reads one vocabulary"
        )
    return next_char_stats(
        loaded.model,
        inputs.prompts,
        batch_size=inputs.settings.batch_size,
        device=inputs.device,
    )


def _inspect_model(
    model: ModelEntry,
    history: list[CheckpointInfo],
    stats_of: list[NextCharStats],
    inputs: _Inputs,
    parts: _Parts,
) -> None:
    """Every checkpoint's statistics of one model, as rows added to ``parts``."""
    prompts, frame, vocab, settings = inputs.prompts, inputs.frame, inputs.vocab, inputs.settings
    domains = [domain_of(p.corpus, model.corpus) for p in prompts.prompts]
    k = min(settings.top_k, vocab.size)
    previous: tuple[int, np.ndarray] | None = None
    for info, stats in zip(history, stats_of, strict=True):
        it = info.iteration
        parts.last.append(last_table(stats, frame, domains, model, it))
        parts.topk.append(topk_table(stats, prompts, frame, domains, vocab, k, model, it))
        parts.positions.append(position_table(stats, frame, domains, prompts.max_length, model, it))
        if previous is not None:
            parts.js.extend(js_rows(model.name, domains, previous, it, stats.last_probs))
        previous = (it, stats.last_probs)
        if info is history[-1]:
            parts.over.append(
                overpredicted(stats, prompts, domains, vocab, model, it, settings.overpredicted)
            )


def _assemble(parts: _Parts, settings: SoftmaxSettings, log: Log) -> dict[str, pd.DataFrame]:
    """The stage's tables from the pieces, with the summaries computed from them."""
    tables: dict[str, pd.DataFrame] = {
        "last": pd.concat(parts.last, ignore_index=True),
        "topk": pd.concat(parts.topk, ignore_index=True),
        "positions": pd.concat(parts.positions, ignore_index=True),
        "js": pd.DataFrame(parts.js, columns=JS_COLUMNS),
    }
    tables["summary"] = summarise(tables["last"])
    tables["hardening"] = hardening(
        tables["js"], tables["summary"], settings.epsilon, settings.delta
    )
    over = [o for o in parts.over if len(o)]
    tables["overpredicted"] = (
        pd.concat(over, ignore_index=True) if over else pd.DataFrame(columns=OVERPREDICTED_COLUMNS)
    )
    if not over:
        log("note: no out-of-domain prompts, so no over-predicted characters")
    return tables


def _figure_prompts(prompts: PromptSet, per_corpus: int) -> list[int]:
    chosen, seen = [], {}
    for p in prompts.prompts:
        if seen.get(p.corpus, 0) < per_corpus:
            chosen.append(p.prompt_id)
            seen[p.corpus] = seen.get(p.corpus, 0) + 1
    return chosen


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


def _figures(
    tables: dict[str, pd.DataFrame], frame: pd.DataFrame, figure_ids: set[int], out: Path
) -> dict[str, Path]:
    paths = {
        "entropy_png": plot_softmax_curves(tables["summary"], out / "entropy.png", "entropy"),
        "p_true_png": plot_softmax_curves(tables["summary"], out / "p_true.png", "p_true"),
        "entropy_positions_png": plot_entropy_positions(
            tables["positions"], out / "entropy_positions.png"
        ),
    }
    topk = tables["topk"]
    for model in sorted(topk["model"].unique()):
        t = topk[(topk["model"] == model) & topk["prompt_id"].isin(figure_ids)]
        paths[f"topk_{model}_png"] = plot_topk_bars(
            t, frame, out / f"topk_{_safe(model)}.png", title=f"{model}: top-k next characters"
        )
    return paths


def run(ctx: StageContext, settings: SoftmaxSettings) -> dict[str, Path]:
    """Inspect the softmax of every checkpoint of the selected models; write the tables.

    Files: prompts.jsonl, last.csv (per model, checkpoint, prompt), topk.csv,
    positions.csv (mean entropy and p(true) by model, iteration, prompt corpus, position),
    summary.csv, js.csv, hardening.csv, overpredicted.csv and the figures entropy.png,
    p_true.png, topk_<model>.png, entropy_positions.png.
    """
    run, log, progress, ranks = ctx.run, ctx.log, ctx.progress, ctx.ranks
    groups, device = prepare_prompt_stage(run, settings, log)
    # one group per vocabulary the models read: its own prompts, of the same characters
    inputs = [_Inputs(g.prompts, g.prompts.frame(), g.vocab, device, settings) for g in groups]
    models = [(m, inp) for g, inp in zip(groups, inputs, strict=True) for m in g.models]
    histories = {m.name: list_checkpoints(m.directory / "checkpoints", "iter") for m, _ in models}
    parts = _Parts()
    every = [(info, inp) for model, inp in models for info in histories[model.name]]
    bar = progress_bar(len(every), "softmax", enabled=progress, unit="ckpt")
    # The checkpoints are probed side by side over torchrun's ranks (one process: in turn).
    stats = map_ranks(
        _checkpoint_stats,
        every,
        ranks=ranks,
        log=log,
        each=lambda i, r: bar.update(),
    )
    bar.close()
    for model, inp in models:
        n = len(histories[model.name])
        _inspect_model(model, histories[model.name], stats[:n], inp, parts)
        stats = stats[n:]
    tables = _assemble(parts, settings, log)

    out = ctx.out
    paths: dict[str, Path] = {}
    frame = pd.concat([inp.frame for inp in inputs], ignore_index=True)
    paths["prompts"] = write_jsonl(out / "prompts.jsonl", frame.to_dict("records"))
    for name, df in tables.items():
        paths[name] = ctx.write_table(name, df)
    figure_ids = {i for g in groups for i in _figure_prompts(g.prompts, settings.figure_prompts)}
    paths.update(_figures(tables, frame, figure_ids, out))
    log(
        f"softmax: {len(models)} model(s), {len(groups[0].prompts)} prompts"
        f"{tokenizations(groups)}; wrote {len(paths)} files to {out}"
    )
    return paths


def load(results: Results) -> dict[str, pd.DataFrame]:
    """The tables :func:`run` wrote (plus ``prompts``), keyed by file stem."""
    tables = results.tables()
    tables["hardening"] = read_hardening(results.folder / "hardening.csv")
    tables["prompts"] = pd.DataFrame(read_jsonl(results.folder / "prompts.jsonl"))
    return tables


_DOMAIN_WORDS = {"in": "in-domain", "out": "out-of-domain"}


def summary(written: Mapping[str, Path]) -> str:
    """What ``domaingpt softmax`` prints: where each model hardens, then the claims."""
    lines = []
    for r in read_hardening(Path(written["hardening"])).itertuples():
        when = (
            "not reached"
            if pd.isna(r.hardening_iteration)
            else f"iteration {r.hardening_iteration}"
        )
        where = _DOMAIN_WORDS.get(r.domain, f"{r.domain} prompts")
        lines.append(f"hardening {r.model} ({where}): {when} (of {r.final_iteration})")
    if "claims" in written:
        lines += [c.line() for c in read_claims(Path(written["claims"]))]
    return "\n".join(lines)
