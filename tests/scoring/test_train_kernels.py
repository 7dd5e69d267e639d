"""The native kernels of the training step (``train_kernels.c``) against PyTorch's
autograd: each gradient's error against a float64 reference is at most twice PyTorch's
own float32 error, on shapes that exercise the kernels' edges (windows that are not a
multiple of the tile, one-position windows, head sizes 16/32/64, biases on and off)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from domaingpt.scoring import native


@pytest.fixture
def kernels() -> None:
    """Skip where the kernels cannot be built (compiled inside a test: private cache)."""
    if native.load() is None:
        pytest.skip(native.status())


needs_native = pytest.mark.usefixtures("kernels")


def errors(got: torch.Tensor, torch32: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    """Max absolute error of the kernel's and of PyTorch's float32 result against float64."""
    return (got.double() - exact).abs().max().item(), (torch32.double() - exact).abs().max().item()


def within_twice_torch(got, torch32, exact, floor: float = 1e-9) -> None:
    ours, theirs = errors(got, torch32, exact)
    assert ours <= 2 * theirs + floor, f"kernel error {ours:.3g}, PyTorch float32 {theirs:.3g}"


def sdpa(qkv: torch.Tensor, H: int) -> torch.Tensor:
    B, T, C3 = qkv.shape
    q, k, v = qkv.view(B, T, 3, H, C3 // 3 // H).permute(2, 0, 3, 1, 4)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    return y.transpose(1, 2).reshape(B, T, C3 // 3)


@needs_native
@pytest.mark.parametrize(
    ("B", "T", "C", "H"),
    [(3, 64, 128, 4), (2, 37, 32, 2), (1, 1, 32, 2), (2, 13, 64, 4), (2, 64, 128, 2)],
)
def test_attention_backward_equals_autograd(B: int, T: int, C: int, H: int) -> None:
    g = torch.Generator().manual_seed(T + C)
    qkv = torch.randn(B, T, 3 * C, generator=g) * 2
    dy = torch.randn(B, T, C, generator=g)

    def autograd(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        sdpa(x, H).backward(dy.to(x.dtype))
        return x.grad

    out = torch.empty(B, T, C)
    probs = torch.full((B, H, T, T), float("nan"))
    native.attention_train(qkv, H, out, probs, native.attention_scratch(T, C))
    # the forward is the scoring kernel's, and the probabilities are causal softmaxes
    assert torch.equal(out, native.causal_attention(qkv, H, torch.empty(B, T, C)))
    assert torch.equal(probs.triu(1), torch.zeros_like(probs))
    torch.testing.assert_close(probs.sum(-1), torch.ones(B, H, T))
    dqkv = torch.full((B, T, 3 * C), float("nan"))  # every element must be written
    native.attention_backward(qkv, probs, dy, dqkv, H, native.attention_backward_scratch(T, C, H))
    within_twice_torch(dqkv, autograd(qkv), autograd(qkv.double()))


@needs_native
def test_gelu_forward_and_backward_equal_autograd() -> None:
    x = torch.cat([torch.linspace(-12, 12, 10_007), torch.randn(1001) * 3])
    grad = torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    def autograd(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        F.gelu(x).backward(grad.to(x.dtype))
        return x.grad

    assert torch.equal(native.gelu_out(x, torch.empty_like(x)), native.gelu_(x.clone()))
    got = native.gelu_backward_(x, grad.clone())
    # PyTorch's float32 GELU' is exact to rounding; the kernel's erf is good to 1.5e-7
    ours, theirs = errors(got, autograd(x), autograd(x.double()))
    assert ours <= 2 * theirs + 2e-7 and ours < 1e-6


@needs_native
@pytest.mark.parametrize("bias", [True, False])
def test_layer_norm_backward_equals_autograd(bias: bool) -> None:
    g = torch.Generator().manual_seed(2)
    x = torch.randn(333, 128, generator=g) * 5 + 3
    w, b = torch.randn(128, generator=g), torch.randn(128, generator=g)
    dy = torch.randn(333, 128, generator=g)
    residual = torch.randn(333, 128, generator=g)  # the kernel adds dx to what is there

    def autograd(dtype: torch.dtype) -> list[torch.Tensor]:
        xx, ww, bb = (t.to(dtype).requires_grad_(True) for t in (x, w, b))
        F.layer_norm(xx, (128,), ww, bb if bias else None, 1e-5).backward(dy.to(dtype))
        return [xx.grad + residual.to(dtype), ww.grad, bb.grad if bias else None]

    out, mean, rstd = torch.empty_like(x), torch.empty(333), torch.empty(333)
    native.layer_norm_train(x, w, b if bias else None, 1e-5, out, mean, rstd)
    assert torch.equal(out, native.layer_norm(x, w, b if bias else None, 1e-5, torch.empty_like(x)))
    dx, dw, db = residual.clone(), torch.zeros(128), torch.zeros(128) if bias else None
    native.layer_norm_backward(x, w, mean, rstd, dy, dx, dw, db)
    exact, single = autograd(torch.float64), autograd(torch.float32)
    for got, t32, ref in zip([dx, dw, db], single, exact, strict=True):
        if ref is not None:
            within_twice_torch(got, t32, ref)


@needs_native
@pytest.mark.parametrize("V", [268, 65, 3])
def test_cross_entropy_backward_equals_autograd(V: int) -> None:
    g = torch.Generator().manual_seed(V)
    logits = torch.randn(500, V, generator=g) * 4
    targets = torch.randint(0, V, (500,), generator=g)

    def autograd(x: torch.Tensor) -> torch.Tensor:
        x = x.clone().requires_grad_(True)
        F.cross_entropy(x, targets).backward()
        return x.grad

    nll = torch.empty(500)
    got = native.cross_entropy_backward_(logits.clone(), targets, nll, 1 / 500)
    within_twice_torch(got, autograd(logits), autograd(logits.double()))
    assert torch.equal(nll, native.token_nll(logits, targets, torch.empty(500)))


@needs_native
def test_training_kernels_refuse_wrong_buffers() -> None:
    qkv, probs = torch.randn(2, 8, 96), torch.empty(2, 2, 8, 8)
    with pytest.raises(ValueError, match="multiple of 16"):
        native.attention_train(qkv, 4, torch.empty(2, 8, 32), probs, torch.empty(10_000))
    with pytest.raises(ValueError, match="too small"):
        native.attention_train(qkv, 2, torch.empty(2, 8, 32), probs, torch.empty(10))
    with pytest.raises(ValueError, match="256 elements"):  # probabilities of 2 heads, not 4
        native.attention_backward(
            qkv, probs[:, :1], torch.randn(2, 8, 32), torch.empty(2, 8, 96), 2, torch.empty(10_000)
        )
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        native.cross_entropy_backward_(
            torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), torch.empty(4), 1.0
        )
