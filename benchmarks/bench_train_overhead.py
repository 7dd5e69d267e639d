"""The train stage's time outside training steps, before and after, side by side.

Run by hand (not a test)::

    python benchmarks/bench_train_overhead.py --before aa1b0d5 --rounds 3

Each round runs ``domaingpt train <corpus> --preset cpu-mini --set train.max_iters=N``
as a fresh process once per variant (this checkout's ``src/``, or ``--after REF``; and
with ``--before REF`` the code of that git revision; revisions are exported to a
temporary folder), in alternating order. ``--study`` trains with the cpu study's
settings instead (``cpu-fast``, batch 16, 2000 iterations, evaluations every 250,
16,384 characters each, log-spaced history, 200-character samples): one model of the
train stage. Inside the
process ``Trainer.step`` is timed; the rest of the process's wall time (start-up,
evaluations, history checkpoints and their samples, the figure) is the time outside
steps. The first step counts as start-up, not as a step: ``torch.optim.AdamW``'s first
step imports ``torch._dynamo`` (seconds; far more on a loaded machine). The phases that
can be told apart by function name are timed too. It prints
each round, then the medians, and the load average before and after (the machine is
shared: say what else ran).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Timed inside the child: (module, attribute path, phase). Missing ones are skipped, so
#: one child serves every revision.
PHASES = [
    ("domaingpt.training.trainer", "Trainer.step", "steps"),
    ("domaingpt.training.loop", "_Recorder.evaluate", "evaluate"),
    ("domaingpt.training.loop", "_Recorder.history_point", "history"),  # + samples before
    ("domaingpt.training.loop", "_Recorder.samples", "samples"),
    ("domaingpt.training.loop", "_Recorder.resume_point", "resume"),
    ("domaingpt.training.loop", "_final_loss", "final_loss"),
    ("domaingpt.training.loop", "_plot_loss", "figure"),
]

CHILD = r"""
import importlib, json, sys, time
t_start = time.perf_counter()
phases, spent = json.loads(sys.argv[1]), {}
def timed(fn, name):
    def call(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            dt = time.perf_counter() - t0
            if name == "steps" and "first_step" not in spent:
                spent["first_step"] = dt  # start-up: torch.optim imports torch._dynamo here
            else:
                spent[name] = spent.get(name, 0.0) + dt
    return call
for module, path, name in phases:
    owner = importlib.import_module(module)
    *parents, attr = path.split(".")
    for p in parents:
        owner = getattr(owner, p, None)
    if owner is not None and hasattr(owner, attr):
        setattr(owner, attr, timed(getattr(owner, attr), name))
t_imported = time.perf_counter()
from domaingpt.cli import main
try:
    code = main(sys.argv[3:])
except SystemExit as e:
    code = e.code
spent["imports"] = t_imported - t_start
spent["in_process"] = time.perf_counter() - t_start
with open(sys.argv[2], "w") as f:
    json.dump({"code": code, **spent}, f)
"""


#: One model of the cpu study's train stage (src/domaingpt/studies/cpu.toml).
STUDY = [
    "train.batch_size=16",
    "train.max_iters=2000",
    "train.eval_interval=250",
    "train.eval_tokens=16384",
    'train.checkpoints="log"',
    "train.sample_chars=200",
]


def export_revision(ref: str, into: Path) -> Path:
    """``src/`` of git revision ``ref``, extracted under ``into``."""
    into.mkdir(parents=True)
    archive = into / "src.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", ref, "src"], cwd=REPO, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    return into / "src"


def run_once(src: Path, args: argparse.Namespace, out: Path) -> dict[str, float]:
    report = out / "report.json"
    cmd = [
        sys.executable,
        "-c",
        CHILD,
        json.dumps(PHASES),
        str(report),
        "train",
        args.corpus,
        "--preset",
        args.preset,
        "--set",
        f"train.max_iters={args.iters}",
        *[x for s in (STUDY if args.study else []) for x in ("--set", s)],
        "--out",
        str(out / "run"),
        "--overwrite",
        "--quiet",
        *[x for s in args.set for x in ("--set", s)],
    ]
    env = {**os.environ, "PYTHONPATH": str(src)}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"training failed with {src}:\n{done.stderr[-2000:]}")
    got = json.loads(report.read_text())
    if got.get("code"):  # domaingpt's own error (a missing corpus, ...): said on stderr
        sys.exit(f"training failed with {src}:\n{done.stderr[-2000:]}")
    got["wall"] = wall
    got["outside"] = wall - got["steps"]
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--before", help="git revision to compare with (e.g. main)")
    ap.add_argument("--after", help="git revision to measure (default: this checkout)")
    ap.add_argument("--study", action="store_true", help="one model of the cpu study")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--preset", default="cpu-mini")
    ap.add_argument("--corpus", default="shakespeare")
    ap.add_argument("--set", action="append", default=[], help="extra --set for both")
    args = ap.parse_args()
    if args.study:
        args.preset, args.iters = "cpu-fast", 2000
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        after = export_revision(args.after, Path(tmp) / "after") if args.after else REPO / "src"
        variants = {"after": after}
        if args.before:
            variants = {"before": export_revision(args.before, Path(tmp) / "before"), **variants}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
        print(f"load average before: {os.getloadavg()}")
        for r in range(args.rounds):
            order = list(variants) if r % 2 == 0 else list(reversed(variants))
            for name in order:
                out = Path(tmp) / f"{name}-{r}"
                out.mkdir()
                got = run_once(variants[name], args, out)
                results[name].append(got)
                share = got["outside"] / got["wall"]
                print(
                    f"round {r + 1} {name:6s}: wall {got['wall']:6.1f} s, steps "
                    f"{got['steps']:6.1f} s, outside {got['outside']:5.1f} s ({share:.0%}); "
                    f"load {os.getloadavg()[0]:.1f}"
                )
        print(f"load average after: {os.getloadavg()}")
        keys = ["wall", "steps", "outside", "imports", "first_step"] + [
            p for _, _, p in PHASES if p != "steps"
        ]
        what = "one model of the cpu study" if args.study else args.preset
        print(f"\nmedians of {args.rounds} rounds ({what}, {args.iters} iterations):")
        print(f"{'':12s}" + "".join(f"{name:>10s}" for name in variants))
        for key in keys:
            cells = []
            for name in variants:
                values = [g[key] for g in results[name] if key in g]
                cells.append(f"{statistics.median(values):9.2f}s" if values else f"{'-':>10s}")
            print(f"{key:12s}" + "".join(cells))
        shares = [
            statistics.median(g["outside"] / g["wall"] for g in results[name]) for name in variants
        ]
        print(f"{'outside %':12s}" + "".join(f"{s:10.1%}" for s in shares))


if __name__ == "__main__":
    main()
