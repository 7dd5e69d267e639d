"""Encoding a corpus larger than memory: peak resident memory and MB/s.

Run by hand: ``python benchmarks/bench_encode.py [--size-mb 1024]``.

Generates a text corpus of the given size (Shakespeare lines with some non-ASCII words,
so chunk boundaries fall inside multi-byte characters), then, in a fresh child process:
checksums it, builds the vocabulary and encodes it to the id memmap (each a streaming
pass), and runs a few training steps on the memmap. Prints the time and rate of every
pass and the child's peak resident memory (target: under 300 MB for 1 GB of text).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = r"""
import json, sys, time, resource
from pathlib import Path
from domaingpt.data.corpus import resolve_corpus
from domaingpt.data.encoding import encode_corpus
from domaingpt.data.vocab import Vocab

path = sys.argv[1]
out = {}
t = time.perf_counter(); corpus = resolve_corpus(path); out["checksum_s"] = time.perf_counter() - t
t = time.perf_counter(); vocab = Vocab.from_texts(corpus.iter_text()); out["vocab_s"] = time.perf_counter() - t
t = time.perf_counter(); enc = encode_corpus(corpus, vocab); out["encode_s"] = time.perf_counter() - t
out["rss_after_encode_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["n_ids"] = len(enc.ids)
out["vocab_size"] = vocab.size
import torch  # only now: encoding does not need it
from domaingpt.core.config import build_config
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.trainer import Trainer

cfg = build_config("smoke")
train_ids, _ = enc.split(0.1)
model = GPT(GPTConfig(vocab_size=vocab.size, **cfg.model.__dict__))
t = time.perf_counter()
trainer = Trainer(model, cfg.train, train_ids, torch.device("cpu"))
for _ in range(5):
    trainer.step()
out["train_start_s"] = time.perf_counter() - t
out["rss_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def make_corpus(path: Path, size_mb: int, seed_text: str) -> None:
    extra = " Zürich naïve café 万 ش Æ ω — “quoted” "
    block = (seed_text + extra) * 4
    data = block.encode("utf-8")
    target = size_mb * 1024 * 1024
    with open(path, "wb") as f:
        written = 0
        while written < target:
            chunk = data[: target - written]
            # never cut a multi-byte character at the very end of the file
            chunk = chunk.decode("utf-8", errors="ignore").encode("utf-8")
            f.write(chunk)
            written += len(chunk)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=int, default=1024)
    args = ap.parse_args()
    data_dir = os.environ.get("DOMAINGPT_DATA") or str(
        Path(__file__).resolve().parents[2] / "shared" / "data"
    )
    seed_text = (Path(data_dir) / "shakespeare.txt").read_text()[:200_000]
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "big.txt"
        t = time.perf_counter()
        make_corpus(corpus, args.size_mb, seed_text)
        size = corpus.stat().st_size
        print(f"generated {size / 2**20:,.0f} MiB in {time.perf_counter() - t:.1f} s")
        env = dict(os.environ, XDG_CACHE_HOME=str(Path(tmp) / "cache"))
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, str(corpus)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        import json

        r = json.loads(proc.stdout.strip().splitlines()[-1])
    mb = size / 2**20
    print(f"characters: {r['n_ids']:,}, vocabulary {r['vocab_size']} ids")
    for key, label in (
        ("checksum_s", "sha256 pass"),
        ("vocab_s", "vocabulary pass"),
        ("encode_s", "encode pass"),
    ):
        print(f"  {label:<16} {r[key]:6.1f} s   {mb / r[key]:7.1f} MB/s")
    print(f"  first 5 training steps on the memmap: {r['train_start_s']:.2f} s")
    print(
        f"peak RSS while encoding (torch not imported): {r['rss_after_encode_mb']:.0f} MB "
        f"(target < 300 MB); after importing torch and training: {r['rss_peak_mb']:.0f} MB"
    )
    print(
        f"(benchmark parent RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)"
    )


if __name__ == "__main__":
    main()
