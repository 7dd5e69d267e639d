"""The GPU's precision paths, on the CPU: the smoke study with bf16 autocast injected
(``DOMAINGPT_AUTOCAST=cpu:bfloat16``, as CUDA gets it) trains and scores in bf16 and
computes every float32-only quantity in float32, in every stage."""

from __future__ import annotations

import sys
from collections import defaultdict

import pytest
import torch

from domaingpt.core import cka
from domaingpt.core.device import AUTOCAST_ENV
from domaingpt.model.gpt import GPT
from domaingpt.study import load_study, run_study

#: Where the model's forward pass is called from, and the precision it must run in.
BF16 = {"domaingpt.training.trainer", "domaingpt.scoring.windows"}
FLOAT32 = {
    "domaingpt.stages.softmax.compute",  # entropies, p(true)
    "domaingpt.context.activations",  # the lens, attention patterns, residuals for CKA
    "domaingpt.stages.saliency.methods",  # attributions, their gradients, IG sums, deletion
    "domaingpt.model.generate",  # samples (train, adapt)
    "domaingpt.stages.quality.generate",  # quality's samples, one batch per checkpoint
}


def _site() -> str:
    """The first domaingpt module outside the model that led to this forward pass."""
    frame = sys._getframe(2)
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name.startswith("domaingpt.") and name != "domaingpt.model.gpt":
            return name
        frame = frame.f_back
    return "?"


@pytest.mark.slow  # the smoke study once more, training in emulated bf16
def test_smoke_study_in_bf16_keeps_float32_only_quantities_in_float32(
    tmp_path, data_dir, monkeypatch
):
    seen: dict[str, set[torch.dtype]] = defaultdict(set)
    forward = GPT.forward

    def recording(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        seen[_site()].add(logits.dtype)
        return logits, loss

    hsic = cka._hsic
    cka_dtypes: set[torch.dtype] = set()

    def recording_hsic(x, *args):
        cka_dtypes.add(x.dtype)
        return hsic(x, *args)

    monkeypatch.setattr(GPT, "forward", recording)
    monkeypatch.setattr(cka, "_hsic", recording_hsic)
    monkeypatch.setenv(AUTOCAST_ENV, "cpu:bfloat16")
    result = run_study(
        load_study(preset="smoke"), tmp_path / "run", data_dir=data_dir, progress=False
    )
    assert result.ok, [(o.stage, o.message) for o in result.failed]
    assert set(seen) == BF16 | FLOAT32  # every path ran, and no other
    for site in BF16:
        assert seen[site] == {torch.bfloat16}, site
    for site in FLOAT32:
        assert seen[site] == {torch.float32}, site
    assert cka_dtypes == {torch.float64}  # CKA: float64, which autocast never touches
