"""How many threads torch uses, set for a block and restored after it."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

T = TypeVar("T")


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Use ``n`` torch threads inside the block (0: leave as is), then restore the count.

    On a CPU shared with other jobs, fewer threads can be much faster: OpenMP threads that
    wait for a descheduled sibling spin (see benchmarks/bench_eval.py).
    """
    before = torch.get_num_threads()
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
