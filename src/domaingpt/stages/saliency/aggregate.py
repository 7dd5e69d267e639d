"""Attributions as tidy tables: by character class, by position relative to the target,
by distance, per prompt and per checkpoint.

Raw scores are kept (they compare across checkpoints and domains); the per-prompt
normalised **share** of character ``i`` is ``|a_i| / Σ_j |a_j|`` (shares sum to 1, as
ecco and inseq display them), and its **lift** is ``share_i × length``: 1 means the
character got exactly the average share of its prompt.

Aggregates are by model, checkpoint, method and domain (in / out / user, see
:func:`domaingpt.context.prompts.domain_of`). Relative positions are defined by whitespace
(``str.isspace``, so newlines too): the **current word** is the run of non-whitespace
characters that ends the prompt (the word the target continues; empty when the prompt
ends in whitespace), the **boundary** is the whitespace before it, the **previous word**
the non-whitespace run before that, and everything earlier is **further back**.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from domaingpt.context.prompts import PromptSet
from domaingpt.core.statistics import mean_ci
from domaingpt.data.charclass import CLASSES, char_class

#: The positions relative to the target, nearest first.
RELPOS = ("current_word", "boundary", "previous_word", "further_back")


def relative_positions(text: str) -> list[str]:
    """Each character's place relative to the target (see the module docstring)."""
    n = len(text)
    labels = ["further_back"] * n
    j = n
    while j > 0 and not text[j - 1].isspace():
        j -= 1
    labels[j:n] = ["current_word"] * (n - j)
    k = j
    while k > 0 and text[k - 1].isspace():
        k -= 1
    labels[k:j] = ["boundary"] * (j - k)
    m = k
    while m > 0 and not text[m - 1].isspace():
        m -= 1
    labels[m:k] = ["previous_word"] * (k - m)
    return labels


def shares(values: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Per-prompt normalised magnitudes ``|a_i| / Σ_j |a_j|`` (rows sum to 1; 0 on padding)."""
    mag = np.abs(values)
    pos = np.arange(values.shape[1])
    mag = np.where(pos[None, :] < lengths[:, None], mag, 0.0)
    total = mag.sum(1, keepdims=True)
    uniform = (pos[None, :] < lengths[:, None]) / lengths[:, None]
    return np.where(total > 0, mag / np.where(total > 0, total, 1.0), uniform)


def per_character(values: np.ndarray, prompts: PromptSet) -> tuple[np.ndarray, np.ndarray]:
    """Attributions per input character, and each prompt's length in characters.

    With a subword vocabulary a score belongs to a token: it is spread evenly over the
    characters the token covers (its span in the prompt's text), so a class's share
    counts every character of it, whatever tokens carry them. A token that covers no
    character (a byte-level piece of one) gives its score to the token that completes
    the character. A character vocabulary's scores are returned as they are.
    """
    if all(p.lengths is None for p in prompts.prompts):
        return values, np.array([p.length for p in prompts.prompts])
    n_chars = np.array([len(p.text) for p in prompts.prompts])
    out = np.zeros((len(prompts), max(int(n_chars.max(initial=0)), 1)), dtype=values.dtype)
    for i, p in enumerate(prompts.prompts):
        lengths = p.lengths if p.lengths is not None else np.ones(p.length, dtype=np.int64)
        pos, carry = 0, 0.0
        for j, n in enumerate(lengths):
            v = float(values[i, j]) + carry
            if n == 0:
                carry = v
                continue
            out[i, pos : pos + n] = v / n
            pos, carry = pos + int(n), 0.0
        if carry and pos:
            out[i, pos - 1] += carry
    return out, n_chars


def long_frame(values: np.ndarray, prompts: PromptSet, domains: Sequence[str]) -> pd.DataFrame:
    """One row per (prompt, input character): class, relative position, distance to the
    target (1 = the last character), raw score, magnitude, share and lift (scores of
    tokens spread over their characters: :func:`per_character`)."""
    values, lengths = per_character(values, prompts)
    sh = shares(values, lengths)
    rows: dict[str, list] = {
        k: []
        for k in (
            "prompt_id",
            "prompt_corpus",
            "domain",
            "position",
            "distance",
            "char",
            "char_class",
            "relpos",
            "raw",
            "share",
            "lift",
        )
    }
    for i, p in enumerate(prompts.prompts):
        L, text = int(lengths[i]), p.text
        rows["prompt_id"] += [p.prompt_id] * L
        rows["prompt_corpus"] += [p.corpus] * L
        rows["domain"] += [domains[i]] * L
        rows["position"] += list(range(L))
        rows["distance"] += list(range(L, 0, -1))
        rows["char"] += list(text)
        rows["char_class"] += [char_class(c) for c in text]
        rows["relpos"] += relative_positions(text)
        rows["raw"] += values[i, :L].tolist()
        rows["share"] += sh[i, :L].tolist()
        rows["lift"] += (sh[i, :L] * L).tolist()
    df = pd.DataFrame(rows)
    df["magnitude"] = df["raw"].abs()
    return df


def aggregate(long: pd.DataFrame, by: str) -> pd.DataFrame:
    """Mean magnitude, mean share, lift and total share per value of ``by`` (and domain).

    ``total_share`` is the fraction of all attribution mass (per prompt, averaged) that
    falls on the group; ``lift`` is the mean share of a group's characters relative to
    their prompt's average (1 = average).
    """
    n_prompts = long.groupby("domain")["prompt_id"].nunique()
    # One grouping, its means and sums in one call each: the same cython reductions as
    # named aggregations (the same numbers), without their per-column overhead.
    groups = long.groupby(["domain", by], sort=True)
    means = groups[["magnitude", "share", "lift"]].mean()
    g = pd.DataFrame(
        {
            "n_chars": groups.size(),
            "mean_magnitude": means["magnitude"],
            "mean_share": means["share"],
            "lift": means["lift"],
        }
    ).reset_index()
    g["total_share"] = groups["share"].sum().to_numpy() / g["domain"].map(n_prompts)
    return g


def per_prompt(
    values: np.ndarray, log_p: np.ndarray, prompts: PromptSet, domains: Sequence[str]
) -> pd.DataFrame:
    """Per prompt: total magnitude, largest share and the entropy of the shares (bits;
    lower = attribution focused on fewer characters)."""
    values, lengths = per_character(values, prompts)
    sh = shares(values, lengths)
    with np.errstate(divide="ignore", invalid="ignore"):
        ent = -np.where(sh > 0, sh * np.log2(sh), 0.0).sum(1)
    return pd.DataFrame(
        {
            "prompt_id": [p.prompt_id for p in prompts.prompts],
            "prompt_corpus": [p.corpus for p in prompts.prompts],
            "domain": list(domains),
            "log_p_true": log_p,
            "total_magnitude": np.abs(values).sum(1),
            "max_share": sh.max(1),
            "share_entropy_bits": ent,
        }
    )


def checkpoint_summary(pp: pd.DataFrame) -> pd.DataFrame:
    """Mean (and CI) of the total attribution magnitude per domain, with focus measures."""
    rows = []
    for domain, g in pp.groupby("domain", sort=True):
        s = mean_ci(g["total_magnitude"].to_numpy())
        rows.append(
            {
                "domain": domain,
                "n": s["n"],
                "total_magnitude_mean": s["mean"],
                "total_magnitude_ci_low": s["ci_low"],
                "total_magnitude_ci_high": s["ci_high"],
                "max_share_mean": float(g["max_share"].mean()),
                "share_entropy_bits_mean": float(g["share_entropy_bits"].mean()),
                "log_p_true_mean": float(g["log_p_true"].mean()),
            }
        )
    return pd.DataFrame(rows)


def with_keys(df: pd.DataFrame, keys: dict) -> pd.DataFrame:
    """``df`` with the columns ``keys`` (model, iteration, method, ...) in front."""
    df = df.copy()
    for i, (k, v) in enumerate(keys.items()):
        df.insert(i, k, v)
    return df


def order_classes(df: pd.DataFrame) -> pd.DataFrame:
    """The class table sorted by model, iteration, method, domain, then the classes in
    :data:`~domaingpt.data.charclass.CLASSES` order (vowels first), not alphabetically."""
    if df.empty:
        return df
    order = {c: i for i, c in enumerate(CLASSES)}
    df = df.assign(_o=df["char_class"].map(order))
    return (
        df.sort_values(["model", "iteration", "method", "domain", "_o"])
        .drop(columns="_o")
        .reset_index(drop=True)
    )
