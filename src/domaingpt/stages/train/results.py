"""The train stage: one model per corpus of the study, with the run's vocabulary (or
imported: a model trained elsewhere, with its own)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domaingpt.context.rundir import read_run_json, study_order
from domaingpt.context.stage import Results, StageContext
from domaingpt.context.training import ModelJob, encode_for_training, train_model
from domaingpt.context.vocabulary import run_vocabulary, save_vocab
from domaingpt.core.config import RUNTIME_TRAIN_KEYS, RunConfig, from_dict, load_preset
from domaingpt.core.distributed import Job, local_context, map_ranks, on_every_rank
from domaingpt.core.io import read_jsonl
from domaingpt.core.limits import check_processes
from domaingpt.core.loggers import require_loggers
from domaingpt.core.processes import auto_processes
from domaingpt.core.progress import progress_bar
from domaingpt.core.replicates import replicate_name, replicate_seed
from domaingpt.core.settings import StageSettings, setting
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.interop.external import import_external, source_digest, study_tokenizer
from domaingpt.model.checkpoint import list_checkpoints
from domaingpt.training.memory import training_flops
from domaingpt.training.modeldir import (
    ModelState,
    damaged_record,
    model_outputs,
    model_state,
    run_record,
)


@dataclass(frozen=True)
class TrainSettings(StageSettings):
    """The training config of every model of a study: a preset and its overrides.

    In a study file these are ``[study] preset`` and the ``[model]``, ``[train]`` and
    ``[data]`` tables (see :mod:`domaingpt.core.config`); the cache key is the resolved
    config without the keys that only change how fast training runs.

    ``[train] seeds = N`` trains N replicate models per corpus (default 1): replicate r
    of every corpus starts from the same initial weights (seed ``train.seed + r``), so
    the domains stay paired within a replicate, and replicates differ in initial weights
    and batch order. It is a property of the study, not of a model: a model's own
    config (and so whether it is retrained) does not depend on it.

    ``[train] processes = N`` trains the models side by side in N worker processes,
    each on its share of the cores (:mod:`domaingpt.core.processes`); 0 (the default)
    is automatic (:func:`~domaingpt.core.processes.auto_processes`): under the
    ``domaingpt`` program, one process per core when the study trains two models or more
    on a CPU with enough work to pay for the workers' start-up, else 1 (one model after
    the other in this process). Like ``train.threads`` it changes how fast training runs
    and the thread count a model is trained with, never whether a model is retrained.

    ``[train] vocabulary`` is what the models trained here read: ``"auto"`` (the
    default) the subword tokenizer of the models trained elsewhere when they all read
    one (:func:`~domaingpt.interop.external.study_tokenizer`), else the characters of
    the study's corpora; ``"characters"`` the characters whatever the imported models
    read; a corpus of ``[study] models``: the tokenizer of the model imported for it
    (characters, when that model reads characters). Each imported model keeps its own
    vocabulary.
    """

    preset: str = setting("cpu-mini", "training preset: a shipped name or a .toml file")
    model: dict = setting({}, "[model] overrides", cli=False)
    train: dict = setting({}, "[train] overrides", cli=False)
    data: dict = setting({}, "[data] overrides", cli=False)
    models: dict = setting(
        {}, "corpus -> a model trained elsewhere, imported instead (interop.external)", cli=False
    )
    _config: Any = field(default=None, init=False, repr=False, compare=False)
    _replicates: int = field(default=1, init=False, repr=False, compare=False)
    _processes: int = field(default=0, init=False, repr=False, compare=False)
    _vocabulary: str = field(default="auto", init=False, repr=False, compare=False)

    def check(self) -> None:
        super().check()
        train = dict(self.train)
        replicates = train.pop("seeds", 1)
        processes = check_processes("train.processes", train.pop("processes", 0))
        vocabulary = train.pop("vocabulary", "auto")
        if vocabulary not in (*VOCABULARIES, *self.models):
            known = ", ".join(
                [*VOCABULARIES, *(f"{c!r} (its imported model's)" for c in self.models)]
            )
            raise ConfigError(f"train.vocabulary = {vocabulary!r}: give one of {known}")
        if not isinstance(replicates, int) or isinstance(replicates, bool) or replicates < 1:
            raise ConfigError(
                f"train.seeds (replicate models per corpus) must be a whole number of at "
                f"least 1, got {replicates!r}"
            )
        if replicates > MAX_REPLICATES:
            raise ConfigError(
                f"train.seeds = {replicates}: at most {MAX_REPLICATES} replicate models per corpus"
            )
        overrides = {"model": self.model, "train": train, "data": self.data}
        cfg = from_dict(overrides, load_preset(self.preset), source=f"preset {self.preset}")
        cfg = RunConfig(cfg.model, cfg.train, cfg.data, preset=Path(self.preset).stem)
        object.__setattr__(self, "_config", cfg.validate())
        object.__setattr__(self, "_replicates", replicates)
        object.__setattr__(self, "_processes", processes)
        object.__setattr__(self, "_vocabulary", vocabulary)

    @property
    def config(self) -> RunConfig:
        return self._config

    @property
    def replicates(self) -> int:
        return self._replicates

    @property
    def processes(self) -> int:
        """``[train] processes``: worker processes for the models (0: automatic)."""
        return self._processes

    @property
    def vocabulary(self) -> str:
        """``[train] vocabulary``: what the models trained here read."""
        return self._vocabulary

    def replicate_config(self, replicate: int) -> RunConfig:
        """The config of replicate ``replicate``'s models: the study's, with its seed."""
        cfg = self.config
        seed = replicate_seed(cfg.train.seed, replicate)
        return replace(cfg, train=replace(cfg.train, seed=seed)) if replicate else cfg

    def memory_setting(self, name: str) -> tuple[str, int | None]:
        return f"{name}.batch_size", self.config.train.batch_size

    def check_study(self, corpora: list[str]) -> None:
        # A logger's missing extra, named before the study's first stage writes anything.
        require_loggers(self.config.train.loggers)

    def key_dict(self) -> dict[str, Any]:
        cfg = self.config.to_dict()
        cfg["train"] = {k: v for k, v in cfg["train"].items() if k not in RUNTIME_TRAIN_KEYS}
        if self.replicates != 1:  # one replicate keeps the key of a run made before them
            cfg["replicates"] = self.replicates
        if self.vocabulary != "auto":  # "auto" keeps the key of a run made before it
            cfg["vocabulary"] = self.vocabulary
        if self.models:  # a changed file of a model trained elsewhere imports it again
            cfg["models"] = {c: [s, source_digest(s)] for c, s in sorted(self.models.items())}
        return cfg


#: What ``[train] vocabulary`` may say.
VOCABULARIES = ("auto", "characters")
#: Replicate models per corpus at most: each is a whole training run.
MAX_REPLICATES = 64


_WHAT = {
    ModelState.ABSENT: "training",
    ModelState.PARTIAL: "continuing",
    ModelState.DIFFERENT: "configuration changed: retraining",
    ModelState.FINISHED: "retraining (--force)",
    ModelState.DAMAGED: "its run.json is missing or unreadable: retraining (--force)",
}


def _what(state: ModelState, model_dir: Path, cfg: RunConfig) -> str:
    if state == ModelState.EXTEND:
        before = read_run_json(model_dir).section("train")["max_iters"]
        return f"extending from {before} to {cfg.train.max_iters} iterations"
    return f"{_WHAT[state]}, {cfg.train.max_iters} iterations"


def _train_model(job: ModelJob, here: Job) -> None:
    """Train one model (a job of :func:`distributed.map_ranks`: on this rank's device, as
    one process; under ``ranks = "ddp"`` every rank runs it together)."""
    ddp = here.mode == "ddp"
    if here.is_worker:  # a worker's bar would interleave with the main rank's
        job = replace(job, progress=False)
    if here.is_worker and ddp:  # said once, by the main rank
        job = replace(job, what="")
    dist = None if ddp else local_context(job.config.train.device)
    train_model(job, here.log, dist)


def run(ctx: StageContext, settings: TrainSettings) -> dict[str, Path]:
    """Train one model per corpus of the study (each resumed, extended, skipped or
    retrained as its directory says); the models trained here share the run's
    vocabulary, a model trained elsewhere keeps its own.

    Every corpus is encoded and its split checked before anything is written, so a
    corpus too short to train on leaves the run's vocabulary as it was. Under torchrun
    the models are trained side by side, one per rank (``ranks = "jobs"``), or one after
    the other by every rank together (``ranks = "ddp"``); on one machine, side by side
    in worker processes (``[train] processes``, automatic by default). The loggers were
    checked before the study's first stage (:meth:`TrainSettings.check_study`).
    """
    if not ctx.corpora:
        raise ConfigError("the train stage trains the study's corpora; none were given")
    cfg = settings.config
    tokenizer = None  # the characters of the corpora, or an imported model's tokenizer
    if settings.vocabulary != "characters":
        of = None if settings.vocabulary == "auto" else settings.vocabulary
        tokenizer = study_tokenizer(settings.models, ctx.log, of=of)
    vocab, vocab_corpora = run_vocabulary(
        ctx.run, ctx.corpora, ctx.log, retrains_all=True, tokenizer=tokenizer
    )
    plan, imports = [], []
    splits: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for replicate in range(settings.replicates):  # replicate 0 of every corpus first
        cfg_r = settings.replicate_config(replicate)
        for corpus in ctx.corpora:
            if corpus.name in settings.models:  # trained elsewhere: one model, replicate 0
                if replicate == 0:
                    imports.append((corpus, settings.models[corpus.name]))
                continue
            name = replicate_name(corpus.name, replicate)
            model_dir = ctx.run.model(name)
            record = run_record(cfg_r, corpus.name, corpus.sha256, vocab, corpus.path)
            state = model_state(model_dir, record, cfg.train.max_iters)
            if state == ModelState.DAMAGED and not ctx.force:  # never deleted unasked
                raise DomainGPTError(
                    f"{damaged_record(model_dir)}, so the model in {model_dir} cannot be "
                    "checked against this study; restore the file, or retrain the study's "
                    "models with --force train"
                )
            if state == ModelState.FINISHED and not ctx.force:
                plan.append((corpus, name, cfg_r, state, None))
                continue
            if corpus.name not in splits:  # one encoding per corpus, whatever the replicates
                splits[corpus.name] = encode_for_training(ctx.run, corpus, vocab, cfg, ctx.log)
            plan.append((corpus, name, cfg_r, state, splits[corpus.name]))
    if vocab_corpora is not None:
        save_vocab(ctx.run, vocab, vocab_corpora)
    for corpus, source in imports:
        ctx.log(f"model of {corpus.name}: trained elsewhere, importing {source}")
        import_external(ctx.run, corpus, source, log=ctx.log)
    jobs = []
    for i, (corpus, name, cfg_r, state, split) in enumerate(plan, start=1):
        prefix = f"model {i}/{len(plan)} ({name})"
        if split is None:
            ctx.log(f"{prefix}: finished earlier with this configuration, skipped")
            continue
        model_dir = ctx.run.model(name)
        jobs.append(
            ModelJob(
                corpus,
                split,
                vocab,
                cfg_r,
                model_dir,
                resume=True,  # the state says what is there: continued, or replaced
                overwrite=state in (ModelState.DIFFERENT, ModelState.DAMAGED) or ctx.force,
                progress=ctx.progress,
                what=_what(state, model_dir, cfg_r),
                prefix=prefix,
            )
        )
    if ctx.ranks.mode == "ddp":
        for job in jobs:
            on_every_rank(_train_model, job, ranks=ctx.ranks, log=ctx.log, with_job=True)
    else:
        # Decided on every model of the study, finished or not: a model resumed alone is
        # trained on the same share of the cores as beside the others (the same bits).
        flops = sum(training_flops(c.model, c.train, vocab.size) for _, _, c, _, _ in plan)
        processes = auto_processes(settings.processes, len(plan), cfg.train.device, flops)
        side_by_side = processes > 1 and len(jobs) > 1 and ctx.ranks.world == 1
        # A worker process shows no bar of its own: one bar counts the finished models.
        bar = progress_bar(len(jobs), "models", enabled=ctx.progress and side_by_side)
        map_ranks(
            _train_model,
            jobs,
            ranks=ctx.ranks,
            log=ctx.log,
            each=lambda i, r: bar.update(1),
            with_job=True,
            processes=processes,
            what="models",
        )
        bar.close()
    out: dict[str, Path] = {"vocab": ctx.run.vocab_path}
    names = [replicate_name(c.name, 0) for c in ctx.corpora] + [n for _, n, _, _, _ in plan]
    for name in dict.fromkeys(names):
        model_dir = ctx.run.model(name)
        for f in model_outputs(model_dir):
            out[f"{name}/{f.relative_to(model_dir).as_posix()}"] = f
    return out


def imported_from(model_dir: Path) -> str | None:
    """Where a model trained elsewhere came from, in words (None: trained here)."""
    source = read_run_json(model_dir).imported_from
    if not source:
        return None
    if not isinstance(source, dict):
        return str(source)
    if source.get("format") == "nanogpt":
        files = source.get("checkpoints") or []
        names = ", ".join(
            f"{c['path']} (iter_num {c['iter_num']}, sha256 {c['sha256'][:12]}…)" for c in files
        )
        return f"nanoGPT checkpoints {names}"
    what = {"hf": "a Hugging Face model", "domaingpt": "a domaingpt model"}
    return f"{what.get(source.get('format'), 'a model')} at {source.get('path')}"


def _imported_summary(name: str, model_dir: Path) -> dict[str, Any] | None:
    """A model trained elsewhere has no metrics.jsonl: its summary row comes from the
    validation losses its checkpoints recorded (nanoGPT's best_val_loss), if any."""
    if imported_from(model_dir) is None:
        return None
    history = list_checkpoints(model_dir / "checkpoints", "iter")
    if not history:
        return None
    return {
        "model": name,
        "iterations": history[-1].iteration,
        "initial_val_loss": history[0].meta.val_loss,
        "final_val_loss": history[-1].meta.val_loss,
        "train_seconds": None,
        "finished": True,
    }


def load(results: Results) -> dict[str, pd.DataFrame]:
    """The training results of every model of a run as tidy tables.

    ``metrics``: model, iter, train_loss, val_loss, lr, tokens_per_s, elapsed,
    val_loss_full (last row of each model). ``samples``: model, iter, val_loss, prompt,
    seed, temperature, text. ``summary``: one row per model (iterations, final val loss
    on the whole split, train time).
    """
    run = results.run
    metrics, samples, summary = [], [], []
    for name in study_order(run.trained_models()):  # the study's order, then the rest
        d = run.model(name)
        rows = read_jsonl(d / "metrics.jsonl") if (d / "metrics.jsonl").exists() else []
        metrics += [{"model": name, **r} for r in rows]
        if (d / "samples.jsonl").exists():
            samples += [{"model": name, **r} for r in read_jsonl(d / "samples.jsonl")]
        if not rows:
            imported = _imported_summary(name, d)
            if imported:
                summary.append(imported)
        if rows:
            last = rows[-1]
            first = rows[0]
            summary.append(
                {
                    "model": name,
                    "iterations": last["iter"],
                    "initial_val_loss": first.get("val_loss"),
                    "final_val_loss": last.get("val_loss_full", last.get("val_loss")),
                    "train_seconds": last.get("elapsed"),
                    "finished": "val_loss_full" in last,
                }
            )
    return {
        "metrics": pd.DataFrame(metrics),
        "samples": pd.DataFrame(samples),
        "summary": pd.DataFrame(summary),
    }
