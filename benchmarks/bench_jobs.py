"""Independent jobs side by side: the train stage's models in one process with every
thread, or in worker processes of one thread each.

Run by hand (not a test)::

    python benchmarks/bench_jobs.py [--models 3] [--iters 300] [--rounds 3] [--hogs 0]
    python benchmarks/bench_jobs.py --stage adapt [--iters 300] [--rounds 3]

Each round runs the train stage (:mod:`domaingpt.stages.train`) on ``--models``
replicate models of Shakespeare with the cpu study's training settings (``cpu-fast``,
batch 16, log-spaced history checkpoints with samples, evaluations every 250) cut to
``--iters`` iterations, once per variant, in a fresh run directory, the variants' order
alternating from round to round:

* ``one process``: ``[train] processes = 1``, the models one after the other in this
  process on torch's default threads (every core);
* ``N processes``: ``[train] processes = N`` (default: one per usable core), the models
  side by side in N worker processes of cores / N torch threads each (their start-up,
  a fresh interpreter importing torch, is part of the time).

``--stage adapt`` times the adapt stage instead, with the cpu study's ``[adapt]``
settings (200 iterations, batch 8) on two models of ``--iters`` iterations (Shakespeare
and Math, trained first, untimed): every ordered pair, three starts, one seed, six runs.

It prints each run's wall time and the load average before and after it, then the
medians over rounds and the ratio. With ``--hogs K`` every round runs each variant
quiet and then beside K busy processes (a ``while True`` loop of pure Python each, one
core's worth of work), and the table adds the share of its quiet speed each variant
keeps on the busy machine. Like the ``domaingpt`` program, it sets
``OMP_WAIT_POLICY=PASSIVE`` before torch loads unless it is set.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the program does (launch.py)

REPO = Path(__file__).resolve().parents[1]
HOG = "while True:\n    pass\n"


def load() -> str:
    path = Path("/proc/loadavg")
    return " ".join(path.read_text().split()[:3]) if path.exists() else "?"


def train_stage(models: int, iters: int, processes: int, data_dir: str) -> tuple[float, str]:
    """Wall seconds of the train stage with ``models`` replicates of Shakespeare, and the
    models' final validation losses (whole split)."""
    from domaingpt.context.rundir import RunDir
    from domaingpt.context.stage import StageContext, run_stage
    from domaingpt.core.io import read_jsonl
    from domaingpt.data.corpus import resolve_corpus
    from domaingpt.study import load_study
    from domaingpt.study.pipeline import TRAIN

    spec = load_study()  # the cpu study: its [train] table over cpu-fast
    train = {**spec.overrides.get("train", {}), "seeds": models, "max_iters": iters}
    train["processes"] = processes
    settings = TRAIN.settings(
        preset=spec.preset,
        model=dict(spec.overrides.get("model", {})),
        train=train,
        data=dict(spec.overrides.get("data", {})),
    )
    corpus = resolve_corpus("shakespeare", data_dir, download=False)
    with tempfile.TemporaryDirectory() as tmp:
        ctx = StageContext(
            run=RunDir(Path(tmp)), stage=TRAIN, corpora=[corpus], progress=False, log=_quiet
        )
        t0 = time.perf_counter()
        run_stage(ctx, settings)
        seconds = time.perf_counter() - t0
        losses = [
            read_jsonl(ctx.run.model(name) / "metrics.jsonl")[-1]["val_loss_full"]
            for name in ctx.run.trained_models()
        ]
        return seconds, " ".join(f"{x:.4f}" for x in losses)


def trained_run(root: Path, iters: int, data_dir: str) -> None:
    """Two models (Shakespeare, Math) of the cpu study's shape in ``root``, for --stage
    adapt (trained once, side by side)."""
    from domaingpt.context.rundir import RunDir
    from domaingpt.context.stage import StageContext, run_stage
    from domaingpt.data.corpus import resolve_corpus
    from domaingpt.study import load_study
    from domaingpt.study.pipeline import TRAIN

    spec = load_study()
    train = {**spec.overrides.get("train", {}), "seeds": 1, "max_iters": iters}
    settings = TRAIN.settings(
        preset=spec.preset, model=dict(spec.overrides.get("model", {})), train=train
    )
    corpora = [resolve_corpus(c, data_dir, download=False) for c in ("shakespeare", "math")]
    ctx = StageContext(run=RunDir(root), stage=TRAIN, corpora=corpora, progress=False, log=_quiet)
    run_stage(ctx, settings)


def adapt_stage(root: Path, processes: int, data_dir: str) -> tuple[float, str]:
    """Wall seconds of the adapt stage with the cpu study's settings on the two models
    of ``root`` (every ordered pair, 3 starts, 1 seed: 6 runs), and their final target
    losses."""
    import shutil

    from domaingpt.context.rundir import RunDir
    from domaingpt.context.stage import StageContext, run_stage
    from domaingpt.data.corpus import resolve_corpus
    from domaingpt.study import load_study

    spec = load_study()
    stage = spec.stage("adapt")
    table = {**spec.analyses.get("adapt", {}), "processes": processes, "data_dir": data_dir}
    settings = stage.settings(**table)
    run = RunDir(root)
    shutil.rmtree(run.root / stage.name, ignore_errors=True)
    corpora = [resolve_corpus(c, data_dir, download=False) for c in ("shakespeare", "math")]
    ctx = StageContext(run=run, stage=stage, corpora=corpora, progress=False, log=_quiet)
    t0 = time.perf_counter()
    run_stage(ctx, settings)
    seconds = time.perf_counter() - t0
    final = stage.read(run)["final"]
    return seconds, " ".join(f"{x:.4f}" for x in final["target_loss"])


def _quiet(msg: str) -> None:
    pass


def main() -> None:
    from domaingpt.core.threads import usable_cores

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--processes", type=int, default=0, help="0: one per usable core")
    ap.add_argument("--hogs", type=int, default=0, help="also run beside K busy processes")
    ap.add_argument("--data-dir", default=os.environ.get("DOMAINGPT_DATA", "../shared/data"))
    ap.add_argument("--stage", choices=("train", "adapt"), default="train")
    args = ap.parse_args()
    import domaingpt.study.pipeline  # noqa: F401  (imported before the first timed run)

    n = args.processes or usable_cores()
    variants = {"one process": 1, f"{n} processes": n}
    names = list(variants)
    settings = ["quiet", "busy"] if args.hogs else ["quiet"]
    what = f"{args.models} cpu-study models" if args.stage == "train" else "adapt stage"
    print(
        f"{what}, {args.iters} iterations; {usable_cores()} usable cores; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; busy: {args.hogs} hogs"
    )
    got: dict[tuple[str, str], list[float]] = {(v, s): [] for v in names for s in settings}
    scratch = tempfile.TemporaryDirectory()
    if args.stage == "adapt":
        print(f"adapt stage on 2 models of {args.iters} iterations (trained first, not timed)")
        trained_run(Path(scratch.name), args.iters, args.data_dir)

    def once(processes: int) -> tuple[float, str]:
        if args.stage == "adapt":
            return adapt_stage(Path(scratch.name), processes, args.data_dir)
        return train_stage(args.models, args.iters, processes, args.data_dir)

    for r in range(args.rounds):
        order = names if r % 2 == 0 else names[::-1]
        for setting in settings:
            hogs = []
            if setting == "busy":
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
                time.sleep(1.0)
            try:
                for name in order:
                    before = load()
                    seconds, losses = once(variants[name])
                    got[(name, setting)].append(seconds)
                    print(
                        f"round {r + 1} {setting:5} {name:12} {seconds:7.1f} s  "
                        f"(load {before} -> {load()}); val losses {losses}",
                        flush=True,
                    )
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
    med = {k: statistics.median(v) for k, v in got.items()}
    scratch.cleanup()
    print(f"\nmedians over {args.rounds} rounds (wall seconds of the {args.stage} stage):")
    head = " | ".join(f"{s} s" for s in settings)
    extra = " | busy / quiet speed" if args.hogs else ""
    print(f"| variant | {head}{extra} | rounds |")
    print("| --- " * (2 + len(settings) + bool(args.hogs)) + "|")
    for name in names:
        cells = " | ".join(f"{med[(name, s)]:.1f}" for s in settings)
        share = f" | {med[(name, 'quiet')] / med[(name, 'busy')]:.0%}" if args.hogs else ""
        rounds = "; ".join(
            s + " " + " / ".join(f"{x:.1f}" for x in got[(name, s)]) for s in settings
        )
        print(f"| {name} | {cells}{share} | {rounds} |")
    for s in settings:
        one, many = med[(names[0], s)], med[(names[1], s)]
        print(
            f"{s}: {names[1]} take {many / one:.2f}x the time of one process "
            f"({one / many:.2f}x as fast)"
        )


if __name__ == "__main__":
    main()
