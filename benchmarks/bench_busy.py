"""Training on a busy CPU: how OpenMP's waiting policy and the thread count share it.

Run by hand (not a test)::

    python benchmarks/bench_busy.py [--rounds 3] [--iters 150] [--hogs 2]

Each round trains the cpu-mini shape (``domaingpt train shakespeare --preset cpu-mini``,
batch 12, no history checkpoints) once per variant, quiet and then beside ``--hogs`` busy
processes (each a ``while True`` loop of pure Python, one core's worth of work), the
variants' order rotating from round to round. A variant is an environment:

* ``libgomp default``: neither variable set (a waiting thread spins for a while, then
  sleeps): how domaingpt ran before its command line chose a policy;
* ``passive``: waiting threads sleep at once (``OMP_WAIT_POLICY=PASSIVE``);
* ``short spin``: ``GOMP_SPINCOUNT=10000``, a short spin before sleeping;
* ``one-thread``: one torch thread (``--set train.threads=1``), libgomp's default.

Steady-state tokens/s is the median of the run's ``tokens_per_s`` rows in
``metrics.jsonl`` (evaluations left out); the table gives the median over rounds, and the
share a busy machine keeps of the quiet figure for the same variant. ``/proc/loadavg``
is recorded before each run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "libgomp default": ({"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}, []),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE", "GOMP_SPINCOUNT": None}, []),
    "short spin": ({"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": "10000"}, []),
    "one-thread": ({"OMP_WAIT_POLICY": None, "GOMP_SPINCOUNT": None}, ["--set", "train.threads=1"]),
}
HOG = "while True:\n    pass\n"


def load() -> str:
    return Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"


def train(env: dict[str, str | None], extra: list[str], iters: int, data_dir: str) -> float:
    """Steady-state tokens/s of one training run in a fresh process."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "domaingpt",
            "train",
            "shakespeare",
            "--preset",
            "cpu-mini",
            "--out",
            tmp,
            "--data-dir",
            data_dir,
            "--quiet",
            "--set",
            f"train.max_iters={iters}",
            "--set",
            f"train.eval_interval={iters}",
            "--set",
            f"train.checkpoints=[0, {iters}]",
            *extra,
        ]
        run_env = {k: v for k, v in os.environ.items() if k not in env}
        run_env.update({k: v for k, v in env.items() if v is not None})
        subprocess.run(cmd, env=run_env, check=True, capture_output=True)
        rows = [
            json.loads(x) for x in (Path(tmp) / "models" / "shakespeare" / "metrics.jsonl").open()
        ]
        rates = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
        return statistics.median(rates)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--data-dir", default=os.environ.get("DOMAINGPT_DATA", "../shared/data"))
    args = ap.parse_args()
    names = list(VARIANTS)
    got: dict[tuple[str, str], list[float]] = {}
    for r in range(args.rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for setting in ("quiet", "busy"):
            hogs = []
            if setting == "busy":
                hogs = [subprocess.Popen([sys.executable, "-c", HOG]) for _ in range(args.hogs)]
                time.sleep(1.0)
            try:
                for name in order:
                    env, extra = VARIANTS[name]
                    before = load()
                    rate = train(env, extra, args.iters, args.data_dir)
                    got.setdefault((name, setting), []).append(rate)
                    print(
                        f"round {r + 1} {setting:5} {name:10} {rate:8.0f} tokens/s (load {before})"
                    )
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
    print(f"\nmedians over {args.rounds} rounds, {args.hogs} busy processes beside the busy runs:")
    print("| variant | quiet tokens/s | busy tokens/s | busy / quiet |")
    print("| --- | --- | --- | --- |")
    for name in names:
        q = statistics.median(got[(name, "quiet")])
        b = statistics.median(got[(name, "busy")])
        print(f"| {name} | {q:,.0f} | {b:,.0f} | {b / q:.0%} |")


if __name__ == "__main__":
    main()
