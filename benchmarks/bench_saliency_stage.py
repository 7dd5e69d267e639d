"""The saliency stage, old code vs new, on the same run directory: time and tables.

Runs the stage (``run_saliency``) of two source trees in turn on one trained run, in
interleaved rounds (old, new, then new, old, ...), each in a fresh process, and prints
the median seconds of each and the speed-up; then compares the tables the two wrote in
the last round: for every CSV, the largest absolute difference in each numeric column
(and whether the text columns are equal), and the raw scores of ``attributions.jsonl``
and ``occlusion.jsonl``. The stage's settings are those of the run's own stage record
(``stages/saliency.json``, as ``domaingpt run`` wrote them), else the defaults.

The run directory is only read: each variant writes into a scratch run under ``--work``
whose models, adapted models and records are links to the run's. The old code is a
source tree of the revision to compare with, for example::

    git worktree add /tmp/saliency-old <revision>      # or: git archive <rev> | tar -x -C DIR
    python benchmarks/bench_saliency_stage.py runs/cpu --old /tmp/saliency-old/src

Timings are of the stage alone (the process's start and imports excluded); each line
names the load average before the round (``os.getloadavg``): on a shared machine, say
what else was running when you quote them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
NEW_SRC = HERE.parent / "src"

# Run inside each child process, with the variant's source tree first on sys.path.
DRIVER = r"""
import json, sys, time
from pathlib import Path
import torch
run, threads = Path(sys.argv[1]), int(sys.argv[2])
if threads:
    torch.set_num_threads(threads)
try:  # the stage contract of today: the stage's own run, in a context
    from domaingpt.context.rundir import RunDir
    from domaingpt.context.stage import StageContext
    from domaingpt.stages.saliency import stage

    def go(root, settings):
        ctx = StageContext(RunDir(root), stage, progress=False, log=lambda m: None)
        stage.run(ctx, settings)
except ImportError:  # a revision from before the context package (aa1b0d5 and earlier)
    from domaingpt.core.rundir import RunDir
    from domaingpt.stages.saliency.run import run_saliency

    def go(root, settings):
        run_saliency(RunDir(root), settings, progress=False, log=lambda m: None)
from domaingpt.stages.saliency.settings import SaliencySettings
record = run / "stages" / "saliency.json"
known = SaliencySettings.__dataclass_fields__
given = json.loads(record.read_text())["settings"] if record.is_file() else {}
given = {k: v for k, v in given.items() if k in known and k not in ("device", "threads")}
given["offline"] = True
settings = SaliencySettings(**given)
t0 = time.perf_counter()
go(run, settings)
print(json.dumps({"seconds": time.perf_counter() - t0, "threads": torch.get_num_threads()}))
"""

# What the stage reads from a run; ``saliency/`` is what it writes (the scratch run's own).
LINKED = ("models", "adapt", "stages", "stats", "vocab.json", "study.json", "study.toml")


def scratch_run(run: Path, work: Path) -> Path:
    """A run under ``work`` whose inputs are links to ``run``'s."""
    out = work / "run"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in LINKED:
        if (run / name).exists():
            (out / name).symlink_to((run / name).resolve())
    return out


def run_once(src: Path, run: Path, threads: int, data_dir: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src)}
    if data_dir:
        env["DOMAINGPT_DATA"] = data_dir
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, str(run), str(threads)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(f"error: the stage failed with {src}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compare_tables(old: Path, new: Path) -> float:
    """Print per table the largest absolute difference per numeric column; the worst."""
    worst = 0.0
    for f in sorted(old.glob("*.csv")):
        g = new / f.name
        if not g.is_file():
            print(f"  {f.name}: not written by the new code")
            worst = float("inf")
            continue
        a, b = pd.read_csv(f), pd.read_csv(g)
        if list(a.columns) != list(b.columns) or len(a) != len(b):
            print(f"  {f.name}: columns or rows differ ({a.shape} vs {b.shape})")
            worst = float("inf")
            continue
        notes = []
        for c in a.columns:
            x, y = a[c], b[c]
            if pd.api.types.is_numeric_dtype(x) and pd.api.types.is_numeric_dtype(y):
                xv, yv = x.to_numpy(float), y.to_numpy(float)
                if not np.array_equal(np.isnan(xv), np.isnan(yv)):
                    notes.append(f"{c}: NaN in different rows")
                    worst = float("inf")
                    continue
                d = float(np.nanmax(np.abs(xv - yv))) if (~np.isnan(xv)).any() else 0.0
                if d:
                    notes.append(f"{c} {d:.1e}")
                worst = max(worst, d)
            elif not x.astype(str).equals(y.astype(str)):
                notes.append(f"{c}: text differs")
                worst = float("inf")
        print(f"  {f.name} ({len(a)} rows): {', '.join(notes) if notes else 'identical'}")
    for name in ("attributions.jsonl", "occlusion.jsonl"):
        fa, fb = old / name, new / name
        if fa.is_file() and fb.is_file():
            ra = [json.loads(line) for line in fa.open(encoding="utf-8")]
            rb = [json.loads(line) for line in fb.open(encoding="utf-8")]
            same = len(ra) == len(rb) and all(
                len(p["raw"]) == len(q["raw"]) for p, q in zip(ra, rb, strict=False)
            )
            d = (
                max(
                    (
                        float(np.max(np.abs(np.subtract(p["raw"], q["raw"])), initial=0.0))
                        for p, q in zip(ra, rb, strict=False)
                    ),
                    default=0.0,
                )
                if same
                else float("inf")
            )
            print(f"  {name}: {len(ra)} vs {len(rb)} records, raw scores max |diff| {d:.1e}")
            worst = max(worst, d)
    return worst


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a run directory with trained (and adapted) models")
    p.add_argument("--old", type=Path, required=True, help="the old code's src directory")
    p.add_argument("--new", type=Path, default=NEW_SRC, help="the new code's src (this one)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--work", type=Path, default=Path("/tmp/bench-saliency-stage"))
    p.add_argument("--data-dir", default=os.environ.get("DOMAINGPT_DATA", ""))
    args = p.parse_args(argv)
    for src in (args.old, args.new):
        if not (src / "domaingpt" / "stages" / "saliency").is_dir():
            print(f"error: {src} is not a domaingpt source tree (src/)", file=sys.stderr)
            return 2
    if not (args.run / "models").is_dir():
        print(f"error: {args.run} has no models/: give a trained run directory", file=sys.stderr)
        return 2
    variants = {"old": args.old.resolve(), "new": args.new.resolve()}
    run = scratch_run(args.run.resolve(), args.work)
    times: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(args.rounds):
        order = list(variants) if r % 2 == 0 else list(variants)[::-1]
        for label in order:
            load = os.getloadavg()
            got = run_once(variants[label], run, args.threads, args.data_dir)
            times[label].append(got["seconds"])
            keep = args.work / label
            if keep.exists():
                shutil.rmtree(keep)
            shutil.copytree(run / "saliency", keep)
            print(
                f"round {r + 1} {label}: {got['seconds']:7.1f} s ({got['threads']} threads; "
                f"load average before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})",
                flush=True,
            )
    old, new = (statistics.median(times[k]) for k in ("old", "new"))
    print(f"median over {args.rounds} rounds: old {old:.1f} s, new {new:.1f} s, {old / new:.2f}x")
    print(f"tables of the last round, old vs new ({args.work / 'old'} vs {args.work / 'new'}):")
    worst = compare_tables(args.work / "old", args.work / "new")
    print(f"largest numeric difference: {worst:.1e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
