"""The attribution methods against Captum, the reference implementation of each, on a
trained model and real prompts of different lengths.

Captum is in the ``test`` extra (part of ``dev``); off CI the tests skip without it.
Ours run batched (one forward and one backward per batch); Captum runs the same function
``log p(true next character)`` of the token embeddings as its ``forward_func``.
"""

from __future__ import annotations

import importlib
import os

import pytest
import torch

from domaingpt.data.vocab import UNK_ID
from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint
from domaingpt.stages.saliency import GradientNorm, InputXGradient, IntegratedGradients, Occlusion
from domaingpt.stages.saliency.methods import target_log_prob


def need(module: str):
    """The test extra is part of ``[dev]``: on CI a missing one fails, elsewhere it skips."""
    if os.environ.get("CI"):
        return importlib.import_module(module)
    return pytest.importorskip(module)


captum = need("captum.attr")
pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def case(smoke_study, corpora):
    """The smoke study's Shakespeare model, 6 real prompts (lengths 9 to 32, padded with
    <unk>) and each prompt's true next character."""
    loaded = load_checkpoint(find_checkpoint(smoke_study.root / "models" / "shakespeare"))
    model = loaded.model.eval()
    text = corpora.path("shakespeare").read_text()
    block = model.config.block_size
    lengths = torch.tensor([block, 9, 20, 32, 15, 27])
    ids = torch.full((len(lengths), block), UNK_ID, dtype=torch.long)
    targets = torch.empty(len(lengths), dtype=torch.long)
    for row, n in enumerate(lengths.tolist()):
        start = 10_000 + 997 * row
        encoded = loaded.vocab.encode(text[start : start + n + 1]).ids.tolist()
        ids[row, :n] = torch.tensor(encoded[:n])
        targets[row] = encoded[n]
    return model, ids, lengths, targets


def forward(model):
    def f(embeds: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return target_log_prob(model, embeds, lengths, targets)

    return f


def close(ours: torch.Tensor, theirs: torch.Tensor) -> float:
    """The largest difference relative to the largest value (float32 rounding: ~1e-6)."""
    ours, theirs = ours.detach(), theirs.detach()
    return float((ours - theirs).abs().max() / theirs.abs().max())


def test_gradient_norm_and_input_x_gradient_equal_captums(case):
    model, ids, lengths, targets = case
    embeds = model.embed(ids).detach().requires_grad_(True)  # Captum warns otherwise
    args = (lengths, targets)
    grad = captum.Saliency(forward(model)).attribute(
        embeds, abs=False, additional_forward_args=args
    )
    ours = GradientNorm(model).attribute(ids, targets, lengths)
    theirs = grad.norm(dim=-1)
    assert close(ours, theirs) < 1e-5
    assert (ours[1, 9:] == 0).all() and (theirs[1, 9:] == 0).all()  # padding: no effect
    ixg = captum.InputXGradient(forward(model)).attribute(embeds, additional_forward_args=args)
    assert close(InputXGradient(model).attribute(ids, targets, lengths), ixg.sum(-1)) < 1e-5


def test_integrated_gradients_equal_captums(case):
    model, ids, lengths, targets = case
    embeds = model.embed(ids).detach()
    theirs, theirs_delta = captum.IntegratedGradients(forward(model)).attribute(
        embeds,
        baselines=torch.zeros_like(embeds),
        additional_forward_args=(lengths, targets),
        n_steps=32,
        method="gausslegendre",
        return_convergence_delta=True,
    )
    ours, delta = IntegratedGradients(model, n_steps=32).attribute(
        ids, targets, lengths, return_convergence_delta=True
    )
    assert close(ours, theirs.sum(-1)) < 1e-5
    assert delta == pytest.approx(theirs_delta.tolist(), abs=1e-5)


def test_occlusion_equals_captums_one_character_window(case):
    model, ids, lengths, targets = case
    embeds = model.embed(ids).detach()
    C = embeds.shape[-1]
    unk = model.embed(torch.full_like(ids, UNK_ID)).detach()
    theirs = captum.Occlusion(forward(model)).attribute(
        embeds,
        sliding_window_shapes=(1, C),
        strides=(1, C),
        baselines=unk,
        additional_forward_args=(lengths, targets),
    )
    ours = Occlusion(model).attribute(ids, targets, lengths)
    assert (theirs == theirs[..., :1]).all()  # one score per character
    assert close(ours, theirs[..., 0]) < 1e-5
