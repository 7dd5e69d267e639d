"""One worker's share of a training step on a CPU, written out instead of traced.

The scoring engine's forward pass (:mod:`domaingpt.scoring.cpu_engine`), keeping what the
backward needs, then the backward by hand: native kernels for attention, GELU, LayerNorm
and the cross-entropy (``train_kernels.c``), PyTorch's matmuls for the rest, the weight
gradients accumulated straight into the worker's gradient buffer (``addmm_``), the residual
adds fused into the projections. No autograd graph and no allocation per step: a worker's
activations live in buffers allocated once, sized for its share of a batch.

The mathematics of ``GPT.forward`` + ``F.cross_entropy`` + ``backward()``, to float32
rounding (tests compare the gradients with autograd's and the kernels with float64).
:func:`unsupported` says when it cannot run; :mod:`domaingpt.training.workers` then uses
autograd in each worker instead.
"""

from __future__ import annotations

import torch

from domaingpt.model.gpt import GPT
from domaingpt.scoring import cpu_engine, native


def unsupported(model: torch.nn.Module) -> str | None:
    """Why this engine cannot train ``model`` (``None``: it can)."""
    why = cpu_engine.unsupported(model)
    if why is None and model.config.dropout > 0:
        why = "dropout is not implemented by the native training step"
    return why


class _Linear:
    """A Linear layer: its weight, transposed weight, bias, and their gradient slots."""

    __slots__ = ("bias", "gbias", "gweight", "weight", "wt")

    def __init__(self, layer: torch.nn.Linear, slot: dict[int, torch.Tensor]) -> None:
        self.weight, self.wt, self.bias = layer.weight, layer.weight.t(), layer.bias
        self.gweight = slot[id(layer.weight)]
        self.gbias = None if layer.bias is None else slot[id(layer.bias)]

    def forward(self, x: torch.Tensor, out: torch.Tensor, residual: torch.Tensor | None) -> None:
        """out = residual + x W^T + b (residual: None for no residual)."""
        if residual is not None:
            torch.addmm(residual, x, self.wt, out=out)
            if self.bias is not None:
                out.add_(self.bias)
        elif self.bias is None:
            torch.mm(x, self.wt, out=out)
        else:
            torch.addmm(self.bias, x, self.wt, out=out)

    def backward(
        self, x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, ones: torch.Tensor
    ) -> None:
        """Weight (and bias) gradients += from input ``x`` and output gradient ``dy``;
        ``dx`` = the input's gradient."""
        self.gweight.addmm_(dy.t(), x)
        if self.gbias is not None:
            self.gbias.addmv_(dy.t(), ones)
        torch.mm(dy, self.weight, out=dx)


class _Norm:
    __slots__ = ("bias", "eps", "gbias", "gweight", "weight")

    def __init__(self, ln: torch.nn.LayerNorm, slot: dict[int, torch.Tensor]) -> None:
        self.weight, self.bias, self.eps = ln.weight, ln.bias, ln.eps
        self.gweight = slot[id(ln.weight)]
        self.gbias = None if ln.bias is None else slot[id(ln.bias)]


class _Saved:
    """What one block's forward keeps for its backward, for up to ``n`` positions."""

    def __init__(self, n: int, windows: int, T: int, C: int, n_head: int) -> None:
        self.x = torch.empty(n, C)  # the block's input (the residual stream)
        self.h1, self.mean1, self.rstd1 = torch.empty(n, C), torch.empty(n), torch.empty(n)
        self.qkv = torch.empty(n, 3 * C)
        self.att = torch.empty(n, C)
        self.probs = torch.empty(windows, n_head, T, T)
        self.mid = torch.empty(n, C)  # the residual stream after attention
        self.h2, self.mean2, self.rstd2 = torch.empty(n, C), torch.empty(n), torch.empty(n)
        self.u = torch.empty(n, 4 * C)  # the MLP's hidden layer before GELU
        self.g = torch.empty(n, 4 * C)  # ... after GELU


class NativeWorker:
    """A worker that adds the gradient of its rows' loss to its own buffer ``grad`` (one
    flat tensor, sliced per parameter in ``model.parameters()`` order); it reads the
    model's weights, never writes them. Buffers hold ``windows`` windows of the model's
    block size."""

    def __init__(self, model: GPT, windows: int, grad: torch.Tensor) -> None:
        cfg = model.config
        C, T, H = cfg.n_embd, cfg.block_size, cfg.n_head
        self.C, self.H, self.windows = C, H, windows
        slot, offset = {}, 0
        for p in model.parameters():
            slot[id(p)] = grad[offset : offset + p.numel()].view_as(p)
            offset += p.numel()
        self.grad = grad
        self.tok, self.pos = model.tok_emb.weight, model.pos_emb.weight
        self.gtok, self.gpos = slot[id(self.tok)], slot[id(model.pos_emb.weight)]
        self.blocks = [
            (
                _Norm(b.ln_1, slot),
                _Linear(b.attn.qkv, slot),
                _Linear(b.attn.proj, slot),
                _Norm(b.ln_2, slot),
                _Linear(b.mlp.fc, slot),
                _Linear(b.mlp.proj, slot),
            )
            for b in model.blocks
        ]
        self.ln_f, self.head = _Norm(model.ln_f, slot), _Linear(model.head, slot)
        n = windows * T
        self.saved = [_Saved(n, windows, T, C, H) for _ in model.blocks]
        self.xf, self.hf = torch.empty(n, C), torch.empty(n, C)
        self.meanf, self.rstdf = torch.empty(n), torch.empty(n)
        self.logits, self.nll = torch.empty(n, cfg.vocab_size), torch.empty(n)
        self.dx, self.dh, self.dqkv = torch.empty(n, C), torch.empty(n, C), torch.empty(n, 3 * C)
        self.dwide = torch.empty(n, 4 * C)
        self.ones = torch.ones(n)
        self.fwd_scratch = native.attention_scratch(T, C)
        self.bwd_scratch = native.attention_backward_scratch(T, C, H)

    def add(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> torch.Tensor:
        """Add the gradient of ``weight`` times the mean loss of ``y`` after ``x`` (B, T) to
        ``grad``; returns that weighted loss (a float64 scalar tensor)."""
        B, T = x.shape
        block = self.pos.shape[0]
        fits = self.windows >= B and block == T
        if not fits:
            raise ValueError(
                f"NativeWorker: {B} windows of {T}; buffers hold {self.windows} of {block}"
            )
        n = B * T
        scale = weight / n  # every position's share of the weighted mean loss
        with torch.no_grad():
            xf = self._forward(x, B, T)
            self.ln_norm(self.ln_f, xf, self.hf[:n], self.meanf[:n], self.rstdf[:n])
            logits = self.logits[:n]
            self.head.forward(self.hf[:n], logits, None)
            native.cross_entropy_backward_(logits, y.reshape(-1), self.nll[:n], scale)
            loss = self.nll[:n].sum(dtype=torch.float64) * scale
            self._backward(x, B, T, logits)
        return loss

    @staticmethod
    def ln_norm(
        ln: _Norm, x: torch.Tensor, out: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor
    ) -> None:
        native.layer_norm_train(x, ln.weight, ln.bias, ln.eps, out, mean, rstd)

    def _forward(self, idx: torch.Tensor, B: int, T: int) -> torch.Tensor:
        """The blocks' forward, keeping their activations; the last block's output."""
        n, C = B * T, self.C
        x = self.saved[0].x[:n]
        torch.index_select(self.tok, 0, idx.reshape(-1), out=x)
        x.view(B, T, C).add_(self.pos[:T])
        for k, (ln_1, qkv, proj, ln_2, fc, fc_proj) in enumerate(self.blocks):
            s = self.saved[k]
            x = s.x[:n]
            self.ln_norm(ln_1, x, s.h1[:n], s.mean1[:n], s.rstd1[:n])
            qkv.forward(s.h1[:n], s.qkv[:n], None)
            native.attention_train(
                s.qkv[:n].view(B, T, 3 * C),
                self.H,
                s.att[:n].view(B, T, C),
                s.probs[:B],
                self.fwd_scratch,
            )
            proj.forward(s.att[:n], s.mid[:n], x)
            self.ln_norm(ln_2, s.mid[:n], s.h2[:n], s.mean2[:n], s.rstd2[:n])
            fc.forward(s.h2[:n], s.u[:n], None)
            native.gelu_out(s.u[:n], s.g[:n])
            out = self.saved[k + 1].x[:n] if k + 1 < len(self.saved) else self.xf[:n]
            fc_proj.forward(s.g[:n], out, s.mid[:n])
        return self.xf[:n]

    def _backward(self, idx: torch.Tensor, B: int, T: int, dlogits: torch.Tensor) -> None:
        n = B * T
        dx, dh, ones = self.dx[:n], self.dh[:n], self.ones[:n]
        self.head.backward(self.hf[:n], dlogits, dh, ones)
        dx.zero_()
        f = self.ln_f
        native.layer_norm_backward(
            self.xf[:n], f.weight, self.meanf[:n], self.rstdf[:n], dh, dx, f.gweight, f.gbias
        )
        for k in reversed(range(len(self.blocks))):
            ln_1, qkv, proj, ln_2, fc, fc_proj = self.blocks[k]
            s = self.saved[k]
            dwide = self.dwide[:n]
            fc_proj.backward(s.g[:n], dx, dwide, ones)
            native.gelu_backward_(s.u[:n], dwide)
            fc.backward(s.h2[:n], dwide, dh, ones)
            native.layer_norm_backward(
                s.mid[:n], ln_2.weight, s.mean2[:n], s.rstd2[:n], dh, dx, ln_2.gweight, ln_2.gbias
            )
            proj.backward(s.att[:n], dx, dh, ones)
            dqkv = self.dqkv[:n]
            native.attention_backward(
                s.qkv[:n].view(B, T, 3 * self.C),
                s.probs[:B],
                dh.view(B, T, self.C),
                dqkv.view(B, T, 3 * self.C),
                self.H,
                self.bwd_scratch,
            )
            qkv.backward(s.h1[:n], dqkv, dh, ones)
            native.layer_norm_backward(
                s.x[:n], ln_1.weight, s.mean1[:n], s.rstd1[:n], dh, dx, ln_1.gweight, ln_1.gbias
            )
        self.gtok.index_add_(0, idx.reshape(-1), dx)
        self.gpos[:T].add_(dx.view(B, T, self.C).sum(0))
