"""The GPU's precision paths, on the CPU: the smoke study with bf16 autocast injected
(``DOMAINGPT_AUTOCAST=cpu:bfloat16``, as CUDA gets it) trains and scores in bf16 and
computes every float32-only quantity in float32, in every stage."""

from __future__ import annotations

import functools
import importlib
from collections import defaultdict
from contextvars import ContextVar

import pytest
import torch

from domaingpt.core import cka
from domaingpt.core.device import AUTOCAST_ENV
from domaingpt.model.gpt import GPT
from domaingpt.study import run_study

#: The code that calls the model's forward pass, and the precision it must run in: each
#: site is the functions through which every such call goes, ``(module, attribute)``,
#: patched where their callers look them up (their own module, or the one that imported
#: them by name).
SITES = {
    "training": ("bf16", [("domaingpt.training.trainer", "Trainer._call")]),
    "scoring": ("bf16", [("domaingpt.scoring.windows", "_score_torch")]),
    "softmax": ("float32", [("domaingpt.stages.softmax.results", "next_char_stats")]),  # entropies
    # the lens, attention patterns, residuals for CKA
    "internals": ("float32", [("domaingpt.context.activations", "compute_internals")]),
    "saliency": (  # attributions, their gradients, IG sums, deletion
        "float32",
        [
            ("domaingpt.stages.saliency.methods", "target_log_prob"),
            ("domaingpt.stages.saliency.faithfulness", "target_log_prob"),
        ],
    ),
    "samples": (  # train's and adapt's samples
        "float32",
        [
            ("domaingpt.training.samples", "generate_text"),
            ("domaingpt.stages.adapt.jobs", "generate_text"),
        ],
    ),
    # quality's samples, one batch per checkpoint
    "quality": ("float32", [("domaingpt.stages.quality.generate", "generate_batch")]),
}
DTYPES = {"bf16": torch.bfloat16, "float32": torch.float32}

#: The site whose function is running (``None``: none of them).
_site: ContextVar[str | None] = ContextVar("site", default=None)


def _labelled(function, site: str):
    """``function``, running with ``_site`` set to ``site`` (the innermost site wins)."""

    @functools.wraps(function)
    def call(*args, **kwargs):
        token = _site.set(site)
        try:
            return function(*args, **kwargs)
        finally:
            _site.reset(token)

    return call


@pytest.mark.slow  # the smoke study once more, training in emulated bf16
def test_smoke_study_in_bf16_keeps_float32_only_quantities_in_float32(
    tmp_path, corpora, monkeypatch
):
    seen: dict[str | None, set[torch.dtype]] = defaultdict(set)
    forward = GPT.forward

    def recording(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        seen[_site.get()].add(logits.dtype)
        return logits, loss

    hsic = cka._hsic
    cka_dtypes: set[torch.dtype] = set()

    def recording_hsic(x, *args):
        cka_dtypes.add(x.dtype)
        return hsic(x, *args)

    for site, (_, functions) in SITES.items():
        for module, attribute in functions:
            # (a package may export a function named like its submodule: import_module)
            owner = importlib.import_module(module)
            *path, name = attribute.split(".")
            for part in path:
                owner = getattr(owner, part)
            monkeypatch.setattr(owner, name, _labelled(getattr(owner, name), site))
    monkeypatch.setattr(GPT, "forward", recording)
    monkeypatch.setattr(cka, "_hsic", recording_hsic)
    monkeypatch.setenv(AUTOCAST_ENV, "cpu:bfloat16")
    result = run_study(corpora.smoke(), tmp_path / "run", progress=False)
    assert result.ok, [(o.stage, o.message) for o in result.failed]
    assert set(seen) == set(SITES)  # every site ran, and no forward pass outside them
    for site, (precision, _) in SITES.items():
        assert seen[site] == {DTYPES[precision]}, site
    assert cka_dtypes == {torch.float64}  # CKA: float64, which autocast never touches
