"""The training step's two ways of computing gradients, and the optimizer without
``torch.optim``: same mathematics as the plain step, bitwise repeatable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from domaingpt.core.config import build_config
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.adamw import AdamW
from domaingpt.training.trainer import Trainer, make_optimizer, step_workers
from domaingpt.training.workers import shard_bounds

VOCAB = 60


@pytest.fixture(scope="module")
def ids(data_dir) -> np.ndarray:
    """The first 100,000 characters of Shakespeare, ids 0..59 by character."""
    text = (data_dir / "shakespeare.txt").read_text(encoding="utf-8")[:100_000]
    index = {c: i % VOCAB for i, c in enumerate(sorted(set(text)))}
    return np.array([index[c] for c in text], dtype=np.uint16)


def trained(ids, workers: int, steps: int = 30, **train) -> tuple[list[float], torch.Tensor]:
    cfg = build_config("smoke")
    spec = dataclasses.replace(cfg.train, **train)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    trainer = Trainer(model, spec, ids, torch.device("cpu"), workers=workers)
    assert trainer.workers == workers
    losses = [float(trainer.step()) for _ in range(steps)]
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize("workers", [2, 3])
def test_worker_step_follows_the_plain_step(ids, workers):
    plain, _ = trained(ids, 1)
    parallel, _ = trained(ids, workers)
    assert plain[-1] < plain[0] - 0.3  # it trains
    np.testing.assert_allclose(parallel, plain, rtol=2e-5)


def test_worker_step_with_accumulation_follows_the_plain_step(ids):
    plain, _ = trained(ids, 1, steps=10, grad_accum=3, batch_size=5)
    parallel, _ = trained(ids, 2, steps=10, grad_accum=3, batch_size=5)
    np.testing.assert_allclose(parallel, plain, rtol=2e-5)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_run_repeats_bit_for_bit(ids, workers):
    first_losses, first = trained(ids, workers, steps=15)
    again_losses, again = trained(ids, workers, steps=15)
    assert first_losses == again_losses
    assert torch.equal(first, again)


def test_shards_cover_the_batch_once():
    assert shard_bounds(12, 2) == [0, 6, 12]
    assert shard_bounds(5, 3) == [0, 2, 3, 5]
    assert shard_bounds(2, 4) == [0, 0, 1, 2, 2]  # empty shards are skipped


def test_the_plain_step_where_workers_do_not_apply():
    cfg = build_config("smoke")
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    cpu = torch.device("cpu")
    with_dropout = GPT(GPTConfig(vocab_size=VOCAB, **{**cfg.model.__dict__, "dropout": 0.1}))
    assert step_workers(with_dropout, cfg.train, cpu, plain_only=False) == 1
    assert step_workers(model, cfg.train, cpu, plain_only=True) == 1
    assert step_workers(model, cfg.train, torch.device("meta"), plain_only=False) == 1
    one_row = dataclasses.replace(cfg.train, batch_size=1)
    assert step_workers(model, one_row, cpu, plain_only=False) == 1


def test_adamw_updates_bitwise_as_torch_fused_adamw():
    cfg = build_config("smoke")
    torch.manual_seed(0)
    ours_model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    theirs_model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = make_optimizer(ours_model, cfg.train, torch.device("cpu"))
    assert isinstance(ours, AdamW)
    params = list(theirs_model.parameters())
    theirs = torch.optim.AdamW(
        [
            {"params": [p for p in params if p.dim() >= 2], "weight_decay": 0.1},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
        ],
        lr=1e-3,
        betas=(cfg.train.beta1, cfg.train.beta2),
        fused=True,
    )
    x = torch.randint(0, VOCAB, (4, 16))
    for lr in (1e-3, 3e-3, 5e-4):
        for model, opt in ((ours_model, ours), (theirs_model, theirs)):
            for g in opt.param_groups:
                g["lr"] = lr
            model(x, x)[1].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    for a, b in zip(ours_model.parameters(), theirs_model.parameters(), strict=True):
        assert torch.equal(a, b)
    # the same state, in the same layout: a checkpoint of one resumes the other
    mine, torchs = ours.state_dict()["state"], theirs.state_dict()["state"]
    assert mine.keys() == torchs.keys()
    for idx in mine:
        assert mine[idx].keys() == torchs[idx].keys()
        for key in mine[idx]:
            assert torch.equal(mine[idx][key], torchs[idx][key])
    fresh = make_optimizer(ours_model, cfg.train, torch.device("cpu"))
    fresh.load_state_dict(theirs.state_dict())
    for idx, values in fresh.state_dict()["state"].items():
        for key, value in values.items():
            assert torch.equal(value, torchs[idx][key])


def test_a_cpu_training_step_never_imports_the_compiler():
    code = (
        "import sys, numpy as np, torch\n"
        "from domaingpt.core.config import build_config\n"
        "from domaingpt.model.gpt import GPT, GPTConfig\n"
        "from domaingpt.training.trainer import Trainer\n"
        "cfg = build_config('smoke')\n"
        "m = GPT(GPTConfig(vocab_size=60, **cfg.model.__dict__))\n"
        "ids = np.arange(5000, dtype=np.uint16) % 60\n"
        "t = Trainer(m, cfg.train, ids, torch.device('cpu'))\n"
        "t.step(); t.state_tensors()\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
