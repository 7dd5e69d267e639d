"""Softmax inspection (Part 3 of the study): how sure each model is of the next character,
checkpoint by checkpoint, on prompts from its own corpus and from the others.

For every model of a run, every history checkpoint and every prompt (see
:mod:`domaingpt.prompts`) the next-character distribution is read at every position:

entropy
    ``H(p) = -Σ p(c) log2 p(c)`` in **bits**; ``log2(V)`` for a uniform distribution
    over the ``V`` ids of the vocabulary, 0 for a certain one.
p(true), rank
    the probability of the true next character and its rank (1 = the model's top choice;
    ties counted in the character's favour).
top-k
    the ``k`` most likely characters and their probabilities, at the last position.

"In-domain" means the prompt comes from the model's training corpus
(:func:`domaingpt.prompts.domain_of`). Aggregates give mean, standard deviation and a
normal-approximation 95 % confidence interval (mean ± 1.96·sd/√n) over prompts. The
claim "out-of-domain entropy is higher" is tested on each prompt's entropy averaged over
all its positions (``entropy_all_bits``: L predictions per prompt instead of one, so the
test has power with a few dozen prompts), with a Welch 95 % CI of the difference.

Where probabilities harden
    For consecutive history checkpoints ``t_{j-1}, t_j`` the Jensen–Shannon divergence
    (bits, in [0, 1]) between the two next-character distributions at a prompt's last
    position is averaged over the prompts of a domain. The **hardening iteration** is the
    first checkpoint ``t_i`` after which this mean divergence stays below ``epsilon``
    (default 0.05 bits) for every later pair of consecutive checkpoints. It is "not
    reached" when the last pair still moves by ``epsilon`` or more, and undefined with a
    single checkpoint. Because the checkpoint schedule is log-spaced, later pairs span more
    iterations, which makes the criterion stricter late in training, not looser. A second,
    simpler reading is reported beside it: the first checkpoint after which mean p(true)
    stays within ``delta`` of its final value. With a decaying learning rate the last
    checkpoints move less by construction, so compare models trained on one schedule.
    The study's absolute iterations (Math by ~1000, Shakespeare by ~4000, Wikipedia after
    14000) are tested only where the run is long enough to see them; the ordering
    (Math before Shakespeare before Wikipedia) is tested on any run.
Over-predicted characters
    On out-of-domain prompts at the final checkpoint: the model's mean predicted
    probability of each character (averaged over every position of every out-of-domain
    prompt) minus that character's frequency in the *prompt's* corpus (its whole text).
    The prompt corpus is the baseline because a calibrated model would predict a
    character about as often as it occurs in the text it is reading; a large positive
    excess (the study's Math model and ``<space>``) is a habit of the training corpus
    carried where it does not belong.

:func:`probe_claims` checks the study's statements against these numbers and says for
each whether it holds for this run (True, False, or None when the run cannot test it).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from domaingpt.core.io import read_jsonl, write_json, write_jsonl
from domaingpt.core.progress import Log, progress_bar, stderr_log
from domaingpt.core.rundir import ModelEntry, RunDir
from domaingpt.core.settings import StageSettings, setting
from domaingpt.core.statistics import LOG2E, js_divergence_bits, mean_ci
from domaingpt.core.tables import read_table, write_table
from domaingpt.data.charclass import describe_char
from domaingpt.data.prompts import (
    PromptSet,
    check_not_empty,
    domain_of,
    prepare_prompt_stage,
)
from domaingpt.data.vocab import UNK, Vocab
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.checkpoint import list_checkpoints, load_checkpoint
from domaingpt.model.gpt import GPT
from domaingpt.stages.probe.figures import (
    plot_entropy_positions,
    plot_probe_curves,
    plot_topk_bars,
)


@dataclass(frozen=True)
class ProbeSettings(StageSettings):
    """Settings of ``domaingpt probe`` (also read from a ``[probe]`` TOML table)."""

    SECTION = "probe"
    models: list[str] = setting([], "models to probe (default: every trained model)")
    corpora: list[str] = setting([], "prompt corpora, names or paths (default: the models')")
    prompts_per_corpus: int = setting(64, "validation prompts per corpus")
    length: int = setting(64, "prompt length in characters")
    top_k: int = setting(5, "top-k characters kept")
    prompts: list[str] = setting(
        [],
        "a prompt of your own; its last character is the target; \\n, \\t decoded",
        flag="--prompt",
        metavar="TEXT",
        repeat=True,
    )
    prompt_file: str = setting("", "prompts of your own, one per line (as --prompt)")
    epsilon: float = setting(0.05, "JS divergence (bits) below which a model counts as hardened")
    delta: float = setting(0.05, "p(true) settling tolerance", cli=False)
    overpredicted: int = setting(10, "characters per model in overpredicted.csv", cli=False)
    figure_prompts: int = setting(1, "prompts per corpus in the top-k figures", cli=False)
    batch_size: int = setting(128, "prompts per forward pass", cli=False)

    def check(self) -> None:
        super().check()
        self.validate()

    def validate(self) -> ProbeSettings:
        check_not_empty(self.prompts)
        if self.top_k < 1:
            raise ConfigError(f"top-k must be at least 1, got {self.top_k}")
        if not self.epsilon > 0 or not self.delta > 0:
            raise ConfigError("epsilon and delta must be positive")
        if self.batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, got {self.batch_size}")
        return self


# --- the numbers of one checkpoint ----------------------------------------------------


@dataclass
class NextCharStats:
    """Next-character statistics of one model on a prompt set (numpy, one row per prompt).

    Per-position arrays are ``(N, T)`` with NaN on padding; ``last_probs`` is ``(N, V)``;
    ``mean_probs`` is the predicted distribution averaged over each prompt's positions.
    """

    entropy: np.ndarray  # (N, T) bits
    p_true: np.ndarray  # (N, T)
    rank: np.ndarray  # (N, T) float (NaN on padding)
    last_probs: np.ndarray  # (N, V)
    mean_probs: np.ndarray  # (N, V)
    lengths: np.ndarray  # (N,)

    def last(self, array: np.ndarray) -> np.ndarray:
        return array[np.arange(len(self.lengths)), self.lengths - 1]


def entropy_bits(logp: torch.Tensor) -> torch.Tensor:
    """Entropy in bits of distributions given as log-probabilities (last dimension)."""
    return -(logp.exp() * logp).sum(-1) * LOG2E


@torch.inference_mode()
def next_char_stats(
    model: GPT, prompts: PromptSet, *, batch_size: int = 128, device: torch.device | str = "cpu"
) -> NextCharStats:
    """Entropy, p(true) and rank at every position, and the distributions, in batches."""
    model.eval()
    N, T, V = len(prompts), prompts.max_length, model.config.vocab_size
    entropy = np.full((N, T), np.nan)
    p_true = np.full((N, T), np.nan)
    rank = np.full((N, T), np.nan)
    last_probs = np.zeros((N, V))
    mean_probs = np.zeros((N, V))
    lengths = np.array([p.length for p in prompts.prompts], dtype=np.int64)
    for lo in range(0, N, batch_size):
        index = list(range(lo, min(lo + batch_size, N)))
        ids, lens, _, nxt = prompts.tensors(device, index)
        logits, _ = model(ids)
        logp = F.log_softmax(logits.float(), dim=-1).double()  # (B, t, V)
        valid = nxt >= 0
        safe = nxt.clamp(min=0)
        lp_true = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
        rk = 1 + (logp > lp_true.unsqueeze(-1)).sum(-1)
        t = ids.shape[1]
        rows = slice(lo, lo + len(index))
        nan = torch.tensor(float("nan"), dtype=torch.float64, device=logp.device)
        entropy[rows, :t] = torch.where(valid, entropy_bits(logp), nan).cpu().numpy()
        p_true[rows, :t] = torch.where(valid, lp_true.exp(), nan).cpu().numpy()
        rank[rows, :t] = torch.where(valid, rk.double(), nan).cpu().numpy()
        probs = logp.exp()
        b = torch.arange(len(index), device=logp.device)
        last_probs[rows] = probs[b, lens - 1].cpu().numpy()
        summed = (probs * valid.unsqueeze(-1)).sum(1)
        mean_probs[rows] = (summed / lens.unsqueeze(-1)).cpu().numpy()
    return NextCharStats(entropy, p_true, rank, last_probs, mean_probs, lengths)


# --- tables ---------------------------------------------------------------------------


def char_columns(vocab: Vocab, ids: Sequence[int]) -> dict[str, list]:
    """``char``, ``label`` and ``codepoint`` (-1 for ``<unk>``) columns for vocabulary ids."""
    chars = [vocab.token(int(i)) for i in ids]
    return {
        "char": chars,
        "label": [c if c == UNK else describe_char(c) for c in chars],
        "codepoint": [-1 if c == UNK else ord(c) for c in chars],
    }


def summarise(last: pd.DataFrame) -> pd.DataFrame:
    """Mean entropy, p(true) (with sd and CI), median rank and top-1 accuracy by
    (model, iteration, domain), at the last position; ``entropy_all_*`` is the entropy
    averaged over every position of each prompt first (less noisy: L predictions each)."""
    rows = []
    for (model, iteration, domain), g in last.groupby(["model", "iteration", "domain"], sort=True):
        row = {"model": model, "iteration": int(iteration), "domain": domain, "n": len(g)}
        for col, name in (
            ("entropy_bits", "entropy"),
            ("p_true", "p_true"),
            ("entropy_all_bits", "entropy_all"),
        ):
            stats = mean_ci(g[col].to_numpy())
            row.update({f"{name}_{k}": v for k, v in stats.items() if k != "n"})
        row["rank_median"] = float(g["rank"].median())
        row["top1_accuracy"] = float((g["rank"] == 1).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def hardening(
    js: pd.DataFrame, summary: pd.DataFrame, epsilon: float, delta: float
) -> pd.DataFrame:
    """The hardening iteration per (model, domain) (see the module docstring)."""
    rows = []
    for (model, domain), g in summary.groupby(["model", "domain"], sort=True):
        g = g.sort_values("iteration")
        iters = g["iteration"].to_list()
        pairs = js[(js["model"] == model) & (js["domain"] == domain)].sort_values("iteration")
        row: dict = {
            "model": model,
            "domain": domain,
            "epsilon": epsilon,
            "first_iteration": iters[0],
            "final_iteration": iters[-1],
            "n_checkpoints": len(iters),
            "last_js_bits": float(pairs["js_bits"].iloc[-1]) if len(pairs) else np.nan,
            "max_js_bits": float(pairs["js_bits"].max()) if len(pairs) else np.nan,
        }
        if len(pairs) == 0:
            row.update(hardening_iteration=np.nan, reached=None)
        else:
            above = pairs[pairs["js_bits"] >= epsilon]
            if len(above) == 0:
                row.update(hardening_iteration=iters[0], reached=True)
            elif int(above["iteration"].iloc[-1]) == iters[-1]:
                row.update(hardening_iteration=np.nan, reached=False)
            else:
                row.update(hardening_iteration=int(above["iteration"].iloc[-1]), reached=True)
        pt = g["p_true_mean"].to_numpy()
        final = pt[-1]
        within = np.abs(pt - final) <= delta
        settled = len(pt) - 1
        while settled > 0 and within[settled - 1]:
            settled -= 1
        row.update(delta=delta, p_true_final=float(final), p_true_settled_iteration=iters[settled])
        rows.append(row)
    out = pd.DataFrame(rows)
    if len(out):
        out["hardening_iteration"] = out["hardening_iteration"].astype("Int64")
    return out


# --- claims of the study --------------------------------------------------------------


# --- the stage ------------------------------------------------------------------------


def _overpredicted(
    stats: NextCharStats,
    prompts: PromptSet,
    domains: list[str],
    vocab: Vocab,
    model: ModelEntry,
    iteration: int,
    n: int,
) -> pd.DataFrame:
    out_rows = [i for i, d in enumerate(domains) if d == "out"]
    if not out_rows:
        return pd.DataFrame()
    mean_prob = stats.mean_probs[out_rows].mean(0)
    base = np.mean([prompts.frequencies[prompts.prompts[i].corpus] for i in out_rows], axis=0)
    excess = mean_prob - base
    top = np.argsort(-excess, kind="stable")[:n]
    return pd.DataFrame(
        {
            "model": model.name,
            "iteration": iteration,
            "rank": np.arange(1, len(top) + 1),
            **char_columns(vocab, top),
            "mean_prob": mean_prob[top],
            "corpus_freq": base[top],
            "excess": excess[top],
            "n_prompts": len(out_rows),
        }
    )


def _figure_prompts(prompts: PromptSet, per_corpus: int) -> list[int]:
    chosen, seen = [], {}
    for p in prompts.prompts:
        if seen.get(p.corpus, 0) < per_corpus:
            chosen.append(p.prompt_id)
            seen[p.corpus] = seen.get(p.corpus, 0) + 1
    return chosen


def run_probe(
    run: RunDir,
    settings: ProbeSettings | None = None,
    *,
    progress: bool = True,
    log: Log = stderr_log,
) -> dict[str, Path]:
    """Probe every checkpoint of the selected models and write ``runs/NAME/probe/``.

    Files: prompts.jsonl, last.csv (per model, checkpoint, prompt), topk.csv,
    positions.csv (mean entropy and p(true) by model, iteration, prompt corpus, position),
    summary.csv, js.csv, hardening.csv, overpredicted.csv, claims.csv, settings.json and
    the figures entropy.png, p_true.png, topk_<model>.png, entropy_positions.png.
    """
    settings = settings or ProbeSettings()
    models, vocab, prompts, device = prepare_prompt_stage(run, settings, log)
    histories = {m.name: list_checkpoints(m.directory / "checkpoints", "iter") for m in models}
    k = min(settings.top_k, vocab.size)
    figure_ids = set(_figure_prompts(prompts, settings.figure_prompts))
    frame = prompts.frame()

    last_parts, topk_parts, pos_parts, js_rows, over_parts = [], [], [], [], []
    bar = progress_bar(
        sum(len(h) for h in histories.values()), "probe", enabled=progress, unit="ckpt"
    )
    for model in models:
        domains = [domain_of(p.corpus, model.corpus) for p in prompts.prompts]
        previous: tuple[int, np.ndarray] | None = None
        history = histories[model.name]
        for info in history:
            loaded = load_checkpoint(info, device)
            if loaded.vocab.fingerprint != vocab.fingerprint:
                raise DomainGPTError(
                    f"checkpoint {info.json_path} uses another vocabulary than the run; "
                    "probe the models of one run together"
                )
            stats = next_char_stats(
                loaded.model, prompts, batch_size=settings.batch_size, device=device
            )
            it = info.iteration
            last_parts.append(
                pd.DataFrame(
                    {
                        "model": model.name,
                        "model_corpus": model.corpus,
                        "iteration": it,
                        "prompt_id": frame["prompt_id"],
                        "prompt_corpus": frame["corpus"],
                        "domain": domains,
                        "entropy_bits": stats.last(stats.entropy),
                        "p_true": stats.last(stats.p_true),
                        "entropy_all_bits": np.nanmean(stats.entropy, axis=1),
                        "p_true_all": np.nanmean(stats.p_true, axis=1),
                        "rank": stats.last(stats.rank).astype(np.int64),
                        "target_label": frame["target_label"],
                    }
                )
            )
            top = np.argsort(-stats.last_probs, axis=1, kind="stable")[:, :k]
            rows_k = np.repeat(np.arange(len(prompts)), k)
            ids_k = top.reshape(-1)
            topk_parts.append(
                pd.DataFrame(
                    {
                        "model": model.name,
                        "iteration": it,
                        "prompt_id": frame["prompt_id"].to_numpy()[rows_k],
                        "domain": np.asarray(domains)[rows_k],
                        "k": np.tile(np.arange(1, k + 1), len(prompts)),
                        **char_columns(vocab, ids_k),
                        "prob": stats.last_probs[rows_k, ids_k],
                        "is_target": ids_k
                        == np.array([p.target_id for p in prompts.prompts])[rows_k],
                    }
                )
            )
            pos = pd.DataFrame(
                {
                    "prompt_corpus": np.repeat(frame["corpus"].to_numpy(), prompts.max_length),
                    "domain": np.repeat(domains, prompts.max_length),
                    "position": np.tile(np.arange(prompts.max_length), len(prompts)),
                    "entropy_bits": stats.entropy.reshape(-1),
                    "p_true": stats.p_true.reshape(-1),
                }
            ).dropna()
            agg = (
                pos.groupby(["prompt_corpus", "domain", "position"], sort=True)
                .agg(
                    mean_entropy_bits=("entropy_bits", "mean"),
                    mean_p_true=("p_true", "mean"),
                    n=("p_true", "size"),
                )
                .reset_index()
            )
            agg.insert(0, "iteration", it)
            agg.insert(0, "model", model.name)
            pos_parts.append(agg)
            if previous is not None:
                js = js_divergence_bits(previous[1], stats.last_probs)
                for dom in sorted(set(domains)):
                    sel = np.array([d == dom for d in domains])
                    js_rows.append(
                        {
                            "model": model.name,
                            "domain": dom,
                            "prev_iteration": previous[0],
                            "iteration": it,
                            "js_bits": float(js[sel].mean()),
                            "js_std": float(js[sel].std(ddof=1)) if sel.sum() > 1 else 0.0,
                            "n": int(sel.sum()),
                        }
                    )
            previous = (it, stats.last_probs)
            if info is history[-1]:
                over_parts.append(
                    _overpredicted(
                        stats, prompts, domains, vocab, model, it, settings.overpredicted
                    )
                )
            bar.update(1)
    bar.close()

    tables: dict[str, pd.DataFrame] = {
        "last": pd.concat(last_parts, ignore_index=True),
        "topk": pd.concat(topk_parts, ignore_index=True),
        "positions": pd.concat(pos_parts, ignore_index=True),
        "js": pd.DataFrame(
            js_rows,
            columns=["model", "domain", "prev_iteration", "iteration", "js_bits", "js_std", "n"],
        ),
    }
    tables["summary"] = summarise(tables["last"])
    tables["hardening"] = hardening(
        tables["js"], tables["summary"], settings.epsilon, settings.delta
    )
    over = [o for o in over_parts if len(o)]
    tables["overpredicted"] = (
        pd.concat(over, ignore_index=True)
        if over
        else pd.DataFrame(
            columns=[
                "model",
                "iteration",
                "rank",
                "char",
                "label",
                "codepoint",
                "mean_prob",
                "corpus_freq",
                "excess",
                "n_prompts",
            ]
        )
    )
    if not over:
        log("note: no out-of-domain prompts, so no over-predicted characters")

    out = run.probe
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["prompts"] = write_jsonl(out / "prompts.jsonl", frame.to_dict("records"))
    for name, df in tables.items():
        paths[name] = write_table(df, out / f"{name}.csv")
    paths["settings"] = write_json(out / "settings.json", settings.to_dict())
    paths.update(_probe_figures(tables, frame, figure_ids, out))
    log(f"probe: {len(models)} model(s), {len(prompts)} prompts; wrote {len(paths)} files to {out}")
    return paths


def _probe_figures(
    tables: dict[str, pd.DataFrame], frame: pd.DataFrame, figure_ids: set[int], out: Path
) -> dict[str, Path]:
    paths = {
        "entropy_png": plot_probe_curves(tables["summary"], out / "entropy.png", "entropy"),
        "p_true_png": plot_probe_curves(tables["summary"], out / "p_true.png", "p_true"),
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


def _safe(name: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "model"


_PROBE_TABLES = (
    "last",
    "topk",
    "positions",
    "summary",
    "js",
    "hardening",
    "overpredicted",
)


def load_probe(run: RunDir) -> dict[str, pd.DataFrame]:
    """The tables written by :func:`run_probe` (plus ``prompts``), keyed by file stem."""
    out = run.probe
    if not (out / "summary.csv").is_file():
        raise DomainGPTError(
            f"no probe results in {out}; run domaingpt probe --out {run.root} first"
        )
    tables = {name: read_table(out / f"{name}.csv") for name in _PROBE_TABLES}
    tables["prompts"] = pd.DataFrame(read_jsonl(out / "prompts.jsonl"))
    if "hardening_iteration" in tables["hardening"]:
        tables["hardening"]["hardening_iteration"] = tables["hardening"][
            "hardening_iteration"
        ].astype("Int64")
    if "reached" in tables["hardening"]:
        tables["hardening"]["reached"] = [
            None if isinstance(r, float) else r in (True, "True")
            for r in tables["hardening"]["reached"]
        ]
    return tables
