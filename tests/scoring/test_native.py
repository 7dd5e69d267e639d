"""The native CPU kernels and the scoring engine built on them, against PyTorch.

Each kernel is compared with the PyTorch op it replaces on shapes that exercise its
edges (lengths that are not multiples of the vector width, one-position windows, head
sizes 16/32/64, biases on and off); the engine's window losses with the model's own
forward pass on a real corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import cpu_engine as cpu_scoring
from domaingpt.scoring import native
from domaingpt.stages.evaluate.compute import score_windows


@pytest.fixture
def kernels() -> None:
    """Skip where the kernels cannot be built. A fixture, not a skipif mark: the first
    load compiles, and that must happen inside a test, where the cache is private."""
    if native.load() is None:
        pytest.skip(native.status())


needs_native = pytest.mark.usefixtures("kernels")


@needs_native
@pytest.mark.parametrize(
    ("B", "T", "C", "H"),
    [(3, 64, 128, 4), (2, 37, 32, 2), (2, 256, 384, 6), (1, 1, 32, 2), (4, 13, 64, 4)],
)
def test_causal_attention_equals_sdpa(B: int, T: int, C: int, H: int) -> None:
    g = torch.Generator().manual_seed(T)
    qkv = torch.randn(B, T, 3 * C, generator=g) * 2

    def sdpa(x: torch.Tensor) -> torch.Tensor:
        q, k, v = x.view(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return y.transpose(1, 2).reshape(B, T, C)

    exact = sdpa(qkv.double())  # float64: both float32 computations are compared with it
    got = native.causal_attention(qkv, H, torch.full((B, T, C), float("nan")))
    error = (got.double() - exact).abs().max()
    assert error <= 2 * (sdpa(qkv).double() - exact).abs().max() + 1e-6
    assert error < 2e-5
    # position 0 sees only itself: its output is its own value vector
    torch.testing.assert_close(got[:, 0], qkv[:, 0, 2 * C :])


@needs_native
def test_gelu_equals_exact_gelu() -> None:
    x = torch.cat([torch.linspace(-12, 12, 100_003), torch.randn(1001) * 3])
    got = native.gelu_(x.clone())
    want = F.gelu(x.double())
    assert (got.double() - want).abs().max() < 1e-6
    assert got[x < -10].abs().max() < 1e-20 and torch.equal(got[x > 10], x[x > 10])


@needs_native
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_equals_torch(bias: bool) -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(333, 128, generator=g) * 5 + 3
    w = torch.randn(128, generator=g)
    b = torch.randn(128, generator=g) if bias else None
    got = native.layer_norm(x, w, b, 1e-5, torch.empty_like(x))
    torch.testing.assert_close(got, F.layer_norm(x, (128,), w, b, 1e-5), atol=1e-5, rtol=1e-5)


@needs_native
@pytest.mark.parametrize("V", [268, 65, 8, 3])
def test_token_nll_equals_cross_entropy(V: int) -> None:
    g = torch.Generator().manual_seed(V)
    logits = torch.randn(500, V, generator=g) * 4
    targets = torch.randint(0, V, (500,), generator=g)
    got = native.token_nll(logits, targets, torch.empty(500))
    want = F.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(got, want, atol=2e-6, rtol=1e-6)


@needs_native
def test_kernels_refuse_buffers_they_would_overrun() -> None:
    qkv = torch.randn(2, 8, 96)
    with pytest.raises(ValueError, match="512 elements"):
        native.causal_attention(qkv, 2, torch.empty(2, 8, 16))  # out too small
    with pytest.raises(ValueError, match="multiple of 16"):
        native.causal_attention(qkv, 4, torch.empty(2, 8, 32))  # head size 8
    with pytest.raises(ValueError, match="scratch of 10 floats"):
        native.causal_attention(qkv, 2, torch.empty(2, 8, 32), torch.empty(10))
    with pytest.raises(ValueError, match="float32"):
        native.gelu_(torch.randn(10, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        native.token_nll(torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), torch.empty(4))
    with pytest.raises(ValueError, match="contiguous"):
        native.layer_norm(torch.randn(16, 8).t(), torch.ones(16), None, 1e-5, torch.empty(8, 16))


def _model(seed: int, **cfg: object) -> GPT:
    """A random model with larger-than-init weights, so its predictions are far from
    uniform and a wrong kernel shows in the loss."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**cfg)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    return model


@pytest.fixture(scope="module")
def shakespeare(corpora) -> tuple[Vocab, np.ndarray]:
    corpus = corpora.resolve("shakespeare")
    vocab = Vocab.from_texts([corpus.read_text()])
    return vocab, np.ascontiguousarray(encode_corpus(corpus, vocab).split(0.1)[1][:20_000])


@needs_native
@pytest.mark.parametrize(
    "cfg",
    [
        dict(n_layer=2, n_head=4, n_embd=128, block_size=64, bias=False),  # cpu-mini's shape
        dict(n_layer=1, n_head=2, n_embd=32, block_size=32, bias=True),  # smoke's
        dict(n_layer=1, n_head=2, n_embd=128, block_size=48, bias=True),  # head size 64
    ],
)
def test_native_engine_scores_as_the_model_does(shakespeare, cfg: dict) -> None:
    vocab, ids = shakespeare
    model = _model(0, vocab_size=vocab.size, **cfg)
    for kw in ({}, {"block_size": 20, "max_windows": 37}):
        want = score_windows(model, ids, engine="torch", **kw)
        got = score_windows(model, ids, engine="native", **kw)
        assert np.array_equal(got.count, want.count) and np.array_equal(got.starts, want.starts)
        np.testing.assert_allclose(got.nll, want.nll, rtol=1e-5)
        assert got.mean_loss == pytest.approx(want.mean_loss, rel=1e-6)
        assert abs(want.mean_loss - np.log(vocab.size)) > 0.25  # not a uniform model


@needs_native
def test_native_scores_do_not_depend_on_threads_or_batch(shakespeare) -> None:
    vocab, ids = shakespeare
    model = _model(1, vocab_size=vocab.size, n_layer=1, n_head=2, n_embd=32, block_size=32)
    assert cpu_scoring.unsupported(model) is None
    assert cpu_scoring.describe(model).startswith("scoring: native CPU engine")
    before = torch.get_num_threads()
    runs = []
    for threads, batch in ((1, 128), (2, 128), (2, 3), (3, 7)):
        torch.set_num_threads(threads)
        runs.append(score_windows(model, ids, batch_size=batch, engine="native").nll)
        assert torch.get_num_threads() == threads  # the engine restores the count
    torch.set_num_threads(before)
    for nll in runs[1:]:
        assert np.array_equal(nll, runs[0])


def test_engine_choice_and_fallback(shakespeare) -> None:
    vocab, ids = shakespeare
    odd = _model(2, vocab_size=vocab.size, n_layer=1, n_head=4, n_embd=32, block_size=16)
    assert cpu_scoring.unsupported(odd) == "head size 8 is not a multiple of 16"
    assert (
        cpu_scoring.describe(odd)
        == "scoring: the model's forward pass (head size 8 is not a multiple of 16)"
    )
    with pytest.raises(DomainGPTError, match="native scoring engine cannot run"):
        score_windows(odd, ids, engine="native")
    auto = score_windows(odd, ids)  # falls back to the model's forward pass
    assert auto.mean_loss == score_windows(odd, ids, engine="torch").mean_loss
    with pytest.raises(ValueError, match="engine must be one of"):
        score_windows(odd, ids, engine="fast")


def test_native_off_by_env_or_broken_compiler(monkeypatch, tmp_path) -> None:
    try:
        native._load.cache_clear()
        monkeypatch.setenv(native.ENV, "0")
        assert native.load() is None and "DOMAINGPT_NATIVE=0" in native.status()
        native._load.cache_clear()
        monkeypatch.delenv(native.ENV)
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))  # nothing built yet
        monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
        monkeypatch.setattr(native, "_cpu_has_avx2_fma", lambda: True)
        assert native.load() is None
        assert "failed on cpu_kernels.c" in native.status()
        assert not list((tmp_path / "domaingpt" / "native").glob("*.so"))  # nothing half-built
    finally:
        native._load.cache_clear()
