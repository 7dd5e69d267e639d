"""How fast does the evaluator score text, against what this CPU can do?

Run by hand (not a test)::

    python benchmarks/bench_eval.py [--data-dir ../shared/data] [--threads 1,2]

In one run it measures

* the fp32 matmul rate: a large square matmul (2048², median of several) at the same
  thread count, measured before and after each piece of the evaluator's work, since
  other jobs may share the machine: MFU uses the rate measured around it;
* the evaluator (:func:`domaingpt.evaluate.score_windows`) on the real Shakespeare
  validation split with a ``cpu-mini``-shaped model (4 layers, 4 heads, 128 dims,
  block 64; the run vocabulary of the three built-in corpora): characters scored per
  second and MFU = chars/s × forward FLOPs per character / matmul rate, with forward
  FLOPs per character = ``model.flops_per_token(train=False)`` = 2N + 2·L·C·T;
* both engines, piece by piece in turn: ``native`` (:mod:`domaingpt.cpu_scoring`, the
  default on a CPU) and ``torch`` (the model's own forward pass), and their ratio;

for a few batch sizes and thread counts, and prints the best. On a CPU shared with other
jobs, run it with ``OMP_WAIT_POLICY=PASSIVE`` or ``--threads 1``: spinning OpenMP
threads collapse multi-threaded throughput when cores are oversubscribed. ``--profile`` adds the operator breakdown of
one batch (where the time that is not matmul goes) and the MFU bound set by the
matmuls alone (``benchmarks/matmul_ceiling.py``).
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from domaingpt.core.config import build_config
from domaingpt.data.corpus import REGISTRY, resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import native, score_windows
from matmul_ceiling import matmul_ceiling, matmul_rate

REPO = Path(__file__).resolve().parents[1]


ENGINES = ("native", "torch")


def measure(model: GPT, ids: np.ndarray, batch_size: int, parts: int) -> dict[str, tuple]:
    """Score the whole split in ``parts`` consecutive pieces with each engine in turn,
    each piece between two matmul timings: per engine (chars/s overall, median matmul
    GFLOP/s, median per-piece MFU). Pairing each piece with the matmul rate measured
    around it keeps MFU meaningful on a shared CPU whose speed drifts while the
    benchmark runs; alternating the engines keeps their comparison fair."""
    flops = model.flops_per_token(train=False)
    warm = ids[: 8 * batch_size * model.config.block_size]
    for engine in ENGINES:
        score_windows(model, warm, batch_size=batch_size, engine=engine)
    edges = np.linspace(0, len(ids) - 1, parts + 1).astype(int)
    runs: dict[str, list] = {e: [[], [], 0, 0.0] for e in ENGINES}
    for lo, hi in itertools.pairwise(edges):
        for engine in ENGINES:
            peaks, mfus, _, _ = run = runs[engine]
            before = matmul_rate(reps=3) / 1e9
            t0 = time.perf_counter()
            n = score_windows(model, ids[lo : hi + 1], batch_size=batch_size, engine=engine)
            dt = time.perf_counter() - t0
            after = matmul_rate(reps=3) / 1e9
            peak = (before + after) / 2
            peaks.append(peak)
            mfus.append(n.n_scored / dt * flops / 1e9 / peak)
            run[2] += n.n_scored
            run[3] += dt
    return {
        e: (chars / seconds, statistics.median(peaks), statistics.median(mfus))
        for e, (peaks, mfus, chars, seconds) in runs.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    parser.add_argument("--threads", default="", help="thread counts, e.g. 1,2 (default: torch's)")
    parser.add_argument("--batch-sizes", default="16,32,64,128")
    parser.add_argument(
        "--parts", type=int, default=5, help="pieces of the split, each timed between matmuls"
    )
    parser.add_argument("--profile", action="store_true", help="operator breakdown of a batch")
    args = parser.parse_args()

    corpora = {n: resolve_corpus(n, args.data_dir) for n in REGISTRY}
    vocab = Vocab.from_texts(c.read_text() for c in corpora.values())
    cfg = build_config("cpu-mini")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=vocab.size, **cfg.model.__dict__)).eval()
    val = encode_corpus(corpora["shakespeare"], vocab).split(cfg.data.val_fraction)[1]
    val = np.ascontiguousarray(val)
    flops = model.flops_per_token(train=False)
    print(
        f"cpu-mini: {model.num_params() / 1e6:.3f} M params (vocab {vocab.size}), "
        f"{flops / 1e6:.3f} MFLOP per character forward; Shakespeare val {len(val):,} chars; "
        f"torch {torch.__version__}, default threads {torch.get_num_threads()}"
    )
    threads = [int(t) for t in args.threads.split(",") if t] or [torch.get_num_threads()]
    batch_sizes = [int(b) for b in args.batch_sizes.split(",") if b]
    print(
        f"{'threads':>7} {'batch':>5} {'engine':>6} {'matmul GFLOP/s':>14} {'chars/s':>9} "
        f"{'GFLOP/s':>8} {'MFU':>6}"
    )
    results = []
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        for bs in batch_sizes:
            by_engine = measure(model, val, bs, args.parts)
            for engine, (cps, peak, mfu) in by_engine.items():
                achieved = cps * flops / 1e9
                results.append((mfu, engine, n_threads, bs, peak, cps, achieved))
                print(
                    f"{n_threads:>7} {bs:>5} {engine:>6} {peak:>14.1f} {cps:>9,.0f} "
                    f"{achieved:>8.1f} {mfu:>6.1%}",
                    flush=True,
                )
            print(f"{'':>14} native / torch: {by_engine['native'][0] / by_engine['torch'][0]:.2f}x")
    for want in ENGINES:
        mfu, engine, n_threads, bs, peak, cps, achieved = max(r for r in results if r[1] == want)
        print(
            f"best {engine}: threads {n_threads}, batch {bs}: {cps:,.0f} chars/s, "
            f"{achieved:.1f} GFLOP/s; matmul {peak:.1f} GFLOP/s; MFU {mfu:.1%} "
            f"(median over {args.parts} pieces)"
        )
    print(native.status())
    if args.profile:
        _, _, n_threads, bs, *_ = max(r for r in results if r[1] == "native")
        profile_engines(model, val, bs, n_threads, flops)


def profile_engines(model: GPT, val: np.ndarray, bs: int, n_threads: int, flops: float) -> None:
    """Operator breakdown of each engine and the MFU bound set by its matmuls. The
    native engine is profiled with one thread, so its single worker runs in the profiled
    (main) thread; its kernels show as ``native::*``."""
    from torch.profiler import ProfilerActivity, profile, record_function

    for name in ("causal_attention", "gelu_", "layer_norm", "token_nll"):
        kernel = getattr(native, name)

        def labelled(*args, _kernel=kernel, _name=name):
            with record_function(f"native::{_name}"):
                return _kernel(*args)

        setattr(native, name, labelled)
    ids = val[: 20 * bs * model.config.block_size + 1]
    for engine, threads in (("native", 1), ("torch", n_threads)):
        torch.set_num_threads(threads)
        score_windows(model, ids, batch_size=bs, engine=engine)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            score_windows(model, ids, batch_size=bs, engine=engine)
        print(f"{engine}, {threads} thread(s):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
        work = lambda e=engine: score_windows(model, val, batch_size=bs, engine=e)  # noqa: E731
        print(matmul_ceiling(work, 1, len(val) * flops, matmul_rate()))


if __name__ == "__main__":
    main()
