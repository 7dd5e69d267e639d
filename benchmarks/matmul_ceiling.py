"""The machine's matmul rate and the MFU bound set by a workload's own matmuls, shared
by the benchmarks.

Profiling a workload and summing the time of its matmul operators alone gives the MFU
it would reach if everything else (attention, GELU, LayerNorm, the optimizer, Python)
took no time at all: FLOPs ÷ matmul time ÷ the machine's matmul rate. The matmuls of a
small model are small and skinny, so they run below the large-square rate that MFU is
measured against; no implementation of the same model beats this bound on the machine
without faster matmul kernels.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch

MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm")


def matmul_rate(n: int = 2048, reps: int = 8) -> float:
    """The machine's fp32 matmul rate in FLOP/s: an n×n @ n×n product, median of ``reps``."""
    a, b, out = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times)


def matmul_ceiling(work: Callable[[], object], repeats: int, flops: float, peak: float) -> str:
    """Run ``work`` ``repeats`` times under the profiler (``flops`` FLOPs in all, ``peak``
    the matmul rate in FLOP/s) and describe the matmul share and the MFU bound."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t = time.perf_counter()
        for _ in range(repeats):
            work()
        wall = time.perf_counter() - t
    by_op = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    mm = sum(by_op.get(op, 0.0) for op in MATMUL_OPS)
    top = sorted(((k, v) for k, v in by_op.items() if k not in MATMUL_OPS), key=lambda kv: -kv[1])
    others = ", ".join(f"{k.removeprefix('aten::')[:28]} {v / wall:.0%}" for k, v in top[:4])
    return (
        f"matmuls alone: {mm / wall:.0%} of the time at {flops / mm / 1e9:.0f} GFLOP/s -> "
        f"MFU ceiling {flops / mm / peak:.1%} (matmul {peak / 1e9:.0f} GFLOP/s); "
        f"largest other ops: {others}"
    )
