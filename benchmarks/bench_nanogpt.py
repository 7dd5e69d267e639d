"""domaingpt against nanoGPT's own ``train.py``, side by side in one run.

Run by hand (not a test)::

    python benchmarks/bench_nanogpt.py --nanogpt DIR [--rounds 3] [--data-dir ../shared/data]
    python benchmarks/bench_nanogpt.py --nanogpt DIR --quick   # does it run? (a few minutes)

``DIR`` is a checkout of karpathy/nanoGPT (commit 3adf61e) *outside* this repository;
nothing of it is copied here: its ``train.py`` runs as a process, and its
``shakespeare_char`` data is prepared by its own ``data/shakespeare_char/prepare.py``
from domaingpt's Shakespeare corpus (copied to ``input.txt`` first, so nothing downloads).

Both train the cpu-mini shape (4 layers, 4 heads, 128 dims, block 64, batch 12) on this
CPU with their default thread counts: nanoGPT with the README's CPU recipe
(``--device=cpu --compile=False --eval_iters=20 --log_interval=1 ...``), domaingpt with
``domaingpt train shakespeare --preset cpu-mini`` (history checkpoints, samples, the
whole-split final evaluation and ``loss.png`` included). Every round runs each pair back
to back, the order alternating from round to round, and measures the fp32 matmul rate
(2048², this process's threads) beside them; ratios are taken within a round and their
median reported, since the speed of a shared machine drifts between rounds.

Per round:

* whole-process wall time of 300 and of 2000 iterations (process start to exit);
* steady-state tokens/s: nanoGPT's per-iteration times (its log; evaluation iterations
  left out), domaingpt's ``tokens_per_s`` rows (evaluation and checkpoints left out);
  both as the median over the 2000-iteration run; MFU = tokens/s x 6N + 12LCT / matmul rate;
* time to validation loss <= 1.8857 (nanoGPT's cpu-mini result): for nanoGPT the time
  from process start to the first evaluation line at or below it (its estimate: 20
  random batches); for domaingpt ``--preset cpu-fast`` end to end, and the cpu-mini
  2000-iteration run (whole-split losses), each from process start.

The load of the machine (``/proc/loadavg``) is recorded before every run and printed.
``--quick`` checks that everything runs (one round of 20 and 120 iterations, no cpu-fast
run): its figures measure nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from domaingpt.model.gpt import GPT, GPTConfig
from matmul_ceiling import matmul_rate

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.8857  # nanoGPT's cpu-mini val loss after 2000 iterations (its README)
SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "bias": False}
TOKENS_PER_ITER = 12 * 64
NANOGPT_RECIPE = [
    "config/train_shakespeare_char.py",
    "--device=cpu",
    "--compile=False",
    "--eval_iters=20",
    "--log_interval=1",
    "--block_size=64",
    "--batch_size=12",
    "--n_layer=4",
    "--n_head=4",
    "--n_embd=128",
    "--dropout=0.0",
]
ITER_LINE = re.compile(r"^iter (\d+): loss [\d.]+, time ([\d.]+)ms")
EVAL_LINE = re.compile(r"^step (\d+): train loss ([\d.]+), val loss ([\d.]+)")


def load() -> str:
    """The 1, 5 and 15-minute load averages."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def prepare_nanogpt(nanogpt: Path, data_dir: Path) -> None:
    """nanoGPT's shakespeare_char data, by its own prepare script, from our corpus file."""
    folder = nanogpt / "data" / "shakespeare_char"
    if (folder / "train.bin").is_file() and (folder / "val.bin").is_file():
        return
    shutil.copyfile(data_dir / "shakespeare.txt", folder / "input.txt")
    subprocess.run([sys.executable, "prepare.py"], cwd=folder, check=True, capture_output=True)


def timed_lines(cmd: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, list[tuple]]:
    """Run ``cmd``; its wall time and each stdout line with the seconds since start."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = [(time.perf_counter() - t0, line.rstrip("\n")) for line in proc.stdout]
    if proc.wait() != 0:
        tail = "\n".join(text for _, text in lines[-15:])
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{tail}")
    return time.perf_counter() - t0, lines


def run_nanogpt(nanogpt: Path, iters: int, out: Path) -> dict:
    cmd = [
        sys.executable,
        "-u",
        "train.py",
        *NANOGPT_RECIPE,
        f"--max_iters={iters}",
        f"--lr_decay_iters={iters}",
        f"--out_dir={out}",
    ]
    wall, lines = timed_lines(cmd, nanogpt, dict(os.environ))
    step_ms, first_hit, last_val = [], None, None
    for t, text in lines:
        if m := ITER_LINE.match(text):
            it = int(m.group(1))
            if it >= 5 and it % 250:  # warm-up and evaluation iterations left out
                step_ms.append(float(m.group(2)))
        elif m := EVAL_LINE.match(text):
            last_val = float(m.group(3))
            if first_hit is None and last_val <= TARGET:
                first_hit = t
    return {
        "wall": wall,
        "tokens_per_s": TOKENS_PER_ITER / (statistics.median(step_ms) / 1e3) if step_ms else None,
        "time_to_target": first_hit,
        "val_loss": last_val,
    }


def run_domaingpt(data_dir: Path, preset: str, iters: int | None, out: Path) -> dict:
    cmd = [sys.executable, "-m", "domaingpt", "train", "shakespeare", "--preset", preset]
    cmd += ["--out", str(out), "--data-dir", str(data_dir), "--quiet"]
    if iters is not None:
        cmd += ["--set", f"train.max_iters={iters}"]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    wall, _ = timed_lines(cmd, REPO, env)
    rows = [json.loads(x) for x in (out / "models/shakespeare/metrics.jsonl").open()]
    vocab = json.loads((out / "vocab.json").read_text())
    steady = [r["tokens_per_s"] for r in rows if r["tokens_per_s"] and r["iter"] > 50]
    # From process start: the run's wall time less what followed the first row at or
    # below the target (rows carry the seconds since training started).
    hits = [r for r in rows if r["val_loss"] <= TARGET]
    to_target = wall - (rows[-1]["elapsed"] - hits[0]["elapsed"]) if hits else None
    return {
        "wall": wall,
        "tokens_per_s": statistics.median(steady) if steady else None,
        "time_to_target": to_target,
        "val_loss": rows[-1].get("val_loss_full", rows[-1]["val_loss"]),
        "vocab_size": len(vocab["chars"]) + 1,
    }


def flops_per_token(vocab_size: int) -> float:
    return GPT(GPTConfig(vocab_size=vocab_size, **SHAPE)).flops_per_token()


def one_round(k: int, args: argparse.Namespace, scratch: Path) -> dict:
    """Each pair back to back, nanoGPT first in even rounds, domaingpt first in odd ones."""
    rec: dict = {"load": [], "matmul": [matmul_rate()]}

    def ours(name: str, preset: str, iters: int | None) -> None:
        rec["load"].append(f"{name} {load()}")
        rec[name] = run_domaingpt(args.data_dir, preset, iters, scratch / f"{name}-{k}")

    def theirs(name: str, iters: int) -> None:
        rec["load"].append(f"{name} {load()}")
        rec[name] = run_nanogpt(args.nanogpt, iters, scratch / f"{name}-{k}")

    for n in args.iters:
        a, b = partial(theirs, f"nanogpt_{n}", n), partial(ours, f"domaingpt_{n}", "cpu-mini", n)
        for run in (a, b) if k % 2 == 0 else (b, a):
            run()
        rec["matmul"].append(matmul_rate())
    if not args.skip_fast:
        ours("domaingpt_fast", "cpu-fast", None)
    rec["matmul"].append(matmul_rate())
    return rec


def summarize(rounds: list[dict], iters: tuple[int, int]) -> dict:
    """Medians over rounds; steady state and time to target from the longer runs."""
    med = statistics.median
    out: dict = {}
    for n in iters:
        for name in (f"nanogpt_{n}", f"domaingpt_{n}"):
            out[f"{name}_wall_s"] = med(r[name]["wall"] for r in rounds)
    for n in iters:
        out[f"whole_process_{n}_speedup"] = med(
            r[f"nanogpt_{n}"]["wall"] / r[f"domaingpt_{n}"]["wall"] for r in rounds
        )
    if len(iters) < 2:  # --short-only: no long runs to take the steady state from
        return out
    long = iters[-1]
    ng_f = flops_per_token(65)
    dg_f = flops_per_token(rounds[0][f"domaingpt_{long}"]["vocab_size"])
    for who, f in (("nanogpt", ng_f), ("domaingpt", dg_f)):
        tps = [r[f"{who}_{long}"]["tokens_per_s"] for r in rounds]
        out[f"{who}_tokens_per_s"] = med(tps)
        out[f"{who}_mfu"] = med(
            t * f / statistics.median(r["matmul"]) for t, r in zip(tps, rounds, strict=True)
        )
    out["steady_state_speedup"] = med(
        r[f"domaingpt_{long}"]["tokens_per_s"] / r[f"nanogpt_{long}"]["tokens_per_s"]
        for r in rounds
    )
    out["matmul_gflops"] = med(m for r in rounds for m in r["matmul"]) / 1e9
    ng_ttq = [r[f"nanogpt_{long}"]["time_to_target"] for r in rounds]
    out["nanogpt_time_to_target_s"] = med(t for t in ng_ttq if t) if any(ng_ttq) else None
    for name in ("domaingpt_fast", f"domaingpt_{long}"):
        got = [r[name]["time_to_target"] for r in rounds if name in r]
        hits = [t for t in got if t is not None]
        out[f"{name}_time_to_target_s"] = med(hits) if hits else None
        out[f"{name}_reached"] = f"{len(hits)}/{len(got)}"
        ratios = [
            r[name]["time_to_target"] / r[f"nanogpt_{long}"]["time_to_target"]
            for r in rounds
            if name in r and r[name]["time_to_target"] and r[f"nanogpt_{long}"]["time_to_target"]
        ]
        out[f"{name}_time_to_target_ratio"] = med(ratios) if ratios else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nanogpt", type=Path, required=True, help="nanoGPT checkout (3adf61e)")
    default_data = os.environ.get("DOMAINGPT_DATA") or str(REPO.parent / "shared" / "data")
    ap.add_argument("--data-dir", type=Path, default=Path(default_data))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--skip-fast", action="store_true", help="no cpu-fast time-to-target run")
    ap.add_argument("--json", type=Path, help="write every measurement here")
    ap.add_argument(
        "--quick", action="store_true", help="check that it runs: 1 round, 20 and 120 iterations"
    )
    ap.add_argument(
        "--short-only",
        action="store_true",
        help="only the 300-iteration whole-process pairs (no steady state, no time to target)",
    )
    args = ap.parse_args()
    args.iters = (20, 120) if args.quick else (300, 2000)  # > 100: its warm-up
    if args.short_only:
        args.iters, args.skip_fast = (300,), True
    if args.quick:
        args.rounds, args.skip_fast = 1, True
    args.data_dir = args.data_dir.resolve()
    prepare_nanogpt(args.nanogpt, args.data_dir)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; load {load()}")
    with tempfile.TemporaryDirectory(prefix="bench-nanogpt-") as tmp:
        scratch = Path(tmp)
        run_domaingpt(args.data_dir, "cpu-mini", 1, scratch / "warm")  # caches warm
        run_nanogpt(args.nanogpt, 1, scratch / "warm-nanogpt")
        rounds = []
        for k in range(args.rounds):
            rounds.append(one_round(k, args, scratch))
            print(f"round {k + 1}: " + json.dumps(rounds[-1], default=str), flush=True)
    summary = summarize(rounds, args.iters)
    print(f"load at the end {load()}")
    for key, value in summary.items():
        print(f"  {key:<36} {value:.3f}" if isinstance(value, float) else f"  {key:<36} {value}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": rounds, "summary": summary}, indent=1))


if __name__ == "__main__":
    main()
