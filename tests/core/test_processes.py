"""A study's jobs in worker processes on one machine (:mod:`domaingpt.core.processes`,
``map_ranks(..., processes=N)``): the same results as in this process, in the items'
order, failures as in this process, the jobs' log lines in the caller's log, and models
trained side by side bit for bit those trained one after the other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tests.conftest import run_one

from domaingpt.context.rundir import RunDir
from domaingpt.core import threads
from domaingpt.core.distributed import map_ranks
from domaingpt.core.processes import MIN_FLOPS, PROGRAM_ENV, auto_processes, threads_per_process
from domaingpt.core.threads import torch_threads, usable_cores
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.stages.adapt.settings import AdaptSettings
from domaingpt.stages.train.results import TrainSettings
from domaingpt.study.pipeline import TRAIN


def _where(x: int, job) -> tuple[int, int, int, bool]:
    """The item squared, the process and torch threads it ran on; it logs a line."""
    job.log(f"job {x} in a worker")
    inner = map_ranks(os.getpid, [], processes=2)  # nothing to do: runs here
    assert inner == []
    nested = map_ranks(_pid_of, [x, x], processes=2)  # a map inside a job stays in it
    assert nested == [os.getpid(), os.getpid()]
    return x * x, os.getpid(), torch.get_num_threads(), job.is_worker


def _pid_of(x: int) -> int:
    return os.getpid()


def _mark_or_fail(item: tuple[Path, int]) -> int:
    """Fails on 3 (a user error) and on 5 (a bug); every other item leaves a file."""
    folder, x = item
    if x == 3:
        raise DomainGPTError(f"item {x} cannot be done")
    if x == 5:
        raise ValueError("item 5 is broken")
    (folder / f"{x}.done").write_text("done")
    return x


def test_jobs_in_processes_come_back_in_order_with_their_log_lines():
    lines: list[str] = []
    seen: list[int] = []
    out = map_ranks(
        _where,
        range(5),
        processes=2,
        with_job=True,
        log=lines.append,
        each=lambda i, r: seen.append(i),
    )
    assert [r[0] for r in out] == [0, 1, 4, 9, 16]
    pids = {r[1] for r in out}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2  # two workers at most
    assert {r[2] for r in out} == {threads_per_process(2)}  # each its share of the cores
    assert all(r[3] for r in out)  # a worker process's job shows no progress bar
    assert sorted(seen) == list(range(5))
    assert sorted(lines) == [f"job {x} in a worker" for x in range(5)]


def test_the_first_failure_in_item_order_fails_the_call_after_the_rest(tmp_path):
    items = [(tmp_path, x) for x in (0, 1, 2, 5, 4, 3, 6)]  # fails on 5, then on 3
    with pytest.raises(ValueError) as raised:
        map_ranks(_mark_or_fail, items, processes=2)
    assert str(raised.value) == "item 5 is broken"
    assert "raised in a worker process" in "".join(raised.value.__notes__)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{x}.done" for x in (0, 1, 2, 4, 6)]


def test_a_job_that_cannot_be_pickled_is_one_error_line():
    with pytest.raises(DomainGPTError) as raised:
        map_ranks(lambda x: x, [1, 2], processes=2)
    message = str(raised.value)
    assert message.startswith(
        "the jobs of test_a_job_that_cannot_be_pickled_is_one_error_line.<locals>.<lambda> "
        "cannot run in worker processes: they cannot be pickled"
    )
    assert "processes = 1" in message and "\n" not in message
    assert map_ranks(lambda x: x + 1, [1, 2], processes=1) == [2, 3]  # in this process


def test_models_trained_side_by_side_equal_those_trained_one_after_the_other(tmp_path, corpora):
    """Seeded training of two tiny models, on one thread each either way: the same
    checkpoints, bit for bit; the workers' log lines reach the stage's log."""
    runs = {}
    for processes in (1, 2):
        settings = TrainSettings(
            preset="smoke", train={"max_iters": 20, "threads": 1, "processes": processes}
        )
        lines: list[str] = []
        run = RunDir(tmp_path / f"p{processes}")
        run_one(
            TRAIN,
            run,
            settings,
            corpora=[corpora.resolve("shakespeare"), corpora.resolve("math")],
            log=lines.append,
        )
        runs[processes] = run
        assert any(line.startswith("model 2/2 (math): training") for line in lines)
        assert any(line.startswith("shakespeare: 20 iterations, val loss") for line in lines)
    for name in ("shakespeare", "math"):
        one = sorted((runs[1].model(name) / "checkpoints").glob("*.safetensors"))
        two = sorted((runs[2].model(name) / "checkpoints").glob("*.safetensors"))
        assert [p.name for p in one] == [p.name for p in two] and len(one) >= 2
        for a, b in zip(one, two, strict=True):
            assert a.read_bytes() == b.read_bytes()


def test_processes_are_chosen_automatically_only_by_the_program(monkeypatch):
    monkeypatch.delenv(PROGRAM_ENV, raising=False)
    assert auto_processes(3, 1, "cpu", 0) == 3  # asked for: as asked
    assert auto_processes(0, 9, "cpu", 1e15) == 1  # a script asks for them itself
    monkeypatch.setenv(PROGRAM_ENV, str(os.getpid()))  # the domaingpt program
    cores = usable_cores()
    assert auto_processes(0, 9, "cpu", 1e15) == (cores if cores >= 2 else 1)
    assert auto_processes(0, 1, "cpu", 1e15) == 1  # one job
    assert auto_processes(0, 9, "cpu", MIN_FLOPS / 2) == 1  # start-up would cost more
    monkeypatch.setenv(PROGRAM_ENV, "1")  # another process's (a worker inherits it)
    assert auto_processes(0, 9, "cpu", 1e15) == 1


def test_a_bad_processes_setting_is_refused():
    with pytest.raises(ConfigError, match=r"^train.processes must be a whole number from 0"):
        TrainSettings(preset="smoke", train={"processes": -1})
    with pytest.raises(ConfigError, match=r"^adapt.processes must be a whole number from 0"):
        AdaptSettings(processes=10_000)
    assert TrainSettings(preset="smoke", train={"processes": 2}).processes == 2
    # where the models run is not what they are: the cache key is the same
    assert (
        TrainSettings(preset="smoke", train={"processes": 2}).key_dict()
        == TrainSettings(preset="smoke").key_dict()
    )
    assert AdaptSettings(processes=2).key_dict() == AdaptSettings().key_dict()


def test_torch_threads_stay_within_a_cpu_quota(monkeypatch):
    """A container's CPU quota caps torch's default thread count (never a chosen one)."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 1.5)  # docker --cpus 1.5
    assert usable_cores() == min(2, len(os.sched_getaffinity(0)))
    monkeypatch.setattr(threads, "_cgroup_quota", lambda: 0.5)
    assert usable_cores() == 1
    with torch_threads(0):
        assert torch.get_num_threads() == 1
    with torch_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


INTERRUPTED = """
import signal, sys, time
signal.signal(signal.SIGINT, signal.default_int_handler)  # a shell may start it ignored
from domaingpt.core.distributed import map_ranks
if __name__ == "__main__":
    t0 = time.monotonic()
    try:
        map_ranks(time.sleep, [120] * 4, processes=2)
    except KeyboardInterrupt:
        print(f"interrupted {time.monotonic() - t0:.1f}", flush=True)
"""


def test_ctrl_c_ends_the_workers_at_once(tmp_path):
    """Ctrl-C (SIGINT to the terminal's process group) stops the map and every worker
    now, not after their running jobs (two minutes each here)."""
    script = tmp_path / "interrupted.py"
    script.write_text(INTERRUPTED, encoding="utf-8")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[2] / "src"))
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,
    )
    time.sleep(3)  # the workers start (or are still starting: either way)
    os.killpg(proc.pid, signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0 and out.startswith("interrupted")
    assert float(out.split()[1]) < 60
