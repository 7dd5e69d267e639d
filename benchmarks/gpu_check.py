"""The one prepared check for a lent GPU (an NVIDIA H200): about 9 minutes, results under
``$OUT``. Run on the GPU machine from the repository root::

    python benchmarks/gpu_check.py               # every step, within --budget seconds

It needs there: torch with CUDA, numpy, pandas, matplotlib, safetensors and tqdm (no
package registry: the project is installed with ``pip install --no-deps -e .``), the
three corpora in ``.scratch/data`` (or ``$DOMAINGPT_DATA``) and a checkout of
karpathy/nanoGPT in ``.scratch/nanoGPT`` (or ``$NANOGPT_DIR``); ``.scratch/`` is ignored
by git and travels with the run (``carry``). Prepared here with::

    mkdir -p .scratch && cp -r ../shared/data .scratch/data
    git clone --depth 1 https://github.com/karpathy/nanoGPT .scratch/nanoGPT
    rm -rf .scratch/nanoGPT/.git        # 6 MB in all: the run carries at most 64 MiB

and run with ``carry=[".scratch"]``. nanoGPT's code is run from its own checkout, never
copied into this repository.

Steps, each capped in time (a step that fails or runs out of time is recorded and the
next one runs):

1. ``pip install --no-deps -e .``; the machine (GPU, torch, CUDA);
2. the tests marked ``cuda`` (``tests/core/test_cuda.py``);
3. the GPU's bf16 matmul rate (8192² products), the denominator of every MFU here;
4. nanoGPT's ``shakespeare_char`` baby GPT with nanoGPT's own ``train.py`` (its data
   prepared by its own ``prepare.py`` from our copy of the corpus), then the same recipe
   with ``domaingpt train shakespeare --preset gpu-baby --vocab shakespeare``: tokens/s,
   MFU (nanoGPT's FLOPs-per-token formula for both, against the measured rate) and wall
   time to val loss ≤ 1.4697 (nanoGPT's published figure; each tool's own validation
   estimate: nanoGPT's 200 random batches, domaingpt's fixed windows);
5. a shortened ``gpu`` study (every stage; 1000 iterations, fewer adaptation runs) on 3
   ranks sharing the GPU: its stage times and ``report.md``.

Writes ``$OUT/summary.md`` (the figures), ``summary.json``, ``logs/`` and ``study/``.
``--dry-run`` does the same on a CPU with toy sizes, to check the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.4697  # nanoGPT's val loss for this recipe (README, shakespeare_char)
STUDY = """[study]
name = "gpu-short"
[train]
max_iters = {iters}
checkpoints = {checkpoints}
eval_interval = {eval_interval}
[adapt]
iters = {adapt_iters}
seeds = 2
[saliency]
occlusion_checkpoints = 2
[quality]
samples = 2
chars = 300
"""


class Check:
    """The run's clock, its output folder and what it has found so far."""

    def __init__(self, out: Path, budget: float, dry: bool) -> None:
        self.out, self.dry = out, dry
        self.deadline = time.monotonic() + budget
        self.result: dict[str, Any] = {"dry_run": dry, "steps": {}}
        (out / "logs").mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def cap(self, wanted: float, keep: float = 0.0) -> float:
        """``wanted`` seconds, or what is left once ``keep`` is kept for later steps."""
        return max(0.0, min(wanted, self.left() - keep))

    def stream(
        self, name: str, cmd: list[str], cap: float, **kw: Any
    ) -> tuple[str, list[tuple[float, str]]]:
        """Run ``cmd``, each output line timed (seconds since start) and logged; after
        ``cap`` seconds it is interrupted. Status: ok, failed (code), timeout, skipped."""
        log = self.out / "logs" / f"{name}.txt"
        if cap < 5:
            log.write_text("skipped: no time left\n")
            self.result["steps"][name] = "skipped"
            return "skipped", []
        lines: list[tuple[float, str]] = []
        t0 = time.monotonic()
        with log.open("w") as f:
            proc = subprocess.Popen(
                cmd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
                **kw,
            )

            def read() -> None:
                assert proc.stdout is not None
                for line in proc.stdout:
                    lines.append((time.monotonic() - t0, line.rstrip("\n")))
                    f.write(f"{lines[-1][0]:8.1f} {line}")
                    f.flush()

            reader = threading.Thread(target=read, daemon=True)
            reader.start()
            try:
                proc.wait(timeout=cap)
                status = "ok" if proc.returncode == 0 else f"failed ({proc.returncode})"
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGINT)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                status = "timeout"
            reader.join(timeout=5)
        self.result["steps"][name] = f"{status} in {time.monotonic() - t0:.0f} s"
        print(f"{name}: {self.result['steps'][name]}", flush=True)
        return status, lines


# --- the steps ------------------------------------------------------------------------


def machine(check: Check) -> None:
    import torch

    info: dict[str, Any] = {"torch": torch.__version__, "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(
            gpu=p.name, memory_gib=round(p.total_memory / 2**30, 1), gpus=torch.cuda.device_count()
        )
    info["cpus"] = os.cpu_count()
    check.result["machine"] = info


def matmul_rate(check: Check) -> float:
    """FLOP/s of large square bf16 products on the GPU (fp32 on a CPU dry run)."""
    import torch

    device = "cpu" if check.dry else "cuda"
    dtype = torch.float32 if check.dry else torch.bfloat16
    n = 512 if check.dry else 8192
    a, b = (
        torch.randn(n, n, device=device, dtype=dtype),
        torch.randn(n, n, device=device, dtype=dtype),
    )
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    times = []
    for i in range(13):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        if i >= 3:  # warm-up
            times.append(time.perf_counter() - t)
    rate = 2 * n**3 / statistics.median(times)
    check.result["matmul"] = {"dtype": str(dtype), "n": n, "tflops": round(rate / 1e12, 2)}
    return rate


def flops_per_token(vocab: int, dry: bool) -> float:
    """nanoGPT's estimate (6N + 12·L·C·T) for the baby GPT (or the dry run's toy model)."""
    from domaingpt.core.config import load_preset
    from domaingpt.model.gpt import GPT, GPTConfig

    m = load_preset("smoke" if dry else "gpu-baby").model
    return GPT(GPTConfig(vocab_size=vocab, **m.__dict__)).flops_per_token(train=True)


def nanogpt(check: Check, data: Path, cap: float) -> dict[str, Any]:
    """nanoGPT's own train.py on shakespeare_char: its log, timed line by line."""
    source = Path(os.environ.get("NANOGPT_DIR", REPO / ".scratch" / "nanoGPT"))
    if not (source / "train.py").is_file():
        check.result["steps"]["nanogpt"] = f"skipped: no nanoGPT checkout at {source}"
        return {}
    work = Path(tempfile.mkdtemp(prefix="nanogpt-"))
    shutil.copytree(source, work / "nanoGPT", ignore=shutil.ignore_patterns(".git"))
    root = work / "nanoGPT"
    shutil.copy(data / "shakespeare.txt", root / "data" / "shakespeare_char" / "input.txt")
    stub = work / "stub"  # prepare.py imports requests, only to download what is here
    stub.mkdir()
    (stub / "requests.py").write_text("")
    env = dict(os.environ, PYTHONPATH=str(stub))
    status, _ = check.stream(
        "nanogpt-prepare",
        [sys.executable, "data/shakespeare_char/prepare.py"],
        60,
        cwd=root,
        env=env,
    )
    if status != "ok":
        return {}
    args = [f"--out_dir={work / 'out'}", "--max_iters=5000"]
    if check.dry:
        args = [f"--out_dir={work / 'out'}", "--device=cpu", "--compile=False", "--dtype=float32"]
        args += ["--max_iters=40", "--eval_interval=20", "--eval_iters=2", "--log_interval=1"]
        args += ["--batch_size=8", "--block_size=32", "--n_layer=2", "--n_head=2", "--n_embd=32"]
    status, lines = check.stream(
        "nanogpt-train",
        [sys.executable, "-u", "train.py", "config/train_shakespeare_char.py", *args],
        cap,
        cwd=root,
    )
    batch, block = (8, 32) if check.dry else (64, 256)
    iters, evals = [], []
    start = lines[0][0] if lines else 0.0
    for t, line in lines:
        if m := re.match(r"iter (\d+): loss ([\d.]+), time ([\d.]+)ms", line):
            iters.append((int(m[1]), float(m[3]) / 1000))
        elif m := re.match(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", line):
            evals.append((int(m[1]), float(m[3]), t - start))
    steady = [dt for it, dt in iters if it >= 20] or [dt for _, dt in iters]
    shutil.rmtree(work, ignore_errors=True)
    return _summary(status, batch * block / statistics.median(steady) if steady else None, evals)


def domaingpt_train(check: Check, data: Path, cap: float) -> dict[str, Any]:
    """The same recipe with ``domaingpt train`` (gpu-baby, Shakespeare's own vocabulary)."""
    from domaingpt.core.io import read_jsonl

    out = Path(tempfile.mkdtemp(prefix="domaingpt-"))
    preset = ["--preset", "smoke", "--set", "train.max_iters=40"] if check.dry else []
    preset = preset or ["--preset", "gpu-baby", "--set", "train.max_iters=5000"]
    cmd = [sys.executable, "-m", "domaingpt", "train", "shakespeare", *preset]
    cmd += ["--vocab", "shakespeare", "--out", str(out), "--data-dir", str(data), "--quiet"]
    if check.dry:
        cmd += ["--set", "train.eval_interval=20", "--set", "train.device=cpu"]
    status, _ = check.stream("domaingpt-train", cmd, cap)
    path = out / "models" / "shakespeare" / "metrics.jsonl"
    rows = read_jsonl(path) if path.is_file() else []
    shutil.rmtree(out, ignore_errors=True)
    steady = [r["tokens_per_s"] for r in rows[2:] if r.get("tokens_per_s")]
    evals = [(r["iter"], r["val_loss"], r["elapsed"]) for r in rows if r["iter"] > 0]
    return _summary(status, statistics.median(steady) if steady else None, evals)


def _summary(status: str, tokens_per_s: float | None, evals: list[tuple]) -> dict[str, Any]:
    reached = next(((it, loss, t) for it, loss, t in evals if loss <= TARGET), None)
    best = min(evals, key=lambda e: e[1]) if evals else None
    return {
        "status": status,
        "tokens_per_s": round(tokens_per_s) if tokens_per_s else None,
        "seconds_to_target": round(reached[2], 1) if reached else None,
        "iteration_at_target": reached[0] if reached else None,
        "best_val_loss": round(best[1], 4) if best else None,
        "best_at_iteration": best[0] if best else None,
        "evaluations": len(evals),
    }


def study(check: Check, data: Path, cap: float) -> None:
    """A shortened gpu study on 3 ranks sharing the GPU (2 on a CPU dry run)."""
    work = Path(tempfile.mkdtemp(prefix="gpu-study-"))
    fields = {"iters": 1000, "checkpoints": "[0, 100, 250, 500, 1000]", "eval_interval": 250}
    fields["adapt_iters"] = 100
    if check.dry:
        fields = {"iters": 30, "checkpoints": "[0, 10, 30]", "eval_interval": 10, "adapt_iters": 10}
    (work / "study.toml").write_text(STUDY.format(**fields))
    ranks = 2 if check.dry else 3
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={ranks}",
    ]
    cmd += [
        "-m",
        "domaingpt",
        "run",
        str(work / "study.toml"),
        "--preset",
        "smoke" if check.dry else "gpu",
    ]
    cmd += ["--out", str(work / "run"), "--data-dir", str(data), "--quiet"]
    status, _ = check.stream("gpu-study", cmd, cap, env=dict(os.environ, OMP_NUM_THREADS="4"))
    dest = check.out / "study"
    dest.mkdir(exist_ok=True)
    stages = {}
    for p in sorted((work / "run" / "stages").glob("*.json")):
        rec = json.loads(p.read_text())
        stages[p.stem] = {"status": rec.get("status"), "seconds": rec.get("seconds")}
    (dest / "stages.json").write_text(json.dumps(stages, indent=1))
    for name in ("report.md", "log.txt", "study.toml"):
        if (work / "run" / name).is_file():
            shutil.copy(work / "run" / name, dest / name)
    check.result["study"] = {"status": status, "ranks": ranks, "stages": stages}
    shutil.rmtree(work, ignore_errors=True)


# --- the report -----------------------------------------------------------------------


def write_summary(check: Check) -> None:
    r = check.result
    (check.out / "summary.json").write_text(json.dumps(r, indent=1))
    lines = ["# GPU check", "", f"machine: {json.dumps(r.get('machine', {}))}", ""]
    lines += [f"- {k}: {v}" for k, v in r["steps"].items()]
    rate = r.get("matmul", {}).get("tflops")
    lines += ["", f"matmul rate: {rate} TFLOP/s ({r.get('matmul', {}).get('dtype')})", ""]
    lines += ["| baby GPT, shakespeare_char | nanoGPT train.py | domaingpt train |"]
    lines += ["| --- | --- | --- |"]
    for key, label in (
        ("tokens_per_s", "tokens/s"),
        ("mfu", "MFU vs the measured rate"),
        ("seconds_to_target", f"seconds to val loss ≤ {TARGET}"),
        ("iteration_at_target", "iteration there"),
        ("best_val_loss", "best val loss"),
        ("best_at_iteration", "at iteration"),
        ("status", "run"),
    ):
        row = [str(r.get(tool, {}).get(key)) for tool in ("nanogpt", "domaingpt")]
        lines.append(f"| {label} | {row[0]} | {row[1]} |")
    if "study" in r:
        s = r["study"]
        lines += ["", f"shortened gpu study on {s['ranks']} ranks: {s['status']}", ""]
        lines += ["| stage | status | seconds |", "| --- | --- | --- |"]
        lines += [f"| {k} | {v['status']} | {v['seconds']} |" for k, v in s["stages"].items()]
    (check.out / "summary.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--budget", type=float, default=540, help="seconds for every step")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on a CPU")
    ap.add_argument("--no-install", action="store_true", help="skip pip install --no-deps -e .")
    ap.add_argument(
        "--train-seconds", type=float, default=140, help="cap of each baby-GPT training run"
    )
    args = ap.parse_args()
    out = Path(os.environ.get("OUT") or tempfile.mkdtemp(prefix="gpu-check-"))
    check = Check(out, args.budget, args.dry_run)
    data = Path(os.environ.get("DOMAINGPT_DATA") or REPO / ".scratch" / "data").resolve()
    os.environ["DOMAINGPT_DATA"] = str(data)
    os.environ["DOMAINGPT_OFFLINE"] = "1"  # nothing outside the machine can be reached
    try:
        if not args.no_install:
            pip = [sys.executable, "-m", "pip", "install", "--no-deps", "-e", str(REPO)]
            check.stream("install", pip, check.cap(90))
        machine(check)
        tests = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests/core/test_cuda.py"]
        check.stream(
            "cuda-tests", tests, check.cap(90, keep=2 * args.train_seconds + 170), cwd=REPO
        )
        rate = matmul_rate(check)
        keeps = {"nanogpt": args.train_seconds + 170, "domaingpt": 170}
        for name, run in (("nanogpt", nanogpt), ("domaingpt", domaingpt_train)):
            got = run(check, data, check.cap(args.train_seconds, keep=keeps[name]))
            vocab = 65 if name == "nanogpt" else 66
            if got.get("tokens_per_s"):
                got["mfu"] = f"{got['tokens_per_s'] * flops_per_token(vocab, check.dry) / rate:.1%}"
            check.result[name] = got
            write_summary(check)
        study(check, data, check.cap(240, keep=5))
    finally:
        write_summary(check)
        print((out / "summary.md").read_text())


if __name__ == "__main__":
    main()
