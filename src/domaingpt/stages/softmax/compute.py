"""Softmax inspection (Part 3 of the study): how sure each model is of the next character,
checkpoint by checkpoint, on prompts from its own corpus and from the others.

For every model of a run, every history checkpoint and every prompt (see
:mod:`domaingpt.context.prompts`) the next-character distribution is read at every position:

entropy
    ``H(p) = -Σ p(c) log2 p(c)`` in **bits**; ``log2(V)`` for a uniform distribution
    over the ``V`` ids of the vocabulary, 0 for a certain one.
p(true), rank
    the probability of the true next character and its rank (1 = the model's top choice;
    ties counted in the character's favour).
top-k
    the ``k`` most likely characters and their probabilities, at the last position.

"In-domain" means the prompt comes from the model's training corpus
(:func:`domaingpt.context.prompts.domain_of`). Aggregates give mean, standard deviation and a
Student-t 95 % confidence interval (mean ± t·sd/√n, n − 1 degrees of freedom) over
prompts. The claim "out-of-domain entropy is higher" is tested on each prompt's entropy
averaged over all its positions (``entropy_all_bits``: L predictions per prompt instead
of one, so the test has power with a few dozen prompts), with a Welch 95 % CI of the
difference, once per out-of-domain prompt corpus (see :mod:`.claims`).

Over-predicted characters
    On out-of-domain prompts at the final checkpoint: the model's mean predicted
    probability of each character (averaged over every position of every out-of-domain
    prompt) minus that character's frequency in the *prompt's* corpus (its whole text).
    The prompt corpus is the baseline because a calibrated model would predict a
    character about as often as it occurs in the text it is reading; a large positive
    excess (the study's Math model and ``<space>``) is a habit of the training corpus
    carried where it does not belong.

Where probabilities harden between checkpoints: :mod:`.hardening`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from domaingpt.context.prompts import PromptSet
from domaingpt.context.rundir import ModelEntry
from domaingpt.core.device import full_precision
from domaingpt.core.statistics import LOG2E, mean_ci
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.data.vocab import UNK
from domaingpt.model.gpt import GPT

OVERPREDICTED_COLUMNS = [
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
        with full_precision(ids.device):  # entropies and p(true): float32 on any device
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


# --- the tables of one checkpoint -------------------------------------------------------


def char_columns(vocab: AnyVocab, ids: Sequence[int]) -> dict[str, list]:
    """``char`` (the id's text), ``label`` and ``codepoint`` columns for vocabulary ids
    (``codepoint`` -1 for ``<unk>`` and for a subword token that is not one character)."""
    chars = [vocab.token(int(i)) for i in ids]
    return {
        "char": chars,
        "label": [vocab.label(int(i)) for i in ids],
        "codepoint": [-1 if c == UNK or len(c) != 1 else ord(c) for c in chars],
    }


def last_table(
    stats: NextCharStats, frame: pd.DataFrame, domains: list[str], model: ModelEntry, it: int
) -> pd.DataFrame:
    """One row per prompt: the last position's entropy, p(true) and rank, and the
    entropy and p(true) averaged over every position (``last.csv``)."""
    return pd.DataFrame(
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


def topk_table(
    stats: NextCharStats,
    prompts: PromptSet,
    frame: pd.DataFrame,
    domains: list[str],
    vocab: AnyVocab,
    k: int,
    model: ModelEntry,
    it: int,
) -> pd.DataFrame:
    """The ``k`` most likely next characters of each prompt, at its last position."""
    top = np.argsort(-stats.last_probs, axis=1, kind="stable")[:, :k]
    rows_k = np.repeat(np.arange(len(prompts)), k)
    ids_k = top.reshape(-1)
    targets = np.array([p.target_id for p in prompts.prompts])
    return pd.DataFrame(
        {
            "model": model.name,
            "iteration": it,
            "prompt_id": frame["prompt_id"].to_numpy()[rows_k],
            "domain": np.asarray(domains)[rows_k],
            "k": np.tile(np.arange(1, k + 1), len(prompts)),
            **char_columns(vocab, ids_k),
            "prob": stats.last_probs[rows_k, ids_k],
            "is_target": ids_k == targets[rows_k],
        }
    )


def position_table(
    stats: NextCharStats,
    frame: pd.DataFrame,
    domains: list[str],
    max_length: int,
    model: ModelEntry,
    it: int,
) -> pd.DataFrame:
    """Mean entropy and p(true) by prompt corpus, domain and position (``positions.csv``)."""
    pos = pd.DataFrame(
        {
            "prompt_corpus": np.repeat(frame["corpus"].to_numpy(), max_length),
            "domain": np.repeat(domains, max_length),
            "position": np.tile(np.arange(max_length), len(frame)),
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
    return agg


def overpredicted(
    stats: NextCharStats,
    prompts: PromptSet,
    domains: list[str],
    vocab: AnyVocab,
    model: ModelEntry,
    iteration: int,
    n: int,
) -> pd.DataFrame:
    """The ``n`` characters predicted most above their frequency on out-of-domain prompts
    (empty without out-of-domain prompts); see the module docstring."""
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


# --- across checkpoints -----------------------------------------------------------------


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
