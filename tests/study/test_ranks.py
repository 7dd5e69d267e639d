"""``torchrun --nproc_per_node=2 -m domaingpt run --preset smoke``: the study's jobs spread
over two Gloo ranks write the same tables as one process (numbers, not timing)."""

from __future__ import annotations

import os
import subprocess
import sys

import pandas as pd
import pytest

from domaingpt.study import Study, load_study

#: Columns that measure time, not results.
TIMING = {"tokens_per_s", "elapsed", "train_seconds", "seconds"}


def _comparable(df: pd.DataFrame, root: str) -> pd.DataFrame:
    """A table without its timing columns, paths into the run made relative."""
    df = df.drop(columns=[c for c in df.columns if c in TIMING]).reset_index(drop=True)
    return df.replace(root, "RUN", regex=True) if len(df.columns) else df


@pytest.mark.slow  # the smoke study once more, on two processes
def test_smoke_study_on_two_ranks_equals_one_process(smoke_study, corpora, tmp_path):
    out = tmp_path / "two"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--rdzv_backend=c10d",
        "--rdzv_endpoint=127.0.0.1:0",
        "-m",
        "domaingpt",
        "run",
        str(corpora.study),
        "--preset",
        "smoke",
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "2 ranks (jobs spread over them)" in done.stderr
    assert "[rank 1] " in done.stderr  # rank 1 trained and logged a model of its own
    assert "2 ranks (jobs spread over them)" in (out / "log.txt").read_text(encoding="utf-8")
    one, two = Study.load(smoke_study.root), Study.load(out)
    assert [r.status for r in two.records.values()] == ["done"] * 11
    names = [s.name for s in load_study(preset="smoke").stages if s.name != "report"]
    compared = 0
    for name in names:
        tables_one, tables_two = one[name], two[name]
        assert sorted(tables_one) == sorted(tables_two), name
        for table, df in tables_one.items():
            a = _comparable(df, str(smoke_study.root))
            b = _comparable(tables_two[table], str(out))
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-9, atol=1e-12)
            compared += 1
    assert compared > 40
    assert (out / "report.html").is_file()
