"""Where and in what precision things run (domaingpt.core.device): the autocast policy and
its test override, float32-only computations that stay float32 inside a caller's bf16
autocast, and out-of-memory as one line naming the batch size to lower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domaingpt.context.activations import compute_internals
from domaingpt.context.prompts import Prompt, PromptSet
from domaingpt.core.config import build_config
from domaingpt.core.device import (
    AUTOCAST_ENV,
    OutOfMemory,
    autocast_dtype,
    is_out_of_memory,
    oom_hint,
)
from domaingpt.data.vocab import Vocab
from domaingpt.errors import ConfigError
from domaingpt.model.generate import generate_text
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.scoring import cpu_engine, score_windows
from domaingpt.stages.saliency.faithfulness import deletion_test
from domaingpt.stages.saliency.methods import (
    METHODS,
    attribute_prompts,
    baseline_log_p,
    make_method,
)
from domaingpt.stages.softmax.compute import next_char_stats
from domaingpt.training.trainer import Trainer

CPU = torch.device("cpu")
TEXT = "ab cd ef gh ij kl mn op"


def tiny() -> GPT:
    torch.manual_seed(0)
    # head size 16: the native CPU engine could score it, were it not for autocast
    return GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=12)).eval()


def prompts(n: int = 3, T: int = 10) -> PromptSet:
    ids = np.random.default_rng(0).integers(1, 12, (n, T + 1))
    return PromptSet(
        [Prompt(i, "a", 0, TEXT[i : i + T], "x", ids[i, :T], int(ids[i, T]), 0) for i in range(n)]
    )


class HeadDtypes:
    """The dtype of every logits tensor the model's head produces."""

    def __init__(self, model: GPT) -> None:
        self.seen: list[torch.dtype] = []
        model.head.register_forward_hook(lambda m, a, out: self.seen.append(out.dtype))

    def take(self) -> set[torch.dtype]:
        seen, self.seen = set(self.seen), []
        return seen


def test_autocast_policy_and_its_override(monkeypatch):
    monkeypatch.delenv(AUTOCAST_ENV, raising=False)
    assert autocast_dtype(CPU) is None  # float32 on a CPU by default
    monkeypatch.setenv(AUTOCAST_ENV, "cpu:bfloat16")
    assert autocast_dtype(CPU) is torch.bfloat16
    assert autocast_dtype(torch.device("cuda")) is None  # the override names its device
    monkeypatch.setenv(AUTOCAST_ENV, "off")
    assert autocast_dtype(CPU) is None
    monkeypatch.setenv(AUTOCAST_ENV, "cpu:fp8")
    with pytest.raises(ConfigError, match="DEVICE:DTYPE"):
        autocast_dtype(CPU)


def test_training_and_scoring_run_in_the_injected_bf16(monkeypatch):
    """Training and scoring follow the autocast policy; the native float32 engine steps
    aside when the policy asks for bf16 (as it always does on a GPU)."""
    model = tiny()
    dtypes = HeadDtypes(model)
    ids = np.random.default_rng(1).integers(1, 12, 400)
    monkeypatch.setenv(AUTOCAST_ENV, "cpu:bfloat16")
    assert "DOMAINGPT_AUTOCAST asks for torch.bfloat16" in cpu_engine.unsupported(model)
    score_windows(model, ids)
    assert dtypes.take() == {torch.bfloat16}
    cfg = build_config("smoke", ["model.block_size=16", "train.batch_size=4"])
    trainer = Trainer(model, cfg.train, ids, CPU)
    trainer.step()
    assert dtypes.take() == {torch.bfloat16}
    monkeypatch.delenv(AUTOCAST_ENV)
    trainer.step()
    assert dtypes.take() == {torch.float32}


def test_float32_only_computations_stay_float32_inside_bf16_autocast(monkeypatch):
    """Entropies and p(true), the lens and attention patterns, every attribution method
    (integrated gradients' sums and the baseline), the deletion test and sampled text are
    computed in float32 even when the caller wraps them in bf16 autocast."""
    monkeypatch.setenv(AUTOCAST_ENV, "cpu:bfloat16")
    model = tiny()
    dtypes = HeadDtypes(model)
    ps = prompts()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model(torch.ones(1, 4, dtype=torch.long))
        assert dtypes.take() == {torch.bfloat16}  # the caller's autocast is real
        next_char_stats(model, ps)
        assert dtypes.take() == {torch.float32}
        rec = compute_internals(model, ps)
        assert dtypes.take() == {torch.float32}
        assert rec.resid.dtype == np.float32
        for name in METHODS:
            method = make_method(name, model, ig_steps=4)
            res = attribute_prompts(method, ps, batch_size=2)
            assert dtypes.take() == {torch.float32}, name
            assert np.isfinite(res.values).all()
        baseline_log_p(model, ps, CPU, 2)
        deletion_test(model, ps, res.values, 2, draws=2)
        generate_text(model, Vocab.from_texts(["abcdefghijk"]), "ab", 5)
        assert dtypes.take() == {torch.float32}


def test_out_of_memory_is_one_line_naming_the_batch_size():
    with pytest.raises(OutOfMemory) as e, oom_hint("train.batch_size", 64):
        raise torch.cuda.OutOfMemoryError(
            "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 139 GiB total)\nmore"
        )
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("out of memory (CUDA out of memory. Tried to allocate 2.00 GiB")
    assert message.endswith("lower train.batch_size (it is 64; try 32)")
    with (
        pytest.raises(OutOfMemory, match=r"lower adapt.batch_size$"),
        oom_hint("adapt.batch_size", None),
    ):
        raise RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)")
    # anything else passes through
    with pytest.raises(ValueError, match="not memory"), oom_hint("probe.batch_size", 8):
        raise ValueError("not memory")
    assert is_out_of_memory(MemoryError()) and not is_out_of_memory(RuntimeError("shape"))


def test_an_out_of_memory_training_step_is_a_one_line_cli_error(
    cli_error, tmp_path, corpora, monkeypatch
):
    def no_memory(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

    monkeypatch.setattr(Trainer, "step", no_memory)
    err = cli_error(
        "train",
        corpora.path("shakespeare"),
        "--vocab",
        corpora.vocab,
        "--preset",
        "smoke",
        "--quiet",
        "--out",
        tmp_path,
    )
    assert "lower train.batch_size (it is 8; try 4)" in err
