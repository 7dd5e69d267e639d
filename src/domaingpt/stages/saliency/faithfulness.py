"""Faithfulness: does deleting the characters a method ranks highest hurt the prediction
more than deleting random ones?

A deletion test. For each prompt the ``k`` characters with the highest score (the signed
score for input × gradient and integrated gradients, so the characters that most
*support* the prediction; the norm for grad_norm) are replaced by ``<unk>``
(``deletion_replacement = "space"`` uses a space), and the drop in ``f = log p(true)`` is
compared with the mean drop when ``k`` random characters of the same prompt are replaced
(``deletion_draws`` draws). The difference has a bootstrap 95 % CI over prompts; a method
is **faithful** at ``k`` when that CI lies above 0 (``faithfulness.csv``, per model), and
over the models pooled it is faithful, partly faithful (at some ``k``) or not faithful
(``verdicts.csv``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch

from domaingpt.context.prompts import PromptSet
from domaingpt.core.statistics import bootstrap_mean_ci
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.data.vocab import UNK_ID
from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import GPT
from domaingpt.stages.saliency.methods import target_log_prob

#: The pooled verdicts of a method, from every k faithful to none.
VERDICTS = ("faithful", "partly faithful", "not faithful")


@torch.no_grad()
def _log_p_of(
    model: GPT, ids: np.ndarray, lengths: np.ndarray, targets: np.ndarray, device
) -> np.ndarray:
    idx = torch.from_numpy(ids).to(device)
    lens = torch.from_numpy(lengths).to(device)
    tgt = torch.from_numpy(targets).to(device)
    return target_log_prob(model, model.embed(idx), lens, tgt).double().cpu().numpy()


def deletion_test(
    model: GPT,
    prompts: PromptSet,
    scores: np.ndarray,
    k: int,
    *,
    replacement_id: int = UNK_ID,
    draws: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> pd.DataFrame:
    """Per prompt: the drop in ``log p(true)`` when the ``k`` top-scored characters are
    replaced, and the mean drop over ``draws`` sets of ``k`` random characters."""
    return deletion_tests(
        model,
        prompts,
        {"": scores},
        [k],
        replacement_id=replacement_id,
        draws=draws,
        seed=seed,
        batch_size=batch_size,
        device=device,
    )[("", k)]


def deletion_tests(
    model: GPT,
    prompts: PromptSet,
    scores: dict[str, np.ndarray],
    ks: Sequence[int],
    *,
    replacement_id: int = UNK_ID,
    draws: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[tuple[str, int], pd.DataFrame]:
    """:func:`deletion_test` of several methods' ``scores`` (by method) at each ``k`` on one
    model, by (method, k). The unchanged prompts' ``log p`` is computed once, and the
    random deletions once per ``k``: they depend on ``k``, ``seed`` and the prompts'
    lengths, not on the method, so every method is compared with the same draws."""
    ids_t, lens_t, tgt_t, _ = prompts.tensors("cpu")
    ids, lengths, targets = ids_t.numpy(), lens_t.numpy(), tgt_t.numpy()
    N, T = ids.shape
    pos = np.arange(T)
    valid = pos[None, :] < lengths[:, None]

    def log_p(batch_ids: np.ndarray) -> np.ndarray:
        out = np.zeros(N)
        for lo in range(0, N, batch_size):
            sl = slice(lo, lo + batch_size)
            out[sl] = _log_p_of(model, batch_ids[sl], lengths[sl], targets[sl], device)
        return out

    base = log_p(ids)
    out = {}
    for k in ks:
        kk = np.minimum(k, lengths)
        rng = np.random.default_rng(seed)
        drop_rand = np.zeros(N)
        for _ in range(draws):
            r_ids = ids.copy()
            for i in range(N):
                r_ids[i, rng.choice(lengths[i], size=kk[i], replace=False)] = replacement_id
            drop_rand += (base - log_p(r_ids)) / draws
        for name, values in scores.items():
            ranked = np.argsort(-np.where(valid, values, -np.inf), axis=1, kind="stable")
            top_ids = ids.copy()
            for i in range(N):
                top_ids[i, ranked[i, : kk[i]]] = replacement_id
            drop_top = base - log_p(top_ids)
            out[(name, k)] = pd.DataFrame(
                {
                    "prompt_id": [p.prompt_id for p in prompts.prompts],
                    "log_p_true": base,
                    "drop_top": drop_top,
                    "drop_random": drop_rand,
                    "diff": drop_top - drop_rand,
                }
            )
    return out


def verdict(ci_low: float, ci_high: float) -> str:
    """One method at one ``k`` on one model: faithful when the CI of the extra drop is
    above zero."""
    if ci_low > 0:
        return "faithful"
    if ci_high < 0:
        return "worse than random"
    return "not distinguishable from random"


def faithfulness_rows(
    per_prompt_drops: pd.DataFrame, keys: dict, *, n_boot: int, seed: int
) -> dict:
    """``keys`` with the mean and bootstrap 95 % CI of each drop, and the verdict."""
    row = dict(keys)
    row["n"] = len(per_prompt_drops)
    for col in ("drop_top", "drop_random", "diff"):
        m, lo, hi = bootstrap_mean_ci(per_prompt_drops[col].to_numpy(), n_boot=n_boot, seed=seed)
        row.update({f"{col}_mean": m, f"{col}_ci_low": lo, f"{col}_ci_high": hi})
    row["verdict"] = verdict(row["diff_ci_low"], row["diff_ci_high"])
    return row


def method_verdicts(drops: pd.DataFrame, *, n_boot: int, seed: int) -> pd.DataFrame:
    """One row per method, pooled over models: faithful at every ``k`` tested, at some
    (partly faithful) or at none."""
    rows = []
    if drops.empty:
        return pd.DataFrame(columns=["method", "verdict", "faithful_at_k", "evidence"])
    # Pooled over models in name order, whatever order they were run in: the bootstrap
    # resamples rows by position, so the pooled interval must not depend on that order.
    drops = drops.sort_values("model", kind="stable")
    for method, g in drops.groupby("method", sort=False):
        at_k, ev = [], []
        for k, gk in g.groupby("k", sort=True):
            r = faithfulness_rows(gk, {}, n_boot=n_boot, seed=seed)
            if r["verdict"] == "faithful":
                at_k.append(int(k))
            ev.append(
                f"k={k}: top-k drop {r['drop_top_mean']:.3f} vs random {r['drop_random_mean']:.3f}"
                f" nats, difference {r['diff_mean']:+.3f} (95% CI {r['diff_ci_low']:+.3f} to "
                f"{r['diff_ci_high']:+.3f}, n={r['n']})"
            )
        ks = sorted(g["k"].unique())
        if len(at_k) == len(ks):
            v = "faithful"
        elif at_k:
            v = "partly faithful"
        else:
            v = "not faithful"
        rows.append(
            {
                "method": method,
                "verdict": v,
                "faithful_at_k": ",".join(map(str, at_k)),
                "models": ",".join(sorted(g["model"].unique())),
                "evidence": "; ".join(ev),
            }
        )
    return pd.DataFrame(rows)


def replacement_id(vocab: AnyVocab, which: str) -> int:
    """The id deleted tokens are replaced by: the vocabulary's neutral id (``<unk>``; a
    subword tokenizer without an unknown token: its space), or a space (``"space"``)."""
    if which == "space":
        rid = vocab.id_of(" ")
        if rid == vocab.unk_id or (rid == vocab.neutral_id and vocab.token(rid) != " "):
            raise DomainGPTError("the vocabulary has no space; use deletion_replacement = 'unk'")
        return rid
    return vocab.neutral_id
