from __future__ import annotations

import pytest

from domaingpt.core.config import (
    apply_overrides,
    build_config,
    load_preset,
    log_schedule,
    preset_names,
)
from domaingpt.errors import ConfigError


def test_shipped_presets():
    assert {"smoke", "cpu-mini", "cpu-fast", "gpu-baby"} <= set(preset_names())
    mini = load_preset("cpu-mini")
    # nanoGPT's CPU recipe, exactly
    assert (mini.model.n_layer, mini.model.n_head, mini.model.n_embd, mini.model.block_size) == (
        4,
        4,
        128,
        64,
    )
    assert (mini.train.batch_size, mini.train.max_iters, mini.train.lr, mini.train.min_lr) == (
        12,
        2000,
        1e-3,
        1e-4,
    )
    assert (mini.train.warmup_iters, mini.train.beta2, mini.model.dropout) == (100, 0.99, 0.0)
    baby = load_preset("gpu-baby")
    assert (
        baby.model.n_layer,
        baby.model.n_embd,
        baby.model.block_size,
        baby.train.batch_size,
    ) == (6, 384, 256, 64)
    assert baby.model.dropout == 0.2 and baby.train.max_iters == 5000


def test_overrides_are_typed():
    cfg = build_config(
        "smoke", ["train.lr=3e-4", "model.n_layer=3", "train.checkpoints=[0, 5, 10]"]
    )
    assert cfg.train.lr == 3e-4 and cfg.model.n_layer == 3 and cfg.train.checkpoints == [0, 5, 10]
    assert build_config("smoke", ["train.lr=1"]).train.lr == 1.0  # int accepted for a float


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1e-3", "did you mean 'train.lr'"),
        ("model.n_embed=64", "did you mean 'model.n_embd'"),
        ("train.batch_size=abc", "must be an integer"),
        ("train.batch_size=0", "at least 1"),
        ("train.lr=-1", "0 < train.lr"),
        ("model.n_head=3", "divisible"),
        ("model.dropout=1.5", "dropout"),
        ("train.compile=maybe", "compile"),
        ("lr=1", "unknown config key"),
        ("nosection.x=1", "unknown config key"),
        ("train.lr", "key=value"),
        ("data.val_fraction=0", "val_fraction"),
    ],
)
def test_bad_overrides(override, message):
    with pytest.raises(ConfigError, match=message):
        build_config("smoke", [override])


def test_unknown_preset_and_bad_files(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'cpu-mini'"):
        load_preset("cpu-mni")
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_preset(str(bad))
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("[optim]\nlr = 1\n")
    with pytest.raises(ConfigError, match=r"unknown section \[optim\]"):
        load_preset(str(unknown))
    with pytest.raises(ConfigError, match="does not exist"):
        load_preset(str(tmp_path / "missing.toml"))


def test_apply_overrides_keeps_other_values():
    base = load_preset("cpu-mini")
    cfg = apply_overrides(base, ["train.max_iters=10"])
    assert cfg.train.max_iters == 10 and cfg.train.lr == base.train.lr and cfg.model == base.model


def test_log_schedule():
    assert log_schedule(2000) == [0, 10, 25, 50, 100, 250, 500, 1000, 2000]
    assert log_schedule(5000) == [0, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000]
    assert log_schedule(7) == [0, 7]


@pytest.mark.parametrize(
    "override",
    [
        "train.lr=inf",
        "train.lr=nan",
        "train.min_lr=nan",
        "train.weight_decay=nan",
        "train.grad_clip=nan",
        "train.beta1=nan",
        "model.dropout=nan",
        "data.val_fraction=nan",
        "train.lr=1e999",
    ],
)
def test_every_float_of_the_config_must_be_finite(override):
    """NaN passes every comparison (nan < 0 is False): it was accepted and trained to a
    different loss; now it is refused with the key named."""
    with pytest.raises(ConfigError, match=f"{override.split('=')[0]} must be a finite number"):
        build_config("smoke", [override])


@pytest.mark.parametrize(
    "override",
    ["train.seed=-1", "train.seed=18446744073709551616", "train.sample_seed=18446744073709551616"],
)
def test_seeds_must_fit_the_generators(override):
    with pytest.raises(ConfigError, match="seed"):
        build_config("smoke", [override])


def test_largest_seed_is_accepted_and_usable():
    import torch

    cfg = build_config("smoke", [f"train.seed={2**63 - 1}"])
    torch.Generator().manual_seed(cfg.train.seed)


def test_every_stage_setting_gets_the_finite_and_seed_checks():
    """Checked once in StageSettings for every stage, a user's own included."""
    from dataclasses import dataclass

    from domaingpt.core.settings import StageSettings, setting

    @dataclass(frozen=True)
    class MySettings(StageSettings):
        alpha: float = setting(0.5, "a float")
        steps: list[float] = setting([0.1], "floats")
        seed: int = setting(0, "a seed")
        first_seed: int = setting(1, "another seed")

    MySettings(alpha=1e300, seed=2**63 - 1)
    for kw in (
        {"alpha": float("nan")},
        {"alpha": float("-inf")},
        {"steps": [0.1, float("inf")]},
        {"seed": -1},
        {"first_seed": 2**64},
    ):
        with pytest.raises(ConfigError, match=r"finite|seed"):
            MySettings(**kw)
