"""Worker processes on one machine: a study's independent jobs side by side, each process
with its share of the cores.

Independent jobs (whole training runs: the replicate models of the train stage, the
adaptation runs) gain from running side by side on one torch thread each rather than one
after the other on every thread: a small model's ops are too short to split across cores
without each op's fork/join costing much of what it saves, and a single-threaded job
never waits for a sibling thread that another program has taken the core from (on a busy
machine such jobs slow down in proportion instead of stalling). Threads of one process
cannot give that: the interpreter lock serialises everything between torch's kernels.
Measured with ``benchmarks/bench_jobs.py``; see docs/performance.md.

The pool is :class:`concurrent.futures.ProcessPoolExecutor` with the ``spawn`` start
method (a fresh interpreter: safe beside threads, the same on Linux, macOS and Windows),
made for one :func:`run_in_processes` call and gone after it. Everything a job needs
travels pickled (a module-level function and picklable arguments, as over torchrun's
ranks; checked before any process starts). A job's log lines travel back on a queue and
reach the caller's log in the caller's thread while the jobs run. The workers inherit
the environment (``OMP_WAIT_POLICY=PASSIVE`` under the ``domaingpt`` program, see
:mod:`domaingpt.launch`). Nothing here runs on import.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import torch

from domaingpt.core.device import pick_device
from domaingpt.core.progress import Log
from domaingpt.core.threads import usable_cores
from domaingpt.errors import DomainGPTError

#: How often (seconds) the caller passes the workers' log lines on while it waits.
_POLL_SECONDS = 0.2


#: The least work (floating-point operations, all jobs together) worth starting worker
#: processes for. A worker's start-up (a fresh interpreter importing torch) cost about
#: 3 s on the 2-core machine, and side by side saved about 30 % of the time one after the
#: other (benchmarks/bench_jobs.py): it pays from about 10 s of training, about 5e11
#: operations at that machine's 5e10 per second; twice that, to be safe.
MIN_FLOPS = 1e12


def automatic_allowed() -> bool:
    """Whether ``processes = 0`` may start worker processes here: only under the
    ``domaingpt`` program (:mod:`domaingpt.launch`). A worker starts a fresh interpreter
    that imports the caller's main module again; a user's script without an
    ``if __name__ == "__main__":`` guard would run again in every worker, so in Python a
    script asks for processes itself."""
    return os.environ.get(PROGRAM_ENV) == str(os.getpid())


#: Set by the ``domaingpt`` program to its process id (:func:`automatic_allowed`).
PROGRAM_ENV = "DOMAINGPT_PROGRAM_PID"


def auto_processes(setting: int, jobs: int, device: torch.device | str, flops: float) -> int:
    """The worker processes for ``jobs`` independent training runs on ``device``, of
    ``flops`` floating-point operations together.

    ``setting`` (a stage's ``processes``) above 0 is taken as it is; 0 (automatic) is
    one process per usable core under the ``domaingpt`` program (:func:`automatic_allowed`)
    when there are at least two jobs, two cores, :data:`MIN_FLOPS` of work and the jobs
    run on the CPU (on a GPU the jobs share the device, not the cores), else 1: the jobs
    run in this process, on its torch threads. The answer depends on the machine and the
    jobs, never on the load, so a job's numbers do not depend on what else the machine
    was doing (the thread count changes a model's last bits, see
    docs/reproducibility.md).
    """
    if setting > 0:
        return setting
    if jobs < 2 or flops < MIN_FLOPS or not automatic_allowed():
        return 1
    if pick_device(str(device)).type != "cpu":
        return 1
    cores = usable_cores()
    return cores if cores >= 2 else 1


def threads_per_process(processes: int) -> int:
    """Each worker process's torch threads: its share of the usable cores, at least 1."""
    return max(1, usable_cores() // max(1, processes))


# --- inside a worker process ----------------------------------------------------------

_worker: dict[str, Any] | None = None  # set by _start_worker, in a worker process only


def _start_worker(threads: int, lines: Any) -> None:
    global _worker
    # A Ctrl-C reaches every process of the terminal's group. A worker interrupted while
    # it sends a result holds the pool's lock and hangs the others; the caller ends the
    # workers instead (run_in_processes).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(threads)
    _worker = {"lines": lines, "local": {}, "pid": os.getpid()}


def in_worker() -> bool:
    """True inside a worker process of :func:`run_in_processes` (its jobs never start
    processes of their own)."""
    return _worker is not None


def worker_log(msg: str) -> None:
    """A job's log in a worker process: the line reaches the caller's log."""
    assert _worker is not None, "worker_log is for jobs in a worker process"
    _worker["lines"].put(msg)


def worker_local() -> dict[Any, Any]:
    """What the jobs of this worker process keep for each other (a forward-pass cache);
    it goes with the process."""
    assert _worker is not None, "worker_local is for jobs in a worker process"
    return _worker["local"]


# --- the caller's side ----------------------------------------------------------------


def check_picklable(call: Callable[..., Any], items: Sequence[Any], name: str) -> None:
    """Refuse, in one line, jobs that cannot travel to a worker process (``name``: the
    job function, for the message)."""
    try:
        pickle.dumps(call)
        for item in items:
            pickle.dumps(item)
    except Exception as e:  # pickle raises several types: all mean the same here
        raise DomainGPTError(
            f"the jobs of {name} cannot run in worker processes: they cannot be pickled "
            f"({type(e).__name__}: {e}); a job is a module-level function (or a "
            "functools.partial of one) with picklable arguments; or run them in this "
            "process (processes = 1)"
        ) from None


def run_in_processes(
    call: Callable[[Any], Any],
    items: Sequence[Any],
    processes: int,
    *,
    log: Log,
    each: Callable[[int, Any], None] | None = None,
    name: str = "",
) -> list[Any]:
    """``[call(x) for x in items]`` on ``processes`` worker processes of
    :func:`threads_per_process` torch threads each; the results in the items' order.

    ``call`` must not raise (wrap the job and return its failure as a value): a job that
    raises here still lets the others finish, then fails the call with the first
    failure in item order. ``each(i, result)`` runs in the caller's thread as each job
    finishes; the workers' :func:`worker_log` lines reach ``log`` as they come. ``name``:
    the job function, for an error's message.
    """
    items = list(items)
    check_picklable(call, items, name or getattr(call, "__qualname__", "the function"))
    context = multiprocessing.get_context("spawn")
    # Written at once by put() (a Queue's feeder thread could deliver a job's last lines
    # after its result): the lines of a job are here before its result is.
    lines = context.SimpleQueue()
    threads = threads_per_process(processes)
    results: list[Any] = [None] * len(items)
    errors: dict[int, BaseException] = {}
    pool = ProcessPoolExecutor(min(processes, len(items)), context, _start_worker, (threads, lines))
    interrupted = False
    try:
        index = {pool.submit(call, item): i for i, item in enumerate(items)}
        pending = set(index)
        while pending:
            done, pending = wait(pending, _POLL_SECONDS, FIRST_COMPLETED)
            _pass_on(lines, log)
            for future in sorted(done, key=index.__getitem__):
                i = index[future]
                try:
                    results[i] = future.result()
                except BrokenProcessPool:
                    errors[i] = DomainGPTError(
                        f"a worker process ended abruptly (out of memory, or killed) before "
                        f"job {i + 1} of {len(items)} finished; run it again, with "
                        "processes = 1 to run the jobs in this process (a Python script "
                        'that starts worker processes needs an if __name__ == "__main__": '
                        "guard)"
                    )
                    continue
                except BaseException as e:  # raised by call(): kept for item order
                    errors[i] = e
                    continue
                if each is not None:
                    each(i, results[i])
    except (KeyboardInterrupt, SystemExit):  # stop now, not after the running jobs
        interrupted = True
        _terminate(pool)
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        if not interrupted:  # a worker ended mid-line would leave half a message
            _pass_on(lines, log)
        lines.close()
    if errors:
        raise errors[min(errors)]
    return results


def _terminate(pool: ProcessPoolExecutor) -> None:
    """End the pool's worker processes at once (Python 3.14 has this as a method; before
    it, the pool's own table of its processes is the only handle on them)."""
    method = getattr(pool, "terminate_workers", None)
    if method is not None:
        method()
        return
    for process in list(getattr(pool, "_processes", {}).values()):
        process.terminate()


def _pass_on(lines: Any, log: Log) -> None:
    """The workers' log lines that arrived, to ``log``."""
    while not lines.empty():
        log(lines.get())
