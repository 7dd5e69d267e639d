"""The training step's two ways of computing gradients, and the optimizer without
``torch.optim``: same mathematics as the plain step, bitwise repeatable."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from domaingpt.core.config import RUNTIME_TRAIN_KEYS, build_config
from domaingpt.core.io import read_jsonl
from domaingpt.errors import ConfigError
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.adamw import AdamW
from domaingpt.training.native_step import NativeWorker
from domaingpt.training.trainer import Trainer, make_optimizer, step_kind
from domaingpt.training.workers import ParallelGrads, pick_engine, shard_bounds

VOCAB = 60


@pytest.fixture(scope="module")
def ids(corpora) -> np.ndarray:
    """The synthetic verse corpus, ids 0..59 by character."""
    text = corpora.path("shakespeare").read_text(encoding="utf-8")
    index = {c: i % VOCAB for i, c in enumerate(sorted(set(text)))}
    return np.array([index[c] for c in text], dtype=np.uint16)


def trained(
    ids, workers: int, steps: int = 30, step: str = "workers", model: dict | None = None, **train
) -> tuple[list[float], torch.Tensor]:
    """``workers`` 1: the plain step; else ``step`` (``workers`` or ``native``) on that many."""
    cfg = build_config("smoke")
    spec = dataclasses.replace(cfg.train, step=step if workers > 1 else "plain", **train)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **{**cfg.model.__dict__, **(model or {})}))
    trainer = Trainer(model, spec, ids, torch.device("cpu"), workers=workers)
    assert trainer.workers == workers
    assert trainer.step_kind == spec.step
    if workers > 1:
        assert trainer._parallel.engine == ("native" if step == "native" else "autograd")
    losses = [float(trainer.step()) for _ in range(steps)]
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(("workers", "step"), [(2, "native"), (3, "native"), (2, "workers")])
def test_worker_step_follows_the_plain_step(ids, workers, step):
    plain, _ = trained(ids, 1)
    parallel, _ = trained(ids, workers, step=step)
    assert plain[-1] < plain[0] - 0.3  # it trains
    np.testing.assert_allclose(parallel, plain, rtol=2e-5)


def test_native_step_without_biases_follows_the_plain_step(ids):
    no_bias = {"bias": False, "n_embd": 64, "n_head": 4}  # cpu-mini's: no biases, head size 16
    plain, _ = trained(ids, 1, model=no_bias)
    parallel, _ = trained(ids, 2, step="native", model=no_bias)
    np.testing.assert_allclose(parallel, plain, rtol=2e-5)


def test_worker_step_with_accumulation_follows_the_plain_step(ids):
    plain, _ = trained(ids, 1, steps=10, grad_accum=3, batch_size=5)
    parallel, _ = trained(ids, 2, steps=10, grad_accum=3, batch_size=5)
    np.testing.assert_allclose(parallel, plain, rtol=2e-5)


@pytest.mark.parametrize(("workers", "step"), [(1, "plain"), (2, "native"), (2, "workers")])
def test_a_run_repeats_bit_for_bit(ids, workers, step):
    first_losses, first = trained(ids, workers, steps=15, step=step)
    again_losses, again = trained(ids, workers, steps=15, step=step)
    assert first_losses == again_losses
    assert torch.equal(first, again)


@pytest.mark.parametrize("bias", [True, False])
def test_native_worker_gradients_equal_autograd(bias):
    """Every parameter's gradient, tied head and embedding included, on the cpu-mini shape
    with weights moved away from their initial values."""
    torch.manual_seed(1)
    cfg = GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=128, block_size=64, bias=bias)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    x, y = torch.randint(0, VOCAB, (2, 5, 64))
    _, loss = model(x, y)
    want = torch.autograd.grad(loss, list(model.parameters()))
    grad = torch.zeros(model.num_params(False))
    got_loss = NativeWorker(model, 5, grad).add(x, y, 0.5)
    assert float(got_loss) == pytest.approx(0.5 * float(loss.detach()), rel=1e-6)
    offset = 0
    for (name, p), g in zip(model.named_parameters(), want, strict=True):
        mine = grad[offset : offset + p.numel()].view_as(p)
        offset += p.numel()
        torch.testing.assert_close(
            mine, 0.5 * g, rtol=1e-4, atol=1e-5 * g.abs().max().item(), msg=name
        )


def test_engine_choice():
    cfg = build_config("smoke")
    ok = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    assert pick_engine(ok) == "native" and pick_engine(ok, "autograd") == "autograd"
    small_heads = GPT(GPTConfig(vocab_size=VOCAB, n_layer=1, n_head=4, n_embd=32, block_size=8))
    assert pick_engine(small_heads) == "autograd"  # head size 8: the kernels need 16
    with pytest.raises(ValueError, match="head size 8 is not a multiple of 16"):
        pick_engine(small_heads, "native")
    with pytest.raises(ValueError, match="engine must be one of"):
        pick_engine(ok, "fast")
    with pytest.raises(ValueError, match="at least 1 worker"):
        ParallelGrads(ok, 8, 0)


def test_shards_cover_the_batch_once():
    assert shard_bounds(12, 2) == [0, 6, 12]
    assert shard_bounds(5, 3) == [0, 2, 3, 5]
    assert shard_bounds(2, 4) == [0, 0, 1, 2, 2]  # empty shards are skipped


def test_the_plain_step_is_the_default_and_where_workers_do_not_apply(monkeypatch):
    cfg = build_config("smoke")
    assert cfg.train.step == build_config("cpu-mini").train.step == "plain"
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    cpu = torch.device("cpu")
    ids = np.arange(5000, dtype=np.uint16) % VOCAB
    trainer = Trainer(model, cfg.train, ids, cpu, workers=2)
    assert (trainer.step_kind, trainer.workers, trainer._parallel) == ("plain", 1, None)
    native = dataclasses.replace(cfg.train, step="native")
    assert step_kind(model, native, cpu, plain_only=False) == "native"
    with_dropout = GPT(GPTConfig(vocab_size=VOCAB, **{**cfg.model.__dict__, "dropout": 0.1}))
    assert step_kind(with_dropout, native, cpu, plain_only=False) == "plain"
    assert step_kind(model, native, cpu, plain_only=True) == "plain"  # DDP, torch.compile
    assert step_kind(model, native, torch.device("meta"), plain_only=False) == "plain"
    small_heads = GPT(GPTConfig(vocab_size=VOCAB, n_layer=1, n_head=4, n_embd=32, block_size=8))
    assert step_kind(small_heads, native, cpu, plain_only=False) == "workers"
    workers = dataclasses.replace(cfg.train, step="workers")
    assert Trainer(model, workers, ids, cpu, workers=1).step_kind == "plain"  # one core
    assert Trainer(model, native, ids, cpu, workers=1).step_kind == "native"
    monkeypatch.setenv("DOMAINGPT_AUTOCAST", "cpu:bfloat16")  # the workers are float32 only
    assert step_kind(model, native, cpu, plain_only=False) == "plain"


def test_the_step_setting_is_checked_and_changes_no_model():
    with pytest.raises(ConfigError, match=r"train\.step must be 'plain', 'workers' or 'native'"):
        build_config("smoke", ["train.step=fast"])
    assert build_config("smoke", ["train.step=native"]).train.step == "native"
    assert "step" in RUNTIME_TRAIN_KEYS  # changing it re-runs nothing


def test_adamw_updates_bitwise_as_torch_fused_adamw():
    cfg = build_config("smoke")
    torch.manual_seed(0)
    ours_model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    theirs_model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = make_optimizer(ours_model, cfg.train, torch.device("cpu"))
    assert isinstance(ours, AdamW) and isinstance(ours, torch.optim.Optimizer)
    assert all(g["fused"] for g in ours.param_groups)
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
    # torch's own schedulers take it (they refuse anything but a torch.optim.Optimizer)
    assert [g["lr"] for g in fresh.param_groups] == [5e-4, 5e-4]  # loaded with the state
    torch.optim.lr_scheduler.LambdaLR(fresh, lambda step: 0.5)
    assert [g["lr"] for g in fresh.param_groups] == [2.5e-4, 2.5e-4]


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


def test_domaingpt_train_with_the_native_step_follows_the_plain_step(tmp_path, train_smoke):
    """The opt-in end to end: the same losses to float32 rounding, the same model (a
    run trained with one step is the model the other would train: nothing re-trains)."""
    losses = {}
    for step in ("plain", "native"):
        assert train_smoke(tmp_path / step, f"train.step={step}", "train.threads=2") == 0
        rows = read_jsonl(tmp_path / step / "models" / "shakespeare" / "metrics.jsonl")
        losses[step] = [(r["train_loss"] or 0.0, r["val_loss"]) for r in rows]
    assert len(losses["native"]) == len(losses["plain"]) > 3
    np.testing.assert_allclose(losses["native"], losses["plain"], rtol=1e-4)
    assert losses["plain"][-1][1] < losses["plain"][0][1] - 1  # it trains
    again = train_smoke(tmp_path / "plain", "train.step=native", "train.threads=2")
    assert again == 2  # "already holds this model": the step is not part of it


@pytest.mark.parametrize("clip", [0.5, 0.0])
def test_grad_norm_is_the_total_norm_before_clipping(ids, clip):
    """The step's ``grad_norm``: the L2 norm of all gradients before clipping (what
    clip_grad_norm_ returns), the same whether the step clips or is asked for it."""
    cfg = build_config("smoke")
    spec = dataclasses.replace(cfg.train, grad_clip=clip)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    reference = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    reference.load_state_dict(model.state_dict())
    trainer = Trainer(model, spec, ids, torch.device("cpu"))
    x, y = Trainer(reference, spec, ids, torch.device("cpu")).sampler.next()  # same batch
    _, loss = reference(x, y)
    loss.backward()
    want = torch.cat([p.grad.flatten() for p in reference.parameters()]).norm().item()
    trainer.step(grad_norm=True)
    assert trainer.grad_norm.item() == pytest.approx(want, rel=1e-5)
    assert want > clip  # the clipped case clips: the norm is the one before clipping
    trainer.step()
    assert (trainer.grad_norm is None) == (clip == 0)  # no extra pass unless asked
