"""torchrun on the CPU (Gloo): DDP of one model follows the single-process loss curve for
the same global batch and seed (eager and compiled), and a study's jobs spread over the
ranks come back to rank 0 in order (:func:`domaingpt.core.distributed.map_ranks`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domaingpt.core.distributed import (
    is_worker,
    map_ranks,
    on_every_rank,
    study_mode,
    study_world,
    task_log,
)
from domaingpt.core.io import read_jsonl
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint, read_tensors

ARGS = [
    "train",
    "shakespeare",
    "--preset",
    "smoke",
    "--quiet",
    "--set",
    "train.max_iters=30",
    "--set",
    "train.threads=1",
    "--set",
    "train.grad_accum=2",
]


def _env(data_dir):
    env = dict(os.environ, DOMAINGPT_DATA=str(data_dir), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    return env


def _torchrun(n: int, *args: str, env) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nproc_per_node={n}",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=127.0.0.1:0",
        "-m",
        "domaingpt",
        *args,
    ]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow
def test_two_gloo_ranks_match_one_process(tmp_path, data_dir):
    env = _env(data_dir)
    one = subprocess.run(
        [sys.executable, "-m", "domaingpt", *ARGS, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, *ARGS, "--out", str(tmp_path / "two"), env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert two.stdout.count("val_loss") == 1  # only rank 0 reports and writes
    a = read_jsonl(tmp_path / "one/models/shakespeare/metrics.jsonl")
    b = read_jsonl(tmp_path / "two/models/shakespeare/metrics.jsonl")
    assert [r["iter"] for r in a] == [r["iter"] for r in b] == [0, 10, 25, 30]
    for ra, rb in zip(a, b, strict=True):
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=1e-4)
        if ra["train_loss"] is not None:
            assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4)
    # the DDP checkpoint is a plain checkpoint: it loads in this single process
    loaded = load_checkpoint(find_checkpoint(tmp_path / "two/models/shakespeare"))
    assert loaded.iteration == 30
    wa = read_tensors(find_checkpoint(tmp_path / "one/models/shakespeare"))
    wb = read_tensors(loaded.info)
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)


@pytest.mark.slow
def test_world_size_must_divide_the_batch(tmp_path, data_dir):
    out = _torchrun(
        2, *ARGS, "--set", "train.batch_size=7", "--out", str(tmp_path / "x"), env=_env(data_dir)
    )
    assert out.returncode != 0
    assert "train.batch_size 7 is not divisible by the world size 2" in out.stderr
    assert not (tmp_path / "x" / "models").exists()  # refused before anything was written


# --- DDP with torch.compile ---------------------------------------------------------


@pytest.mark.slow  # inductor compiles the model on each rank: about a minute on 2 cores
def test_compiled_ddp_with_grad_accum_matches_one_process(tmp_path, data_dir):
    """The DDP-wrapped module is what gets compiled (its gradient hooks kept) and
    ``no_sync`` is called on the DDP handle: with ``train.compile=on`` (inductor on the
    CPU) and ``grad_accum = 2``, two Gloo ranks follow one eager process within 1e-4."""
    args = [
        *ARGS[:-2],  # grad_accum=2 is already in ARGS
        "--set",
        "train.grad_accum=2",
        "--set",
        "train.max_iters=10",
        "--set",
        "train.eval_interval=5",
        "--set",
        "train.checkpoints=[0, 10]",
    ]
    env = _env(data_dir)
    one = subprocess.run(
        [sys.executable, "-m", "domaingpt", *args, "--out", str(tmp_path / "one")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert one.returncode == 0, one.stderr
    two = _torchrun(2, *args, "--set", "train.compile=on", "--out", str(tmp_path / "two"), env=env)
    assert two.returncode == 0, two.stderr[-2000:]
    assert "running eagerly" not in two.stdout + two.stderr  # it did compile
    a = read_jsonl(tmp_path / "one/models/shakespeare/metrics.jsonl")
    b = read_jsonl(tmp_path / "two/models/shakespeare/metrics.jsonl")
    assert [r["iter"] for r in a] == [r["iter"] for r in b] == [0, 5, 10]
    for ra, rb in zip(a[1:], b[1:], strict=True):
        assert rb["train_loss"] == pytest.approx(ra["train_loss"], abs=1e-4)
        assert rb["val_loss"] == pytest.approx(ra["val_loss"], abs=1e-4)
    assert b[-1]["train_loss"] < b[1]["train_loss"]  # it trained


# --- a study's jobs over the ranks -----------------------------------------------------


def _square(x: int) -> int:
    return x * x


def _fails_on_three(x: int) -> int:
    if x == 3:
        raise DomainGPTError(f"item {x} cannot be done")
    return x


def test_map_ranks_in_one_process_keeps_order_and_reports_each():
    seen = []
    assert map_ranks(_square, range(5), each=lambda i, r: seen.append((i, r))) == [
        0,
        1,
        4,
        9,
        16,
    ]
    assert seen == [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]
    assert map_ranks(_square, [3, 4], workers=2) == [9, 16]
    assert map_ranks(_square, []) == []
    assert on_every_rank(_square, 7) == 49
    assert study_world() == 1 and study_mode() == "jobs" and not is_worker()
    lines = []
    map_ranks(lambda x: task_log()(f"job {x}"), [1, 2], log=lines.append)
    assert lines == ["job 1", "job 2"]  # a job logs to the stage's log
    with pytest.raises(DomainGPTError, match="item 3 cannot be done"):
        map_ranks(_fails_on_three, range(5))


RANKS_SCRIPT = """
import json, os, sys
sys.path.insert(0, os.environ["TESTS_DIR"])
from domaingpt.core import distributed as d
from domaingpt.errors import DomainGPTError
from test_distributed import _square, _fails_on_three, _whoami, _nested

with d.study_ranks("jobs") as here:
    if here:
        out = {"world": d.study_world()}
        seen = []
        out["squares"] = d.map_ranks(_square, range(7), each=lambda i, r: seen.append(i))
        out["each"] = seen
        out["who"] = d.map_ranks(_whoami, range(5))
        out["owned"] = d.map_ranks(_whoami, range(4), owners=[1, 1, 2, 0])
        out["nested"] = d.map_ranks(_nested, range(3))
        try:
            d.map_ranks(_fails_on_three, [0, 1, 2, 4, 3, 5])  # 3 is item 4: rank 1
        except DomainGPTError as e:
            out["error"] = str(e)
            out["note"] = "".join(getattr(e, "__notes__", []))
        try:  # a failing callback on rank 0: the other ranks' results are still taken
            d.map_ranks(_square, range(4), each=lambda i, r: 1 / 0)
        except ZeroDivisionError:
            out["each_failed"] = True
        out["after"] = d.map_ranks(_square, [5, 6, 7])
        out["every"] = d.on_every_rank(_whoami, 0)
        print("RESULT " + json.dumps(out))
"""


def _whoami(x: int) -> tuple[int, int]:
    return x, int(os.environ["RANK"])


def _nested(x: int) -> list[tuple[int, int]]:
    """A job that maps again: it runs on the job's own rank."""
    return map_ranks(_whoami, [x, x + 10])


def test_map_ranks_over_three_gloo_ranks(tmp_path):
    """Jobs go round-robin (or to their owners), results come back in order, a job that
    fails on another rank is raised on rank 0 with that rank's traceback, and the ranks
    go on serving; every rank exits cleanly."""
    script = tmp_path / "ranks.py"
    script.write_text(RANKS_SCRIPT, encoding="utf-8")
    env = dict(os.environ, TESTS_DIR=str(Path(__file__).parent), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=3",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=127.0.0.1:0",
        str(script),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert out["world"] == 3
    assert out["squares"] == [i * i for i in range(7)]
    assert sorted(out["each"]) == list(range(7))
    assert out["who"] == [[i, i % 3] for i in range(5)]
    assert out["owned"] == [[0, 1], [1, 1], [2, 2], [3, 0]]
    assert out["nested"] == [[[x, x % 3], [x + 10, x % 3]] for x in range(3)]
    assert out["error"] == "item 3 cannot be done"
    assert "raised on rank 1" in out["note"] and "_fails_on_three" in out["note"]
    assert out["each_failed"] and out["after"] == [25, 36, 49]
    assert out["every"] == [0, 0]
