"""Few-shot adaptation: does a partly trained model move to a new domain more easily?

For every ordered pair (source model, target corpus ≠ source) a model is trained for
``iters`` more iterations on the target corpus, from three start points:

``final``    the source model's final history checkpoint;
``early``    an early history checkpoint (default: the one nearest 10 % of training);
``scratch``  a freshly initialised model of the same shape (the baseline: what the
             same budget buys without any pre-training).

Training is :class:`domaingpt.train.Trainer` (the same step as ``domaingpt train``) with a
fresh AdamW, a short warm-up and a cosine decay over the ``iters`` iterations; a seed sets
the batches (and, for ``scratch``, the initial weights). At each step of ``schedule`` the
target-corpus and source-corpus validation losses are recorded on ``eval_windows``
windows spread evenly over each split (the same windows at every step, so a curve is
smooth and cheap); after the last step both are computed again on the **whole** split,
and those numbers feed the summary. Forgetting is the rise of the source loss from step 0
to the last step, on the curve's windows.

Layout under ``runs/NAME/adapt/``::

    <source>__to__<target>/<start>/seed<k>/
        checkpoints/iter-<iters>.{json,safetensors}   the adapted model
        curve.jsonl                                   its rows of curves.csv
        samples.jsonl                                 a fixed-seed text sample
    curves.csv     source, target, start, seed, step, target_loss, source_loss
    final.csv      whole-split losses after the last step, one row per run
    summary.csv    per pair: final target loss mean ± std per start, early − final, verdict
    summary.md     the same as a table, and the verdicts
    samples.jsonl  every adapted model's sample
    curves.png     target loss against step, per pair; forgetting.png: source loss

A run whose final checkpoint exists with the same settings is not redone, so an
interrupted ``domaingpt adapt`` continues where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from domaingpt.core.config import from_dict
from domaingpt.core.device import pick_device
from domaingpt.core.io import atomic_write_text, read_jsonl, write_json, write_jsonl
from domaingpt.core.progress import Log, progress_bar, stderr_log
from domaingpt.core.rundir import RunDir, run_config_of
from domaingpt.core.settings import StageSettings, finite, setting
from domaingpt.core.statistics import bootstrap_mean_ci, sign_test
from domaingpt.core.threads import torch_threads
from domaingpt.data.corpus import Corpus
from domaingpt.data.splits import CorpusCache, Split
from domaingpt.data.vocab import Vocab
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from domaingpt.model.generate import generate_text
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import score_windows
from domaingpt.stages.adapt.figures import plot_adaptation_curves
from domaingpt.training.trainer import Trainer

START_POINTS = ("final", "early", "scratch")
CURVE_COLUMNS = [
    "source",
    "target",
    "start",
    "seed",
    "step",
    "target_loss",
    "source_loss",
    "source_iteration",
]
FINAL_COLUMNS = [
    "source",
    "target",
    "start",
    "seed",
    "source_iteration",
    "steps",
    "target_loss",
    "source_loss",
    "target_loss_step0",
    "source_loss_step0",
    "forgetting",
]


@dataclass(frozen=True)
class AdaptSettings(StageSettings):
    """What ``domaingpt adapt`` runs; built from the CLI or an ``[adapt]`` table.

    ``lr = 0`` takes the source model's ``train.lr``; ``min_lr = 0`` takes ``lr / 10``;
    ``batch_size = 0`` the source model's. ``early`` is ``"auto"`` (the history checkpoint
    nearest ``early_fraction`` of training, iteration 0 and the final one excluded) or an
    iteration. ``pairs`` are ``"source:target"``; empty means every ordered pair of the
    run's trained models.
    """

    SECTION = "adapt"
    iters: int = setting(200, "adaptation iterations (the study: 200)")
    early: str | int = setting(
        "auto", "early checkpoint iteration, or auto: the one nearest early_fraction of training"
    )
    early_fraction: float = setting(0.1, "where 'auto' looks for the early checkpoint", cli=False)
    seeds: int = setting(3, "seeds per start point")
    seed: int = setting(0, "first seed (seeds used: seed, seed + 1, ...)")
    lr: float = setting(0.0, "peak learning rate (0: the source model's)")
    min_lr: float = setting(0.0, "final learning rate (0: lr / 10)", cli=False)
    warmup_iters: int = setting(10, "warm-up iterations", flag="--warmup")
    batch_size: int = setting(0, "sequences per step (0: the source model's)", cli=False)
    schedule: list[int] = setting([0, 10, 25, 50, 100, 200], "steps at which losses are recorded")
    pairs: list[str] = setting([], "SOURCE:TARGET pairs (default: every ordered pair)")
    starts: list[str] = setting(list(START_POINTS), "start points: final, early, scratch")
    eval_windows: int = setting(128, "windows per loss along the schedule; 0: whole split")
    final_windows: int = setting(
        0, "windows for the losses after the last step; 0: the whole split", cli=False
    )
    eval_batch_size: int = setting(128, "windows per forward pass when scoring", cli=False)
    sample_chars: int = setting(200, "characters of each adapted model's sample", cli=False)
    sample_prompt: str = setting("\n", "prompt of the samples", cli=False)
    sample_seed: int = setting(1, "seed of the samples", cli=False)

    def check(self) -> None:
        super().check()
        self.validate()

    def validate(self) -> AdaptSettings:
        for name in ("lr", "min_lr", "early_fraction"):
            finite(f"adapt.{name}", getattr(self, name))
        if self.iters < 1:
            raise ConfigError(
                f"adaptation needs at least 1 iteration, got {self.iters}; pass --iters N "
                "with N >= 1 (the study used 200)"
            )
        if self.seeds < 1:
            raise ConfigError(f"--seeds must be at least 1, got {self.seeds}")
        if self.lr < 0 or self.min_lr < 0:
            raise ConfigError("--lr and min_lr must be zero (the source's) or more")
        if min(self.warmup_iters, self.batch_size, self.eval_windows, self.final_windows) < 0:
            raise ConfigError(
                "warmup_iters, batch_size, eval_windows and final_windows must be >= 0"
            )
        if self.eval_batch_size < 1 or self.sample_chars < 0:
            raise ConfigError("eval_batch_size must be >= 1 and sample_chars >= 0")
        if not 0 < self.early_fraction < 1:
            raise ConfigError(f"early_fraction must be in (0, 1), got {self.early_fraction}")
        if any(s < 0 for s in self.schedule):
            raise ConfigError(f"--schedule steps must be >= 0, got {self.schedule}")
        bad = [s for s in self.starts if s not in START_POINTS]
        if bad or not self.starts:
            raise ConfigError(
                f"start points must be among {', '.join(START_POINTS)}, got {self.starts}"
            )
        self.early_iteration()
        for pair in self.pairs:
            parse_pair(pair)
        return self

    def early_iteration(self) -> int | None:
        """The requested early iteration, or None for ``auto``."""
        if isinstance(self.early, int) and not isinstance(self.early, bool):
            value = self.early
        elif str(self.early).strip().lower() == "auto":
            return None
        else:
            try:
                value = int(str(self.early).strip())
            except ValueError:
                raise ConfigError(
                    f"--early must be 'auto' or a checkpoint iteration, got {self.early!r}"
                ) from None
        if value < 0:
            raise ConfigError(f"--early must be a checkpoint iteration >= 0, got {value}")
        return value

    def steps(self) -> list[int]:
        """The evaluation schedule within ``iters``: always with 0 and ``iters``."""
        return sorted({s for s in self.schedule if s <= self.iters} | {0, self.iters})

    def seed_values(self) -> list[int]:
        return [self.seed + k for k in range(self.seeds)]


def parse_pair(text: str) -> tuple[str, str]:
    """``"shakespeare:math"`` -> ("shakespeare", "math")."""
    source, sep, target = str(text).partition(":")
    if not sep or not source.strip() or not target.strip():
        raise ConfigError(
            f"a pair is SOURCE:TARGET, e.g. shakespeare:math; got {text!r} in --pairs"
        )
    return source.strip(), target.strip()


def pick_early(history: list[CheckpointInfo], settings: AdaptSettings) -> CheckpointInfo:
    """The early start checkpoint of a model (see :class:`AdaptSettings`)."""
    wanted = settings.early_iteration()
    have = ", ".join(str(c.iteration) for c in history)
    model_dir = history[-1].json_path.parent.parent
    if wanted is not None:
        for info in history:
            if info.iteration == wanted:
                return info
        raise DomainGPTError(
            f"model {model_dir.name} has no checkpoint at iteration {wanted} for --early; "
            f"its history checkpoints are at {have}"
        )
    final = history[-1].iteration
    candidates = [c for c in history if 0 < c.iteration < final]
    if not candidates:
        raise DomainGPTError(
            f"model {model_dir.name} has no history checkpoint between 0 and {final} "
            f"(it has {have}) to adapt from early; pass --early ITER or retrain with "
            "--set train.checkpoints=log"
        )
    goal = settings.early_fraction * final
    return min(candidates, key=lambda c: (abs(c.iteration - goal), c.iteration))


@dataclass(frozen=True)
class Job:
    """One adaptation run: a pair, a start point and a seed."""

    source: str
    target: str
    start: str
    seed: int
    start_info: CheckpointInfo | None  # None for scratch
    shape_info: CheckpointInfo  # the source's final checkpoint: shape, vocab, config

    @property
    def source_iteration(self) -> int | None:
        return None if self.start_info is None else self.start_info.iteration

    def directory(self, root: Path) -> Path:
        return root / f"{self.source}__to__{self.target}" / self.start / f"seed{self.seed}"

    def key(self, settings: AdaptSettings, lr: float, min_lr: float, batch: int) -> dict:
        """What the result depends on: a stored run is reused only if all of it matches."""
        start = self.start_info or self.shape_info
        return {
            "source": self.source,
            "target": self.target,
            "start": self.start,
            "seed": self.seed,
            "source_iteration": self.source_iteration,
            "start_sha256": start.meta.get("tensor_sha256") if self.start_info else None,
            "shape_sha256": self.shape_info.meta.get("tensor_sha256"),
            "iters": settings.iters,
            "lr": lr,
            "min_lr": min_lr,
            "warmup_iters": min(settings.warmup_iters, settings.iters - 1),
            "batch_size": batch,
            "steps": settings.steps(),
            "eval_windows": settings.eval_windows,
            "final_windows": settings.final_windows,
        }


def plan_jobs(run: RunDir, settings: AdaptSettings, cache: CorpusCache) -> list[Job]:
    """Every (pair, start, seed) to run, checked before any training starts."""
    trained = run.model_names()
    if settings.pairs:
        pairs = [parse_pair(p) for p in settings.pairs]
        run.model_names(list(dict.fromkeys(s for s, _ in pairs)))
    else:
        pairs = [(s, t) for s in trained for t in trained if s != t]
        if not pairs:
            raise DomainGPTError(
                f"adaptation needs two trained models (source and target); {run.models} has "
                f"only {', '.join(trained)}; train another, or pass --pairs "
                f"{trained[0]}:CORPUS"
            )
    jobs = []
    for source, target_ref in dict.fromkeys(pairs):
        # A trained model's name is its corpus, found from the model's run.json.
        found = cache.model_corpus(target_ref) if target_ref in trained else None
        target = (found or cache.corpus(target_ref)).name
        if target == source:
            raise DomainGPTError(
                f"pair {source}:{target_ref} adapts a model to its own corpus; "
                "give a different target"
            )
        history = list_checkpoints(run.model(source) / "checkpoints", "iter")
        starts = {"final": history[-1], "scratch": None}
        if "early" in settings.starts:
            starts["early"] = pick_early(history, settings)
        for start in settings.starts:
            for seed in settings.seed_values():
                jobs.append(Job(source, target, start, seed, starts[start], history[-1]))
    return jobs


def _training_spec(job: Job, settings: AdaptSettings):
    cfg = from_dict({k: v for k, v in run_config_of(job.shape_info).items() if k != "preset"})
    lr = settings.lr or cfg.train.lr
    min_lr = min(settings.min_lr or lr / 10.0, lr)
    batch = settings.batch_size or cfg.train.batch_size
    spec = dataclasses.replace(
        cfg.train,
        max_iters=settings.iters,
        lr=lr,
        min_lr=min_lr,
        warmup_iters=min(settings.warmup_iters, settings.iters - 1),
        lr_decay_iters=0,
        batch_size=batch,
        seed=job.seed,
        eval_interval=0,
        checkpoints=[settings.iters],
        compile="off",
    )
    return cfg, spec


def _stored_result(directory: Path, key: dict) -> dict | None:
    """The meta of a finished run with this key, or None (absent, other settings, damaged)."""
    history = list_checkpoints(directory / "checkpoints", "iter")
    if not history or not (directory / "curve.jsonl").is_file():
        return None
    meta = history[-1].meta.get("adapt", {})
    return meta if meta.get("key") == key else None


def run_job(
    job: Job,
    settings: AdaptSettings,
    target: Split,
    source: Split,
    directory: Path,
    device: torch.device,
) -> dict[str, Any]:
    """Adapt one model and write its directory; returns the checkpoint's ``adapt`` meta."""
    cfg, spec = _training_spec(job, settings)
    key = job.key(settings, spec.lr, spec.min_lr, spec.batch_size)
    torch.manual_seed(job.seed)
    if job.start_info is None:
        model = GPT(GPTConfig.from_dict(job.shape_info.meta["model_config"]))
        vocab = Vocab.from_json(job.shape_info.meta["vocab"])
    else:
        loaded = load_checkpoint(job.start_info, device)
        model, vocab = loaded.model, loaded.vocab
    trainer = Trainer(model, spec, target.train, device)
    windows = settings.eval_windows or None

    def losses(max_windows: int | None) -> tuple[float, float]:
        kw = {"batch_size": settings.eval_batch_size, "max_windows": max_windows}
        return (
            score_windows(model, target.val, **kw).mean_loss,
            score_windows(model, source.val, **kw).mean_loss,
        )

    rows = []
    steps = settings.steps()
    t0 = time.perf_counter()
    for step in range(settings.iters + 1):
        if step > 0:
            loss = trainer.step()
            checked = step % 50 == 0 or step == settings.iters
            if checked and not math.isfinite(float(loss)):
                raise DomainGPTError(
                    f"adapting {job.source} to {job.target} ({job.start}, seed {job.seed}) "
                    f"diverged at step {step}; lower --lr"
                )
        if step in steps:
            tl, sl = losses(windows)
            rows.append(
                {
                    "source": job.source,
                    "target": job.target,
                    "start": job.start,
                    "seed": job.seed,
                    "step": step,
                    "target_loss": tl,
                    "source_loss": sl,
                    "source_iteration": job.source_iteration,
                }
            )
    target_full, source_full = losses(settings.final_windows or None)
    seconds = time.perf_counter() - t0
    # The curve and the sample first, the checkpoint last: a run with a checkpoint is whole.
    directory.mkdir(parents=True, exist_ok=True)
    write_jsonl(directory / "curve.jsonl", rows)
    text = generate_text(
        model, vocab, settings.sample_prompt, settings.sample_chars, seed=settings.sample_seed
    )
    write_jsonl(
        directory / "samples.jsonl",
        [
            {
                "source": job.source,
                "target": job.target,
                "start": job.start,
                "seed": job.seed,
                "iter": settings.iters,
                "val_loss": target_full,
                "prompt": settings.sample_prompt,
                "sample_seed": settings.sample_seed,
                "temperature": 1.0,
                "text": text,
            }
        ],
    )
    result = {
        "key": key,
        "source_model": job.source,
        "source_iteration": job.source_iteration,
        "target_corpus": job.target,
        "start": job.start,
        "seed": job.seed,
        "steps": settings.iters,
        "target_loss": target_full,
        "source_loss": source_full,
        "target_loss_step0": rows[0]["target_loss"],
        "source_loss_step0": rows[0]["source_loss"],
        "forgetting": rows[-1]["source_loss"] - rows[0]["source_loss"],
        "seconds": round(seconds, 2),
    }
    config = cfg.to_dict()
    config["train"] = asdict(spec)
    meta = {
        "corpus": job.target,  # the corpus the model was last trained on
        "source_model": job.source,
        "source_iteration": job.source_iteration,
        "target_corpus": job.target,
        "start": job.start,
        "val_loss": target_full,
        "tokens_seen": settings.iters * trainer.tokens_per_iter,
        "config": config,
        "adapt": result,
    }
    save_checkpoint(directory / "checkpoints", "iter", settings.iters, model, vocab, meta)
    return result


def summarize(final: pd.DataFrame) -> pd.DataFrame:
    """One row per pair: final target loss per start (mean ± std over seeds), early − final
    paired by seed (mean ± std), forgetting, and the verdict."""
    rows = []
    for (source, target), g in final.groupby(["source", "target"], sort=False):
        row: dict[str, Any] = {"source": source, "target": target}
        by_start = {s: g[g["start"] == s].set_index("seed") for s in START_POINTS}
        row["n_seeds"] = int(g["seed"].nunique())
        for start, part in by_start.items():
            vals = part["target_loss"]
            row[f"{start}_iteration"] = (
                int(part["source_iteration"].iloc[0])
                if len(part) and pd.notna(part["source_iteration"].iloc[0])
                else None
            )
            row[f"{start}_mean"] = float(vals.mean()) if len(vals) else math.nan
            row[f"{start}_std"] = float(vals.std(ddof=1)) if len(vals) > 1 else math.nan
            row[f"forgetting_{start}"] = float(part["forgetting"].mean()) if len(part) else math.nan
        seeds = by_start["early"].index.intersection(by_start["final"].index)
        delta = (
            by_start["early"].loc[seeds, "target_loss"]
            - by_start["final"].loc[seeds, "target_loss"]
        )
        row["n_paired"] = len(delta)
        row["delta_early_minus_final"] = float(delta.mean()) if len(delta) else math.nan
        row["delta_spread"] = float(delta.std(ddof=1)) if len(delta) > 1 else math.nan
        row["outcome"] = outcome(row)
        row["verdict"] = verdict(row)
        rows.append(row)
    return pd.DataFrame(rows)


def _signed(x: float) -> str:
    return "–" if math.isnan(x) else f"{x:+.3f}".replace("-", "−")


def across_pairs(summary: pd.DataFrame) -> dict[str, float] | None:
    """Early vs final start over the whole run: each pair's mean Δ (early − final target
    loss) is one observation. With one seed per pair no single pair has a spread, but
    the pairs together still answer the study's question; ``None`` below 3 pairs.

    Returns the pair counts each way, the mean Δ with a bootstrap 95 % CI over pairs and
    the two-sided sign-test p-value (exact binomial; ties are dropped).
    """
    import pandas as pd

    d = pd.to_numeric(summary.get("delta_early_minus_final"), errors="coerce").dropna()
    d = d.to_numpy(dtype=float)
    if len(d) < 3:
        return None
    final_better, early_better = int((d > 0).sum()), int((d < 0).sum())
    mean, low, high = bootstrap_mean_ci(d)
    return {
        "n_pairs": len(d),
        "final_better": final_better,
        "early_better": early_better,
        "mean_delta": mean,
        "ci_low": low,
        "ci_high": high,
        "sign_p": sign_test(early_better, final_better),
    }


def outcome(row: dict[str, Any]) -> str:
    """Which start adapts better for one pair, from its numbers: ``early``, ``final``,
    ``unclear`` (|Δ| below twice its spread over seeds), ``one_seed`` (no spread to judge
    by) or ``none`` (no paired runs)."""
    delta, spread, n = row["delta_early_minus_final"], row["delta_spread"], row["n_paired"]
    if not n or n == 0 or delta is None or math.isnan(delta):
        return "none"
    if n == 1:
        return "one_seed"
    if delta == 0 or abs(delta) < 2 * spread:
        return "unclear"
    return "early" if delta < 0 else "final"


def verdict(row: dict[str, Any]) -> str:
    """A one-line answer to "does partial training make adaptation easier?" for one pair,
    from its numbers: a difference smaller than twice its spread across seeds is none."""
    early, final = row.get("early_mean", math.nan), row.get("final_mean", math.nan)
    delta, spread, n = row["delta_early_minus_final"], row["delta_spread"], row["n_paired"]
    scratch = row.get("scratch_mean", math.nan)
    tail = f"; scratch {scratch:.2f}" if not math.isnan(scratch) else ""
    if n == 0 or math.isnan(delta):
        if math.isnan(early) or math.isnan(final):
            return "no comparison: run both the early and the final start" + tail
        return "no comparison: early and final runs share no seed" + tail
    if n == 1:
        head = "early start ends lower" if delta < 0 else "final start ends lower"
        if delta == 0:
            head = "no difference"
        return (
            f"{head}: {early:.2f} vs {final:.2f} (Δ {_signed(delta)}, one seed: "
            f"no spread, not conclusive){tail}"
        )
    if delta == 0 or abs(delta) < 2 * spread:
        head = "no clear difference"
    elif delta < 0:
        head = "early start adapts better"
    else:
        head = "final start adapts better"
    return f"{head}: {early:.2f} vs {final:.2f} (Δ {_signed(delta)} ± {spread:.3f} over {n} seeds){tail}"


def summary_markdown(summary: pd.DataFrame, settings: AdaptSettings) -> str:
    def cell(mean: float, std: float) -> str:
        if math.isnan(mean):
            return "–"
        return f"{mean:.3f}" + ("" if math.isnan(std) else f" ± {std:.3f}")

    def it(value: Any) -> str:
        return (
            ""
            if value is None or (isinstance(value, float) and math.isnan(value))
            else str(int(value))
        )

    where = (
        f"{settings.final_windows} windows spread over the validation split"
        if settings.final_windows
        else "the whole validation split"
    )
    lines = [
        "# Few-shot adaptation",
        "",
        f"Each source model trained {settings.iters} more iterations on the target corpus "
        f"from its final checkpoint, from an early one, and from scratch (same shape, fresh "
        f"weights), over {settings.seeds} seed(s). Losses: target-corpus cross-entropy "
        f"(nats per character) on {where} after the last step, mean ± "
        "standard deviation over seeds. Δ: early − final, paired by seed (same batches), "
        "± its standard deviation; a Δ smaller than twice that spread counts as no clear "
        "difference. Forgetting: rise of the source-corpus loss over the adaptation.",
        "",
        "| source → target | final (iter) | early (iter) | scratch | Δ early − final | "
        "forgetting final / early |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in summary.to_dict("records"):
        spread = "" if math.isnan(r["delta_spread"]) else f" ± {r['delta_spread']:.3f}"
        delta = (
            "–"
            if math.isnan(r["delta_early_minus_final"])
            else (_signed(r["delta_early_minus_final"]) + spread)
        )
        lines.append(
            f"| {r['source']} → {r['target']} "
            f"| {cell(r['final_mean'], r['final_std'])} ({it(r['final_iteration'])}) "
            f"| {cell(r['early_mean'], r['early_std'])} ({it(r['early_iteration'])}) "
            f"| {cell(r['scratch_mean'], r['scratch_std'])} "
            f"| {delta} "
            f"| {_signed(r['forgetting_final'])} / {_signed(r['forgetting_early'])} |"
        )
    lines += ["", "## Does partial training make adaptation easier?", ""]
    lines += [
        f"- **{r['source']} → {r['target']}**: {r['verdict']}" for r in summary.to_dict("records")
    ]
    pooled = across_pairs(summary)
    if pooled is not None:
        lines += [
            f"- **over all {pooled['n_pairs']} pairs**: the early start ends lower in "
            f"{pooled['early_better']}, the final start in {pooled['final_better']}; mean Δ "
            f"early − final {_signed(pooled['mean_delta'])} (95 % CI "
            f"{_signed(pooled['ci_low'])} to {_signed(pooled['ci_high'])}), sign test "
            f"p = {pooled['sign_p']:.3g}"
        ]
    return "\n".join(lines) + "\n"


def run_adapt(
    run: RunDir,
    settings: AdaptSettings | None = None,
    *,
    progress: bool = True,
    log: Log = stderr_log,
    corpora: Sequence[Corpus] = (),
) -> dict[str, Path]:
    """Run (or finish) every adaptation of ``settings`` and write ``adapt/`` (module doc).

    ``corpora``: corpora already resolved (a study's), where the models' corpora are
    looked for first; the others are found from the models' ``run.json``."""
    settings = settings or AdaptSettings()
    run.check_writable()
    cache = CorpusCache(settings.data_dir, download=not settings.offline, run=run, known=corpora)
    with torch_threads(settings.threads):
        return _run_adapt(run, settings, cache, pick_device(settings.device), progress, log)


def _run_adapt(
    run: RunDir,
    settings: AdaptSettings,
    cache: CorpusCache,
    device: torch.device,
    progress: bool,
    log: Log,
) -> dict[str, Path]:
    jobs = plan_jobs(run, settings, cache)
    root = run.adapt

    def splits(job: Job) -> tuple[Split, Split]:
        vocab = Vocab.from_json(job.shape_info.meta["vocab"])
        block = int(job.shape_info.meta["model_config"]["block_size"])
        vf = float(run_config_of(job.shape_info).get("data", {}).get("val_fraction", 0.1))
        tgt = cache.split(cache.corpus(job.target), vocab, vf, block)
        src = cache.split(cache.model_corpus(job.source), vocab, vf, block)
        return tgt, src

    for job in jobs:  # corpora found and split before any training
        tgt, _ = splits(job)
        if tgt.unk_fraction > 0 and job.start == settings.starts[0] and job.seed == settings.seed:
            log(
                f"warning: {tgt.unk_fraction:.3%} of {job.target}'s validation characters "
                f"are not in model {job.source}'s vocabulary; they are read as <unk>"
            )

    bar = progress_bar(len(jobs), "adapt", enabled=progress)
    results, done, redone = [], 0, 0
    for job in jobs:
        directory = job.directory(root)
        _, spec = _training_spec(job, settings)
        key = job.key(settings, spec.lr, spec.min_lr, spec.batch_size)
        stored = _stored_result(directory, key)
        if stored is not None:
            done += 1
            results.append(stored)
        else:
            if directory.exists():
                shutil.rmtree(directory)  # an interrupted run or other settings: redo it
                redone += 1
            tgt, src = splits(job)
            result = run_job(job, settings, tgt, src, directory, device)
            results.append(result)
            with bar.external_write_mode(file=sys.stderr):  # the line above the bar
                log(
                    f"{job.source} → {job.target} [{job.start}"
                    f"{'' if job.source_iteration is None else f' @{job.source_iteration}'}, "
                    f"seed {job.seed}]: target {result['target_loss_step0']:.3f} → "
                    f"{result['target_loss']:.3f}, source {result['source_loss_step0']:.3f} → "
                    f"{result['source_loss']:.3f} ({result['seconds']:.0f} s)"
                )
        bar.update(1)
    bar.close()
    if done:
        log(f"reused {done} finished adaptation run(s) from {root}")

    curves = pd.DataFrame(
        [r for job in jobs for r in read_jsonl(job.directory(root) / "curve.jsonl")],
        columns=CURVE_COLUMNS,
    )
    final = pd.DataFrame(
        [{**r, "source": r["source_model"], "target": r["target_corpus"]} for r in results]
    )[FINAL_COLUMNS]
    summary = summarize(final)
    samples = [s for job in jobs for s in read_jsonl(job.directory(root) / "samples.jsonl")]
    written = {
        "curves_csv": atomic_write_text(root / "curves.csv", curves.to_csv(index=False)),
        "final_csv": atomic_write_text(root / "final.csv", final.to_csv(index=False)),
        "summary_csv": atomic_write_text(root / "summary.csv", summary.to_csv(index=False)),
        "summary_md": atomic_write_text(root / "summary.md", summary_markdown(summary, settings)),
        "samples": write_jsonl(root / "samples.jsonl", samples),
        "curves_png": plot_adaptation_curves(curves, root / "curves.png"),
        "forgetting_png": plot_adaptation_curves(
            curves,
            root / "forgetting.png",
            value="source_loss",
            ylabel="source-corpus loss (nats / character)",
            title="Forgetting: source-corpus loss during adaptation",
        ),
        "settings": write_json(root / "settings.json", settings.to_dict()),
    }
    for r in summary.to_dict("records"):
        log(f"{r['source']} → {r['target']}: {r['verdict']}")
    log(f"wrote {len(written)} files to {root}")
    return written


def load_adapt(run: RunDir) -> dict[str, pd.DataFrame]:
    """The tables :func:`run_adapt` wrote: ``curves``, ``final``, ``summary``."""
    root = run.adapt
    if not (root / "summary.csv").is_file():
        raise DomainGPTError(
            f"no adaptation results in {run.root} ({root / 'summary.csv'} is missing); "
            f"run `domaingpt adapt --out {run.root}` first"
        )
    tables = {name: pd.read_csv(root / f"{name}.csv") for name in ("curves", "final", "summary")}
    tables["in_domain"] = in_domain_losses(run)
    return tables


def in_domain_losses(run: RunDir) -> pd.DataFrame:
    """Each trained model's loss on its own corpus (the whole validation split, from its
    training record): how far an adapted model is from a model trained on the target."""
    rows = []
    for name in run.trained_models():
        metrics = run.model(name) / "metrics.jsonl"
        last = read_jsonl(metrics)[-1] if metrics.is_file() else {}
        if "val_loss_full" in last:
            rows.append({"corpus": name, "loss_nats": float(last["val_loss_full"])})
    return pd.DataFrame(rows, columns=["corpus", "loss_nats"])


__all__ = [
    "START_POINTS",
    "AdaptSettings",
    "load_adapt",
    "parse_pair",
    "pick_early",
    "run_adapt",
    "summarize",
    "verdict",
]
