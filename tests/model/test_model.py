from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from domaingpt.errors import ConfigError
from domaingpt.model.gpt import GPT, GPTConfig


def tiny(**kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        **({"n_layer": 2, "n_head": 2, "n_embd": 16, "block_size": 8, "vocab_size": 11} | kw)
    )
    return GPT(cfg).eval()


def reference_forward(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """The same network written out with explicit attention matrices (no SDPA, no modules)."""
    cfg = model.config
    _B, T = idx.shape
    hd = cfg.n_embd // cfg.n_head
    x = model.tok_emb.weight[idx] + model.pos_emb.weight[:T]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for blk in model.blocks:
        h = F.layer_norm(x, (cfg.n_embd,), blk.ln_1.weight, blk.ln_1.bias)
        qkv = h @ blk.attn.qkv.weight.T + blk.attn.qkv.bias
        q, k, v = qkv.split(cfg.n_embd, dim=-1)
        heads = []
        for i in range(cfg.n_head):
            sl = slice(i * hd, (i + 1) * hd)
            att = (q[..., sl] @ k[..., sl].transpose(-1, -2)) / math.sqrt(hd)
            att = att.masked_fill(~causal, float("-inf")).softmax(-1)
            heads.append(att @ v[..., sl])
        x = x + torch.cat(heads, -1) @ blk.attn.proj.weight.T + blk.attn.proj.bias
        h = F.layer_norm(x, (cfg.n_embd,), blk.ln_2.weight, blk.ln_2.bias)
        h = F.gelu(h @ blk.mlp.fc.weight.T + blk.mlp.fc.bias)
        x = x + h @ blk.mlp.proj.weight.T + blk.mlp.proj.bias
    x = F.layer_norm(x, (cfg.n_embd,), model.ln_f.weight, model.ln_f.bias)
    return x @ model.tok_emb.weight.T


def test_forward_matches_explicit_reference():
    model = tiny()
    with torch.no_grad():
        for p in model.parameters():  # make biases and gains non-trivial
            p.add_(0.05 * torch.randn_like(p))
        idx = torch.randint(0, 11, (3, 8))
        logits, _ = model(idx)
        assert logits.shape == (3, 8, 11)  # every position, not only the last
        torch.testing.assert_close(logits, reference_forward(model, idx), atol=1e-5, rtol=1e-5)


def test_inputs_embeds_equals_ids_and_is_differentiable():
    model = tiny()
    idx = torch.randint(0, 11, (2, 8))
    emb = model.embed(idx).detach().requires_grad_(True)
    a, _ = model(idx)
    b, _ = model(inputs_embeds=emb)
    torch.testing.assert_close(a, b)
    b[0, -1, 3].backward()
    assert emb.grad is not None and emb.grad[0].abs().sum() > 0 and emb.grad[1].abs().sum() == 0


@pytest.mark.parametrize("kw", [{}, {"n_layer": 1, "bias": False}, {"n_layer": 3, "n_head": 4}])
def test_logits_at_one_position_equal_the_full_forward(kw):
    """``at=`` runs the last block and the head at one position per row only; the logits
    and the gradient with respect to the input embeddings are those of the full model."""
    model = tiny(**kw)
    g = torch.Generator().manual_seed(3)
    idx = torch.randint(0, 11, (5, 8), generator=g)
    pos = torch.tensor([7, 0, 3, 5, 7])
    rows = torch.arange(5)
    e1 = model.embed(idx).detach().requires_grad_(True)
    e2 = e1.detach().clone().requires_grad_(True)
    full = model(inputs_embeds=e1)[0][rows, pos]
    at, loss = model(inputs_embeds=e2, at=pos)
    assert loss is None and at.shape == (5, 11)
    torch.testing.assert_close(at, full, atol=1e-6, rtol=1e-5)
    full[rows, idx[:, 0]].sum().backward()
    at[rows, idx[:, 0]].sum().backward()
    torch.testing.assert_close(e2.grad, e1.grad, atol=1e-6, rtol=1e-5)
    assert e2.grad[1, 1:].abs().max() == 0  # position 0 sees nothing after it
    with pytest.raises(ValueError, match="targets and at"):
        model(idx, idx, at=pos)


def test_causal_mask():
    model = tiny()
    idx = torch.randint(0, 11, (1, 8))
    changed = idx.clone()
    changed[0, 5] = (idx[0, 5] + 1) % 11
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_init_loss_is_near_uniform_and_weights_are_tied():
    model = tiny(vocab_size=300, n_embd=64, n_head=4)
    idx = torch.randint(0, 300, (8, 8))
    _, loss = model(idx, torch.randint(0, 300, (8, 8)))
    assert abs(loss.item() - math.log(300)) < 0.1
    assert model.head.weight.data_ptr() == model.tok_emb.weight.data_ptr()


def test_param_count_and_flops_for_cpu_mini():
    m = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=64, vocab_size=100, bias=False))
    C = 128
    per_block = 2 * C + 3 * C * C + C * C + 4 * C * C + 4 * C * C  # 2 LN gains + attn + mlp
    expected = 100 * C + 4 * per_block + C  # tied embedding/head + blocks + ln_f
    assert m.num_params() == expected
    assert m.num_params(non_embedding=False) == expected + 64 * C
    assert m.flops_per_token() == 6 * expected + 12 * 4 * C * 64
    assert m.flops_per_token(train=False) == 2 * expected + 2 * 4 * C * 64


def test_residual_projections_use_scaled_init():
    torch.manual_seed(0)
    m = GPT(GPTConfig(n_layer=8, n_head=4, n_embd=128, block_size=16, vocab_size=50))
    assert abs(m.blocks[0].mlp.fc.weight.std().item() - 0.02) < 0.002
    assert abs(m.blocks[0].mlp.proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.001


@pytest.mark.parametrize(
    "kw", [{"n_embd": 10, "n_head": 3}, {"vocab_size": 0}, {"dropout": 1.0}, {"n_layer": -1}]
)
def test_config_validation(kw):
    with pytest.raises(ConfigError):
        GPTConfig(**({"vocab_size": 10} | kw))


def test_greedy_generation_equals_the_full_forward_loop():
    """generate() computes only the next character's logits; greedy decoding must pick
    what the full forward picks, past block_size (8) too."""
    model = tiny()
    idx = torch.tensor([[1], [4]])
    out = model.generate(idx, 12, temperature=0)
    ref = idx
    for _ in range(12):
        nxt = model(ref[:, -8:])[0][:, -1].argmax(-1, keepdim=True)
        ref = torch.cat((ref, nxt), dim=1)
    assert torch.equal(out, ref) and out.shape == (2, 13)


def test_generate_is_seeded_and_crops_context():
    model = tiny()
    idx = torch.zeros(1, 1, dtype=torch.long)
    g = lambda s: model.generate(idx, 20, generator=torch.Generator().manual_seed(s))  # noqa: E731
    assert torch.equal(g(1), g(1)) and g(1).shape == (1, 21)
    assert not torch.equal(g(1), g(2))


def _generate_reference(model, idx, n, temperature, top_k, generator):
    """generate() as it was before it streamed: the whole sequence grown by torch.cat."""
    with torch.no_grad():
        for _ in range(n):
            context = idx[:, -model.config.block_size :]
            last = torch.full((idx.shape[0],), context.shape[1] - 1)
            logits = model(context, at=last)[0].float() / temperature
            if top_k is not None:
                kth = torch.topk(logits, top_k).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            idx = torch.cat((idx, nxt), dim=1)
    return idx


@pytest.mark.parametrize(("temperature", "top_k"), [(1.0, None), (0.7, 3)])
def test_streamed_ids_are_the_ids_generate_returned_before(temperature, top_k):
    """Streaming keeps only block_size ids of context: same draws, same ids, past the
    block size (8) too, so every sample the runs stored stays the same."""
    model = tiny().eval()
    idx = torch.tensor([[1, 2, 3]])
    kw = {"temperature": temperature, "top_k": top_k}
    ref = _generate_reference(model, idx, 30, generator=torch.Generator().manual_seed(7), **kw)
    out = model.generate(idx, 30, generator=torch.Generator().manual_seed(7), **kw)
    streamed = model.generate_ids(idx, 30, generator=torch.Generator().manual_seed(7), **kw)
    assert torch.equal(out, ref)
    assert torch.equal(torch.cat([idx, *streamed], dim=1), ref)


def test_stream_text_is_generate_text_and_checks_before_the_first_character():
    from domaingpt.data.vocab import Vocab
    from domaingpt.errors import DomainGPTError
    from domaingpt.model.generate import MAX_CHARS, generate_text, stream_text

    vocab = Vocab.from_texts(["abcdefghijklmnopqrstuvwxyz \n"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=16, block_size=8, vocab_size=vocab.size))
    text = generate_text(model, vocab, "ab", 40, seed=3, top_k=5)
    assert "".join(stream_text(model, vocab, "ab", 40, seed=3, top_k=5)) == text
    bad = [
        {"temperature": float("nan")},
        {"temperature": float("inf")},
        {"seed": 2**64},
        {"seed": -1},
        {"top_k": 0},
    ]
    for kw in bad:
        with pytest.raises(DomainGPTError):
            stream_text(model, vocab, "ab", 5, **kw)  # raised on the call, not on next()
    with pytest.raises(DomainGPTError, match="at most 10,000,000"):
        stream_text(model, vocab, "ab", MAX_CHARS + 1)
