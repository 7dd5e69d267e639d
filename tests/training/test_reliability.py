"""Crash safety: killed runs resume to the same weights, a full disk or a second process
never damages a run, and the newest checkpoint on disk is always a complete one."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from domaingpt.context.rundir import RunDir
from domaingpt.core import faults
from domaingpt.core.io import read_jsonl
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model import checkpoint as ckpt_mod
from domaingpt.model.checkpoint import (
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    read_tensors,
)

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


def _train_cmd(out: Path, corpora) -> list[str]:
    return [
        sys.executable,
        "-m",
        "domaingpt",
        "train",
        str(corpora.path("shakespeare")),
        "--vocab",
        corpora.vocab,
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


# Where each killed process dies (domaingpt.faults: SITE:N = the N-th time this process
# reaches SITE): torn checkpoints, torn JSON lines, temp files never renamed, and plain
# steps, at the start of training and around the history checkpoints 10, 25 and 50; the
# last while the finished run writes its samples (drawn when training ends).
KILL_POINTS = [
    "checkpoint.tensors:1",  # the first history checkpoint has tensors but no record
    "io.append:1",  # half of the first metrics line
    "checkpoint.record:2",  # right after the first resumable checkpoint
    "train.step:3",
    "io.replace:1",  # a temp file that is never renamed
    "checkpoint.tensors:1",
    "train.step:5",
    "io.append:1",  # the metrics line of iteration 10, torn
    "checkpoint.record:1",  # history checkpoint 10 written, its resumable one not yet
    "checkpoint.tensors:2",  # history checkpoint 10 whole, its resumable one torn
    "train.step:4",
    "checkpoint.tensors:2",
    "io.replace:3",
    "train.step:10",
    "io.append:1",
    "checkpoint.record:3",
    "train.step:20",
    "checkpoint.tensors:4",  # from 44: resumable 46, 48, history 50 whole, resumable 50 torn
    "checkpoint.tensors:3",
    "train.step:29",
    # From 78: metrics.jsonl rewritten (1), history and resumable checkpoint 80 (2 files
    # each), then samples.jsonl's temp file, never renamed (6).
    "io.replace:6",
]


@pytest.mark.slow
def test_sigkill_at_chosen_moments_then_resume_equals_uninterrupted(tmp_path, corpora):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(faults.ENV, None)
    ref = subprocess.run(
        _train_cmd(tmp_path / "ref", corpora), env=env, capture_output=True, text=True, timeout=600
    )
    assert ref.returncode == 0, ref.stderr
    killed_dir = tmp_path / "killed" / "models" / "shakespeare"
    for i, point in enumerate(KILL_POINTS):
        proc = subprocess.run(
            _train_cmd(tmp_path / "killed", corpora),
            env={**env, faults.ENV: point},
            capture_output=True,
            text=True,
            timeout=600,
        )
        # Each process must die at its point: one that finished would leave fewer kills.
        assert proc.returncode == -signal.SIGKILL, (i, point, proc.returncode, proc.stderr)
        _all_checkpoints_valid(killed_dir)  # the newest checkpoint is never a torn one
    assert _progress(killed_dir) == 80  # the last kill came after the last step
    assert not (killed_dir / "samples.jsonl").exists()  # ... while the samples were written
    final = subprocess.run(
        _train_cmd(tmp_path / "killed", corpora),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert final.returncode == 0, final.stderr
    a = read_tensors(find_checkpoint(tmp_path / "ref" / "models" / "shakespeare"))
    b = read_tensors(find_checkpoint(killed_dir))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rows = read_jsonl(killed_dir / "metrics.jsonl")
    ref_rows = read_jsonl(tmp_path / "ref" / "models" / "shakespeare" / "metrics.jsonl")
    # no row written twice, and the same validation losses as the uninterrupted run
    iters = [r["iter"] for r in rows]
    assert iters == [r["iter"] for r in ref_rows] == sorted(set(iters))
    assert [r["val_loss"] for r in rows] == [r["val_loss"] for r in ref_rows]
    samples = read_jsonl(killed_dir / "samples.jsonl")
    ref_samples = read_jsonl(tmp_path / "ref" / "models" / "shakespeare" / "samples.jsonl")
    assert [r["iter"] for r in samples] == [0, 10, 25, 50, 80]
    assert [r["text"] for r in samples] == [r["text"] for r in ref_samples]


def test_fault_point_is_inert_without_its_variable_and_validates_it():
    faults.fault_point("train.step")  # unset in the test process: returns
    assert faults._parse(None) is None
    assert faults._parse("io.append:3") == ("io.append", 3)
    for bad in ("io.append", "nowhere:1", "train.step:0", "train.step:x"):
        assert faults._parse(bad) is None  # at import: never a traceback
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv(faults.ENV, bad)
            with pytest.raises(ConfigError, match=faults.ENV):
                faults.check()  # before a command starts: one error line


def test_full_disk_during_checkpoint_keeps_previous(train_smoke, tmp_path, monkeypatch, capsys):
    real = ckpt_mod.atomic_write_bytes

    def enospc(path, data):
        if "0000020" in Path(path).name:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(path, data)

    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", enospc)
    code = train_smoke(tmp_path, "train.resume_interval=10")
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device" in err and "--resume" in err
    model_dir = tmp_path / "models" / "shakespeare"
    assert [c.iteration for c in list_checkpoints(model_dir / "checkpoints", "resume")] == [0, 10]
    _all_checkpoints_valid(model_dir)
    assert not list(model_dir.glob("checkpoints/*0000020*"))
    monkeypatch.setattr(ckpt_mod, "atomic_write_bytes", real)
    assert train_smoke(tmp_path, "train.resume_interval=10", extra=["--resume"]) == 0


def test_second_writer_is_refused_and_a_dead_holder_does_not_block(train_smoke, tmp_path, capsys):
    run = RunDir(tmp_path)
    with run.lock():
        code = train_smoke(tmp_path, quiet=False)
        err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and str(tmp_path) in err
    assert not (tmp_path / "models").exists()
    # a holder killed with SIGKILL leaves the lock file behind, but not the lock
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; from pathlib import Path; from domaingpt.context.rundir import RunDir\n"
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
