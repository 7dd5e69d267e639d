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

import csv
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from .charclass import describe_char
from .checkpoint import list_checkpoints, load_checkpoint
from .errors import DomainGPTError
from .io import atomic_write_text, read_jsonl, write_json, write_jsonl
from .model import GPT
from .prompts import ModelEntry, PromptSet, check_not_empty, domain_of, prepare_prompt_stage
from .rundir import RunDir
from .vocab import UNK, Vocab

Log = Callable[[str], None]
LOG2E = 1.0 / math.log(2.0)
Z95 = 1.959963984540054


@dataclass
class ProbeSettings:
    """Settings of ``domaingpt probe`` (also read from a ``[probe]`` TOML table)."""

    models: list[str] = field(default_factory=list)  # empty: every trained model
    corpora: list[str] = field(default_factory=list)  # prompt corpora; empty: the models'
    prompts_per_corpus: int = 64
    length: int = 64
    top_k: int = 5
    prompts: list[str] = field(default_factory=list)  # user prompts (escapes decoded)
    prompt_file: str = ""
    epsilon: float = 0.05  # bits: JS threshold of "hardened"
    delta: float = 0.05  # p(true) settling tolerance
    overpredicted: int = 10  # characters per model in overpredicted.csv
    figure_prompts: int = 1  # prompts per corpus in the top-k figures
    batch_size: int = 128
    device: str = "auto"
    threads: int = 0  # torch threads; 0: torch's default (1 is fastest on a busy machine)
    data_dir: str = ""

    def validate(self) -> ProbeSettings:
        check_not_empty(self.prompts)
        if self.top_k < 1:
            raise DomainGPTError(f"top-k must be at least 1, got {self.top_k}")
        if not self.epsilon > 0 or not self.delta > 0:
            raise DomainGPTError("epsilon and delta must be positive")
        if self.batch_size < 1:
            raise DomainGPTError(f"batch size must be at least 1, got {self.batch_size}")
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


def js_divergence_bits(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Jensen–Shannon divergence in bits between rows of ``p`` and ``q`` (0 ≤ JS ≤ 1)."""
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    m = 0.5 * (p + q)

    def kl(a: np.ndarray) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(a > 0, a * np.log2(a / m), 0.0)
        return terms.sum(-1)

    return np.clip(0.5 * kl(p) + 0.5 * kl(q), 0.0, 1.0)


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


def write_table(df: pd.DataFrame, path: Path) -> Path:
    """CSV with every text field quoted (a lone ``\\r`` must not split a row), atomically."""
    text = df.to_csv(index=False, lineterminator="\n", quoting=csv.QUOTE_NONNUMERIC)
    return atomic_write_text(path, text)


_TEXT_COLUMNS = (
    "model",
    "model_corpus",
    "prompt_corpus",
    "corpus",
    "domain",
    "char",
    "label",
    "target",
    "target_label",
    "claim",
    "evidence",
    "method",
    "char_class",
    "relpos",
    "verdict",
    "source",
    "stage",
    "group",
    "group_kind",
    "start",
    "text",
)


def read_table(path: Path) -> pd.DataFrame:
    """Read a table written by :func:`write_table`; characters restored from code points."""
    try:
        df = pd.read_csv(
            path,
            dtype={c: str for c in _TEXT_COLUMNS},
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8",
        )
    except pd.errors.EmptyDataError:
        return pd.DataFrame()
    except FileNotFoundError:
        raise DomainGPTError(f"{path} not found; run the stage that writes it first") from None
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DomainGPTError(f"{path}: cannot be read as CSV ({e})") from None
    if "codepoint" in df.columns and "char" in df.columns:
        df["char"] = [UNK if int(c) < 0 else chr(int(c)) for c in df["codepoint"]]
    if "holds" in df.columns:
        df["holds"] = [None if isinstance(h, float) else h in (True, "True") for h in df["holds"]]
    return df


def char_columns(vocab: Vocab, ids: Sequence[int]) -> dict[str, list]:
    """``char``, ``label`` and ``codepoint`` (-1 for ``<unk>``) columns for vocabulary ids."""
    chars = [vocab.token(int(i)) for i in ids]
    return {
        "char": chars,
        "label": [c if c == UNK else describe_char(c) for c in chars],
        "codepoint": [-1 if c == UNK else ord(c) for c in chars],
    }


def mean_ci(values: np.ndarray) -> dict[str, float]:
    """Mean, sd and normal-approximation 95 % CI of finite ``values``."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    n = len(v)
    if n == 0:
        return {"n": 0, "mean": np.nan, "std": np.nan, "ci_low": np.nan, "ci_high": np.nan}
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if n > 1 else 0.0
    half = Z95 * sd / math.sqrt(n) if n > 1 else np.nan
    return {"n": n, "mean": mean, "std": sd, "ci_low": mean - half, "ci_high": mean + half}


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


def _model_for(last: pd.DataFrame, corpus: str) -> str | None:
    match = last.loc[last["model_corpus"] == corpus, "model"]
    return str(match.iloc[0]) if len(match) else None


def _flag(value) -> bool | None:
    """A True/False/None cell (None or NaN for "not measurable") as a Python value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return bool(value)


def _fmt_iter(value) -> str:
    return "not reached" if value is None or pd.isna(value) else f"iteration {int(value)}"


def probe_claims(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """The study's Part 3 statements checked against this run's numbers.

    Columns: claim, model, holds (True / False / None = this run cannot test it),
    evidence (the numbers behind the verdict). ``tables`` is what :func:`load_probe`
    returns (``last``, ``summary``, ``hardening``, ``overpredicted``).
    """
    last, summary = tables["last"], tables["summary"]
    hard, over = tables["hardening"], tables.get("overpredicted", pd.DataFrame())
    rows: list[dict] = []

    def add(claim: str, model: str, holds: bool | None, evidence: str) -> None:
        rows.append({"claim": claim, "model": model, "holds": holds, "evidence": evidence})

    for model in sorted(summary["model"].unique()):
        s = summary[(summary["model"] == model) & (summary["domain"] == "in")]
        s = s.sort_values("iteration")
        if len(s) < 2:
            why = "no in-domain prompts" if s.empty else "fewer than two checkpoints"
            add("entropy falls with training", model, None, why)
            add("p(true) rises with training", model, None, why)
        else:
            e = s["entropy_mean"].to_numpy()
            it = s["iteration"].to_numpy()
            falls = int((np.diff(e) < 0).sum())
            add(
                "entropy falls with training",
                model,
                bool(e[-1] < e[0]),
                f"in-domain mean entropy {e[0]:.2f} bits at iteration {it[0]} -> {e[-1]:.2f} "
                f"bits at {it[-1]}; fell at {falls} of {len(e) - 1} checkpoint steps",
            )
            p = s["p_true_mean"].to_numpy()
            add(
                "p(true) rises with training",
                model,
                bool(p[-1] > p[0]),
                f"in-domain mean p(true) {p[0]:.3f} at iteration {it[0]} -> {p[-1]:.3f} at {it[-1]}",
            )
        final = int(summary.loc[summary["model"] == model, "iteration"].max())
        g = last[(last["model"] == model) & (last["iteration"] == final)]
        e_in = g.loc[g["domain"] == "in", "entropy_all_bits"].to_numpy()
        e_out = g.loc[g["domain"] == "out", "entropy_all_bits"].to_numpy()
        last_in = g.loc[g["domain"] == "in", "entropy_bits"].mean()
        last_out = g.loc[g["domain"] == "out", "entropy_bits"].mean()
        if len(e_in) < 2 or len(e_out) < 2:
            add(
                "out-of-domain entropy is higher",
                model,
                None,
                "needs in- and out-of-domain prompts",
            )
        else:
            diff = e_out.mean() - e_in.mean()
            se = math.sqrt(e_out.var(ddof=1) / len(e_out) + e_in.var(ddof=1) / len(e_in))
            lo, hi = diff - Z95 * se, diff + Z95 * se
            holds = True if lo > 0 else False if hi < 0 else None
            add(
                "out-of-domain entropy is higher",
                model,
                holds,
                f"final checkpoint ({final}), entropy averaged over every position of a "
                f"prompt: out-of-domain {e_out.mean():.2f} bits vs in-domain "
                f"{e_in.mean():.2f} bits, difference {diff:+.2f} (95% CI {lo:+.2f} to "
                f"{hi:+.2f}; n={len(e_out)}/{len(e_in)} prompts); at the last position "
                f"{last_out:.2f} vs {last_in:.2f} bits",
            )

    def hard_row(corpus: str) -> tuple[str | None, pd.Series | None]:
        model = _model_for(last, corpus)
        if model is None:
            return None, None
        h = hard[(hard["model"] == model) & (hard["domain"] == "in")]
        return model, (h.iloc[0] if len(h) else None)

    for corpus, bound, later in (
        ("math", 1000, False),
        ("shakespeare", 4000, False),
        ("wikipedia", 14000, True),
    ):
        claim = (
            f"{corpus.capitalize()} hardens later than {bound} iterations"
            if later
            else f"{corpus.capitalize()} hardens by ~{bound} iterations"
        )
        model, h = hard_row(corpus)
        if model is None or h is None:
            add(claim, model or "-", None, f"no {corpus} model in this run")
            continue
        reached = _flag(h["reached"])
        hit = h["hardening_iteration"]
        final = int(h["final_iteration"])
        ev = (
            f"in-domain hardening (mean JS < {h['epsilon']:g} bits between consecutive "
            f"checkpoints from then on): {_fmt_iter(hit)}; trained to {final}; "
            f"last JS {h['last_js_bits']:.3f} bits"
        )
        short = final < bound  # the run ends before the study's iteration: cannot see past it
        if reached is None:
            holds = None
        elif reached:
            early = int(hit) <= bound  # hit > bound implies the run is not short
            if later:
                holds = True if not early else (None if short else False)
            else:
                holds = False if not early else (None if short else True)
        else:
            holds = None if short else later
        if short and holds is None:
            ev += f"; the run ends before iteration {bound}, so it cannot test this"
        add(claim, model, holds, ev)

    def order(a: str, b: str) -> None:
        claim = f"{a.capitalize()} hardens before {b.capitalize()}"
        (ma, ha), (mb, hb) = hard_row(a), hard_row(b)
        if ha is None or hb is None:
            add(claim, "-", None, f"needs both a {a} and a {b} model")
            return
        va = int(ha["hardening_iteration"]) if _flag(ha["reached"]) else math.inf
        vb = int(hb["hardening_iteration"]) if _flag(hb["reached"]) else math.inf
        ev = f"{a}: {_fmt_iter(None if va == math.inf else va)}, {b}: {_fmt_iter(None if vb == math.inf else vb)}"
        holds = None if va == math.inf and vb == math.inf else bool(va < vb)
        add(claim, f"{ma},{mb}", holds, ev)

    order("math", "shakespeare")
    order("shakespeare", "wikipedia")

    math_model = _model_for(last, "math")
    claim = "Math model over-predicts <space> on out-of-domain prompts"
    if math_model is None or over.empty or not (over["model"] == math_model).any():
        add(claim, math_model or "-", None, "no math model or no out-of-domain prompts")
    else:
        o = over[over["model"] == math_model].sort_values("excess", ascending=False)
        space = o[o["char"] == " "]
        top3 = ", ".join(f"{r.label} {r.excess:+.3f}" for r in o.head(3).itertuples())
        if len(space):
            r = space.iloc[0]
            holds = bool(r["excess"] > 0 and int(r["rank"]) <= 3)
            ev = (
                f"<space>: predicted {r['mean_prob']:.3f} vs frequency {r['corpus_freq']:.3f} "
                f"(excess {r['excess']:+.3f}, rank {int(r['rank'])}); top 3: {top3}"
            )
        else:
            holds, ev = (
                False,
                f"<space> is not among the listed over-predicted characters; top 3: {top3}",
            )
        add(claim, math_model, holds, ev)
    return pd.DataFrame(rows, columns=["claim", "model", "holds", "evidence"])


# --- the stage ------------------------------------------------------------------------


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="ckpt", disable=not enabled, leave=False)


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
    run: RunDir, settings: ProbeSettings | None = None, *, progress: bool = True, log: Log = print
) -> dict[str, Path]:
    """Probe every checkpoint of the selected models and write ``runs/NAME/probe/``.

    Files: prompts.jsonl, last.csv (per model, checkpoint, prompt), topk.csv,
    positions.csv (mean entropy and p(true) by model, iteration, prompt corpus, position),
    summary.csv, js.csv, hardening.csv, overpredicted.csv, claims.csv, settings.json and
    the figures entropy.png, p_true.png, topk_<model>.png, entropy_positions.png.
    """
    settings = (settings or ProbeSettings()).validate()
    models, vocab, prompts, device = prepare_prompt_stage(run, settings, log)
    histories = {m.name: list_checkpoints(m.directory / "checkpoints", "iter") for m in models}
    k = min(settings.top_k, vocab.size)
    figure_ids = set(_figure_prompts(prompts, settings.figure_prompts))
    frame = prompts.frame()

    last_parts, topk_parts, pos_parts, js_rows, over_parts = [], [], [], [], []
    bar = _progress(sum(len(h) for h in histories.values()), "probe", progress)
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
    tables["claims"] = probe_claims(tables)

    out = run.probe
    out.mkdir(parents=True, exist_ok=True)
    paths: dict[str, Path] = {}
    paths["prompts"] = write_jsonl(out / "prompts.jsonl", frame.to_dict("records"))
    for name, df in tables.items():
        paths[name] = write_table(df, out / f"{name}.csv")
    paths["settings"] = write_json(out / "settings.json", asdict(settings))
    paths.update(_probe_figures(tables, frame, figure_ids, out))
    log(f"probe: {len(models)} model(s), {len(prompts)} prompts; wrote {len(paths)} files to {out}")
    return paths


def _probe_figures(
    tables: dict[str, pd.DataFrame], frame: pd.DataFrame, figure_ids: set[int], out: Path
) -> dict[str, Path]:
    from . import figures

    paths = {
        "entropy_png": figures.plot_probe_curves(tables["summary"], out / "entropy.png", "entropy"),
        "p_true_png": figures.plot_probe_curves(tables["summary"], out / "p_true.png", "p_true"),
        "entropy_positions_png": figures.plot_entropy_positions(
            tables["positions"], out / "entropy_positions.png"
        ),
    }
    topk = tables["topk"]
    for model in sorted(topk["model"].unique()):
        t = topk[(topk["model"] == model) & topk["prompt_id"].isin(figure_ids)]
        paths[f"topk_{model}_png"] = figures.plot_topk_bars(
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
    "claims",
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
