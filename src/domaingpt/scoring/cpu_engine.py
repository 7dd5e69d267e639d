"""Scoring windows on a CPU: the model's forward pass, rearranged for throughput.

:func:`domaingpt.evaluate.score_windows` uses this engine on a CPU when
:func:`unsupported` has no objection. It computes the same numbers as ``GPT.forward``
followed by ``F.cross_entropy`` (to float32 rounding: tests compare both), differently:

* one worker thread per torch thread, each running PyTorch single-threaded on its own
  batches: a small model's ops are too short to split across cores without the
  fork/join of every op costing more than it saves; matmuls and kernels release the GIL;
* each worker's activations live in buffers allocated once, so no batch pays for fresh
  pages, and a batch is at most :data:`ROWS_PER_BATCH` positions, so they stay in cache;
* the residual adds are fused into the output projections (``x.addmm_(y, W.T)``), the
  final log-softmax into a per-token cross-entropy;
* causal attention, GELU, LayerNorm and that cross-entropy run in native kernels
  (:mod:`domaingpt.native`), one pass each.

Every batch is computed the same way whatever the number of workers, so scores do not
depend on the thread count.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from domaingpt.core.device import AUTOCAST_ENV, autocast_dtype
from domaingpt.data.encoding import window_ids
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import native

#: Positions (windows x block size) per forward pass: 16 windows of 64 characters.
ROWS_PER_BATCH = 1024


def unsupported(model: torch.nn.Module) -> str | None:
    """Why this engine cannot score ``model`` (``None``: it can)."""
    if type(model) is not GPT:
        return f"{type(model).__name__} is not domaingpt's GPT"
    first = next(model.parameters())
    if first.device.type != "cpu":  # a GPU never uses this engine
        return f"the model is on {first.device}"
    if autocast_dtype(first.device) is not None:  # a float32 engine; scoring is asked in bf16
        return f"{AUTOCAST_ENV} asks for {autocast_dtype(first.device)} autocast on the CPU"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "the model is not float32"
    cfg = model.config
    if cfg.gelu != "exact":  # the kernels compute exact GELU only
        return f"its MLP uses {cfg.gelu} GELU"
    if (cfg.n_embd // cfg.n_head) % 16:
        return f"head size {cfg.n_embd // cfg.n_head} is not a multiple of 16"
    if native.load() is None:
        return native.status()
    return None


def describe(model: torch.nn.Module) -> str:
    """Which engine :func:`domaingpt.evaluate.score_windows` will use, in one line."""
    why_not = unsupported(model)
    if why_not is None:
        return f"scoring: native CPU engine, {torch.get_num_threads()} worker thread(s)"
    return f"scoring: the model's forward pass ({why_not})"


class _Buffers:
    """One worker's activations for up to ``rows`` positions, reused batch after batch."""

    def __init__(self, rows: int, cfg: GPTConfig, window: int) -> None:
        C = cfg.n_embd
        self.x = torch.empty(rows, C)  # the residual stream
        self.h = torch.empty(rows, C)  # LayerNorm output
        self.qkv = torch.empty(rows, 3 * C)
        self.att = torch.empty(rows, C)
        self.mlp = torch.empty(rows, 4 * C)
        self.logits = torch.empty(rows, cfg.vocab_size)
        self.nll = torch.empty(rows)
        self.scratch = native.attention_scratch(window, C)  # for windows of that length


class _Linear:
    """A Linear layer's transposed weight and bias, looked up once per scoring call."""

    __slots__ = ("bias", "wt")

    def __init__(self, layer: torch.nn.Linear) -> None:
        self.wt, self.bias = layer.weight.t(), layer.bias

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if self.bias is None:
            return torch.mm(x, self.wt, out=out)
        return torch.addmm(self.bias, x, self.wt, out=out)

    def add_to(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """x += layer(y), the matmul accumulating straight into the residual stream."""
        x.addmm_(y, self.wt)
        if self.bias is not None:
            x.add_(self.bias)


class _Norm:
    __slots__ = ("bias", "eps", "weight")

    def __init__(self, ln: torch.nn.LayerNorm) -> None:
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps

    def __call__(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return native.layer_norm(x, self.weight, self.bias, self.eps, out)


class _Plan:
    """The model's tensors as the engine uses them. Taken once per scoring call, so a
    batch pays no module attribute lookups or weight transposes (with two workers, the
    Python between kernels holds the GIL the other worker may be waiting for)."""

    def __init__(self, model: GPT) -> None:
        self.n_embd = model.config.n_embd
        self.tok, self.pos = model.tok_emb.weight, model.pos_emb.weight
        self.blocks = [
            (
                _Norm(b.ln_1),
                _Linear(b.attn.qkv),
                b.attn.n_head,
                _Linear(b.attn.proj),
                _Norm(b.ln_2),
                _Linear(b.mlp.fc),
                _Linear(b.mlp.proj),
            )
            for b in model.blocks
        ]
        self.ln_f, self.head = _Norm(model.ln_f), _Linear(model.head)


def window_nll(
    plan: _Plan, inputs: torch.Tensor, targets: torch.Tensor, buffers: _Buffers
) -> torch.Tensor:
    """Per-position loss (B, T), nats, of ``targets`` after ``inputs`` (B, T); a view into
    ``buffers``, valid until the next call with them."""
    B, T = inputs.shape
    n, C = B * T, plan.n_embd
    x, h, qkv = buffers.x[:n], buffers.h[:n], buffers.qkv[:n]
    att, mlp = buffers.att[:n], buffers.mlp[:n]
    torch.index_select(plan.tok, 0, inputs.reshape(-1), out=x)
    x.view(B, T, C).add_(plan.pos[:T])
    for ln_1, qkv_proj, n_head, out_proj, ln_2, fc, fc_proj in plan.blocks:
        qkv_proj(ln_1(x, h), qkv)
        native.causal_attention(qkv.view(B, T, 3 * C), n_head, att.view(B, T, C), buffers.scratch)
        out_proj.add_to(x, att)
        native.gelu_(fc(ln_2(x, h), mlp))
        fc_proj.add_to(x, mlp)
    logits = plan.head(plan.ln_f(x, h), buffers.logits[:n])
    return native.token_nll(logits, targets.reshape(-1), buffers.nll[:n]).view(B, T)


def score(
    model: GPT, ids: np.ndarray, starts: np.ndarray, mask: np.ndarray, batch_size: int
) -> np.ndarray:
    """Summed loss of each window (rows of ``mask`` say which targets count): windows
    ``ids[s : s + T + 1]`` for ``s`` in ``starts``, ``T = mask.shape[1]``."""
    T = mask.shape[1]
    per_batch = max(1, min(batch_size, ROWS_PER_BATCH // T))
    weights = torch.from_numpy(mask.astype(np.float32))
    nll = np.zeros(len(starts), dtype=np.float64)
    batches = range(0, len(starts), per_batch)
    threads = torch.get_num_threads()
    workers = max(1, min(threads, len(batches)))

    plan = _Plan(model)

    def work(first: int) -> None:
        with torch.inference_mode():
            buffers = _Buffers(per_batch * T, model.config, T)
            for lo in batches[first::workers]:
                s = starts[lo : lo + per_batch]
                chunk = torch.from_numpy(window_ids(ids, s, T))
                losses = window_nll(plan, chunk[:, :-1], chunk[:, 1:], buffers)
                summed = (losses * weights[lo : lo + len(s)]).sum(dim=1, dtype=torch.float64)
                nll[lo : lo + len(s)] = summed.numpy()

    torch.set_num_threads(1)
    try:
        if workers == 1:
            work(0)
        else:
            with ThreadPoolExecutor(workers, thread_name_prefix="domaingpt-score") as pool:
                for done in [pool.submit(work, k) for k in range(workers)]:
                    done.result()
    finally:
        torch.set_num_threads(threads)
    return nll
