"""A character-level GPT: the nanoGPT architecture in one short file.

Token + learned position embeddings -> ``n_layer`` pre-LayerNorm blocks of causal
self-attention and a GELU MLP -> final LayerNorm -> a head whose weight is tied to the
token embedding. Initialised as GPT-2 (residual projections scaled by 1/sqrt(2·n_layer)).

Two things differ from a plain language model because the analyses need them:
``forward`` returns logits for *every* position (softmax inspection looks at all of
them), and it accepts ``inputs_embeds`` instead of ids, so the gradient of a prediction
with respect to each input character's embedding is a single autograd call (saliency).

Named activation points (TransformerLens' idea): :meth:`GPT.run_with_cache` records, in
one ordinary forward pass, the activations named in :data:`HOOK_POINTS` — the residual
stream around each block, attention patterns, the MLP's hidden layer. They are read
through PyTorch forward hooks attached for that one call, so ``forward`` itself has no
branch for them: without a cache it runs exactly as before, at the same speed.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from domaingpt.core.config import ModelSpec
from domaingpt.core.limits import check_model_shape
from domaingpt.errors import ConfigError, DomainGPTError

#: The activation points of every block ``blocks.{i}.NAME``, in the order they are computed.
BLOCK_POINTS = (
    "resid_pre",  # the block's input: the residual stream before it (B, T, C)
    "attn.pattern",  # softmax attention weights (B, n_head, T, T), query × key
    "attn.out",  # what attention adds to the residual stream (B, T, C)
    "mlp.pre",  # the MLP's hidden layer before GELU (B, T, 4C)
    "mlp.post",  # ... after GELU (B, T, 4C)
    "resid_post",  # the block's output: the residual stream after it (B, T, C)
)
#: Points outside the blocks: ``embed`` (token + position embedding, the stream's start)
#: and ``ln_f.out`` (the final LayerNorm's output, what the head reads).
HOOK_POINTS = ("embed", *(f"blocks.{{i}}.{p}" for p in BLOCK_POINTS), "ln_f.out")


GELUS = ("exact", "tanh")


@dataclass(frozen=True)
class GPTConfig(ModelSpec):
    """A model's shape (a preset's ``[model]`` table) and its vocabulary size."""

    vocab_size: int = 0  # set from the study's vocabulary, never guessed
    #: The MLP's GELU: "exact" (nanoGPT's, every model domaingpt trains) or "tanh", the
    #: approximation GPT-2 was trained with (Hugging Face's "gelu_new").
    gelu: str = "exact"

    def __post_init__(self) -> None:
        self.check()
        v = self.vocab_size
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"model.vocab_size must be at least 1, got {v!r}")
        if self.gelu not in GELUS:
            raise ConfigError(f"model.gelu must be one of {GELUS}, got {self.gelu!r}")

    def to_dict(self) -> dict:
        """The config as a record holds it (``gelu`` only when it is not exact, so every
        record written before it existed reads the same)."""
        out = asdict(self)
        if out["gelu"] == "exact":
            del out["gelu"]
        return out

    @classmethod
    def from_dict(cls, data: dict, where: str = "model config") -> GPTConfig:
        """A config read from a file (``where`` names it): its sizes are checked against
        :data:`~domaingpt.core.limits.MODEL_LIMITS` before anything is built from them."""
        if not isinstance(data, dict):
            raise ConfigError(f"{where} must be a JSON object, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"unknown model config keys: {sorted(unknown)}")
        check_model_shape(where, data)
        return cls(**data)

    def state_shapes(self) -> dict[str, tuple[int, ...]]:
        """The shape of each tensor of a model of this config, nothing allocated (a model
        on torch's meta device)."""
        return dict(_state_shapes(self))

    def check_state(self, state: dict[str, torch.Tensor], where: str) -> None:
        """Refuse ``state`` (tensors by name) unless every tensor it shares with a model of
        this config has its shape: checked before the model is built, so a config that
        does not match its tensors (tampered, say ``n_embd = 32768``) allocates nothing."""
        for name, shape in self.state_shapes().items():
            if name in state and tuple(state[name].shape) != shape:
                raise ConfigError(
                    f"{where}: the model config does not fit its tensors ({name} is "
                    f"{tuple(state[name].shape)}, the config says {shape}); the file is "
                    "damaged or altered"
                )


@functools.lru_cache(maxsize=16)  # an analysis loads many checkpoints of one config
def _state_shapes(config: GPTConfig) -> tuple[tuple[str, tuple[int, ...]], ...]:
    with torch.device("meta"):
        return tuple((k, tuple(v.shape)) for k, v in GPT(config).state_dict().items())


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.residual = True  # marks it for the scaled GPT-2 init
        self.dropout = cfg.dropout
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        # (B, T, 3C) -> three (B, n_head, T, head_dim) tensors
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_drop(self.proj(y))

    def pattern(self, x: torch.Tensor) -> torch.Tensor:
        """The attention weights ``forward(x)`` uses, (B, n_head, T, T): softmax over keys,
        exactly zero above the diagonal. Computed explicitly (scaled_dot_product_attention
        never materialises them), so only when asked for."""
        B, T, C = x.shape
        w, b = self.qkv.weight, self.qkv.bias
        qk = F.linear(x, w[: 2 * C], None if b is None else b[: 2 * C])
        q, k = qk.view(B, T, 2, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(C // self.n_head)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(1)
        return scores.masked_fill(future, float("-inf")).softmax(-1)

    def forward_at(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """The output at one position per row, ``pos`` (B,): keys and values for every
        position, a query only at ``pos`` (B, C). Same values as ``forward(x)[rows, pos]``."""
        B, T, C = x.shape
        hs = C // self.n_head
        rows = torch.arange(B, device=x.device)
        w, b = self.qkv.weight, self.qkv.bias
        kv = F.linear(x, w[C:], None if b is None else b[C:])
        k, v = kv.view(B, T, 2, self.n_head, hs).permute(2, 0, 3, 1, 4)
        q = F.linear(x[rows, pos], w[:C], None if b is None else b[:C])
        q = q.view(B, self.n_head, 1, hs)
        visible = torch.arange(T, device=x.device) <= pos[:, None]  # (B, T): causal mask
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=visible[:, None, None, :],
            dropout_p=self.dropout if self.training else 0.0,
        )
        return self.resid_drop(self.proj(y.reshape(B, C)))


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.residual = True
        self.drop = nn.Dropout(cfg.dropout)
        self.approximate = "none" if cfg.gelu == "exact" else "tanh"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.proj(F.gelu(self.fc(x), approximate=self.approximate)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))

    def forward_at(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """``forward(x)[rows, pos]`` (B, C), computing only what those positions need."""
        rows = torch.arange(x.shape[0], device=x.device)
        h = x[rows, pos] + self.attn.forward_at(self.ln_1(x), pos)
        return h + self.mlp(self.ln_2(h))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.config = cfg
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd, bias=cfg.bias)
        self.head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.head.weight = self.tok_emb.weight  # weight tying, as in GPT-2
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            std = 0.02
            if getattr(module, "residual", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self, non_embedding: bool = True) -> int:
        """Parameter count; position embeddings excluded by default, as in nanoGPT's MFU."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.pos_emb.weight.numel() if non_embedding else n

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embeddings of ``idx``: the input whose gradient saliency measures."""
        return self.tok_emb(idx)

    def forward(
        self,
        idx: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        *,
        inputs_embeds: torch.Tensor | None = None,
        at: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab)`` for every position, and the mean loss if ``targets``.

        With ``at`` (B,), one position per row, the logits there only, ``(B, vocab)``: the
        last block and the head then run at those positions alone (a quarter less work
        for a 4-layer model), which is what attributions of one prediction need.
        """
        if (idx is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of idx or inputs_embeds")
        tok = self.tok_emb(idx) if inputs_embeds is None else inputs_embeds
        T = tok.shape[1]
        if self.config.block_size < T:
            raise ValueError(f"sequence of {T} exceeds block_size {self.config.block_size}")
        x = self.drop(tok + self.pos_emb.weight[:T])
        if at is not None:
            if targets is not None:
                raise ValueError("targets and at cannot be combined")
            for block in self.blocks[:-1]:
                x = block(x)
            return self.head(self.ln_f(self.blocks[-1].forward_at(x, at))), None
        for block in self.blocks:
            x = block(x)
        logits = self.head(self.ln_f(x))
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    # -- named activation points -------------------------------------------------------
    def hook_names(self) -> list[str]:
        """Every activation point of this model, in the order the forward pass meets them."""
        blocks = [f"blocks.{i}.{p}" for i in range(self.config.n_layer) for p in BLOCK_POINTS]
        return ["embed", *blocks, "ln_f.out"]

    def _hook_point(self, name: str) -> tuple[nn.Module, bool, Callable]:
        """Where ``name`` is read: a module, whether its input (True) or output is meant,
        and what to record from that module and tensor."""
        if name == "embed":
            return self.drop, False, lambda m, t: t
        if name == "ln_f.out":
            return self.ln_f, False, lambda m, t: t
        _, i, point = name.split(".", 2)
        block = self.blocks[int(i)]
        return {
            "resid_pre": (block, True, lambda m, t: t),
            "attn.pattern": (block.attn, True, lambda m, t: m.pattern(t)),
            "attn.out": (block.attn, False, lambda m, t: t),
            "mlp.pre": (block.mlp.fc, False, lambda m, t: t),
            "mlp.post": (block.mlp.proj, True, lambda m, t: t),  # proj's input: GELU's output
            "resid_post": (block, False, lambda m, t: t),
        }[point]

    def run_with_cache(
        self, idx: torch.Tensor, names: Iterable[str] | str | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits ``(B, T, vocab)`` as ``forward(idx)`` gives them, and the activations
        ``names`` (default: every one of :meth:`hook_names`) recorded in the same pass.

        The cache keeps the order of ``names``. Its tensors are not detached: call this
        under ``torch.no_grad()`` unless you differentiate through them.
        """
        valid = self.hook_names()
        if names is None:
            names = valid
        wanted = list(dict.fromkeys([names] if isinstance(names, str) else names))
        unknown = [n for n in wanted if n not in valid]
        if unknown:
            raise DomainGPTError(
                f"unknown activation point(s) {', '.join(map(repr, unknown))} for a "
                f"{self.config.n_layer}-layer model; valid names: {', '.join(valid)}"
            )
        cache: dict[str, torch.Tensor] = {}
        handles = []
        try:
            for name in wanted:
                module, on_input, record = self._hook_point(name)
                if on_input:
                    hook = module.register_forward_pre_hook(
                        lambda m, args, n=name, f=record: cache.__setitem__(n, f(m, args[0]))
                    )
                else:
                    hook = module.register_forward_hook(
                        lambda m, args, out, n=name, f=record: cache.__setitem__(n, f(m, out))
                    )
                handles.append(hook)
            logits, _ = self(idx)
        finally:
            for hook in handles:
                hook.remove()
        return logits, {n: cache[n] for n in wanted}

    def flops_per_token(self, train: bool = True) -> float:
        """nanoGPT's estimate: 6N + 12·L·C·T for a training step, 2N + 2·L·C·T forward only."""
        cfg = self.config
        n = self.num_params()
        attn = cfg.n_layer * cfg.n_embd * cfg.block_size
        return 6 * n + 12 * attn if train else 2 * n + 2 * attn

    @torch.no_grad()
    def generate(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Append ``max_new_tokens`` sampled ids to ``idx`` (B, T); the context is cropped
        to the last ``block_size`` ids, as in nanoGPT."""
        new = self.generate_ids(
            idx, max_new_tokens, temperature=temperature, top_k=top_k, generator=generator
        )
        return torch.cat([idx, *new], dim=1)

    def generate_ids(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
    ) -> Iterator[torch.Tensor]:
        """The ids :meth:`generate` appends, one (B, 1) tensor at a time, as they are
        sampled: a long text streams in constant memory (only the last ``block_size`` ids
        are kept) and a caller can stop at any point keeping what it has. ``generator``:
        one for the batch, or one per row (row i then draws exactly what it would draw
        alone with its generator, whatever else is in the batch)."""
        context = idx[:, -self.config.block_size :]
        for _ in range(max_new_tokens):
            with torch.no_grad():
                last = torch.full((idx.shape[0],), context.shape[1] - 1, device=idx.device)
                logits, _ = self(context, at=last)  # the next character's logits only
                logits = logits.float()
                if temperature == 0:
                    nxt = logits.argmax(dim=-1, keepdim=True)
                else:
                    logits = logits / temperature
                    if top_k is not None and top_k < logits.size(-1):
                        kth = torch.topk(logits, top_k).values[:, [-1]]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = F.softmax(logits, dim=-1)
                    if isinstance(generator, Sequence):
                        nxt = torch.cat(
                            [
                                torch.multinomial(probs[i : i + 1], 1, generator=g)
                                for i, g in enumerate(generator)
                            ]
                        )
                    else:
                        nxt = torch.multinomial(probs, num_samples=1, generator=generator)
            yield nxt
            context = torch.cat((context, nxt), dim=1)[:, -self.config.block_size :]
