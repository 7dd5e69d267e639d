"""A study on one process against the same study spread over torchrun's ranks: wall time
of each, stage by stage, and whether every table is the same.

Run by hand (not a test)::

    python benchmarks/bench_ranks.py                      # the smoke study, 1 vs 2 ranks
    python benchmarks/bench_ranks.py --preset cpu --ranks 2 --threads 1

Each run is ``domaingpt run`` from a fresh run directory (process start to exit), one
torch thread per process by default (``--threads``), so N ranks use N cores: on a machine
with fewer free cores than ranks the ranks only take turns. The stage times come from the
runs' stage records; "same tables" compares every table of every stage, timing columns
left out (numbers to 1e-9 relative).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from domaingpt.study import Study, load_study

TIMING = {"tokens_per_s", "elapsed", "train_seconds", "seconds"}


def run_study(out: Path, preset: str, ranks: int, threads: int, study: str | None) -> float:
    """Seconds of one ``domaingpt run`` (``ranks`` > 1: under torchrun)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    env.pop("WORLD_SIZE", None)
    args = ["run", *([study] if study else []), "--preset", preset, "--out", str(out), "--quiet"]
    args += ["--threads", str(threads)]
    if ranks > 1:
        launcher = [
            "-m",
            "torch.distributed.run",
            f"--nproc_per_node={ranks}",
            "--rdzv_backend=c10d",
            "--rdzv_endpoint=127.0.0.1:0",
        ]
    else:
        launcher = []
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, *launcher, "-m", "domaingpt", *args],
        capture_output=True,
        text=True,
        env=env,
    )
    seconds = time.perf_counter() - t0
    if done.returncode:
        sys.exit(f"{ranks} rank(s) failed:\n{done.stderr[-3000:]}")
    return seconds


def same_tables(a: Path, b: Path, stages: list[str]) -> tuple[int, list[str]]:
    """How many tables were compared, and those that differ."""
    one, two = Study.load(a), Study.load(b)
    compared, differ = 0, []
    for name in stages:
        for table, df in one[name].items():
            x = df.drop(columns=[c for c in df.columns if c in TIMING]).reset_index(drop=True)
            other = two[name][table]
            y = other.drop(columns=[c for c in other.columns if c in TIMING])
            y = y.reset_index(drop=True)
            if len(x.columns):
                x, y = x.replace(str(a), "RUN", regex=True), y.replace(str(b), "RUN", regex=True)
            try:
                pd.testing.assert_frame_equal(x, y, check_exact=False, rtol=1e-9, atol=1e-12)
            except AssertionError:
                differ.append(f"{name}/{table}")
            compared += 1
    return compared, differ


def stage_seconds(root: Path) -> dict[str, float]:
    return {
        p.stem: json.loads(p.read_text())["seconds"]
        for p in sorted((root / "stages").glob("*.json"))
        if "seconds" in json.loads(p.read_text())
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="smoke", help="study preset (default: smoke)")
    ap.add_argument("--study", default=None, help="a study file layered over the preset")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    args = ap.parse_args()
    stages = [s.name for s in load_study(args.study, preset=args.preset).stages]
    stages = [s for s in stages if s != "report"]
    with tempfile.TemporaryDirectory() as tmp:
        one, many = Path(tmp) / "one", Path(tmp) / "many"
        t1 = run_study(one, args.preset, 1, args.threads, args.study)
        tn = run_study(many, args.preset, args.ranks, args.threads, args.study)
        compared, differ = same_tables(one, many, stages)
        s1, sn = stage_seconds(one), stage_seconds(many)
    print(f"study {args.preset!r}, {os.cpu_count()} CPUs, {args.threads} torch thread(s) each")
    print(f"  1 process : {t1:7.1f} s")
    print(f"  {args.ranks} ranks   : {tn:7.1f} s  ({t1 / tn:.2f}x)")
    print(f"  tables    : {compared} compared, {len(differ)} differ {differ or ''}")
    print("  stage seconds (1 process -> ranks):")
    for name in s1:
        print(f"    {name:<11} {s1[name]:7.1f} -> {sn.get(name, float('nan')):7.1f}")


if __name__ == "__main__":
    main()
