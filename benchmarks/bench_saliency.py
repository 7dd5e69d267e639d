"""Batched gradient-norm saliency vs a per-prompt loop of Captum's ``Saliency``.

Both explain the same quantity on the same model in the same process: the L2 norm over
the embedding dimensions of ∂ log p(true next char) / ∂ (token embedding), for every
input character of every prompt. domaingpt's :class:`~domaingpt.saliency.GradientNorm`
does one forward and one backward pass for the whole batch; the Captum baseline calls
``Saliency.attribute`` once per prompt, as a notebook following Captum's tutorials would.

It checks the values agree to 1e-5 (``torch.allclose`` with ``--atol`` and ``--rtol``,
both 1e-5 by default: trained models have gradient norms of 10 and more, where float32
rounding alone moves the fifth significant digit) and prints prompts per second
for both and the speed-up (medians over ``--repeats`` timed runs, after a warm-up);
the target is ≥ 10×. Captum is an optional extra: ``pip install 'domaingpt[interpret]'``
(or ``pip install captum --no-deps`` to keep the installed torch).

Usage::

    python benchmarks/bench_saliency.py                       # smoke and cpu-mini shapes
    python benchmarks/bench_saliency.py --model runs/demo/models/shakespeare
    python benchmarks/bench_saliency.py --prompts 128 --repeats 7 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.stages.saliency import GradientNorm
from matmul_ceiling import matmul_rate

SHAPES = {
    # name: (n_layer, n_head, n_embd, block_size), as the presets of the same name
    "smoke": (2, 2, 32, 32),
    "cpu-mini": (4, 4, 128, 64),
}
VOCAB = 330  # about the size of the built-in study's vocabulary


def make_model(shape: str) -> GPT:
    n_layer, n_head, n_embd, block = SHAPES[shape]
    torch.manual_seed(0)
    cfg = GPTConfig(
        n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=block, vocab_size=VOCAB
    )
    return GPT(cfg).eval()


def load_model(path: str) -> GPT:
    from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint

    return load_checkpoint(find_checkpoint(path)).model.eval()


def ours(model: GPT, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return GradientNorm(model).attribute(ids, targets)


def captum_loop(model: GPT, ids: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    from captum.attr import Saliency

    out = torch.zeros(ids.shape, dtype=torch.float32)
    for i in range(ids.shape[0]):
        target = targets[i : i + 1]

        def forward(embeds: torch.Tensor, target=target) -> torch.Tensor:
            # What a notebook would write: the model's logits, the last position's row.
            logits, _ = model(inputs_embeds=embeds)
            return torch.log_softmax(logits[:, -1].float(), dim=-1)[:, target[0]]

        embeds = model.embed(ids[i : i + 1]).detach().requires_grad_(True)
        grad = Saliency(forward).attribute(embeds, abs=True)
        out[i] = grad.norm(dim=-1)[0]
    return out


def prompt_flops(model: GPT, T: int) -> tuple[float, float]:
    """FLOPs of one prompt's gradient (forward + backward to the inputs, 2× the forward
    with nanoGPT's count): the whole model, and the model pruned to the last position."""
    cfg = model.config
    C, L, V = cfg.n_embd, cfg.n_layer, cfg.vocab_size
    block = 2 * 12 * C * C * T + 4 * T * T * C  # linear layers + attention, all positions
    last = 2 * 2 * C * C * T + 2 * 10 * C * C + 4 * T * C  # keys/values; one query's rest
    full = 2 * (L * block + 2 * V * C * T)
    pruned = 2 * ((L - 1) * block + last + 2 * V * C)
    return full, pruned


def timed(fn, *args, repeats: int) -> tuple[float, torch.Tensor]:
    result = fn(*args)  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn(*args)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench(name: str, model: GPT, n_prompts: int, repeats: int, atol: float, rtol: float) -> bool:
    T = model.config.block_size
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, model.config.vocab_size, (n_prompts, T), generator=g)
    targets = torch.randint(1, model.config.vocab_size, (n_prompts,), generator=g)
    t_ours, a = timed(ours, model, ids, targets, repeats=repeats)
    t_captum, b = timed(captum_loop, model, ids, targets, repeats=repeats)
    diff = float((a - b).abs().max())
    rel = float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())
    ok = torch.allclose(a, b, atol=atol, rtol=rtol)
    speedup = t_captum / t_ours
    print(
        f"{name:<10} {n_prompts} prompts x {T} chars | batched grad-norm "
        f"{n_prompts / t_ours:9.1f} prompts/s | Captum Saliency loop "
        f"{n_prompts / t_captum:8.1f} prompts/s | speed-up {speedup:5.1f}x "
        f"{'(>= 10x target met)' if speedup >= 10 else '(below the 10x target)'} | "
        f"max |diff| {diff:.2e} (relative {rel:.1e}) {'ok' if ok else 'MISMATCH'}"
    )
    # What one prompt costs, forward plus a backward to the inputs (about as much again):
    # the loop runs the whole model; the batched path (``model(..., at=last)``) skips
    # the last block's queries, MLP and head at every position but the last.
    full, pruned = prompt_flops(model, T)
    peak = matmul_rate()
    need = 10 * n_prompts / t_captum * pruned
    print(
        f"{'':<10} loop {n_prompts / t_captum * full / 1e9:.0f} GFLOP/s; batched "
        f"{n_prompts / t_ours * pruned / 1e9:.0f} GFLOP/s on {pruned / full:.0%} of the "
        f"loop's work; 10x the loop needs {need / 1e9:.0f} GFLOP/s = {need / peak:.0%} of "
        f"the matmul rate ({peak / 1e9:.0f} GFLOP/s)"
    )
    return ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="a trained model directory or checkpoint (default: shapes)")
    p.add_argument("--shapes", default="smoke,cpu-mini", help="model shapes when no --model")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--atol", type=float, default=1e-5)
    p.add_argument("--rtol", type=float, default=1e-5)
    args = p.parse_args(argv)
    try:
        import captum
    except ImportError:
        print("captum is not installed: pip install captum --no-deps", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, captum {captum.__version__}, "
        f"{torch.get_num_threads()} threads; medians of {args.repeats} runs"
    )
    if args.model:
        models = {"model": load_model(args.model)}
    else:
        models = {s: make_model(s) for s in args.shapes.split(",") if s}
    ok = all(
        bench(n, m, args.prompts, args.repeats, args.atol, args.rtol) for n, m in models.items()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
