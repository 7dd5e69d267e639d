"""Deterministic loss of a model on a token stream, window by window.

The whole split is cut into disjoint windows of ``block_size`` (see
:func:`domaingpt.data.window_starts`): every character is predicted exactly once, from
the characters before it in its window (0 to ``block_size - 1`` of them). This is the
"non-overlapping windows" convention; it scores the same characters as nanoGPT's
training loss but is exact and repeatable, unlike nanoGPT's random ``estimate_loss``.

Context convention (compare lm-evaluation-harness's rolling windows, which overlap so
every token gets a long context): here windows do not overlap, so the first character of
a window is predicted from no context at all and the last from ``block_size - 1``
characters; each character's loss is that of a model sampling text in ``block_size``
chunks. It costs one forward pass per ``block_size`` characters instead of one per
character, and it is the loss the training code reports, so the numbers compare.

On top of :func:`score_windows`, this module builds the zero-shot matrix: every (model
checkpoint, corpus) pair of a run scored on the corpus's whole validation split, with a
bootstrap confidence interval over windows (:func:`run_evaluate`, :func:`load_evaluate`).
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from . import cpu_scoring
from .data import window_ids, window_mask, window_starts
from .device import autocast
from .errors import CorpusError, DomainGPTError
from .model import GPT

if TYPE_CHECKING:
    import pandas as pd

    from .checkpoint import CheckpointInfo
    from .corpus import Corpus
    from .rundir import RunDir
    from .vocab import Vocab

Log = Callable[[str], None]


@dataclass(frozen=True)
class WindowScores:
    """Summed negative log-likelihood (nats) and scored-target count of every window."""

    nll: np.ndarray
    count: np.ndarray
    starts: np.ndarray

    @property
    def mean_loss(self) -> float:
        return float(self.nll.sum() / max(self.count.sum(), 1))

    @property
    def n_scored(self) -> int:
        return int(self.count.sum())


ENGINES = ("auto", "native", "torch")


def score_windows(
    model: GPT,
    ids: np.ndarray,
    *,
    batch_size: int = 128,
    max_windows: int | None = None,
    block_size: int | None = None,
    engine: str = "auto",
) -> WindowScores:
    """Per-window NLL of ``ids`` under ``model`` (eval mode, no gradient, large batches).

    ``engine``: ``"native"`` is :mod:`domaingpt.cpu_scoring` (CPU only: fused native
    kernels, one worker per thread; same numbers to float rounding, ~1.4x faster),
    ``"torch"`` the model's own forward pass, ``"auto"`` the first that can run here.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    T = block_size or model.config.block_size
    starts = window_starts(len(ids), T, max_windows)
    mask = window_mask(starts, T)
    count = mask.sum(axis=1).astype(np.int64)
    why_not = "torch asked for" if engine == "torch" else cpu_scoring.unsupported(model)
    if engine == "native" and why_not:
        raise DomainGPTError(f"the native scoring engine cannot run here: {why_not}")
    was_training = model.training
    model.eval()
    try:
        if why_not is None:
            nll = cpu_scoring.score(model, ids, starts, mask, batch_size)
        else:
            nll = _score_torch(model, ids, starts, mask, batch_size)
    finally:
        model.train(was_training)
    return WindowScores(nll=nll, count=count, starts=starts)


@torch.inference_mode()
def _score_torch(
    model: GPT, ids: np.ndarray, starts: np.ndarray, mask: np.ndarray, batch_size: int
) -> np.ndarray:
    T = mask.shape[1]
    device = next(model.parameters()).device
    nll = np.zeros(len(starts), dtype=np.float64)
    for lo in range(0, len(starts), batch_size):
        s = starts[lo : lo + batch_size]
        chunk = torch.from_numpy(window_ids(ids, s, T)).to(device)
        with autocast(device):
            logits, _ = model(chunk[:, :-1])
        losses = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            chunk[:, 1:].reshape(-1),
            reduction="none",
        ).view(len(s), T)
        m = torch.from_numpy(mask[lo : lo + batch_size]).to(device)
        nll[lo : lo + batch_size] = (losses * m).sum(dim=1).double().cpu().numpy()
    return nll


# --- the zero-shot matrix --------------------------------------------------------------

#: The study's published zero-shot matrix, nats per character (rows: model, columns:
#: corpus). Its models were far larger than the CPU presets and trained far longer.
STUDY_MATRIX: dict[str, dict[str, float]] = {
    "shakespeare": {"shakespeare": 1.3966, "math": 3.9497, "wikipedia": 2.3861},
    "math": {"shakespeare": 3.2619, "math": 1.2258, "wikipedia": 2.5259},
    "wikipedia": {"shakespeare": 2.5144, "math": 2.7195, "wikipedia": 1.3786},
}

ZERO_SHOT_COLUMNS = [
    "model",
    "iteration",
    "corpus",
    "in_domain",
    "loss_nats",
    "bits_per_char",
    "perplexity",
    "n_chars",
    "n_windows",
    "unk_fraction",
    "ci_low",
    "ci_high",
]


@dataclass
class EvalSettings:
    """What ``domaingpt evaluate`` scores; built from the CLI or a TOML table.

    ``models``/``corpora`` empty mean every trained model / the corpora of the models.
    ``checkpoints`` is ``"final"``, ``"all"`` (the whole history) or iterations, as a list
    or a comma-separated string (``"0,500,2000"``).
    """

    models: list[str] = field(default_factory=list)
    corpora: list[str] = field(default_factory=list)
    checkpoints: str | list[int] = "final"
    batch_size: int = 128
    bootstrap: int = 1000  # resamples of windows for the confidence interval; 0: none
    confidence: float = 0.95
    seed: int = 0  # of the bootstrap: same seed, same interval
    device: str = "auto"
    threads: int = 0  # 0: torch's default
    data_dir: str = ""  # "": --data-dir / $DOMAINGPT_DATA / the cache
    offline: bool = False

    def validate(self) -> EvalSettings:
        if self.batch_size < 1:
            raise DomainGPTError(f"evaluate batch size must be at least 1, got {self.batch_size}")
        if self.bootstrap < 0:
            raise DomainGPTError(
                f"bootstrap resamples must be zero (no interval) or more, got {self.bootstrap}"
            )
        if not 0 < self.confidence < 1:
            raise DomainGPTError(f"confidence must be in (0, 1), got {self.confidence}")
        parse_checkpoint_selection(self.checkpoints)
        return self


def parse_checkpoint_selection(spec: str | list[int]) -> str | list[int]:
    """``"final"`` | ``"all"`` | sorted iterations, from a string or a list."""
    if isinstance(spec, list):
        items: list[Any] = spec
    else:
        text = str(spec).strip().lower()
        if text in ("final", "all"):
            return text
        items = [t.strip() for t in text.split(",") if t.strip()]
    try:
        iterations = sorted({int(t) for t in items})
    except (TypeError, ValueError):
        raise DomainGPTError(
            f"checkpoints must be 'final', 'all' or iterations like 0,500,2000; got {spec!r}"
        ) from None
    if not iterations or iterations[0] < 0:
        raise DomainGPTError(
            f"checkpoints must be 'final', 'all' or iterations >= 0 like 0,500,2000; got {spec!r}"
        )
    return iterations


def bootstrap_ci(
    scores: WindowScores, n_resamples: int = 1000, *, seed: int = 0, confidence: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean loss, resampling whole windows.

    Windows, not characters, are the unit: characters within a window share context and
    are not independent. Seeded, so the interval is a deterministic function of the scores.
    """
    n_windows = len(scores.nll)
    if n_resamples <= 0 or n_windows < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = np.empty(n_resamples)
    chunk = max(1, 2_000_000 // n_windows)  # bound the index matrix to ~16 MB
    for lo in range(0, n_resamples, chunk):
        k = min(chunk, n_resamples - lo)
        idx = rng.integers(0, n_windows, size=(k, n_windows))
        stats[lo : lo + k] = scores.nll[idx].sum(axis=1) / scores.count[idx].sum(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(stats, [alpha, 1.0 - alpha])
    return (float(low), float(high))


def loss_summary(
    scores: WindowScores, *, bootstrap: int = 1000, seed: int = 0, confidence: float = 0.95
) -> dict[str, float | int]:
    """Loss in the study's unit (nats per character) and the units derived from it."""
    loss = scores.mean_loss
    low, high = bootstrap_ci(scores, bootstrap, seed=seed, confidence=confidence)
    return {
        "loss_nats": loss,
        "bits_per_char": loss / math.log(2.0),
        "perplexity": math.exp(loss),
        "n_chars": scores.n_scored,
        "n_windows": len(scores.starts),
        "ci_low": low,
        "ci_high": high,
    }


@dataclass(frozen=True)
class Split:
    """A corpus encoded with one vocabulary and split as one model's run split it."""

    corpus: str
    train: np.ndarray
    val: np.ndarray
    unk_fraction: float  # share of the scored validation characters that are <unk>


class CorpusCache:
    """Corpora resolved once, and their encoded splits per (vocabulary, val_fraction).

    Corpora given by path are also found under their name (the file stem), which is how
    a model trained on a user file is matched to its corpus.
    """

    def __init__(self, data_dir: str | Path | None = None, *, download: bool = True) -> None:
        self.data_dir = data_dir or None
        self.download = download
        self._corpora: dict[str, Corpus] = {}
        self._splits: dict[tuple[str, str, float], Split] = {}

    def corpus(self, ref: str, *, model_name: str | None = None) -> Corpus:
        if ref in self._corpora:
            return self._corpora[ref]
        from .corpus import resolve_corpus

        try:
            corpus = resolve_corpus(ref, self.data_dir, download=self.download)
        except CorpusError as e:
            from .corpus import REGISTRY

            if model_name is None or ref in REGISTRY:
                raise
            raise DomainGPTError(
                f"cannot find the corpus of model {model_name!r} ({e}); "
                "pass its text file with --corpora PATH"
            ) from None
        self._corpora[ref] = corpus
        self._corpora.setdefault(corpus.name, corpus)
        return corpus

    def split(self, corpus: Corpus, vocab: Vocab, val_fraction: float, block_size: int) -> Split:
        """The split a model with this vocabulary and ``val_fraction`` trained on."""
        from .data import encode_corpus
        from .vocab import UNK_ID

        key = (corpus.name, vocab.fingerprint, float(val_fraction))
        if key not in self._splits:
            encoded = encode_corpus(corpus, vocab)
            train, val = encoded.split(val_fraction)
            n_unk = int(np.count_nonzero(np.asarray(val[1:]) == UNK_ID))
            self._splits[key] = Split(corpus.name, train, val, n_unk / max(len(val) - 1, 1))
        split = self._splits[key]
        need = block_size + 1
        if len(split.train) < need or len(split.val) < need:
            raise CorpusError(
                f"corpus {corpus.name!r} is too short for block_size {block_size} with "
                f"val_fraction {val_fraction} (each split needs at least {need} characters); "
                "use a longer text"
            )
        return split


def resolve_models(run: RunDir, names: list[str]) -> list[str]:
    """The requested models of a run (all trained ones when ``names`` is empty)."""
    from .corpus import REGISTRY

    order = list(REGISTRY)  # the study's order first: shakespeare, math, wikipedia
    trained = sorted(
        run.trained_models(), key=lambda n: (order.index(n) if n in order else len(order), n)
    )
    first = names[0] if names else "CORPUS"
    if not trained:
        raise DomainGPTError(
            f"no trained models in {run.models}; train one first with "
            f"`domaingpt train {first} --out {run.root}`"
        )
    if not names:
        return trained
    missing = [n for n in names if n not in trained]
    if missing:
        raise DomainGPTError(
            f"no model trained on {', '.join(repr(m) for m in missing)} in {run.models} "
            f"(trained: {', '.join(trained)}); train one with "
            f"`domaingpt train {missing[0]} --out {run.root}`"
        )
    return list(dict.fromkeys(names))


def select_checkpoints(model_dir: Path, selection: str | list[int]) -> list[CheckpointInfo]:
    """History checkpoints of a model: the final one, all of them, or given iterations."""
    from .checkpoint import find_checkpoint, list_checkpoints

    history = list_checkpoints(model_dir / "checkpoints", "iter")
    if not history:
        raise DomainGPTError(f"no checkpoints in {model_dir / 'checkpoints'}; train it first")
    selection = parse_checkpoint_selection(selection)
    if selection == "final":
        return [history[-1]]
    if selection == "all":
        return history
    return [find_checkpoint(model_dir, it) for it in selection]


def run_config_of(info: CheckpointInfo, model_dir: Path | None = None) -> dict[str, Any]:
    """The training config recorded with a checkpoint (else in the model's run.json)."""
    config = info.meta.get("config")
    if isinstance(config, dict):
        return config
    run_json = (model_dir or info.json_path.parent.parent) / "run.json"
    try:
        return json.loads(run_json.read_text()).get("config", {})
    except (OSError, ValueError):
        return {}


def val_fraction_of(info: CheckpointInfo, model_dir: Path | None = None) -> float:
    """The validation fraction of the run that made a checkpoint (0.1 if unrecorded)."""
    return float(run_config_of(info, model_dir).get("data", {}).get("val_fraction", 0.1))


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (0: leave as is), then restore the count.

    On a CPU shared with other jobs, fewer threads can be much faster: OpenMP threads
    that wait for a descheduled sibling spin (see benchmarks/bench_eval.py).
    """
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(before)


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, dynamic_ncols=True, leave=False)


def zero_shot_table(
    run: RunDir, settings: EvalSettings, *, progress: bool = True, log: Log = print
) -> pd.DataFrame:
    """The tidy zero-shot table: one row per (model, checkpoint iteration, corpus)."""
    from .device import pick_device

    settings.validate()
    with torch_threads(settings.threads):
        return _zero_shot_table(run, settings, pick_device(settings.device), progress, log)


def _zero_shot_table(
    run: RunDir, settings: EvalSettings, device: torch.device, progress: bool, log: Log
) -> pd.DataFrame:
    import pandas as pd

    from .checkpoint import load_checkpoint

    models = resolve_models(run, settings.models)
    cache = CorpusCache(settings.data_dir, download=not settings.offline)
    # Resolve every corpus (and every checkpoint) before scoring anything: errors come first.
    if settings.corpora:
        corpora = [cache.corpus(ref) for ref in dict.fromkeys(settings.corpora)]
    else:
        corpora = [cache.corpus(name, model_name=name) for name in models]
    plan = [
        (name, info)
        for name in models
        for info in select_checkpoints(run.model(name), settings.checkpoints)
    ]
    rows: list[dict[str, Any]] = []
    warned: set[tuple[str, str]] = set()
    bar = _progress(len(plan) * len(corpora), "evaluate", progress)
    for i, (name, info) in enumerate(plan):
        loaded = load_checkpoint(info, device)
        if i == 0:
            log(cpu_scoring.describe(loaded.model))
        block = loaded.model.config.block_size
        val_fraction = val_fraction_of(info, run.model(name))
        for corpus in corpora:
            split = cache.split(corpus, loaded.vocab, val_fraction, block)
            if split.unk_fraction > 0 and (corpus.name, loaded.vocab.fingerprint) not in warned:
                warned.add((corpus.name, loaded.vocab.fingerprint))
                log(
                    f"warning: {split.unk_fraction:.3%} of {corpus.name}'s validation "
                    f"characters are not in model {name}'s vocabulary; they are scored as <unk>"
                )
            scores = score_windows(loaded.model, split.val, batch_size=settings.batch_size)
            summary = loss_summary(
                scores,
                bootstrap=settings.bootstrap,
                seed=settings.seed,
                confidence=settings.confidence,
            )
            rows.append(
                {
                    "model": name,
                    "iteration": info.iteration,
                    "corpus": corpus.name,
                    "in_domain": corpus.name == name,
                    "unk_fraction": split.unk_fraction,
                    **summary,
                }
            )
            bar.set_postfix(model=name, it=info.iteration, corpus=corpus.name)
            bar.update(1)
    bar.close()
    return pd.DataFrame(rows, columns=ZERO_SHOT_COLUMNS)


def final_matrix(table: pd.DataFrame, value: str = "loss_nats") -> pd.DataFrame:
    """Rows = model, columns = corpus, at each model's latest evaluated checkpoint."""
    latest = table.groupby("model", sort=False)["iteration"].transform("max")
    final = table[table["iteration"] == latest]
    matrix = final.pivot(index="model", columns="corpus", values=value)
    models = list(dict.fromkeys(final["model"]))
    corpora = list(dict.fromkeys(final["corpus"]))
    return matrix.reindex(index=models, columns=corpora)


def study_matrix() -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(STUDY_MATRIX).T.rename_axis(index="model", columns="corpus")


def _md_table(header: list[str], rows: list[list[str]], align: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def zero_shot_markdown(table: pd.DataFrame, settings: EvalSettings | None = None) -> str:
    """The matrix laid out like the study's table, with the study's own beside it."""
    settings = settings or EvalSettings()
    loss = final_matrix(table)
    low, high = final_matrix(table, "ci_low"), final_matrix(table, "ci_high")
    bpc = final_matrix(table, "bits_per_char")
    latest = table.groupby("model", sort=False)["iteration"].max()
    corpora = list(loss.columns)
    ci = f"{settings.confidence:.0%}".replace("%", " %")
    out = [
        "# Zero-shot loss matrix",
        "",
        "Cross-entropy in **nats per character** (the study's unit) on each corpus's whole "
        "validation split, cut into disjoint windows of `block_size` characters so that "
        "every character is predicted exactly once. Rows: model (checkpoint iteration); "
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
        out += ["", "## Along training", "", "Loss (nats per character) at each checkpoint:", ""]
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


def run_evaluate(
    run: RunDir,
    settings: EvalSettings | None = None,
    *,
    progress: bool = True,
    log: Log = print,
) -> dict[str, Path]:
    """Score every (model checkpoint, corpus) pair and write ``eval/`` (see README).

    Files: ``zero_shot.csv`` (tidy), ``zero_shot.md`` (the matrix, with the study's),
    ``zero_shot.png`` (heatmap), ``zero_shot_training.png`` (when several checkpoints of
    a model were scored) and ``settings.json``. Each is written atomically.
    """
    from .figures import plot_loss_along_training, plot_loss_matrix
    from .io import atomic_write_text, write_json

    settings = (settings or EvalSettings()).validate()
    run.check_writable()
    table = zero_shot_table(run, settings, progress=progress, log=log)
    out = run.eval
    written = {
        "zero_shot_csv": atomic_write_text(out / "zero_shot.csv", table.to_csv(index=False)),
        "zero_shot_md": atomic_write_text(
            out / "zero_shot.md", zero_shot_markdown(table, settings)
        ),
    }
    matrix = final_matrix(table)
    panels = {"this run": matrix}
    ref = study_matrix()
    shared_rows = [m for m in matrix.index if m in ref.index]
    shared_cols = [c for c in matrix.columns if c in ref.columns]
    if shared_rows and shared_cols:
        panels["the study (far larger models, for reference)"] = ref.loc[shared_rows, shared_cols]
    written["zero_shot_png"] = plot_loss_matrix(panels, out / "zero_shot.png")
    if table.groupby("model")["iteration"].nunique().max() > 1:
        written["zero_shot_training_png"] = plot_loss_along_training(
            table, out / "zero_shot_training.png"
        )
    written["settings"] = write_json(out / "settings.json", asdict(settings))
    for model in matrix.index:
        cells = ", ".join(f"{c} {matrix.loc[model, c]:.4f}" for c in matrix.columns)
        log(f"{model}: {cells}")
    log(f"wrote {len(written)} files to {out}")
    return written


def load_evaluate(run: RunDir) -> dict[str, pd.DataFrame]:
    """The tables :func:`run_evaluate` wrote: ``zero_shot`` (tidy) and ``matrix``."""
    import pandas as pd

    path = run.eval / "zero_shot.csv"
    if not path.is_file():
        raise DomainGPTError(
            f"no zero-shot evaluation in {run.root} ({path} is missing); "
            f"run `domaingpt evaluate --out {run.root}` first"
        )
    table = pd.read_csv(path)
    return {"zero_shot": table, "matrix": final_matrix(table)}
