"""Training throughput, MFU and time-to-quality, measured side by side in one run.

Run by hand (not a test): ``python benchmarks/bench_train.py [--quick] [--skip-ttq]``.

What it prints, each a median over interleaved repeats (the machine is shared and noisy,
so every throughput is paired with a matmul-rate measurement taken right next to it):

* the machine's fp32 matmul rate (GFLOP/s, 2048×2048 matmuls);
* tokens/s and MFU of domaingpt's training step for the ``cpu-mini`` and ``gpu-baby``
  shapes, eager and with ``torch.compile``;
* the same model trained by a *naive loop* in the style of nanoGPT's ``train.py`` (batch
  rows stacked one by one from a memmap re-opened every step, AdamW without the fused
  kernel, ``loss.item()`` every step), so the loop's own overhead shows as a ratio;
* with ``--ceiling``, a profiled step: the share of time spent in matmuls and the MFU a
  step would reach if everything else took no time (the bound on any implementation);
* time-to-quality: ``domaingpt train shakespeare --preset cpu-fast`` end to end (process
  start to exit, compilation included) and the val loss it reaches on the whole split.

MFU = achieved FLOP/s ÷ measured matmul FLOP/s, with nanoGPT's FLOPs-per-token estimate
(6N + 12·L·C·T, N = parameters without position embeddings).
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

import numpy as np
import torch

from domaingpt.core.config import build_config
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.trainer import Trainer
from matmul_ceiling import matmul_ceiling, matmul_rate

VOCAB = 330  # about the size of the three corpora's union vocabulary
REPO = Path(__file__).resolve().parents[1]


def make_model(preset: str) -> tuple[GPT, object]:
    cfg = build_config(preset)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    return model, cfg.train


def trainer_tokens_per_s(preset: str, compile_: str, steps: int, data: np.ndarray) -> float:
    import dataclasses

    model, spec = make_model(preset)
    spec = dataclasses.replace(spec, compile=compile_)
    trainer = Trainer(model, spec, data, torch.device("cpu"))
    for _ in range(3 if compile_ == "off" else 8):  # warm-up (and compilation)
        trainer.step()
    t = time.perf_counter()
    for _ in range(steps):
        loss = trainer.step()
    float(loss)
    return steps * trainer.tokens_per_iter / (time.perf_counter() - t)


def naive_tokens_per_s(preset: str, steps: int, path: Path) -> float:
    """A nanoGPT-style loop: per-row batch stacking, unfused AdamW, ``.item()`` per step."""
    model, spec = make_model(preset)
    T, B = model.config.block_size, spec.batch_size
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, betas=(spec.beta1, spec.beta2))

    def get_batch():
        data = np.memmap(path, dtype=np.uint16, mode="r")
        ix = torch.randint(len(data) - T, (B,))
        x = torch.stack([torch.from_numpy(data[i : i + T].astype(np.int64)) for i in ix])
        y = torch.stack([torch.from_numpy(data[i + 1 : i + 1 + T].astype(np.int64)) for i in ix])
        return x, y

    def step():
        x, y = get_batch()
        _, loss = model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), spec.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    for _ in range(3):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * B * T / (time.perf_counter() - t)


def median_mfu(label: str, preset: str, run, repeats: int) -> dict:
    model, _ = make_model(preset)
    flops = model.flops_per_token()
    rows = []
    for _ in range(repeats):
        peak = matmul_rate()
        tps = run()
        rows.append((tps, tps * flops / peak, peak))
    tps = statistics.median(r[0] for r in rows)
    mfu = statistics.median(r[1] for r in rows)
    peak = statistics.median(r[2] for r in rows)
    print(f"  {label:<34} {tps:>10,.0f} tok/s   MFU {mfu:6.1%}   (matmul {peak / 1e9:.0f} GFLOP/s)")
    return {"label": label, "tokens_per_s": tps, "mfu": mfu}


def report_ceiling(preset: str, steps: int, data: np.ndarray) -> None:
    """Profile ``steps`` training steps: the MFU if only their matmuls took time."""
    model, spec = make_model(preset)
    trainer = Trainer(model, spec, data, torch.device("cpu"))
    for _ in range(2):
        trainer.step()
    flops = steps * trainer.tokens_per_iter * model.flops_per_token()
    print("  " + matmul_ceiling(trainer.step, steps, flops, matmul_rate()))


def time_to_quality(data_dir: str | None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        env = dict(os.environ)
        if data_dir:
            env["DOMAINGPT_DATA"] = data_dir
        cmd = [
            sys.executable,
            "-m",
            "domaingpt",
            "train",
            "shakespeare",
            "--preset",
            "cpu-fast",
            "--out",
            out,
            "--quiet",
        ]
        t = time.perf_counter()
        subprocess.run(cmd, check=True, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - t
        rows = [json.loads(x) for x in (Path(out) / "models/shakespeare/metrics.jsonl").open()]
    loss = rows[-1]["val_loss_full"]
    print(
        f"  cpu-fast end to end: {seconds:.1f} s, val loss {loss:.4f} (target ≤ 1.8857 in ≤ 72 s)"
    )
    return {"seconds": seconds, "val_loss": loss}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer steps and repeats")
    ap.add_argument("--skip-ttq", action="store_true", help="skip the time-to-quality run")
    ap.add_argument("--skip-baby", action="store_true", help="skip the gpu-baby shape")
    ap.add_argument("--compile", action="store_true", help="also measure torch.compile")
    ap.add_argument(
        "--ceiling", action="store_true", help="profile a step: MFU if only matmuls took time"
    )
    args = ap.parse_args()
    repeats, steps = (3, 30) if args.quick else (5, 60)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = np.random.default_rng(0).integers(0, VOCAB, 2_000_000).astype(np.uint16)
    with tempfile.NamedTemporaryFile(suffix=".u16") as f:
        data.tofile(f.name)
        print("cpu-mini (4 layers, 128 dims, block 64, batch 12):")
        eager = median_mfu(
            "domaingpt, eager",
            "cpu-mini",
            lambda: trainer_tokens_per_s("cpu-mini", "off", steps, data),
            repeats,
        )
        naive = median_mfu(
            "naive nanoGPT-style loop",
            "cpu-mini",
            lambda: naive_tokens_per_s("cpu-mini", steps, Path(f.name)),
            repeats,
        )
        print(
            f"  ratio domaingpt / naive loop: {eager['tokens_per_s'] / naive['tokens_per_s']:.2f}x"
        )
        if args.compile:
            median_mfu(
                "domaingpt, torch.compile",
                "cpu-mini",
                lambda: trainer_tokens_per_s("cpu-mini", "on", steps, data),
                repeats,
            )
        if args.ceiling:
            report_ceiling("cpu-mini", steps, data)
        if not args.skip_baby:
            print("gpu-baby (6 layers, 384 dims, block 256, batch 64), on this CPU:")
            median_mfu(
                "domaingpt, eager",
                "gpu-baby",
                lambda: trainer_tokens_per_s("gpu-baby", "off", 3, data),
                max(repeats // 2, 1),
            )
            if args.ceiling:
                report_ceiling("gpu-baby", 2, data)
    if not args.skip_ttq:
        print("time to quality:")
        time_to_quality(os.environ.get("DOMAINGPT_DATA") or str(REPO.parent / "shared" / "data"))


if __name__ == "__main__":
    main()
