"""How many threads torch uses, set for a block and restored after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


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
