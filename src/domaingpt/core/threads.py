"""How many threads torch uses, set for a block and restored after it, and how many cores
there are to use."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import torch

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may use: its CPU affinity (``taskset``, a container's
    cpuset), and no more than a cgroup's CPU quota (``docker --cpus 2`` on a large host,
    where ``os.cpu_count()`` counts every core of the host)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_quota()
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cgroup_quota() -> float | None:
    """CPUs allowed by the cgroup v2 (``cpu.max``) or v1 (``cfs_quota_us``) quota; None
    when there is none or it cannot be read."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        root = Path("/sys/fs/cgroup/cpu")
        quota = int((root / "cpu.cfs_quota_us").read_text())
        period = int((root / "cpu.cfs_period_us").read_text())
        return quota / period if quota > 0 and period > 0 else None
    except (OSError, ValueError):
        return None


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (0: torch's own count, but no more than
    :func:`usable_cores`), then restore the count.

    On a CPU shared with other jobs, fewer threads can be much faster: OpenMP threads that
    wait for a descheduled sibling spin (see benchmarks/bench_eval.py). Torch's default
    follows the CPU affinity but not a cgroup's CPU quota: in a container limited to 2
    CPUs of a 64-core host it would run 64 threads on 2 CPUs' worth of time.
    """
    before = torch.get_num_threads()
    if n <= 0 and before > (cores := usable_cores()):
        n = cores
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(before)


def map_workers(fn: Callable[[Any], T], items: Sequence[Any], workers: int) -> list[T]:
    """``[fn(x) for x in items]`` on ``workers`` threads, each running torch on one thread
    (torch's kernels release the interpreter lock), in the items' order.

    On a small CPU, independent units of work (checkpoints, batches) on one thread each
    beat one unit on every thread, and a unit's numbers never depend on how many workers
    there were: torch runs on one thread either way.
    """
    items = list(items)
    with torch_threads(1):
        if workers <= 1 or len(items) <= 1:
            return [fn(x) for x in items]
        with ThreadPoolExecutor(min(workers, len(items)), "domaingpt-worker") as pool:
            return list(pool.map(fn, items))
