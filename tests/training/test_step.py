"""The training step: the optimizer is torch's AdamW, the step repeats bit for bit, its
gradient norm, and the ``train.step`` setting that only accepts the plain step now."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from domaingpt.core.config import RUNTIME_TRAIN_KEYS, build_config
from domaingpt.errors import ConfigError
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training.modeldir import recorded_config
from domaingpt.training.trainer import Trainer, make_optimizer

VOCAB = 60


@pytest.fixture(scope="module")
def ids(corpora) -> np.ndarray:
    """The synthetic verse corpus, ids 0..59 by character."""
    text = corpora.path("shakespeare").read_text(encoding="utf-8")
    index = {c: i % VOCAB for i, c in enumerate(sorted(set(text)))}
    return np.array([index[c] for c in text], dtype=np.uint16)


def trained(ids, steps: int = 15) -> tuple[list[float], torch.Tensor]:
    cfg = build_config("smoke")
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    trainer = Trainer(model, cfg.train, ids, torch.device("cpu"))
    losses = [float(trainer.step()) for _ in range(steps)]
    return losses, torch.cat([p.detach().flatten() for p in model.parameters()])


def test_a_run_repeats_bit_for_bit(ids):
    first_losses, first = trained(ids)
    again_losses, again = trained(ids)
    assert first_losses[-1] < first_losses[0] - 0.3  # it trains
    assert first_losses == again_losses
    assert torch.equal(first, again)


def test_the_step_setting_accepts_only_the_plain_step(tmp_path):
    assert build_config("smoke").train.step == build_config("cpu-mini").train.step == "plain"
    assert build_config("smoke", ["train.step=plain"]).train.step == "plain"
    assert "step" in RUNTIME_TRAIN_KEYS  # changing it re-runs nothing
    for removed in ("workers", "native"):  # an old study file: one clear line, nothing run
        with pytest.raises(ConfigError, match=rf"train\.step = '{removed}' no longer exists"):
            build_config("smoke", [f"train.step={removed}"])
    with pytest.raises(ConfigError, match=r"train\.step must be 'plain', got 'fast'"):
        build_config("smoke", ["train.step=fast"])
    # A model trained with a removed step by an earlier version still loads: the step
    # changed how fast it trained, not what.
    record = {"config": {**build_config("smoke").to_dict()}}
    record["config"]["train"] = {**record["config"]["train"], "step": "native"}
    (tmp_path / "run.json").write_text(json.dumps(record))
    cfg = recorded_config(tmp_path, [])
    assert cfg is not None and cfg.train.step == "plain"
    assert cfg.train.max_iters == build_config("smoke").train.max_iters


def test_the_optimizer_is_torchs_fused_adamw_with_decay_on_matrices_only():
    cfg = build_config("smoke")
    torch.manual_seed(0)
    ours_model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    theirs_model = GPT(GPTConfig(vocab_size=VOCAB, **cfg.model.__dict__))
    theirs_model.load_state_dict(ours_model.state_dict())
    ours = make_optimizer(ours_model, cfg.train, torch.device("cpu"))
    assert type(ours) is torch.optim.AdamW
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
