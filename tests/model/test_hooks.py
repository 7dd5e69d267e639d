"""Named activation points: ``GPT.run_with_cache`` records activations of one forward pass."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import BLOCK_POINTS, GPT, GPTConfig

BIAS = pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])


def tiny(n_layer: int = 2, bias: bool = True) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layer=n_layer, n_head=2, n_embd=16, block_size=8, vocab_size=11, bias=bias)
    model = GPT(cfg).eval()
    with torch.no_grad():  # non-trivial gains and biases, so every term matters
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def ids(b: int = 3, t: int = 8) -> torch.Tensor:
    return torch.randint(0, 11, (b, t), generator=torch.Generator().manual_seed(1))


@BIAS
@torch.no_grad()
def test_cached_logits_are_the_models_and_every_point_is_recorded(bias):
    model = tiny(bias=bias)
    x = ids()
    plain, _ = model(x)
    logits, cache = model.run_with_cache(x)
    assert torch.equal(logits, plain)  # the same forward pass, bit for bit
    assert list(cache) == model.hook_names()
    assert len(cache) == 2 + 2 * len(BLOCK_POINTS)
    assert cache["embed"].shape == (3, 8, 16)
    assert cache["blocks.1.attn.pattern"].shape == (3, 2, 8, 8)
    assert cache["blocks.0.mlp.pre"].shape == (3, 8, 64)
    # no hook left behind: the model runs as before, bit for bit
    assert torch.equal(model(x)[0], plain)
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


@BIAS
@torch.no_grad()
def test_the_residual_stream_links_up_and_ends_in_the_logits(bias):
    model = tiny(n_layer=3, bias=bias)
    x = ids()
    logits, cache = model.run_with_cache(x)
    T = x.shape[1]
    torch.testing.assert_close(cache["embed"], model.tok_emb(x) + model.pos_emb.weight[:T])
    assert torch.equal(cache["blocks.0.resid_pre"], cache["embed"])
    for i in range(2):
        assert torch.equal(cache[f"blocks.{i + 1}.resid_pre"], cache[f"blocks.{i}.resid_post"])
    last = cache["blocks.2.resid_post"]
    torch.testing.assert_close(model.ln_f(last), cache["ln_f.out"])
    torch.testing.assert_close(model.head(model.ln_f(last)), logits)
    for i in range(3):
        blk = model.blocks[i]
        pre, post = cache[f"blocks.{i}.resid_pre"], cache[f"blocks.{i}.resid_post"]
        mid = pre + cache[f"blocks.{i}.attn.out"]
        torch.testing.assert_close(
            cache[f"blocks.{i}.mlp.post"], F.gelu(cache[f"blocks.{i}.mlp.pre"])
        )
        torch.testing.assert_close(post, mid + blk.mlp.proj(cache[f"blocks.{i}.mlp.post"]))


@BIAS
@torch.no_grad()
def test_attention_patterns_are_causal_distributions(bias):
    model = tiny(bias=bias)
    _, cache = model.run_with_cache(ids(4), ["blocks.0.attn.pattern", "blocks.1.attn.pattern"])
    for p in cache.values():
        assert p.shape == (4, 2, 8, 8)
        torch.testing.assert_close(p.sum(-1), torch.ones(4, 2, 8))
        assert torch.all(p.triu(1) == 0)  # exactly zero above the diagonal: no future key
        assert torch.all(p[..., torch.tril(torch.ones(8, 8, dtype=torch.bool))] > 0)
        torch.testing.assert_close(p[..., 0, 0], torch.ones(4, 2))  # the first query sees itself


@BIAS
@torch.no_grad()
def test_attention_output_from_the_pattern_by_hand(bias):
    """One block: ``attn.out`` is the pattern times the values, heads merged, projected."""
    model = tiny(n_layer=1, bias=bias)
    x = ids()
    _, cache = model.run_with_cache(x, ["blocks.0.attn.pattern", "blocks.0.attn.out"])
    attn = model.blocks[0].attn
    T, C, H = 8, 16, 2
    h = model.blocks[0].ln_1(model.tok_emb(x) + model.pos_emb.weight[:T])
    v = h @ attn.qkv.weight[2 * C :].T
    if bias:
        v = v + attn.qkv.bias[2 * C :]
    pattern = cache["blocks.0.attn.pattern"]
    heads = [pattern[:, j] @ v[..., j * (C // H) : (j + 1) * (C // H)] for j in range(H)]
    out = torch.cat(heads, -1) @ attn.proj.weight.T
    if bias:
        out = out + attn.proj.bias
    torch.testing.assert_close(cache["blocks.0.attn.out"], out, atol=1e-5, rtol=1e-5)
    # and the pattern itself, written out
    q = h @ attn.qkv.weight[:C].T + (attn.qkv.bias[:C] if bias else 0)
    k = h @ attn.qkv.weight[C : 2 * C].T + (attn.qkv.bias[C : 2 * C] if bias else 0)
    s = C // H
    scores = (q[..., :s] @ k[..., :s].transpose(-1, -2)) / math.sqrt(s)
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    expected = scores.masked_fill(~causal, float("-inf")).softmax(-1)
    torch.testing.assert_close(pattern[:, 0], expected, atol=1e-6, rtol=1e-5)


@torch.no_grad()
def test_only_the_names_asked_for_in_their_order():
    model = tiny()
    _, cache = model.run_with_cache(ids(), ["ln_f.out", "blocks.1.mlp.post", "ln_f.out"])
    assert list(cache) == ["ln_f.out", "blocks.1.mlp.post"]
    _, one = model.run_with_cache(ids(), "embed")
    assert list(one) == ["embed"]
    logits, none = model.run_with_cache(ids(), [])
    assert none == {} and torch.equal(logits, model(ids())[0])


def test_unknown_names_are_refused_with_the_valid_ones():
    model = tiny()
    with pytest.raises(DomainGPTError, match=r"'blocks\.2\.resid_post'.*blocks\.1\.resid_post"):
        model.run_with_cache(ids(), ["embed", "blocks.2.resid_post"])
    with pytest.raises(DomainGPTError, match=r"valid names: embed, blocks\.0\.resid_pre"):
        model.run_with_cache(ids(), ["attn"])
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_hooks_are_removed_when_the_forward_pass_fails():
    model = tiny()
    with pytest.raises(ValueError, match="block_size"):
        model.run_with_cache(torch.zeros(1, 9, dtype=torch.long), ["blocks.0.attn.out"])
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks


def test_cached_activations_carry_gradients():
    model = tiny()
    _, cache = model.run_with_cache(ids(), ["blocks.0.resid_post"])
    cache["blocks.0.resid_post"].sum().backward()
    assert model.blocks[0].mlp.fc.weight.grad is not None
    assert model.blocks[1].mlp.fc.weight.grad is None  # nothing after the point
