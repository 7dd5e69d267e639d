"""Gradient-based interpretability (Part 4 of the study): which input characters a
prediction depends on.

The quantity explained is ``f(x) = log p(true next character | prompt)``, read at the
prompt's last position. Each method returns one score per input character, computed on
the token embeddings ``e`` (``model.embed``) with the position embeddings left in place
(``model(inputs_embeds=e)``):

``grad_norm``
    ``||∂f/∂e_i||_2``: the study's method. Unsigned: how sensitive ``f`` is to
    character ``i``, not in which direction.
``input_x_grad``
    ``Σ_d e_id · ∂f/∂e_id``: the first-order estimate of what removing ``e_i`` does.
``integrated_gradients``
    ``Σ_d e_id · ∫_0^1 ∂f/∂e_id(α·e) dα``: the path integral from a baseline of zero token
    embeddings (the prompt's *positions* are kept, its *characters* removed), computed by
    Gauss–Legendre quadrature (``ig_steps`` nodes; ``riemann_midpoint`` and
    ``riemann_trapezoid`` are also available). Completeness ``Σ_i a_i = f(x) − f(baseline)``
    holds up to quadrature error; every result carries its ``delta`` (the gap). The path
    can cross a sharp transition (an attention pattern switching) that 32 nodes miss, so
    prompts whose gap exceeds ``ig_tolerance`` (0.01 nats) are integrated again with 4×
    the steps, up to ``ig_max_steps`` (512); ``completeness.csv`` reports the gaps and
    how many prompts needed more steps.

The classes (:class:`GradientNorm`, :class:`InputXGradient`, :class:`IntegratedGradients`)
follow Captum's shape: construct with the model, call ``attribute(ids, target)``. They are
batched: one forward and one backward pass serve a whole batch of prompts (a prompt's
prediction depends only on its own embeddings, so the gradient of the batch's summed
``f`` holds every prompt's gradient). ``benchmarks/bench_saliency.py`` checks the values
against Captum's ``Saliency`` and measures the speed-up.

Raw scores are kept (they compare across checkpoints and domains); the per-prompt
normalised **share** of character ``i`` is ``|a_i| / Σ_j |a_j|`` (shares sum to 1, as
ecco and inseq display them), and its **lift** is ``share_i × length``: 1 means the
character got exactly the average share of its prompt.

Aggregates (``by_class.csv``, ``by_relpos.csv``, ``by_distance.csv``,
``by_checkpoint.csv``) are by model, checkpoint, method and domain (in / out / user, see
:func:`domaingpt.prompts.domain_of`). Relative positions are defined by whitespace
(``str.isspace``, so newlines too): the **current word** is the run of non-whitespace
characters that ends the prompt (the word the target continues; empty when the prompt
ends in whitespace), the **boundary** is the whitespace before it, the **previous word**
the non-whitespace run before that, and everything earlier is **further back**.

Faithfulness (``faithfulness.csv``, ``verdicts.csv``): a deletion test. For each prompt
the ``k`` characters with the highest score (the signed score for input × gradient and
integrated gradients, so the characters that most *support* the prediction; the norm for
grad_norm) are replaced by ``<unk>`` (``deletion_replacement = "space"`` uses a space),
and the drop in ``f`` is compared with the mean drop when ``k`` random characters of the
same prompt are replaced (``deletion_draws`` draws). The difference has a bootstrap 95 %
CI over prompts; a method is **faithful** at ``k`` when that CI lies above 0.

The study's statements (vowels get the highest gradient norms, the previous word matters,
norms shrink and attributions focus as training converges, Math relies on digits and
symbols, gradient norms are a faithful signal) are checked by :func:`saliency_claims`
into ``claims.csv`` (claim, model, holds: True / False / None, evidence).

Zero- vs few-shot (``zero_few.csv``): for every adapted model in ``runs/NAME/adapt/``
(``<source>__to__<target>/<start>/seed<k>/``), the target corpus's prompts are
attributed through the source model at the checkpoint adaptation started from
(zero-shot; the checkpoint's ``source_iteration`` record, else the ``<start>`` name) and
through the adapted model (few-shot). ``scratch`` runs have no source model and are left
out; without adapted models the table is skipped with a note.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from domaingpt.core.io import read_jsonl, write_json, write_jsonl
from domaingpt.core.progress import Log, progress_bar
from domaingpt.core.rundir import ModelEntry, RunDir
from domaingpt.core.settings import StageSettings, setting
from domaingpt.core.statistics import bootstrap_mean_ci, mean_ci
from domaingpt.core.tables import read_table, write_table
from domaingpt.data.charclass import CLASSES, char_class
from domaingpt.data.prompts import (
    PromptSet,
    check_not_empty,
    domain_of,
    prepare_prompt_stage,
)
from domaingpt.data.vocab import UNK_ID, Vocab
from domaingpt.errors import CheckpointError, DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointInfo,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
)
from domaingpt.model.gpt import GPT
from domaingpt.stages.saliency.figures import (
    plot_faithfulness,
    plot_saliency_checkpoints,
    plot_saliency_groups,
)
from domaingpt.stages.saliency.heatmap import HeatmapRow, write_heatmap

RELPOS = ("current_word", "boundary", "previous_word", "further_back")
LOG2E = 1.0 / math.log(2.0)


# --- the methods ----------------------------------------------------------------------


def target_log_prob(
    model: GPT, embeds: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    """``log p(target | prompt)`` at each prompt's last position, from token embeddings."""
    logits, _ = model(inputs_embeds=embeds, at=lengths - 1)
    rows = torch.arange(embeds.shape[0], device=embeds.device)
    return F.log_softmax(logits.float(), dim=-1)[rows, targets]


def _lengths(ids: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    if lengths is None:
        return torch.full((ids.shape[0],), ids.shape[1], dtype=torch.long, device=ids.device)
    return lengths.to(ids.device)


def _mask(values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    pos = torch.arange(values.shape[1], device=values.device)
    return values * (pos.unsqueeze(0) < lengths.unsqueeze(1))


class Attribution:
    """Base class: ``attribute(ids (B, T), target (B,), lengths=None) -> (B, T)`` scores."""

    name = ""
    signed = True

    def __init__(self, model: GPT) -> None:
        self.model = model

    def _gradient(
        self, embeds: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``f`` and ``∂f/∂embeds`` for a batch: one forward, one backward."""
        with torch.enable_grad():
            e = embeds.detach().requires_grad_(True)
            f = target_log_prob(self.model, e, lengths, targets)
            (grad,) = torch.autograd.grad(f.sum(), e)
        return f.detach(), grad

    def attribute(
        self, ids: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor | None = None
    ) -> torch.Tensor:
        raise NotImplementedError


class GradientNorm(Attribution):
    """L2 norm of the gradient of ``log p(target)`` w.r.t. each character's embedding."""

    name = "grad_norm"
    signed = False

    def attribute(self, ids, target, lengths=None):
        lengths = _lengths(ids, lengths)
        embeds = self.model.embed(ids).detach()
        _, grad = self._gradient(embeds, lengths, target)
        return _mask(grad.norm(dim=-1), lengths)


class InputXGradient(Attribution):
    """Embedding × gradient, summed over the embedding dimensions."""

    name = "input_x_grad"

    def attribute(self, ids, target, lengths=None):
        lengths = _lengths(ids, lengths)
        embeds = self.model.embed(ids).detach()
        _, grad = self._gradient(embeds, lengths, target)
        return _mask((embeds * grad).sum(-1), lengths)


def quadrature(n_steps: int, method: str) -> tuple[np.ndarray, np.ndarray]:
    """Nodes ``α`` in (0, 1] and weights summing to 1 for ``∫_0^1 g(α) dα``."""
    if n_steps < 1:
        raise DomainGPTError(f"integrated gradients needs at least 1 step, got {n_steps}")
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(n_steps)
        return (x + 1) / 2, w / 2
    if method == "riemann_midpoint":
        return (np.arange(n_steps) + 0.5) / n_steps, np.full(n_steps, 1.0 / n_steps)
    if method == "riemann_trapezoid":
        if n_steps < 2:
            raise DomainGPTError("the trapezoid rule needs at least 2 steps")
        w = np.full(n_steps, 1.0 / (n_steps - 1))
        w[[0, -1]] /= 2
        return np.linspace(0, 1, n_steps), w
    raise DomainGPTError(
        f"unknown integration method {method!r}; use gausslegendre, riemann_midpoint or "
        "riemann_trapezoid"
    )


class IntegratedGradients(Attribution):
    """Integrated gradients from zero token embeddings (positions kept), batched over
    prompts and integration steps (``internal_batch_size`` rows per forward pass).

    With ``tolerance`` set, prompts whose completeness gap ``|Σ a − (f(x) − f(0))|``
    exceeds it are integrated again with 4× the steps, up to ``max_steps``: the path
    from the baseline can cross a sharp transition (an attention pattern switching) that
    a fixed small number of nodes misses. ``last_delta`` and ``last_steps`` hold the gap
    and the steps used per prompt.
    """

    name = "integrated_gradients"

    def __init__(
        self,
        model: GPT,
        n_steps: int = 32,
        method: str = "gausslegendre",
        internal_batch_size: int = 512,
        tolerance: float | None = None,
        max_steps: int = 512,
    ) -> None:
        super().__init__(model)
        quadrature(n_steps, method)
        self.n_steps = n_steps
        self.method = method
        self.internal_batch_size = max(1, internal_batch_size)
        self.tolerance = tolerance
        self.max_steps = max(max_steps, n_steps)
        self.last_delta: torch.Tensor | None = None
        self.last_steps: torch.Tensor | None = None

    def _integrate(
        self, ids: torch.Tensor, target: torch.Tensor, lengths: torch.Tensor, n_steps: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        nodes, node_weights = quadrature(n_steps, self.method)
        embeds = self.model.embed(ids).detach()
        B = embeds.shape[0]
        shape = embeds.shape[1:]
        total = torch.zeros_like(embeds)
        per_pass = max(1, self.internal_batch_size // B)
        for lo in range(0, n_steps, per_pass):
            alphas = torch.tensor(
                nodes[lo : lo + per_pass], dtype=embeds.dtype, device=embeds.device
            )
            weights = torch.tensor(
                node_weights[lo : lo + per_pass], dtype=embeds.dtype, device=embeds.device
            )
            S = len(alphas)
            path = (alphas.view(S, 1, 1, 1) * embeds.unsqueeze(0)).reshape(S * B, *shape)
            _, grad = self._gradient(path, lengths.repeat(S), target.repeat(S))
            total += (weights.view(S, 1, 1, 1) * grad.view(S, B, *shape)).sum(0)
        attr = _mask((embeds * total).sum(-1), lengths)
        with torch.no_grad():
            f_x = target_log_prob(self.model, embeds, lengths, target)
            f_0 = target_log_prob(self.model, torch.zeros_like(embeds), lengths, target)
        return attr, attr.sum(-1) - (f_x - f_0)

    def attribute(self, ids, target, lengths=None, *, return_convergence_delta: bool = False):
        lengths = _lengths(ids, lengths)
        attr, delta = self._integrate(ids, target, lengths, self.n_steps)
        steps = torch.full((ids.shape[0],), self.n_steps, dtype=torch.long)
        n = self.n_steps
        while self.tolerance is not None and n < self.max_steps:
            bad = (delta.abs() > self.tolerance).nonzero().squeeze(1)
            if len(bad) == 0:
                break
            n = min(4 * n, self.max_steps)
            attr[bad], delta[bad] = self._integrate(ids[bad], target[bad], lengths[bad], n)
            steps[bad.cpu()] = n
        self.last_delta, self.last_steps = delta, steps
        return (attr, delta) if return_convergence_delta else attr


METHODS: dict[str, type[Attribution]] = {
    "grad_norm": GradientNorm,
    "input_x_grad": InputXGradient,
    "integrated_gradients": IntegratedGradients,
}


def check_methods(names: Sequence[str]) -> list[str]:
    """The method names, or an error naming the unknown one and the known ones."""
    import difflib

    out = []
    for name in names:
        name = name.strip()
        if name not in METHODS:
            close = difflib.get_close_matches(name, list(METHODS), n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise DomainGPTError(
                f"unknown saliency method {name!r}: {hint}known methods are {', '.join(METHODS)}"
            )
        out.append(name)
    if not out:
        raise DomainGPTError(f"no saliency method given; known methods are {', '.join(METHODS)}")
    return list(dict.fromkeys(out))


def make_method(
    name: str,
    model: GPT,
    *,
    ig_steps: int = 32,
    ig_method: str = "gausslegendre",
    ig_tolerance: float | None = 0.01,
    ig_max_steps: int = 512,
) -> Attribution:
    """A method object by name (see :data:`METHODS`)."""
    (name,) = check_methods([name])
    if name == "integrated_gradients":
        return IntegratedGradients(
            model, ig_steps, ig_method, tolerance=ig_tolerance, max_steps=ig_max_steps
        )
    return METHODS[name](model)


@dataclass
class PromptAttributions:
    """Scores ``(N, T)`` (0 on padding), ``log p(true)`` and, for IG, the completeness gap."""

    values: np.ndarray
    log_p: np.ndarray
    delta: np.ndarray | None
    steps: np.ndarray | None = None  # IG: integration steps used per prompt


def attribute_prompts(
    method: Attribution,
    prompts: PromptSet,
    *,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
) -> PromptAttributions:
    """Run ``method`` over a prompt set in batches of ``batch_size`` prompts."""
    method.model.eval()
    N, T = len(prompts), prompts.max_length
    values = np.zeros((N, T))
    log_p = np.zeros(N)
    is_ig = isinstance(method, IntegratedGradients)
    delta = np.zeros(N) if is_ig else None
    steps = np.zeros(N, dtype=np.int64) if is_ig else None
    for lo in range(0, N, batch_size):
        index = list(range(lo, min(lo + batch_size, N)))
        ids, lens, targets, _ = prompts.tensors(device, index)
        attr = method.attribute(ids, targets, lens)
        rows = slice(lo, lo + len(index))
        values[rows, : ids.shape[1]] = attr.detach().double().cpu().numpy()
        with torch.no_grad():
            lp = target_log_prob(method.model, method.model.embed(ids), lens, targets)
        log_p[rows] = lp.double().cpu().numpy()
        if is_ig:
            delta[rows] = method.last_delta.double().cpu().numpy()
            steps[rows] = method.last_steps.cpu().numpy()
    return PromptAttributions(values, log_p, delta, steps)


# --- positions, classes, shares --------------------------------------------------------


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


def long_frame(values: np.ndarray, prompts: PromptSet, domains: Sequence[str]) -> pd.DataFrame:
    """One row per (prompt, input character): class, relative position, distance to the
    target (1 = the last character), raw score, magnitude, share and lift."""
    lengths = np.array([p.length for p in prompts.prompts])
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
        L, text = p.length, p.text
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
    g = (
        long.groupby(["domain", by], sort=True)
        .agg(
            n_chars=("share", "size"),
            mean_magnitude=("magnitude", "mean"),
            mean_share=("share", "mean"),
            lift=("lift", "mean"),
            share_sum=("share", "sum"),
        )
        .reset_index()
    )
    g["total_share"] = g["share_sum"] / g["domain"].map(n_prompts)
    return g.drop(columns="share_sum")


def per_prompt(
    values: np.ndarray, log_p: np.ndarray, prompts: PromptSet, domains: Sequence[str]
) -> pd.DataFrame:
    """Per prompt: total magnitude, largest share and the entropy of the shares (bits;
    lower = attribution focused on fewer characters)."""
    lengths = np.array([p.length for p in prompts.prompts])
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


# --- faithfulness ----------------------------------------------------------------------


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
    ids_t, lens_t, tgt_t, _ = prompts.tensors("cpu")
    ids, lengths, targets = ids_t.numpy(), lens_t.numpy(), tgt_t.numpy()
    N, T = ids.shape
    pos = np.arange(T)
    valid = pos[None, :] < lengths[:, None]
    kk = np.minimum(k, lengths)

    def log_p(batch_ids: np.ndarray) -> np.ndarray:
        out = np.zeros(N)
        for lo in range(0, N, batch_size):
            sl = slice(lo, lo + batch_size)
            out[sl] = _log_p_of(model, batch_ids[sl], lengths[sl], targets[sl], device)
        return out

    base = log_p(ids)
    ranked = np.argsort(-np.where(valid, scores, -np.inf), axis=1, kind="stable")
    top_ids = ids.copy()
    for i in range(N):
        top_ids[i, ranked[i, : kk[i]]] = replacement_id
    drop_top = base - log_p(top_ids)
    rng = np.random.default_rng(seed)
    drop_rand = np.zeros(N)
    for _ in range(draws):
        r_ids = ids.copy()
        for i in range(N):
            r_ids[i, rng.choice(lengths[i], size=kk[i], replace=False)] = replacement_id
        drop_rand += (base - log_p(r_ids)) / draws
    return pd.DataFrame(
        {
            "prompt_id": [p.prompt_id for p in prompts.prompts],
            "log_p_true": base,
            "drop_top": drop_top,
            "drop_random": drop_rand,
            "diff": drop_top - drop_rand,
        }
    )


def verdict(ci_low: float, ci_high: float) -> str:
    if ci_low > 0:
        return "faithful"
    if ci_high < 0:
        return "worse than random"
    return "not distinguishable from random"


def faithfulness_rows(
    per_prompt_drops: pd.DataFrame, keys: dict, *, n_boot: int, seed: int
) -> dict:
    row = dict(keys)
    row["n"] = len(per_prompt_drops)
    for col in ("drop_top", "drop_random", "diff"):
        m, lo, hi = bootstrap_mean_ci(per_prompt_drops[col].to_numpy(), n_boot=n_boot, seed=seed)
        row.update({f"{col}_mean": m, f"{col}_ci_low": lo, f"{col}_ci_high": hi})
    row["verdict"] = verdict(row["diff_ci_low"], row["diff_ci_high"])
    return row


# --- settings and the stage -----------------------------------------------------------


@dataclass(frozen=True)
class SaliencySettings(StageSettings):
    """Settings of ``domaingpt saliency`` (also read from a ``[saliency]`` TOML table)."""

    SECTION = "saliency"
    models: list[str] = setting([], "models to explain (default: every trained model)")
    corpora: list[str] = setting([], "prompt corpora, names or paths (default: the models')")
    methods: list[str] = setting(
        ["grad_norm", "input_x_grad", "integrated_gradients"], "attribution methods"
    )
    checkpoints: str = setting("final", "which checkpoints are explained", choices=("final", "all"))
    ig_steps: int = setting(32, "integrated-gradients steps")
    ig_method: str = setting("gausslegendre", "integrated-gradients quadrature", cli=False)
    ig_tolerance: float = setting(
        0.01, "completeness gap (nats) that triggers more steps", cli=False
    )
    ig_max_steps: int = setting(512, "most integrated-gradients steps", cli=False)
    prompts_per_corpus: int = setting(64, "validation prompts per corpus")
    length: int = setting(64, "prompt length in characters")
    prompts: list[str] = setting(
        [],
        "a prompt of your own; its last character is the target; \\n, \\t decoded",
        flag="--prompt",
        metavar="TEXT",
        repeat=True,
    )
    prompt_file: str = setting("", "prompts of your own, one per line (as --prompt)")
    deletion_k: list[int] = setting([1, 3, 8], "characters replaced in the deletion test")
    deletion_draws: int = setting(10, "random draws per prompt in the deletion test", cli=False)
    deletion_replacement: str = setting("unk", "replacement: unk or space", cli=False)
    bootstrap: int = setting(1000, "bootstrap resamples of the intervals", cli=False)
    seed: int = setting(0, "seed of the random draws and the bootstrap", cli=False)
    heatmap_prompts: int = setting(2, "prompts per corpus in heatmap.html", cli=False)
    adapted: bool = setting(True, "zero- vs few-shot through the adapted models", cli=False)
    batch_size: int = setting(64, "prompts per forward pass", cli=False)

    def check(self) -> None:
        super().check()
        self.validate()

    def validate(self) -> SaliencySettings:
        check_not_empty(self.prompts)
        object.__setattr__(self, "methods", check_methods(self.methods))
        if self.checkpoints not in ("final", "all"):
            raise DomainGPTError(f"checkpoints must be 'final' or 'all', got {self.checkpoints!r}")
        quadrature(self.ig_steps, self.ig_method)
        if self.deletion_replacement not in ("unk", "space"):
            raise DomainGPTError(
                f"deletion replacement must be 'unk' or 'space', got {self.deletion_replacement!r}"
            )
        if any(k < 1 for k in self.deletion_k) or self.deletion_draws < 1:
            raise DomainGPTError("deletion k values and deletion draws must be at least 1")
        if self.batch_size < 1 or self.bootstrap < 10:
            raise DomainGPTError("batch size must be >= 1 and bootstrap >= 10")
        return self


_ADAPT_DIR = re.compile(r"^(?P<source>.+)__to__(?P<target>.+)$")


@dataclass(frozen=True)
class AdaptedModel:
    source: str
    target: str
    start: str
    seed: str
    directory: Path


def find_adapted(run: RunDir) -> list[AdaptedModel]:
    """Adapted models under ``adapt/<source>__to__<target>/<start>/seed<k>/checkpoints``;
    ``scratch`` runs (trained from random weights, no source model) are left out."""
    found = []
    if not run.adapt.is_dir():
        return found
    for ckpts in sorted(run.adapt.glob("*/*/seed*/checkpoints")):
        seed_dir = ckpts.parent
        start_dir = seed_dir.parent
        m = _ADAPT_DIR.match(start_dir.parent.name)
        if m and start_dir.name != "scratch" and list_checkpoints(ckpts, "iter"):
            found.append(
                AdaptedModel(m["source"], m["target"], start_dir.name, seed_dir.name, seed_dir)
            )
    return found


def start_checkpoint(run: RunDir, adapted: AdaptedModel) -> CheckpointInfo:
    """The source checkpoint an adaptation started from: its record says so, else the
    ``<start>`` folder name (``final``, ``early``, an iteration or ``iter-0000500``)."""
    final = find_checkpoint(adapted.directory)
    for key in ("start_iteration", "source_iteration", "init_iteration"):
        value = final.meta.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return find_checkpoint(run.model(adapted.source), value)
    digits = re.search(r"(\d+)$", adapted.start)
    if digits:
        return find_checkpoint(run.model(adapted.source), int(digits.group(1)))
    return find_checkpoint(run.model(adapted.source), "final")


def _method(name: str, model: GPT, settings: SaliencySettings) -> Attribution:
    return make_method(
        name,
        model,
        ig_steps=settings.ig_steps,
        ig_method=settings.ig_method,
        ig_tolerance=settings.ig_tolerance,
        ig_max_steps=settings.ig_max_steps,
    )


def _iter_checkpoints(model: ModelEntry, which: str) -> list[CheckpointInfo]:
    history = list_checkpoints(model.directory / "checkpoints", "iter")
    return history if which == "all" else history[-1:]


def _round(values: np.ndarray) -> list[float]:
    return [float(f"{v:.6g}") for v in values]


def _replacement(vocab: Vocab, which: str) -> int:
    if which == "space":
        rid = vocab.id_of(" ")
        if rid == UNK_ID:
            raise DomainGPTError("the vocabulary has no space; use deletion_replacement = 'unk'")
        return rid
    return UNK_ID


def run_saliency(
    run: RunDir,
    settings: SaliencySettings | None = None,
    *,
    progress: bool = True,
    log: Log = print,
) -> dict[str, Path]:
    """Attribute, aggregate, test faithfulness and write ``runs/NAME/saliency/``.

    Files: attributions.jsonl (per model, checkpoint, method, prompt: raw scores),
    prompts.jsonl, per_prompt.csv, by_class.csv, by_relpos.csv, by_distance.csv,
    by_checkpoint.csv, completeness.csv (IG), faithfulness.csv, verdicts.csv,
    zero_few.csv (when adapted models exist), settings.json, heatmap.html and the figures
    by_class.png, by_relpos.png, by_checkpoint.png, faithfulness.png.
    """
    settings = settings or SaliencySettings()
    models, vocab, prompts, device = prepare_prompt_stage(run, settings, log)
    replacement = _replacement(vocab, settings.deletion_replacement)
    frame = prompts.frame()
    plan = {m.name: _iter_checkpoints(m, settings.checkpoints) for m in models}
    adapted = find_adapted(run) if settings.adapted else []
    adapted = [a for a in adapted if a.source in {m.name for m in models}]
    steps = sum(len(v) for v in plan.values()) * len(settings.methods) + len(adapted) * 2 * len(
        settings.methods
    )
    bar = progress_bar(steps, "saliency", enabled=progress, unit="step")

    attr_rows: list[dict] = []
    parts: dict[str, list[pd.DataFrame]] = {
        k: [] for k in ("class", "relpos", "distance", "pp", "ckpt")
    }
    complete_rows, faith_rows, drops = [], [], []
    heat: list[dict] = []
    heat_ids = _heatmap_prompts(prompts, settings.heatmap_prompts)

    for model in models:
        domains = [domain_of(p.corpus, model.corpus) for p in prompts.prompts]
        history = plan[model.name]
        for info in history:
            loaded = load_checkpoint(info, device)
            final = info is history[-1]
            for name in settings.methods:
                method = _method(name, loaded.model, settings)
                res = attribute_prompts(
                    method, prompts, batch_size=settings.batch_size, device=device
                )
                keys = {"model": model.name, "iteration": info.iteration, "method": name}
                for i, p in enumerate(prompts.prompts):
                    attr_rows.append(
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
                for kind, by in (
                    ("class", "char_class"),
                    ("relpos", "relpos"),
                    ("distance", "distance"),
                ):
                    parts[kind].append(_with_keys(aggregate(long, by), keys))
                pp = per_prompt(res.values, res.log_p, prompts, domains)
                parts["pp"].append(_with_keys(pp, keys))
                parts["ckpt"].append(_with_keys(checkpoint_summary(pp), keys))
                if res.delta is not None:
                    gap = np.abs(
                        res.log_p
                        - _baseline_log_p(loaded.model, prompts, device, settings.batch_size)
                    )
                    complete_rows.append(
                        {
                            **keys,
                            "n": len(prompts),
                            "ig_steps": settings.ig_steps,
                            "ig_method": settings.ig_method,
                            "tolerance": settings.ig_tolerance,
                            "n_refined": int((res.steps > settings.ig_steps).sum()),
                            "max_steps_used": int(res.steps.max()),
                            "n_above_tolerance": int(
                                (np.abs(res.delta) > settings.ig_tolerance).sum()
                            ),
                            "max_abs_delta": float(np.abs(res.delta).max()),
                            "mean_abs_delta": float(np.abs(res.delta).mean()),
                            "mean_abs_f_x_minus_f_baseline": float(gap.mean()),
                            "relative_error": float(
                                np.abs(res.delta).mean() / max(gap.mean(), 1e-12)
                            ),
                        }
                    )
                if final:
                    for k in settings.deletion_k:
                        d = deletion_test(
                            loaded.model,
                            prompts,
                            res.values,
                            k,
                            replacement_id=replacement,
                            draws=settings.deletion_draws,
                            seed=settings.seed,
                            batch_size=max(settings.batch_size, 128),
                            device=device,
                        )
                        d.insert(0, "k", k)
                        d.insert(0, "method", name)
                        d.insert(0, "model", model.name)
                        drops.append(d)
                        faith_rows.append(
                            faithfulness_rows(
                                d,
                                {
                                    "model": model.name,
                                    "method": name,
                                    "k": k,
                                    "iteration": info.iteration,
                                },
                                n_boot=settings.bootstrap,
                                seed=settings.seed,
                            )
                        )
                    for i in heat_ids:
                        p = prompts.prompts[i]
                        heat.append(
                            {
                                "model": model.name,
                                "iteration": info.iteration,
                                "method": name,
                                "prompt_id": p.prompt_id,
                                "corpus": p.corpus,
                                "domain": domains[i],
                                "text": p.text,
                                "target": p.target,
                                "values": res.values[i, : p.length].tolist(),
                                "log_p_true": float(res.log_p[i]),
                            }
                        )
                bar.update(1)

    zero_few = _zero_few(run, adapted, prompts, settings, device, log, bar)
    bar.close()

    def cat(kind: str) -> pd.DataFrame:
        return pd.concat(parts[kind], ignore_index=True) if parts[kind] else pd.DataFrame()

    all_drops = pd.concat(drops, ignore_index=True) if drops else pd.DataFrame()
    tables: dict[str, pd.DataFrame] = {
        "per_prompt": cat("pp"),
        "by_class": _order_classes(cat("class")),
        "by_relpos": cat("relpos"),
        "by_distance": cat("distance"),
        "by_checkpoint": cat("ckpt"),
        "completeness": pd.DataFrame(complete_rows),
        "faithfulness": pd.DataFrame(faith_rows),
        "verdicts": _verdicts(all_drops, settings),
    }
    if zero_few is not None:
        tables["zero_few"] = zero_few

    out = run.saliency
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {
        "prompts": write_jsonl(out / "prompts.jsonl", frame.to_dict("records")),
        "attributions": write_jsonl(out / "attributions.jsonl", attr_rows),
    }
    stale = out / "zero_few.csv"
    if zero_few is None and stale.exists():
        stale.unlink()
    for name, df in tables.items():
        paths[name] = write_table(df, out / f"{name}.csv")
    paths["settings"] = write_json(out / "settings.json", settings.to_dict())
    paths["heatmap"] = _write_heatmap(heat, out / "heatmap.html", settings)
    paths.update(_saliency_figures(tables, out))
    log(
        f"saliency: {len(models)} model(s), {len(prompts)} prompts, methods "
        f"{', '.join(settings.methods)}; wrote {len(paths)} files to {out}"
    )
    return paths


def _with_keys(df: pd.DataFrame, keys: dict) -> pd.DataFrame:
    df = df.copy()
    for i, (k, v) in enumerate(keys.items()):
        df.insert(i, k, v)
    return df


def _order_classes(df: pd.DataFrame) -> pd.DataFrame:
    if df.empty:
        return df
    order = {c: i for i, c in enumerate(CLASSES)}
    df = df.assign(_o=df["char_class"].map(order))
    return (
        df.sort_values(["model", "iteration", "method", "domain", "_o"])
        .drop(columns="_o")
        .reset_index(drop=True)
    )


@torch.no_grad()
def _baseline_log_p(model: GPT, prompts: PromptSet, device, batch_size: int) -> np.ndarray:
    out = np.zeros(len(prompts))
    for lo in range(0, len(prompts), batch_size):
        index = list(range(lo, min(lo + batch_size, len(prompts))))
        ids, lens, targets, _ = prompts.tensors(device, index)
        zero = torch.zeros_like(model.embed(ids))
        out[lo : lo + len(index)] = (
            target_log_prob(model, zero, lens, targets).double().cpu().numpy()
        )
    return out


def _verdicts(drops: pd.DataFrame, settings: SaliencySettings) -> pd.DataFrame:
    """One row per method: pooled over models, faithful at which k."""
    rows = []
    if drops.empty:
        return pd.DataFrame(columns=["method", "verdict", "faithful_at_k", "evidence"])
    # Pooled over models in name order, whatever order they were run in: the bootstrap
    # resamples rows by position, so the pooled interval must not depend on that order.
    drops = drops.sort_values("model", kind="stable")
    for method, g in drops.groupby("method", sort=False):
        at_k, ev = [], []
        for k, gk in g.groupby("k", sort=True):
            r = faithfulness_rows(gk, {}, n_boot=settings.bootstrap, seed=settings.seed)
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


def _zero_few(
    run: RunDir,
    adapted: list[AdaptedModel],
    prompts: PromptSet,
    settings: SaliencySettings,
    device,
    log: Log,
    bar,
) -> pd.DataFrame | None:
    if not settings.adapted:
        return None
    if not adapted:
        log(f"note: no adapted models in {run.adapt}; skipping the zero- vs few-shot table")
        return None
    rows = []
    for a in adapted:
        keep = [i for i, p in enumerate(prompts.prompts) if p.corpus == a.target]
        if not keep:
            log(f"note: no prompts from {a.target!r}; skipping {a.source} -> {a.target}")
            bar.update(2 * len(settings.methods))
            continue
        sub = prompts.subset(keep)
        try:
            stages = [
                ("zero_shot", start_checkpoint(run, a)),
                ("few_shot", find_checkpoint(a.directory)),
            ]
        except CheckpointError as e:
            log(f"note: skipping {a.directory}: {e}")
            bar.update(2 * len(settings.methods))
            continue
        for stage, info in stages:
            loaded = load_checkpoint(info, device)
            domains = ["in" if stage == "few_shot" else "out"] * len(sub)
            for name in settings.methods:
                method = _method(name, loaded.model, settings)
                res = attribute_prompts(method, sub, batch_size=settings.batch_size, device=device)
                long = long_frame(res.values, sub, domains)
                pp = per_prompt(res.values, res.log_p, sub, domains)
                keys = {
                    "source": a.source,
                    "target": a.target,
                    "start": a.start,
                    "seed": a.seed,
                    "method": name,
                    "stage": stage,
                    "checkpoint_iteration": info.iteration,
                    "log_p_true_mean": float(pp["log_p_true"].mean()),
                }
                rows.append(
                    {
                        **keys,
                        "group_kind": "total",
                        "group": "all",
                        "n": len(sub),
                        "mean_magnitude": float(pp["total_magnitude"].mean()),
                        "mean_share": 1.0,
                        "lift": 1.0,
                    }
                )
                for kind, by in (("class", "char_class"), ("relpos", "relpos")):
                    for r in aggregate(long, by).to_dict("records"):
                        rows.append(
                            {
                                **keys,
                                "group_kind": kind,
                                "group": r[by],
                                "n": r["n_chars"],
                                "mean_magnitude": r["mean_magnitude"],
                                "mean_share": r["mean_share"],
                                "lift": r["lift"],
                            }
                        )
                bar.update(1)
    return pd.DataFrame(rows)


def _heatmap_prompts(prompts: PromptSet, per_corpus: int) -> list[int]:
    chosen, seen = [], {}
    for i, p in enumerate(prompts.prompts):
        if seen.get(p.corpus, 0) < per_corpus:
            chosen.append(i)
            seen[p.corpus] = seen.get(p.corpus, 0) + 1
    return chosen


def _write_heatmap(heat: list[dict], path: Path, settings: SaliencySettings) -> Path:

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


def _saliency_figures(tables: dict[str, pd.DataFrame], out: Path) -> dict[str, Path]:
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
    if not tables["faithfulness"].empty:
        paths["faithfulness_png"] = plot_faithfulness(
            tables["faithfulness"], out / "faithfulness.png"
        )
    return paths


_SALIENCY_TABLES = (
    "per_prompt",
    "by_class",
    "by_relpos",
    "by_distance",
    "by_checkpoint",
    "completeness",
    "faithfulness",
    "verdicts",
)


def load_saliency(run: RunDir, *, attributions: bool = False) -> dict[str, pd.DataFrame]:
    """The tables written by :func:`run_saliency`, keyed by file stem (``zero_few`` when it
    was written; ``attributions``, one row per model/checkpoint/method/prompt with the
    list of raw scores, only when asked: it is the largest file)."""
    out = run.saliency
    if not (out / "by_class.csv").is_file():
        raise DomainGPTError(
            f"no saliency results in {out}; run domaingpt saliency --out {run.root} first"
        )
    tables = {}
    for name in (*_SALIENCY_TABLES, "zero_few"):
        path = out / f"{name}.csv"
        if path.is_file():
            tables[name] = read_table(path)
    if attributions:
        tables["attributions"] = pd.DataFrame(read_jsonl(out / "attributions.jsonl"))
    return tables
