"""What one forward pass shows inside a model, computed once per checkpoint and prompt set
for every stage that reads it (``lens``, ``similarity``, ``attention``).

One pass of :meth:`GPT.run_with_cache` over a batch of prompts records the residual
stream and every attention pattern; from them, per prompt, :func:`compute_internals`
keeps (layer 0 is the embeddings, layer ``ℓ`` the output of block ``ℓ``, 1-based):

the logit lens (``lens_*``, shape ``(N, L+1)``)
    each layer's residual read through the final LayerNorm and the head
    (:func:`lens_logits`; at layer ``L`` these are the model's logits), averaged over the
    prompt's positions: loss of the true next character (nats), entropy (bits), p(true),
    KL(final ‖ layer) in bits and the share of positions whose top-1 character is the
    final layer's;
attention (``attn_*``, shape ``(N, L, H)``)
    per head, averaged over the query positions: entropy of the attention weights (bits),
    mean distance ``Σ_j p_ij (i − j)`` in characters, and the share of attention on the
    query's current word, the whitespace before it (boundary), the previous word and
    further back (``attn_share``, last axis in :data:`WORD_GROUPS` order; a query on
    whitespace has no current word), with ``attn_chance`` the shares uniform attention
    over the visible keys would give;
the residual stream (``resid``, shape ``(L+1, M, C)``)
    every :data:`RESID_STRIDE`-th position of each prompt counted back from its last,
    at every layer, for representation similarity (``resid_prompt``: each row's prompt).

:func:`internals` keeps the result in the run's :class:`ActivationCache` (``ctx.activations``,
made by the runner for each study run or stage command) by the checkpoint's tensor
checksum, the prompts' content, the device and the batch size, so the three stages of one
``domaingpt run`` share a single forward pass per checkpoint; the cache holds at most
:data:`CACHE_BYTES`. :func:`internals_of` computes many checkpoints on worker threads of
one torch thread each: on a small CPU that is faster than one process with several
threads, and the numbers do not depend on the worker count.
"""

from __future__ import annotations

import hashlib
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from domaingpt.context.prompts import (
    PromptGroup,
    PromptSet,
    PromptSettings,
    prepare_prompt_stage,
)
from domaingpt.context.rundir import ModelEntry, RunDir
from domaingpt.core.device import full_precision
from domaingpt.core.distributed import Job
from domaingpt.core.settings import positive, setting
from domaingpt.core.statistics import LOG2E
from domaingpt.core.threads import map_workers
from domaingpt.data.tokenizer import AnyVocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import CheckpointInfo, load_checkpoint
from domaingpt.model.gpt import GPT

#: Where a key lies relative to a query (see :func:`word_groups`).
WORD_GROUPS = ("current_word", "boundary", "previous_word", "further_back")
#: Residual-stream positions kept per prompt for similarity: every 4th from the last.
RESID_STRIDE = 4
#: The most bytes of forward-pass results one run keeps (:class:`ActivationCache`): the
#: internals of a few hundred small checkpoints; the least recently used go first.
CACHE_BYTES = 1 << 30
_FORMAT = 1  # bump when what is computed changes


@dataclass(frozen=True)
class Internals:
    """One checkpoint's internals on a prompt set (numpy; see the module docstring)."""

    n_layer: int
    n_head: int
    lengths: np.ndarray  # (N,)
    lens_loss: np.ndarray  # (N, L+1) nats
    lens_entropy: np.ndarray  # (N, L+1) bits
    lens_p_true: np.ndarray  # (N, L+1)
    lens_kl: np.ndarray  # (N, L+1) bits, KL(final ‖ layer); 0 at layer L
    lens_top1: np.ndarray  # (N, L+1) share of positions whose top-1 is the final one
    attn_entropy: np.ndarray  # (N, L, H) bits
    attn_distance: np.ndarray  # (N, L, H) characters
    attn_share: np.ndarray  # (N, L, H, 4) in WORD_GROUPS order
    attn_chance: np.ndarray  # (N, 4) uniform attention's shares
    resid: np.ndarray  # (L+1, M, C) float32
    resid_prompt: np.ndarray  # (M,) row of the prompt in the prompt set

    @property
    def nbytes(self) -> int:
        return sum(
            getattr(self, f.name).nbytes
            for f in fields(self)
            if isinstance(getattr(self, f.name), np.ndarray)
        )


def lens_logits(model: GPT, resid: torch.Tensor) -> torch.Tensor:
    """The logit lens: a residual stream read as the model reads its last one."""
    return model.head(model.ln_f(resid))


def word_groups(text: str) -> np.ndarray:
    """``(T, T)`` codes of key ``j`` for query ``i``: 0 the query's current word (the run
    of non-whitespace ending at ``i``; none when ``i`` is whitespace), 1 the whitespace
    before it (boundary), 2 the previous word, 3 further back, −1 a future key. The same
    words as the saliency stage's positions relative to the target, for every query."""
    ws = np.array([c.isspace() for c in text], dtype=bool)
    T = len(ws)
    run = np.concatenate([[0], np.cumsum(ws[1:] != ws[:-1])]) if T else np.zeros(0, int)
    offset = run[:, None] - run[None, :] + ws[:, None]
    codes = np.minimum(offset, 3).astype(np.int8)
    codes[np.triu_indices(T, 1)] = -1
    return codes


def group_onehot(prompts: PromptSet, index: Sequence[int], T: int) -> torch.Tensor:
    """``(B, T, T, 4)`` one-hot word groups of each prompt (zeros on padding)."""
    out = np.zeros((len(index), T, T, len(WORD_GROUPS)), dtype=np.float32)
    for row, i in enumerate(index):
        p = prompts.prompts[i]
        codes = word_groups(p.text[-p.length :] if p.length else "")
        L = len(codes)
        for g in range(len(WORD_GROUPS)):
            out[row, :L, :L, g] = codes == g
    return torch.from_numpy(out)


def _masked_mean(values: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean over the position axis (dim 1 of ``valid``-shaped leading dims) of valid ones."""
    while valid.dim() < values.dim():
        valid = valid.unsqueeze(-1)
    return (values * valid).sum(1) / valid.sum(1).clamp(min=1)


def lens_stats(model: GPT, resid: list[torch.Tensor], nxt: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per prompt and layer, the lens statistics averaged over valid positions."""
    valid = nxt >= 0
    safe = nxt.clamp(min=0).unsqueeze(-1)
    final = F.log_softmax(lens_logits(model, resid[-1]).double(), -1)
    p_final = final.exp()
    top_final = final.argmax(-1)
    out: dict[str, list[torch.Tensor]] = {k: [] for k in ("loss", "entropy", "p", "kl", "top1")}
    for h in resid:
        logp = F.log_softmax(lens_logits(model, h).double(), -1)
        nll = -logp.gather(-1, safe).squeeze(-1)
        stats = {
            "loss": nll,
            "entropy": -(logp.exp() * logp).sum(-1) * LOG2E,
            "p": (-nll).exp(),
            "kl": (p_final * (final - logp)).sum(-1) * LOG2E,
            "top1": (logp.argmax(-1) == top_final).double(),
        }
        for k, v in stats.items():
            out[k].append(_masked_mean(v, valid))
    return {k: torch.stack(v, 1) for k, v in out.items()}


def attention_stats(
    patterns: list[torch.Tensor], groups: torch.Tensor, lengths: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per prompt, layer and head: entropy, distance and word-group shares, averaged over
    the valid query positions; and uniform attention's shares."""
    T = patterns[0].shape[-1]
    pos = torch.arange(T, dtype=torch.float64, device=patterns[0].device)
    back = (pos[:, None] - pos[None, :]).clamp(min=0)
    valid = pos[None, :] < lengths[:, None]  # (B, T) queries
    entropy, distance, share = [], [], []
    for p in patterns:
        p = p.double()  # (B, H, T, T)
        q = valid[:, None, :]
        ent = -torch.special.xlogy(p, p).sum(-1) * LOG2E  # (B, H, T)
        entropy.append((ent * q).sum(-1) / q.sum(-1))
        distance.append(((p * back).sum(-1) * q).sum(-1) / q.sum(-1))
        sh = torch.einsum("bhij,bijg->bhig", p, groups.double())  # (B, H, T, 4)
        share.append((sh * q[..., None]).sum(2) / q.sum(-1)[..., None])
    visible = groups.double().sum(2) / (pos + 1)[None, :, None]  # (B, T, 4) uniform shares
    chance = (visible * valid[..., None]).sum(1) / valid.sum(1, keepdim=True)
    return {
        "entropy": torch.stack(entropy, 1),
        "distance": torch.stack(distance, 1),
        "share": torch.stack(share, 1),
        "chance": chance,
    }


def _resid_positions(lengths: np.ndarray) -> list[np.ndarray]:
    return [np.arange(int(n) - 1, -1, -RESID_STRIDE)[::-1] for n in lengths]


@torch.inference_mode()
def compute_internals(
    model: GPT, prompts: PromptSet, *, batch_size: int = 64, device: torch.device | str = "cpu"
) -> Internals:
    """One forward pass per batch of prompts; see the module docstring for what is kept."""
    model.eval()
    L = model.config.n_layer
    names = ["embed", *(f"blocks.{i}.resid_post" for i in range(L))]
    names += [f"blocks.{i}.attn.pattern" for i in range(L)]
    parts: dict[str, list[np.ndarray]] = {}
    resid_rows: list[np.ndarray] = []
    resid_prompt: list[np.ndarray] = []
    for lo in range(0, len(prompts), batch_size):
        index = list(range(lo, min(lo + batch_size, len(prompts))))
        ids, lens, _, nxt = prompts.tensors(device, index)
        with full_precision(ids.device):  # the lens, patterns and residuals: float32
            _, cache = model.run_with_cache(ids, names)
            resid = [cache[n] for n in names[: L + 1]]
            stats = {f"lens_{k}": v for k, v in lens_stats(model, resid, nxt).items()}
        groups = group_onehot(prompts, index, ids.shape[1]).to(device)
        patterns = [cache[n] for n in names[L + 1 :]]
        stats.update(
            {f"attn_{k}": v for k, v in attention_stats(patterns, groups, lens.to(device)).items()}
        )
        for k, v in stats.items():
            parts.setdefault(k, []).append(v.cpu().numpy())
        stacked = torch.stack(resid).float().cpu().numpy()  # (L+1, B, T, C)
        for row, keep in enumerate(_resid_positions(lens.cpu().numpy())):
            resid_rows.append(stacked[:, row, keep])
            resid_prompt.append(np.full(len(keep), lo + row))
    cat = {k: np.concatenate(v) for k, v in parts.items()}
    return Internals(
        n_layer=L,
        n_head=model.config.n_head,
        lengths=np.array([p.length for p in prompts.prompts], dtype=np.int64),
        lens_loss=cat["lens_loss"],
        lens_entropy=cat["lens_entropy"],
        lens_p_true=cat["lens_p"],
        lens_kl=cat["lens_kl"],
        lens_top1=cat["lens_top1"],
        attn_entropy=cat["attn_entropy"],
        attn_distance=cat["attn_distance"],
        attn_share=cat["attn_share"],
        attn_chance=cat["attn_chance"],
        resid=np.concatenate(resid_rows, axis=1),
        resid_prompt=np.concatenate(resid_prompt),
    )


# --- the run's cache ------------------------------------------------------------------


class ActivationCache:
    """The forward-pass results of one run (a study run, or one stage command), kept for
    the stages after the first: at most ``max_bytes`` (:data:`CACHE_BYTES`), the least
    recently used dropped first (the newest is always kept). Safe across threads.

    The runner makes it and stages reach it as ``ctx.activations``. Sent to another rank
    inside a job it travels empty, as a handle: :meth:`here` gives that rank's own cache
    for the same run, kept in the rank's ``job.local`` until the run ends.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES, *, token: str | None = None) -> None:
        self.max_bytes = max_bytes
        self.token = token or uuid.uuid4().hex  # which run's cache, across ranks
        self._remote = False  # a copy sent to another rank
        self._entries: OrderedDict[tuple, Internals] = OrderedDict()
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes, "token": self.token}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"], token=state["token"])
        self._remote = True

    def here(self, job: Job | None = None) -> ActivationCache:
        """The cache to use in ``job``: this one, or on another rank that rank's own."""
        if job is None or not self._remote:
            return self
        key = ("activations", self.token)
        return job.local.setdefault(key, ActivationCache(self.max_bytes, token=self.token))

    def get(self, key: tuple) -> Internals | None:
        with self._lock:
            hit = self._entries.get(key)
            if hit is not None:
                self._entries.move_to_end(key)
            return hit

    def put(self, key: tuple, value: Internals) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > 1 and self.nbytes > self.max_bytes:
                self._entries.popitem(last=False)

    @property
    def nbytes(self) -> int:
        return sum(v.nbytes for v in self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def prompt_digest(prompts: PromptSet) -> str:
    """A checksum of what the prompts feed the model (ids, targets, texts, corpora)."""
    h = hashlib.sha256()
    for p in prompts.prompts:
        h.update(np.asarray(p.ids, dtype=np.int64).tobytes())
        h.update(f"\0{p.target_id}\0{p.corpus}\0{p.text}\0".encode())
    return h.hexdigest()


def _key(info: CheckpointInfo, digest: str, device: torch.device, batch_size: int) -> tuple:
    weights = info.tensor_sha256
    if not weights:  # an old checkpoint: its file's identity instead
        stat = info.tensor_path.stat()
        weights = f"{info.tensor_path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
    return (weights, digest, str(device), batch_size, _FORMAT)


def internals(
    info: CheckpointInfo,
    prompts: PromptSet,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    vocab: AnyVocab | None = None,
    digest: str | None = None,
    cache: ActivationCache | None = None,
) -> Internals:
    """The internals of the checkpoint ``info`` on ``prompts``, from ``cache`` when it
    holds them already (``None``: computed, kept nowhere). ``vocab``: the prompts'
    vocabulary, checked against the checkpoint's (the prompts' ids would mean other
    characters)."""
    device = torch.device(device)
    key = _key(info, digest or prompt_digest(prompts), device, batch_size)
    hit = cache.get(key) if cache is not None else None
    if hit is not None:
        return hit
    loaded = load_checkpoint(info, device)
    if vocab is not None and loaded.vocab.fingerprint != vocab.fingerprint:
        raise DomainGPTError(
            f"checkpoint {info.json_path} uses another vocabulary than the prompts were "
            "cut in (its model's final checkpoint's); a model's history reads one vocabulary"
        )
    value = compute_internals(loaded.model, prompts, batch_size=batch_size, device=device)
    if cache is not None:
        cache.put(key, value)
    return value


def internals_of(
    infos: Sequence[CheckpointInfo],
    prompts: PromptSet,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 64,
    vocab: AnyVocab | None = None,
    workers: int = 1,
    cache: ActivationCache | None = None,
) -> list[Internals]:
    """:func:`internals` of every checkpoint of ``infos`` (in order), ``workers`` at a time."""
    digest = prompt_digest(prompts)
    return map_workers(
        lambda info: internals(
            info,
            prompts,
            device=device,
            batch_size=batch_size,
            vocab=vocab,
            digest=digest,
            cache=cache,
        ),
        infos,
        workers,
    )


# --- what the three stages share --------------------------------------------------------


@dataclass(frozen=True)
class InternalsSettings(PromptSettings):
    """The prompt fields of every stage that reads :func:`internals`: the same values in
    each (the study presets set them alike) share one forward pass per checkpoint."""

    batch_size: int = setting(64, "prompts per forward pass", cli=False)

    def check(self) -> None:
        super().check()
        positive("batch_size", self.batch_size)

    @property
    def workers(self) -> int:
        """Worker threads: ``threads``, else as many as torch would use."""
        return self.threads or torch.get_num_threads()


@dataclass
class Prepared:
    """What a stage reading internals starts from: the selected models in groups of one
    vocabulary with their prompts (:class:`PromptGroup`), the device and ``cache``, the
    run's."""

    groups: list[PromptGroup]
    device: torch.device
    cache: ActivationCache | None = None

    @property
    def models(self) -> list[ModelEntry]:
        return [m for g in self.groups for m in g.models]

    @property
    def n_prompts(self) -> int:
        """Prompts per model (every group reads the same characters)."""
        return len(self.groups[0].prompts)

    def group(self, model: str) -> PromptGroup:
        """The group of model ``model`` (a source model's, for a model adapted from it)."""
        for g in self.groups:
            if any(m.name == model for m in g.models):
                return g
        raise KeyError(model)

    def prompts(self, model: str) -> PromptSet:
        return self.group(model).prompts

    def read(
        self,
        model: str,
        infos: Sequence[CheckpointInfo],
        settings: InternalsSettings,
        job: Job | None = None,
    ) -> list[Internals]:
        """The internals of ``infos``, checkpoints of ``model`` (or of a model adapted
        from it) on its group's prompts; ``job``: the job of :func:`map_ranks` reading
        them (on another rank, its own cache)."""
        group = self.group(model)
        return internals_of(
            infos,
            group.prompts,
            device=self.device,
            batch_size=settings.batch_size,
            vocab=group.vocab,
            workers=settings.workers,
            cache=self.cache.here(job) if self.cache is not None else None,
        )


def prepare(
    run: RunDir,
    settings: InternalsSettings,
    log: Callable[[str], None],
    cache: ActivationCache | None = None,
) -> Prepared:
    """The selected models in groups of one vocabulary, their prompts and the device;
    ``cache``: the run's forward-pass cache (``ctx.activations``)."""
    groups, device = prepare_prompt_stage(run, settings, log)
    return Prepared(groups, device, cache=cache)


def resid_char_ends(rec: Internals, prompts: PromptSet) -> np.ndarray:
    """``(M,)``: where in its prompt's text the token of each residual row ends (the
    characters the model has read there)."""
    rows = zip(prompts.prompts, _resid_positions(rec.lengths), strict=True)
    ends = [p.ends()[keep] for p, keep in rows]
    return np.concatenate(ends) if ends else np.zeros(0, dtype=np.int64)


def aligned_rows(
    a: Internals, a_prompts: PromptSet, b: Internals, b_prompts: PromptSet
) -> tuple[np.ndarray, np.ndarray]:
    """The residual rows of ``a`` and ``b`` (models reading different vocabularies, on
    the same characters) where both have read the same text: the same prompt, the same
    context text, a token of each ending at the same character. Each model's state there
    is a function of the same characters, so the rows pair as positions of one
    tokenization do."""
    same = np.array(
        [p.text == q.text for p, q in zip(a_prompts.prompts, b_prompts.prompts, strict=True)]
    )
    ka = a.resid_prompt.astype(np.int64) * (1 << 32) + resid_char_ends(a, a_prompts)
    kb = b.resid_prompt.astype(np.int64) * (1 << 32) + resid_char_ends(b, b_prompts)
    _, ra, rb = np.intersect1d(ka, kb, assume_unique=True, return_indices=True)
    keep = same[a.resid_prompt[ra]]
    return ra[keep], rb[keep]
