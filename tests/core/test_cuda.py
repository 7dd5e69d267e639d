"""On an NVIDIA GPU (skipped without one; ``pytest -m cuda`` runs only these):
bf16 autocast where it is safe and float32 where it is not, compile + DDP wrapping on one
GPU, the native CPU engine never chosen, generation on the GPU, out of memory as one
line, and checkpoints written from GPU tensors loading on a CPU-only process.

``benchmarks/gpu_check.sh`` runs them on a lent GPU."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from domaingpt.context.activations import compute_internals
from domaingpt.context.prompts import Prompt, PromptSet
from domaingpt.core.config import build_config
from domaingpt.core.device import OutOfMemory, autocast_dtype, oom_hint, pick_device
from domaingpt.core.distributed import DistContext
from domaingpt.data.vocab import Vocab
from domaingpt.errors import DomainGPTError
from domaingpt.model.checkpoint import (
    CheckpointMeta,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from domaingpt.model.generate import generate_text
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import cpu_engine, score_windows
from domaingpt.stages.saliency.methods import METHODS, attribute_prompts, make_method
from domaingpt.stages.softmax.compute import next_char_stats
from domaingpt.training.trainer import Trainer

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

CUDA = torch.device("cuda", 0)
TEXT = "ab cd ef gh ij kl mn op"


def model_on(device: torch.device, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(n_layer=2, n_head=2, n_embd=64, block_size=32, vocab_size=12)
    return GPT(cfg).to(device).eval()


def prompts(n: int = 4, T: int = 16) -> PromptSet:
    ids = np.random.default_rng(0).integers(1, 12, (n, T + 1))
    return PromptSet(
        [Prompt(i, "a", 0, TEXT[i : i + T], "x", ids[i, :T], int(ids[i, T]), 0) for i in range(n)]
    )


def head_dtypes(model: GPT) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model.head.register_forward_hook(lambda m, a, out: seen.append(out.dtype))
    return seen


def test_auto_picks_the_gpu_and_bf16_autocast_where_it_is_safe():
    assert pick_device("auto").type == "cuda"
    assert torch.cuda.is_bf16_supported()
    assert autocast_dtype(CUDA) is torch.bfloat16
    model = model_on(CUDA)
    seen = head_dtypes(model)
    ids = np.random.default_rng(1).integers(1, 12, 5000)
    scores = score_windows(model, ids, batch_size=32)
    assert set(seen) == {torch.bfloat16} and np.isfinite(scores.nll).all()
    seen.clear()
    cfg = build_config("smoke", ["model.block_size=32", "train.batch_size=8"])
    trainer = Trainer(model, cfg.train, ids, CUDA)
    loss = trainer.step()
    assert set(seen) == {torch.bfloat16} and loss.device.type == "cuda"
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights


def test_float32_where_bf16_is_not_safe_even_inside_autocast():
    model = model_on(CUDA)
    seen = head_dtypes(model)
    ps = prompts()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        next_char_stats(model, ps, device=CUDA)
        rec = compute_internals(model, ps, device=CUDA)
        for name in METHODS:
            attribute_prompts(make_method(name, model, ig_steps=8), ps, device=CUDA)
        text = generate_text(model, Vocab.from_texts(["abcdefghijk"]), "ab", 20, seed=3)
    assert set(seen) == {torch.float32}
    assert rec.resid.dtype == np.float32 and np.isfinite(rec.lens_entropy).all()
    assert text == generate_text(model, Vocab.from_texts(["abcdefghijk"]), "ab", 20, seed=3)


def test_the_native_cpu_engine_is_never_chosen_on_a_gpu():
    model = model_on(CUDA)
    assert "cuda" in cpu_engine.unsupported(model)
    assert "forward pass" in cpu_engine.describe(model)
    with pytest.raises(DomainGPTError, match="native scoring engine cannot run here"):
        score_windows(model, np.arange(1, 12).repeat(20), engine="native")


def test_compiled_ddp_wrapping_on_one_gpu(tmp_path, capsys):
    """The DDP module is what gets compiled, ``no_sync`` is on the DDP handle, and
    grad_accum 2 trains: one NCCL rank on this GPU."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("nccl", init_method=f"file://{tmp_path}/pg", rank=0, world_size=1)
    try:
        cfg = build_config(
            "smoke", ["model.block_size=32", "train.batch_size=16", "train.grad_accum=2"]
        )
        spec = dataclasses.replace(cfg.train, compile="on")
        model = model_on(CUDA).train()
        ids = np.random.default_rng(2).integers(1, 12, 20000)
        # world 2 in the context: the trainer wraps in DDP (over the 1-rank group here)
        trainer = Trainer(model, spec, ids, CUDA, DistContext(0, 2, 0, CUDA))
        assert isinstance(trainer._ddp, DistributedDataParallel)
        assert trainer._forward._orig_mod is trainer._ddp  # compiled: the DDP module
        losses = [float(trainer.step()) for _ in range(30)]
        assert "running eagerly" not in capsys.readouterr().out
        assert np.isfinite(losses).all() and losses[-1] < losses[0]
    finally:
        dist.destroy_process_group()


def test_out_of_memory_on_the_gpu_is_one_line():
    hint = r"lower evaluate.batch_size \(it is 128; try 64\)$"
    with pytest.raises(OutOfMemory, match=hint), oom_hint("evaluate.batch_size", 128):
        torch.empty(int(4e12), dtype=torch.uint8, device=CUDA)  # 4 TB


def test_checkpoints_from_gpu_tensors_load_on_a_cpu_only_process(tmp_path):
    cfg = build_config("smoke", ["model.block_size=32", "train.batch_size=8"])
    model = model_on(CUDA).train()
    ids = np.random.default_rng(3).integers(1, 12, 5000)
    trainer = Trainer(model, cfg.train, ids, CUDA)
    for _ in range(5):
        trainer.step()
    vocab = Vocab.from_texts(["abcdefghijk"])
    save_checkpoint(tmp_path, "iter", 5, model.eval(), vocab, CheckpointMeta())
    save_checkpoint(tmp_path, "resume", 5, model, vocab, CheckpointMeta(), trainer.state_tensors())
    probe = torch.arange(1, 12).view(1, 11)
    with torch.no_grad():
        expected = model(probe.to(CUDA))[0].float().cpu().numpy()
    np.save(tmp_path / "expected.npy", expected)
    code = textwrap.dedent(
        f"""
        import numpy as np, torch
        from domaingpt.core.config import build_config
        from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint, newest_valid
        from domaingpt.training.trainer import Trainer
        from pathlib import Path
        assert not torch.cuda.is_available()
        root = Path({str(tmp_path)!r})
        loaded = load_checkpoint(find_checkpoint(root, 5))
        with torch.no_grad():
            got = loaded.model(torch.arange(1, 12).view(1, 11))[0].numpy()
        np.testing.assert_allclose(got, np.load(root / "expected.npy"), atol=1e-4)
        resume = newest_valid(root, "resume")
        cfg = build_config("smoke", ["model.block_size=32", "train.batch_size=8"])
        trainer = Trainer(resume.model, cfg.train, np.arange(1, 12).repeat(500), torch.device("cpu"))
        trainer.load_state(resume.tensors, resume.iteration)
        assert np.isfinite(float(trainer.step()))
        print("loaded on the CPU")
        """
    )
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "loaded on the CPU" in done.stdout
    assert find_checkpoint(tmp_path, 5).tensor_sha256
    assert load_checkpoint(find_checkpoint(tmp_path, 5)).model.tok_emb.weight.device.type == "cpu"
