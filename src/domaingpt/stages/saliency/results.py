"""The saliency stage end to end: attribute every prompt through every model, checkpoint
and method, aggregate, test faithfulness, compare zero- and few-shot, and write
``runs/NAME/saliency/``; :func:`read_attributions` reads the raw scores back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from domaingpt.context.prompts import (
    PromptGroup,
    PromptSet,
    domain_of,
    prepare_prompt_stage,
    tokenizations,
)
from domaingpt.context.rundir import ModelEntry, RunDir
from domaingpt.context.stage import Results, StageContext
from domaingpt.core.distributed import Ranks, map_ranks
from domaingpt.core.io import read_jsonl, write_jsonl
from domaingpt.core.progress import Log, progress_bar
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.model.checkpoint import CheckpointInfo, load_checkpoint
from domaingpt.stages.saliency.aggregate import (
    aggregate,
    checkpoint_summary,
    long_frame,
    order_classes,
    per_character,
    per_prompt,
    with_keys,
)
from domaingpt.stages.saliency.agreement import (
    occlude,
    occlusion_agreement,
    occlusion_jobs,
    occlusion_plan,
    summarise_agreement,
)
from domaingpt.stages.saliency.faithfulness import (
    deletion_tests,
    faithfulness_rows,
    method_verdicts,
    replacement_id,
)
from domaingpt.stages.saliency.figures import (
    plot_agreement,
    plot_faithfulness,
    plot_saliency_checkpoints,
    plot_saliency_groups,
)
from domaingpt.stages.saliency.heatmap import HeatmapRow, write_heatmap
from domaingpt.stages.saliency.methods import PromptAttributions, attribute_methods
from domaingpt.stages.saliency.settings import SaliencySettings
from domaingpt.stages.saliency.zero_few import (
    ZeroFewPair,
    zero_few,
    zero_few_answers,
    zero_few_jobs,
    zero_few_pairs,
)

#: The tables every run writes.
TABLES = (
    "per_prompt",
    "by_class",
    "by_relpos",
    "by_distance",
    "by_checkpoint",
    "completeness",
    "faithfulness",
    "verdicts",
)
#: Tables written when there is something to write: ``zero_few*`` with adapted models,
#: ``agreement*`` with occlusion baselines.
OPTIONAL = (
    "zero_few",
    "zero_few_prompts",
    "zero_few_classes",
    "agreement",
    "agreement_prompts",
)
_PARTS = ("class", "relpos", "distance", "pp", "ckpt")


@dataclass
class _Collected:
    """What the attribution loop gathers, made into the stage's tables at the end."""

    attributions: list[dict] = field(default_factory=list)
    parts: dict[str, list[pd.DataFrame]] = field(default_factory=lambda: {k: [] for k in _PARTS})
    completeness: list[dict] = field(default_factory=list)
    faithfulness: list[dict] = field(default_factory=list)
    drops: list[pd.DataFrame] = field(default_factory=list)
    heat: list[dict] = field(default_factory=list)
    scores: dict[tuple[str, int, str], np.ndarray] = field(default_factory=dict)
    occlusion: list[dict] = field(default_factory=list)

    def final_scores(self) -> dict[tuple[str, str], np.ndarray]:
        """Each model's scores at its last explained checkpoint, by (model, method)."""
        last: dict[str, int] = {}
        for model, it, _ in self.scores:
            last[model] = max(last.get(model, it), it)
        return {(m, meth): v for (m, it, meth), v in self.scores.items() if it == last[m]}

    def add(
        self, keys: dict, res: PromptAttributions, prompts: PromptSet, domains: list[str]
    ) -> None:
        """One model, checkpoint and method: raw scores and their aggregates."""
        self.scores[(keys["model"], keys["iteration"], keys["method"])] = res.values
        for i, p in enumerate(prompts.prompts):
            self.attributions.append(
                {
                    **keys,
                    "prompt_id": p.prompt_id,
                    "prompt_corpus": p.corpus,
                    "domain": domains[i],
                    "log_p_true": float(res.log_p[i]),
                    "delta": None if res.delta is None else float(res.delta[i]),
                    "ig_steps": None if res.steps is None else int(res.steps[i]),
                    "raw": _round(res.values[i, : p.length]),
                }
            )
        long = long_frame(res.values, prompts, domains)
        for kind, by in (("class", "char_class"), ("relpos", "relpos"), ("distance", "distance")):
            self.parts[kind].append(with_keys(aggregate(long, by), keys))
        pp = per_prompt(res.values, res.log_p, prompts, domains)
        self.parts["pp"].append(with_keys(pp, keys))
        self.parts["ckpt"].append(with_keys(checkpoint_summary(pp), keys))

    def tables(self, settings: SaliencySettings) -> dict[str, pd.DataFrame]:
        def cat(kind: str) -> pd.DataFrame:
            parts = self.parts[kind]
            return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()

        drops = pd.concat(self.drops, ignore_index=True) if self.drops else pd.DataFrame()
        return {
            "per_prompt": cat("pp"),
            "by_class": order_classes(cat("class")),
            "by_relpos": cat("relpos"),
            "by_distance": cat("distance"),
            "by_checkpoint": cat("ckpt"),
            "completeness": pd.DataFrame(self.completeness),
            "faithfulness": pd.DataFrame(self.faithfulness),
            "verdicts": method_verdicts(drops, n_boot=settings.bootstrap, seed=settings.seed),
        }


def run(ctx: StageContext, settings: SaliencySettings) -> dict[str, Path]:
    """Attribute, aggregate, test faithfulness and write ``runs/NAME/saliency/``.

    Files: attributions.jsonl (per model, checkpoint, method, prompt: raw scores),
    prompts.jsonl, per_prompt.csv, by_class.csv, by_relpos.csv, by_distance.csv,
    by_checkpoint.csv, completeness.csv (IG), faithfulness.csv, verdicts.csv,
    zero_few.csv, zero_few_prompts.csv and zero_few_classes.csv (when adapted models
    exist), agreement.csv, agreement_prompts.csv and occlusion.jsonl (with occlusion
    baselines), heatmap.html and the figures by_class.png, by_relpos.png,
    by_checkpoint.png, faithfulness.png, agreement.png.
    """
    run, log, progress, ranks = ctx.run, ctx.log, ctx.progress, ctx.ranks
    groups, device = prepare_prompt_stage(run, settings, log)
    # Adapted models are resolved first, so that a missing record fails before hours of work.
    work = [_plan(run, g, settings, log) for g in groups]
    bar = progress_bar(sum(w.steps for w in work), "saliency", enabled=progress, unit="step")
    got = _Collected()
    tables: dict[str, list[pd.DataFrame]] = {}
    workers = _workers(settings, device)
    for w in work:  # one vocabulary's models and prompts at a time
        for name, df in _explain_group(w, got, settings, device, workers, bar, ranks, log).items():
            tables.setdefault(name, []).append(df)
    bar.close()
    merged = {name: pd.concat(dfs, ignore_index=True) for name, dfs in tables.items()}
    if "agreement_prompts" in merged:
        merged = {"agreement": summarise_agreement(merged["agreement_prompts"]), **merged}
    frame = pd.concat([g.prompts.frame() for g in groups], ignore_index=True)
    paths = _write(ctx, {**got.tables(settings), **merged}, got, frame)
    log(
        f"saliency: {sum(len(g.models) for g in groups)} model(s), {len(groups[0].prompts)} "
        f"prompts{tokenizations(groups)}, methods {', '.join(settings.methods)}; wrote "
        f"{len(paths)} files to {ctx.out}"
    )
    return paths


@dataclass
class _Group:
    """One vocabulary's share of the stage: its models' checkpoints to explain, the
    adapted models to compare and the occlusions to run."""

    group: PromptGroup
    plan: dict[str, list[CheckpointInfo]]
    pairs: list[ZeroFewPair] | None
    occlusions: list
    steps: int


def _plan(run: RunDir, group: PromptGroup, settings: SaliencySettings, log: Log) -> _Group:
    models, prompts = group.models, group.prompts
    plan = {m.name: _checkpoints(m, settings.checkpoints) for m in models}
    pairs = zero_few_pairs(run, models, prompts, settings, log)
    explained = {info.json_path for infos in plan.values() for info in infos}
    jobs = sum(len(v) for v in plan.values()) + len(zero_few_jobs(pairs or [], explained))
    steps = jobs * len(settings.methods) + occlusion_jobs(models, plan, settings)
    occlusions = occlusion_plan(models, plan, settings) if settings.occlusion else []
    return _Group(group, plan, pairs, occlusions, steps)


def _explain_group(
    w: _Group,
    got: _Collected,
    settings: SaliencySettings,
    device: torch.device,
    workers: int,
    bar: Any,
    ranks: Ranks,
    log: Log,
) -> dict[str, pd.DataFrame]:
    """Explain one group's checkpoints into ``got``; its agreement and zero- vs few-shot
    tables."""
    models, vocab, prompts = w.group.models, w.group.vocab, w.group.prompts
    heat_ids = _heatmap_prompts(prompts, settings.heatmap_prompts)
    baselines: dict[Path, list[str]] = {}
    for o in w.occlusions:
        baselines.setdefault(o.info.json_path, []).append(o.baseline)
    jobs = [
        _Explain(
            model,
            info,
            info is w.plan[model.name][-1],
            tuple(baselines.get(info.json_path, ())),
        )
        for model in models
        for info in w.plan[model.name]
    ]
    # Every checkpoint is loaded once and explained (every method, its occlusions, the
    # deletion test) side by side over torchrun's ranks, and in each process on worker
    # threads of one torch thread each; the tables are made here, in the jobs' order.
    explain = partial(
        _explain,
        prompts=prompts,
        settings=settings,
        device=device,
        replacement=replacement_id(vocab, settings.deletion_replacement),
        vocab=vocab,
    )
    done = map_ranks(
        explain, jobs, ranks=ranks, log=log, workers=workers, each=lambda i, r: bar.update(r.steps)
    )
    occluded: dict[tuple[Path, str], np.ndarray] = {}
    known: dict[Path, dict[str, PromptAttributions]] = {}
    for job, result in zip(jobs, done, strict=True):
        domains = [domain_of(p.corpus, job.model.corpus) for p in prompts.prompts]
        known[job.info.json_path] = {e.method: e.res for e in result.methods}
        for baseline, occ in result.occluded.items():
            occluded[(job.info.json_path, baseline)] = occ
        for e in result.methods:
            keys = {"model": job.model.name, "iteration": job.info.iteration, "method": e.method}
            got.add(keys, e.res, prompts, domains)
            if e.res.f_0 is not None:
                got.completeness.append(_completeness(keys, e.res, e.res.f_0, settings))
            if job.final:
                _record_deletions(got, keys, e.drops, settings)
                got.heat += _heat_rows(keys, prompts, domains, e.res, heat_ids)
    tables: dict[str, pd.DataFrame] = {}
    if settings.occlusion:
        agree, occlusion = occlusion_agreement(
            w.occlusions,
            [occluded[(o.info.json_path, o.baseline)] for o in w.occlusions],
            prompts,
            got.scores,
            settings.methods,
        )
        got.occlusion += occlusion
        tables["agreement_prompts"] = agree
    if w.pairs is not None:
        tables["zero_few"], zf = zero_few(
            w.pairs, settings, device, bar, ranks, known=known, workers=workers
        )
        tables["zero_few_prompts"], tables["zero_few_classes"] = zero_few_answers(
            w.pairs, zf, got.final_scores(), models, settings.methods
        )
    return tables


def _workers(settings: SaliencySettings, device: torch.device) -> int:
    """Checkpoints explained at once in a process: on a CPU one per thread, each on one
    torch thread (independent models in parallel beat one model on every thread, and
    under load by far: threads waiting for a descheduled sibling spin); elsewhere one."""
    if torch.device(device).type != "cpu":
        return 1
    return settings.threads or torch.get_num_threads()


def _checkpoints(model: ModelEntry, which: str) -> list[CheckpointInfo]:
    history = model.checkpoints
    return history if which == "all" else history[-1:]


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def _completeness(
    keys: dict, res: PromptAttributions, f_0: np.ndarray, settings: SaliencySettings
) -> dict:
    """Integrated gradients' completeness gaps for one model, checkpoint and method."""
    assert res.delta is not None and res.steps is not None
    gap = np.abs(res.log_p - f_0)
    delta = np.abs(res.delta)
    return {
        **keys,
        "n": len(res.log_p),
        "ig_steps": settings.ig_steps,
        "ig_method": settings.ig_method,
        "tolerance": settings.ig_tolerance,
        "n_refined": int((res.steps > settings.ig_steps).sum()),
        "max_steps_used": int(res.steps.max()),
        "n_above_tolerance": int((delta > settings.ig_tolerance).sum()),
        "max_abs_delta": float(delta.max()),
        "mean_abs_delta": float(delta.mean()),
        "mean_abs_f_x_minus_f_baseline": float(gap.mean()),
        "relative_error": float(delta.mean() / max(gap.mean(), 1e-12)),
    }


@dataclass(frozen=True)
class _Explain:
    """One checkpoint to explain with every method (a job of :func:`map_ranks`)."""

    model: ModelEntry
    info: CheckpointInfo
    final: bool  # the model's last explained checkpoint: the deletion test runs on it
    occlude: tuple[str, ...] = ()  # occlusion baselines run at this checkpoint


@dataclass(frozen=True)
class _Explained:
    """One method's attributions at one checkpoint, and what is computed from them."""

    method: str
    res: PromptAttributions  # with integrated gradients' baseline log p(true), f_0
    drops: list[pd.DataFrame]  # the deletion test at each k (final checkpoint only)


@dataclass(frozen=True)
class _Checkpoint:
    """Everything computed at one checkpoint."""

    methods: list[_Explained]
    occluded: dict[str, np.ndarray]  # occlusion scores by baseline

    @property
    def steps(self) -> int:
        return len(self.methods) + len(self.occluded)


def _explain(
    job: _Explain,
    *,
    prompts: PromptSet,
    settings: SaliencySettings,
    device: torch.device,
    replacement: int,
    vocab: AnyVocab,
) -> _Checkpoint:
    """Every method's attributions at one checkpoint (with IG's baseline), the deletion
    test on a model's last checkpoint and the checkpoint's occlusions, on the model
    loaded once."""
    # Attributions differentiate with respect to the inputs only: frozen weights spare
    # autograd their gradients (the same attributions, bit for bit).
    model = load_checkpoint(job.info, device).model.requires_grad_(False)
    methods = [settings.method(name, model) for name in settings.methods]
    results = attribute_methods(methods, prompts, batch_size=settings.batch_size, device=device)
    drops: dict[tuple[str, int], pd.DataFrame] = {}
    if job.final:
        drops = deletion_tests(
            model,
            prompts,
            {name: res.values for name, res in zip(settings.methods, results, strict=True)},
            settings.deletion_k,
            replacement_id=replacement,
            draws=settings.deletion_draws,
            seed=settings.seed,
            batch_size=max(settings.batch_size, 128),
            device=device,
        )
    out = []
    for name, res in zip(settings.methods, results, strict=True):
        mine = []
        for k in settings.deletion_k if job.final else ():
            d = drops[(name, k)]
            d.insert(0, "k", k)
            d.insert(0, "method", name)
            d.insert(0, "model", job.model.name)
            mine.append(d)
        out.append(_Explained(name, res, mine))
    occluded = {
        b: occlude(model, b, prompts, vocab, device, settings.batch_size) for b in job.occlude
    }
    return _Checkpoint(out, occluded)


def _record_deletions(
    got: _Collected, keys: dict, drops: list[pd.DataFrame], settings: SaliencySettings
) -> None:
    """The deletion test's per-prompt drops at each ``k``, and the per-model verdicts."""
    for k, d in zip(settings.deletion_k, drops, strict=True):
        got.drops.append(d)
        row_keys = {
            "model": keys["model"],
            "method": keys["method"],
            "k": k,
            "iteration": keys["iteration"],
        }
        got.faithfulness.append(
            faithfulness_rows(d, row_keys, n_boot=settings.bootstrap, seed=settings.seed)
        )


def _heatmap_prompts(prompts: PromptSet, per_corpus: int) -> list[int]:
    """The first ``per_corpus`` prompts of each corpus: the heatmap's rows."""
    chosen, seen = [], {}
    for i, p in enumerate(prompts.prompts):
        if seen.get(p.corpus, 0) < per_corpus:
            chosen.append(i)
            seen[p.corpus] = seen.get(p.corpus, 0) + 1
    return chosen


def _heat_rows(
    keys: dict,
    prompts: PromptSet,
    domains: list[str],
    res: PromptAttributions,
    heat_ids: list[int],
) -> list[dict]:
    rows = []
    chars, n_chars = per_character(res.values, prompts)
    for i in heat_ids:
        p = prompts.prompts[i]
        rows.append(
            {
                "model": keys["model"],
                "iteration": keys["iteration"],
                "method": keys["method"],
                "prompt_id": p.prompt_id,
                "corpus": p.corpus,
                "domain": domains[i],
                "text": p.text,
                "target": p.target,
                "values": chars[i, : n_chars[i]].tolist(),
                "log_p_true": float(res.log_p[i]),
            }
        )
    return rows


def _write_heatmap(heat: list[dict], path: Path) -> Path:
    rows = [
        HeatmapRow(
            label=f"{h['model']} (iteration {h['iteration']}) · {h['method']} · prompt "
            f"{h['prompt_id']} from {h['corpus']} ({h['domain']}-domain) · "
            f"log p(true) = {h['log_p_true']:.3f}",
            text=h["text"][-len(h["values"]) :] if h["text"] else "",
            values=h["values"],
            target=h["target"],
            group=f"{h['model']} · {h['method']}",
        )
        for h in heat
    ]
    return write_heatmap(
        rows,
        path,
        title="Saliency: attribution of log p(true next character) to each input character",
        note=(
            "Each character is tinted by its attribution, scaled per prompt (red supports the "
            "true next character, blue opposes it; grad_norm is unsigned). Hover a character "
            "for its raw score and share. The boxed character after each prompt is the target."
        ),
    )


def _figures(tables: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
    paths: dict[str, Path] = {}
    if not tables["by_class"].empty:
        paths["by_class_png"] = plot_saliency_groups(
            tables["by_class"], "char_class", out / "by_class.png", "Attribution by character class"
        )
        paths["by_relpos_png"] = plot_saliency_groups(
            tables["by_relpos"],
            "relpos",
            out / "by_relpos.png",
            "Attribution by position relative to the target",
        )
        paths["by_checkpoint_png"] = plot_saliency_checkpoints(
            tables["by_checkpoint"], out / "by_checkpoint.png"
        )
    if not tables.get("agreement", pd.DataFrame()).empty:
        paths["agreement_png"] = plot_agreement(tables["agreement"], out / "agreement.png")
    if not tables["faithfulness"].empty:
        paths["faithfulness_png"] = plot_faithfulness(
            tables["faithfulness"], out / "faithfulness.png"
        )
    return paths


def _write(
    ctx: StageContext,
    tables: dict[str, pd.DataFrame],
    got: _Collected,
    prompts: pd.DataFrame,
) -> dict[str, Path]:
    """Every file of the stage; a ``zero_few.csv`` of an earlier run with adapted models
    is removed when this run has none (it would describe other models)."""
    out = ctx.out
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {
        "prompts": write_jsonl(out / "prompts.jsonl", prompts.to_dict("records")),
        "attributions": write_jsonl(out / "attributions.jsonl", got.attributions),
    }
    for name in OPTIONAL:  # an earlier run's table would describe other models or settings
        if name not in tables:
            (out / f"{name}.csv").unlink(missing_ok=True)
    if got.occlusion:
        paths["occlusion"] = write_jsonl(out / "occlusion.jsonl", got.occlusion)
    else:
        (out / "occlusion.jsonl").unlink(missing_ok=True)
    for name, df in tables.items():
        paths[name] = ctx.write_table(name, df)
    paths["heatmap"] = _write_heatmap(got.heat, out / "heatmap.html")
    paths.update(_figures(tables, out))
    return paths


def read_attributions(results: Results) -> pd.DataFrame:
    """The raw scores, one row per model/checkpoint/method/prompt with the list of scores
    (``attributions.jsonl``, the stage's largest file: not one of its tables)."""
    return pd.DataFrame(read_jsonl(results.folder / "attributions.jsonl"))
