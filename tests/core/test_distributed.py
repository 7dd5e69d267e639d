"""DDP with torchrun: 2 Gloo processes on the CPU follow the single-process loss curve
for the same global batch and seed, and their checkpoint loads in one process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from domaingpt.core.io import read_jsonl
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
