"""A training step that cannot fit in memory is refused before anything is written, and
one that runs out anyway is one line naming the settings to lower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from domaingpt.core.config import build_config
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.training import memory
from domaingpt.training.memory import check_fits, out_of_memory, parameter_count, step_memory
from domaingpt.training.trainer import Trainer


@pytest.mark.parametrize("preset", ["smoke", "cpu-mini", "cpu-fast", "gpu-baby"])
def test_parameter_count_is_the_models(preset):
    cfg = build_config(preset)
    model = GPT(GPTConfig(vocab_size=300, **cfg.model.__dict__))
    assert parameter_count(cfg.model, 300) == sum(p.numel() for p in model.parameters())


def test_the_shipped_presets_fit_and_absurd_shapes_do_not(monkeypatch):
    monkeypatch.setattr(memory, "machine_memory", lambda: 8 * 2**30)  # an 8 GiB laptop
    for preset in ("smoke", "cpu-mini", "cpu-fast", "gpu-baby"):
        assert check_fits(build_config(preset), 400).total < 3 * 2**30
    for override, setting in [
        ("model.n_embd=1000000", "n_embd 1000000"),
        ("train.batch_size=100000000", "batch_size 100000000"),
        ("model.block_size=100000", "block_size 100000"),
    ]:
        with pytest.raises(ConfigError, match=rf"{setting}.*lower train\.batch_size"):
            check_fits(build_config("cpu-mini", [override]), 400)
    # a GPU's memory is not checked up front (only by running)
    check_fits(build_config("cpu-mini", ["model.block_size=100000"]), 400, device_type="cuda")


def test_the_bound_is_below_what_a_step_really_takes():
    """The activation bound (12 floats per position, channel and layer) is under the
    18-22 measured; here: under what autograd keeps for one step, by its saved tensors."""
    cfg = build_config("cpu-fast", ["model.block_size=256", "train.batch_size=4"])
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=100, **cfg.model.__dict__))
    saved = 0

    def pack(t):
        nonlocal saved
        saved += t.numel() * t.element_size()
        return t

    x = torch.randint(0, 100, (4, 256))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        model(x, x)
    assert step_memory(cfg.model, cfg.train, 100).activation_bytes < saved


def test_running_out_of_memory_is_one_line_naming_what_to_lower():
    cpu_oom = RuntimeError(
        "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
        "memory: you tried to allocate 40000000000000 bytes."
    )
    for error in (cpu_oom, MemoryError(), torch.OutOfMemoryError("CUDA out of memory.")):
        with (
            pytest.raises(DomainGPTError, match=r"out of memory in a step.*lower") as e,
            out_of_memory("in a step"),
        ):
            raise error
        assert "\n" not in str(e.value)
    with pytest.raises(RuntimeError, match="shape mismatch"), out_of_memory("in a step"):
        raise RuntimeError("shape mismatch")  # any other error is not turned into this one


def test_a_training_step_that_runs_out_of_memory_says_so(monkeypatch):
    cfg = build_config("smoke")
    model = GPT(GPTConfig(vocab_size=20, **cfg.model.__dict__))
    ids = np.arange(2000, dtype=np.uint16) % 20
    trainer = Trainer(model, cfg.train, ids, torch.device("cpu"))

    def boom(*a, **k):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried 9 TB")

    monkeypatch.setattr(model, "forward", boom)
    with pytest.raises(DomainGPTError, match=r"batch_size 8.*lower train\.batch_size"):
        trainer.step()
