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

from . import native
from .model import GPT, GPTConfig

#: Positions (windows x block size) per forward pass: 16 windows of 64 characters.
ROWS_PER_BATCH = 1024


def unsupported(model: torch.nn.Module) -> str | None:
    """Why this engine cannot score ``model`` (``None``: it can)."""
    if type(model) is not GPT:
        return f"{type(model).__name__} is not domaingpt's GPT"
    first = next(model.parameters())
    if first.device.type != "cpu":
        return f"the model is on {first.device}"
    if any(p.dtype != torch.float32 for p in model.parameters()):
        return "the model is not float32"
    cfg = model.config
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


def _linear(x: torch.Tensor, layer: torch.nn.Linear, out: torch.Tensor) -> torch.Tensor:
    if layer.bias is None:
        return torch.mm(x, layer.weight.t(), out=out)
    return torch.addmm(layer.bias, x, layer.weight.t(), out=out)


def _add_projection(x: torch.Tensor, y: torch.Tensor, layer: torch.nn.Linear) -> None:
    """x += layer(y), the matmul accumulating straight into the residual stream."""
    x.addmm_(y, layer.weight.t())
    if layer.bias is not None:
        x.add_(layer.bias)


def _norm(ln: torch.nn.LayerNorm, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return native.layer_norm(x, ln.weight, ln.bias, ln.eps, out)


def window_nll(
    model: GPT, inputs: torch.Tensor, targets: torch.Tensor, buffers: _Buffers
) -> torch.Tensor:
    """Per-position loss (B, T), nats, of ``targets`` after ``inputs`` (B, T); a view into
    ``buffers``, valid until the next call with them."""
    B, T = inputs.shape
    n, C = B * T, model.config.n_embd
    x, h, qkv = buffers.x[:n], buffers.h[:n], buffers.qkv[:n]
    att, mlp, logits = buffers.att[:n], buffers.mlp[:n], buffers.logits[:n]
    torch.index_select(model.tok_emb.weight, 0, inputs.reshape(-1), out=x)
    x.view(B, T, C).add_(model.pos_emb.weight[:T])
    for block in model.blocks:
        _linear(_norm(block.ln_1, x, h), block.attn.qkv, qkv)
        native.causal_attention(
            qkv.view(B, T, 3 * C), block.attn.n_head, att.view(B, T, C), buffers.scratch
        )
        _add_projection(x, att, block.attn.proj)
        native.gelu_(_linear(_norm(block.ln_2, x, h), block.mlp.fc, mlp))
        _add_projection(x, mlp, block.mlp.proj)
    torch.mm(_norm(model.ln_f, x, h), model.head.weight.t(), out=logits)
    return native.token_nll(logits, targets.reshape(-1), buffers.nll[:n]).view(B, T)


def score(
    model: GPT, ids: np.ndarray, starts: np.ndarray, mask: np.ndarray, batch_size: int
) -> np.ndarray:
    """Summed loss of each window (rows of ``mask`` say which targets count): windows
    ``ids[s : s + T + 1]`` for ``s`` in ``starts``, ``T = mask.shape[1]``."""
    T = mask.shape[1]
    per_batch = max(1, min(batch_size, ROWS_PER_BATCH // T))
    offsets = np.arange(T + 1)
    weights = torch.from_numpy(mask.astype(np.float32))
    nll = np.zeros(len(starts), dtype=np.float64)
    batches = range(0, len(starts), per_batch)
    threads = torch.get_num_threads()
    workers = max(1, min(threads, len(batches)))

    def work(first: int) -> None:
        with torch.inference_mode():
            buffers = _Buffers(per_batch * T, model.config, T)
            for lo in batches[first::workers]:
                s = starts[lo : lo + per_batch]
                chunk = torch.from_numpy(ids[s[:, None] + offsets].astype(np.int64))
                losses = window_nll(model, chunk[:, :-1], chunk[:, 1:], buffers)
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
