"""Several processes on PyTorch's own engine (``torchrun``): data-parallel training of one
model, and a study's independent jobs spread over the ranks.

Launched by ``torchrun --nproc_per_node=K -m domaingpt ...``: torchrun sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address (one node or several); this
module joins the process group. Without those variables everything runs as a single
process and none of this is touched.

**One model over all ranks** (``domaingpt train``, and a study with ``ranks = "ddp"``):
DistributedDataParallel, NCCL on CUDA, Gloo on CPU. Every rank draws the *same* global
batch of ``batch_size`` windows (same generator, same seed) and keeps its own contiguous
slice of ``batch_size / world`` rows. DDP averages the gradients, so a step sees exactly
the global batch a single process would: the loss curve matches one process.

**A study's jobs over the ranks** (``domaingpt run``, default ``ranks = "jobs"``):
rank 0 runs the study as one process would and writes every table, record and the
report; the other ranks serve (:func:`serve`). :func:`study_ranks` gives rank 0 the
run's :class:`Ranks`, which the runner passes to every stage (``ctx.ranks``; this module
keeps no state). Where a stage has independent jobs (the models of the train stage, the
adaptation runs, the per-model or per-checkpoint work of the analyses) it hands them to
:func:`map_ranks` with those ranks: each rank runs its share on its own device
(``cuda:LOCAL_RANK``, or the CPU) and the results come back to rank 0 in the jobs'
order. A job is computed the same way on any rank, so the tables are those of one
process. Jobs and results travel pickled over a Gloo group (a job is a module-level
function, or a ``functools.partial`` of one, and picklable arguments); what a job writes
(checkpoints) goes to the run directory, which every node must see at the same path (a
shared filesystem on several nodes).

**A study's jobs over worker processes** (one machine, no torchrun): where a stage's jobs
are whole training runs, :func:`map_ranks` runs them side by side in ``processes`` worker
processes, each with its share of the cores (:mod:`domaingpt.core.processes`), through
the same job interface: the same job function, pickled the same way, a :class:`Job` made
in the worker (its log reaching the caller's, its ``local`` the process's own). Under
torchrun the ranks are the processes and ``processes`` is not used.
"""

from __future__ import annotations

import atexit
import datetime
import functools
import math
import os
import pickle
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from domaingpt.core.device import pick_device
from domaingpt.core.processes import (
    in_worker,
    run_in_processes,
    threads_per_process,
    worker_local,
    worker_log,
)
from domaingpt.core.progress import Log, stderr_log
from domaingpt.core.threads import map_workers, torch_threads
from domaingpt.errors import ConfigError, DomainGPTError

T = TypeVar("T")
TIMEOUT_ENV = "DOMAINGPT_DIST_TIMEOUT"  # seconds a collective waits for a dead peer
#: Seconds a rank of a study waits for rank 0's next jobs (rank 0 may work alone for
#: hours: its own share of the models, the report). torchrun ends every rank when one dies.
STUDY_TIMEOUT_ENV = "DOMAINGPT_STUDY_TIMEOUT"
#: How a study uses its ranks: its independent jobs spread over them, or every model
#: trained by all of them together (DDP).
RANK_MODES = ("jobs", "ddp")


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Only the main rank writes checkpoints, metrics, samples and figures."""
        return self.rank == 0


def env_seconds(name: str, default: float) -> float:
    """A timeout in seconds from the environment variable ``name`` (``default`` if unset);
    anything but a positive finite number is a ConfigError."""
    raw = os.environ.get(name, "").strip()
    if not raw:
        return float(default)
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name}={raw!r}: must be a number of seconds above 0")
    return value


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_distributed(device_name: str = "auto", backend: str | None = None) -> DistContext:
    """Join the process group if launched by torchrun; otherwise a one-process context.

    ``backend``: default NCCL on CUDA, Gloo on CPU (a study over ranks passes Gloo: its
    ranks exchange jobs, never gradients)."""
    if not launched_by_torchrun():
        return DistContext(device=pick_device(device_name))
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name)
    if device.type == "cuda":
        device = _rank_gpu(local_rank)
        torch.cuda.set_device(device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    timeout = datetime.timedelta(seconds=env_seconds(TIMEOUT_ENV, 600))
    if not dist.is_initialized():
        try:
            dist.init_process_group(backend=backend, timeout=timeout)
        except Exception as e:  # a bad rendezvous address, a missing peer
            raise DomainGPTError(f"rank {rank}: cannot join the process group ({e})") from None
        # Without this, Gloo's worker threads can still hold tensors when the interpreter
        # finalizes; releasing them then takes the GIL and aborts the rank (SIGABRT;
        # pytorch/pytorch#179291). Destroyed at exit, while Python is still whole.
        atexit.register(shutdown)
    return DistContext(rank, world, local_rank, device)


def _rank_gpu(local_rank: int) -> torch.device:
    """This rank's GPU: ``cuda:LOCAL_RANK``; with more ranks than GPUs on a node, ranks
    share them in turn (a study's small models can fill a large GPU several at a time;
    NCCL refuses two DDP ranks on one GPU)."""
    return torch.device("cuda", local_rank % max(torch.cuda.device_count(), 1))


def check_batch(ctx: DistContext, batch_size: int) -> int:
    """Rows per rank; a world size that does not divide the batch is refused up front."""
    if batch_size % ctx.world:
        raise ConfigError(
            f"train.batch_size {batch_size} is not divisible by the world size {ctx.world}; "
            f"use a multiple of {ctx.world} or another --nproc_per_node"
        )
    return batch_size // ctx.world


def all_reduce_mean(t: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    if ctx.enabled:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= ctx.world
    return t


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group (a no-op when not in one); safe to call more than once."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


# --- a study's jobs over the ranks ----------------------------------------------------


class Ranks:
    """The ranks one study run spreads its jobs over, as this process sees them.

    :func:`study_ranks` makes one on every rank when a run starts; the runner hands rank
    0's to every stage (``StageContext.ranks``), which passes it to :func:`map_ranks`.
    ``Ranks()`` is a single process: everything runs here. ``local`` holds what jobs on
    this rank keep for the rest of the run (a stage's forward-pass cache, see
    :class:`Job`); it goes when the run ends. Never sent to another rank.
    """

    def __init__(self, ctx: DistContext | None = None, mode: str = "jobs", group: Any = None):
        self.ctx = ctx or DistContext()
        self.mode = mode
        self.group = group  # a Gloo group with a long timeout: jobs and results travel on it
        self.local: dict[Any, Any] = {}
        self._in_job = False  # rank 0 runs a job: a map inside it runs here

    @property
    def world(self) -> int:
        """How many ranks the jobs are spread over (1: a single process)."""
        return self.ctx.world

    @property
    def rank(self) -> int:
        return self.ctx.rank

    @property
    def is_worker(self) -> bool:
        """True on a rank other than 0: it never writes tables or shows bars."""
        return self.ctx.rank != 0

    def __reduce__(self):
        raise TypeError("Ranks stay in their process: a job gets a Job, not the Ranks")


@dataclass(frozen=True)
class Job:
    """Where a job runs, for a job that asks (``map_ranks(..., with_job=True)`` calls
    ``fn(item, job)``): its rank, the study's mode, its log (the stage's log on rank 0,
    stderr with the rank on the others) and the rank's ``local`` store (:class:`Ranks`).
    ``worker_process``: it runs in a worker process of rank 0 (its log lines reach rank
    0's log; ``local`` is the process's own)."""

    rank: int
    mode: str
    log: Log
    local: dict[Any, Any]
    worker_process: bool = False

    @property
    def is_worker(self) -> bool:
        """True where the job is not rank 0's own process: no progress bars there."""
        return self.rank != 0 or self.worker_process


def local_context(device_name: str = "auto") -> DistContext:
    """A single process's context on this rank's own device (``cuda:LOCAL_RANK`` under
    torchrun): how a job of a study trains one model alone."""
    device = pick_device(device_name)
    if not launched_by_torchrun():
        return DistContext(device=device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda" and device.index is None:
        device = _rank_gpu(local)
    return DistContext(local_rank=local, device=device)


def join_study(mode: str = "jobs", device_name: str = "auto") -> Ranks:
    """Join the study's process group under torchrun (a single process otherwise).

    ``jobs``: Gloo only, each rank on its own device. ``ddp``: the DDP process group of
    ``device_name`` (NCCL on CUDA) for the models; jobs still travel over Gloo.
    """
    if mode not in RANK_MODES:
        raise ConfigError(f"study.ranks must be one of {', '.join(RANK_MODES)}, got {mode!r}")
    if not launched_by_torchrun():
        return Ranks(DistContext(device=pick_device(device_name)))
    ctx = init_distributed(device_name, backend=None if mode == "ddp" else "gloo")
    seconds = env_seconds(STUDY_TIMEOUT_ENV, 7 * 24 * 3600)
    group = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=seconds))
    return Ranks(ctx, mode, group)


def _worker_log(rank: int, log: Log) -> Log:
    return lambda msg: log(f"[rank {rank}] {msg}")


@dataclass(frozen=True)
class _Outcome:
    index: int
    ok: bool
    value: Any  # the result, or the exception
    trace: str = ""


def _portable(error: Exception) -> Exception:
    """``error`` if it survives pickling, else a RuntimeError with its type and message."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def _attempt(fn: Callable[..., Any], index: int, item: Any, job: Job | None) -> _Outcome:
    try:
        return _Outcome(index, True, fn(item) if job is None else fn(item, job))
    except Exception as e:
        return _Outcome(index, False, _portable(e), traceback.format_exc())


@dataclass(frozen=True)
class _Work:
    """One rank's share of a map: what travels to it (``fn`` and the items, pickled)."""

    fn: Callable[..., Any]
    share: Sequence[tuple[int, Any]]
    threads: int
    workers: int
    with_job: bool


def _run_share(
    ranks: Ranks, work: _Work, log: Log, each: Callable[[int, Any], None] | None = None
) -> list[_Outcome]:
    """This rank's jobs, in order (on ``workers`` threads); ``each`` sees every result."""
    job = Job(ranks.rank, ranks.mode, log, ranks.local) if work.with_job else None
    before, ranks._in_job = ranks._in_job, True
    try:
        with torch_threads(work.threads):
            if work.workers > 1:
                out = map_workers(lambda p: _attempt(work.fn, *p, job), work.share, work.workers)
                for o in out:
                    if each is not None and o.ok:
                        each(o.index, o.value)
                return out
            out = []
            for index, item in work.share:
                out.append(_attempt(work.fn, index, item, job))
                if each is not None and out[-1].ok:
                    each(index, out[-1].value)
            return out
    finally:
        ranks._in_job = before


def _raise(failed: _Outcome, rank: int) -> None:
    error = failed.value
    if rank != 0 and failed.trace:
        error.add_note(f"raised on rank {rank}:\n{failed.trace}")
    raise error


def _dispatch(
    ranks: Ranks, works: list[_Work], log: Log, each: Callable[[int, Any], None] | None
) -> list[list[_Outcome]]:
    """Rank 0: send each rank its share, run its own, gather every outcome."""
    box: list[Any] = [None]
    dist.scatter_object_list(box, [("map", w) for w in works], src=0, group=ranks.group)
    error = None
    try:
        mine = _run_share(ranks, works[0], log, each)
    except Exception as e:  # ``each`` failed here: the other ranks still hand theirs in
        mine, error = [], e
    gathered: list[Any] = [None] * len(works)
    dist.gather_object(mine, gathered, dst=0, group=ranks.group)
    if error is not None:
        raise error
    return gathered


def _in_worker_process(
    fn: Callable[..., Any], with_job: bool, mode: str, pair: tuple[int, Any]
) -> _Outcome:
    """One job in a worker process of :func:`map_ranks` (see :mod:`.processes`)."""
    job = Job(0, mode, worker_log, worker_local(), worker_process=True) if with_job else None
    return _attempt(fn, *pair, job)


def _in_processes(
    ranks: Ranks,
    work: _Work,
    processes: int,
    log: Log,
    each: Callable[[int, Any], None] | None,
    what: str | None,
) -> list[_Outcome]:
    """This machine's jobs on ``processes`` worker processes, in the items' order."""
    call = functools.partial(_in_worker_process, work.fn, work.with_job, ranks.mode)
    n = len(work.share)
    if what:
        log(
            f"{n} {what} side by side: {min(processes, n)} worker processes of "
            f"{threads_per_process(processes)} torch thread(s) each"
        )

    def done(k: int, o: _Outcome) -> None:
        if each is not None and o.ok:
            each(o.index, o.value)

    name = getattr(work.fn, "__qualname__", None) or repr(work.fn)
    outcomes = run_in_processes(call, work.share, processes, log=log, each=done, name=name)
    for o in outcomes:
        if not o.ok and o.trace:
            o.value.add_note(f"raised in a worker process:\n{o.trace}")
    return outcomes


def _uses_processes(ranks: Ranks, processes: int, items: int) -> bool:
    """Worker processes for a map: asked for, more than one job, one machine alone
    (torchrun's ranks are the processes there), not inside a job."""
    return (
        processes > 1 and items > 1 and ranks.world == 1 and not ranks._in_job and not in_worker()
    )


def _runs_here(ranks: Ranks) -> bool:
    """One process, or a map inside a job: nothing is sent to another rank."""
    return ranks.world == 1 or ranks._in_job


def map_ranks(
    fn: Callable[..., T],
    items: Sequence[Any],
    *,
    ranks: Ranks | None = None,
    log: Log | None = None,
    each: Callable[[int, T], None] | None = None,
    workers: int = 1,
    owners: Sequence[int] | None = None,
    with_job: bool = False,
    processes: int = 1,
    what: str | None = None,
) -> list[T]:
    """``[fn(x) for x in items]``, the items spread over ``ranks`` (see the module
    documentation; ``None``: this process alone); every result back on rank 0, in the
    items' order.

    Item ``i`` runs on rank ``owners[i] % world`` (default ``i % world``): give the items
    that read the same checkpoints the same owner and they share its cached forward
    passes. Each rank runs its items in order on ``workers`` threads of one torch thread
    each (``workers`` 1: on the caller's torch threads). ``each(i, result)`` is called on
    rank 0 as results arrive (progress, log lines); ``log`` (default stderr) is a job's
    log on rank 0. ``with_job``: ``fn(x, job)`` with the :class:`Job` it runs as. A job
    that fails fails the call, after every rank finished its share; the first failure in
    item order is raised (with the rank's traceback as a note). In a single process, or
    inside a job, everything runs here.

    ``processes`` above 1 (one machine, no torchrun): the items run side by side in that
    many worker processes of :func:`~domaingpt.core.processes.threads_per_process` torch
    threads each (:mod:`domaingpt.core.processes`; ``workers`` and ``owners`` are not
    used there); ``fn`` and the items must be picklable, which is checked first. A
    single item runs here, on the same share of the cores: a job's thread count (and so
    its numbers' last bits) does not depend on how many jobs there were. ``what`` names
    the jobs ("models", "adaptations") in a log line that says so (None: no line).
    """
    items = list(items)
    ranks = ranks or Ranks()
    log = log or stderr_log
    threads = torch.get_num_threads()
    if _runs_here(ranks) or not items:
        if processes > 1 and ranks.world == 1:  # a job's share of the cores, even alone
            threads = threads_per_process(processes)
        work = _Work(fn, list(enumerate(items)), threads, workers, with_job)
        if _uses_processes(ranks, processes, len(items)):
            outcomes = _in_processes(ranks, work, processes, log, each, what)
        else:
            outcomes = _run_share(ranks, work, log, each)
        for o in outcomes:
            if not o.ok:
                raise o.value
        return [o.value for o in outcomes]
    world = ranks.world
    if ranks.is_worker:
        raise RuntimeError("map_ranks is called on rank 0; the other ranks serve()")
    owner = [(owners[i] if owners is not None else i) % world for i in range(len(items))]
    shares: list[list[tuple[int, Any]]] = [[] for _ in range(world)]
    for i, item in enumerate(items):
        shares[owner[i]].append((i, item))
    works = [_Work(fn, share, threads, workers, with_job) for share in shares]
    gathered = _dispatch(ranks, works, log, each)
    results: list[Any] = [None] * len(items)
    failures: list[tuple[_Outcome, int]] = []
    for rank, part in enumerate(gathered):
        for o in part:
            results[o.index] = o.value
            if not o.ok:
                failures.append((o, rank))
            elif rank != 0 and each is not None:
                each(o.index, o.value)
    if failures:
        _raise(*min(failures, key=lambda f: f[0].index))
    return results


def on_every_rank(
    fn: Callable[..., T],
    item: Any,
    *,
    ranks: Ranks | None = None,
    log: Log | None = None,
    with_job: bool = False,
) -> T:
    """``fn(item)`` on every rank of ``ranks`` at once (a model trained with DDP over all
    of them); rank 0's result. In a single process, or inside a job, ``fn(item)`` here."""
    ranks = ranks or Ranks()
    if _runs_here(ranks):
        return map_ranks(fn, [item], ranks=ranks, log=log, with_job=with_job)[0]
    work = _Work(fn, [(0, item)], torch.get_num_threads(), 1, with_job)
    gathered = _dispatch(ranks, [work] * ranks.world, log or stderr_log, None)
    failed = [(part[0], rank) for rank, part in enumerate(gathered) if not part[0].ok]
    if failed:
        _raise(*failed[0])
    return gathered[0][0].value


def serve(ranks: Ranks, log: Log = stderr_log) -> None:
    """A rank other than 0: run the jobs rank 0 sends until it says stop; its jobs log to
    ``log``, each line marked with the rank."""
    log = _worker_log(ranks.rank, log)
    while True:
        box: list[Any] = [None]
        dist.scatter_object_list(box, None, src=0, group=ranks.group)
        kind, work = box[0]
        if kind == "stop":
            return
        outcomes = _run_share(ranks, work, log)
        dist.gather_object(outcomes, None, dst=0, group=ranks.group)


@contextmanager
def study_ranks(
    mode: str = "jobs", device_name: str = "auto", *, log: Log | None = None
) -> Iterator[Ranks | None]:
    """Run a study (or a stage) over torchrun's ranks: yields the :class:`Ranks` where it
    runs (rank 0, or a single process: ``Ranks()``); a rank other than 0 serves rank 0's
    jobs (``log``: their log, see :func:`serve`) and gets None once rank 0 has finished,
    with or without an error."""
    if not launched_by_torchrun():
        yield Ranks()
        return
    ranks = join_study(mode, device_name)
    if ranks.is_worker:
        serve(ranks, log or stderr_log)
        yield None
        return
    try:
        yield ranks
    finally:
        stop = [("stop", None)] * ranks.world
        dist.scatter_object_list([None], stop, src=0, group=ranks.group)
