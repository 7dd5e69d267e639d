"""Crash safety: killed runs resume to the same weights, a full disk or a second process
never damages a run, and the newest checkpoint on disk is always a complete one."""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cli_helpers import train_smoke
from domaingpt import checkpoint as ckpt_mod
from domaingpt.checkpoint import find_checkpoint, list_checkpoints, load_checkpoint, read_tensors
from domaingpt.errors import DomainGPTError
from domaingpt.io import read_jsonl
from domaingpt.rundir import RunDir

SETTINGS = [
    "--preset",
    "smoke",
    "--quiet",
    "--set",
    "train.max_iters=80",
    "--set",
    "train.resume_interval=2",
    "--set",
    "train.threads=1",
    "--set",
    "train.eval_tokens=2048",
]


def _train_cmd(out: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "domaingpt",
        "train",
        "shakespeare",
        "--out",
        str(out),
        "--resume",
        *SETTINGS,
    ]


def _all_checkpoints_valid(model_dir: Path) -> None:
    for kind in ("iter", "resume"):
        for info in list_checkpoints(model_dir / "checkpoints", kind):
            load_checkpoint(info)  # raises on a truncated or half-written file


def _progress(model_dir: Path) -> int:
    resume = list_checkpoints(model_dir / "checkpoints", "resume")
    return resume[-1].iteration if resume else -1


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(tmp_path, data_dir):
    env = dict(os.environ, DOMAINGPT_DATA=str(data_dir), OMP_NUM_THREADS="1")
    ref = subprocess.run(
        _train_cmd(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=600
    )
    assert ref.returncode == 0, ref.stderr
    rng = random.Random(0)
    killed_dir = tmp_path / "killed" / "models" / "shakespeare"
    kills = 0
    while kills < 20:
        before = _progress(killed_dir)
        proc = subprocess.Popen(
            _train_cmd(tmp_path / "killed"),
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        # wait until this process has trained (written a newer checkpoint), then strike
        while (
            proc.poll() is None and _progress(killed_dir) <= before and time.monotonic() < deadline
        ):
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.15))
        if proc.poll() is not None:
            break  # finished before we could kill it: the run is complete
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        _all_checkpoints_valid(killed_dir)  # the newest checkpoint is never a torn one
    final = subprocess.run(
        _train_cmd(tmp_path / "killed"), env=env, capture_output=True, text=True, timeout=600
    )
    assert final.returncode == 0, final.stderr
    assert kills >= 10, f"only {kills} kills landed before the run finished"
    a = read_tensors(find_checkpoint(tmp_path / "ref" / "models" / "shakespeare"))
    b = read_tensors(find_checkpoint(killed_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    iters = [r["iter"] for r in read_jsonl(killed_dir / "metrics.jsonl")]
    assert iters == sorted(set(iters))  # no row written twice
    samples = [r["iter"] for r in read_jsonl(killed_dir / "samples.jsonl")]
    assert samples == [0, 10, 25, 50, 80]


def test_full_disk_during_checkpoint_keeps_previous(tmp_path, data_dir, monkeypatch, capsys):
    real = ckpt_mod.atomic_write_bytes

    def enospc(path, data):
        if "0000020" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", enospc)
    code = train_smoke(tmp_path, data_dir, "train.resume_interval=10")
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "--resume" in err
    model_dir = tmp_path / "models" / "shakespeare"
    assert [c.iteration for c in list_checkpoints(model_dir / "checkpoints", "resume")] == [0, 10]
    _all_checkpoints_valid(model_dir)
    assert not list(model_dir.glob("checkpoints/*0000020*"))
    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", real)
    assert train_smoke(tmp_path, data_dir, "train.resume_interval=10", extra=["--resume"]) == 0


def test_second_writer_is_refused_and_a_dead_holder_does_not_block(tmp_path, data_dir, capsys):
    run = RunDir(tmp_path)
    with run.lock():
        code = train_smoke(tmp_path, data_dir, quiet=False)
        err = capsys.readouterr().err
    assert code == 2 and "in use by another domaingpt process" in err
    assert not (tmp_path / "models").exists()
    # a holder killed with SIGKILL leaves the lock file behind, but not the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from domaingpt.rundir import RunDir\n"
                f"with RunDir(Path({str(tmp_path)!r})).lock():\n"
                "    print('locked', flush=True); time.sleep(60)"
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(DomainGPTError, match=f"pid {holder.pid}"), run.lock():
        pass
    holder.kill()
    holder.wait()
    with run.lock():
        assert (tmp_path / ".lock").exists()
