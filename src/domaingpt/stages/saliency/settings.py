"""The saliency stage's settings (``domaingpt saliency`` and a study's ``[saliency]``)."""

from __future__ import annotations

from dataclasses import dataclass

from domaingpt.context.prompts import UserPromptSettings
from domaingpt.core.settings import setting
from domaingpt.errors import ConfigError
from domaingpt.model.gpt import GPT
from domaingpt.stages.saliency.methods import Attribution, check_methods, make_method, quadrature


@dataclass(frozen=True)
class SaliencySettings(UserPromptSettings):
    """Settings of ``domaingpt saliency`` (also read from a ``[saliency]`` TOML table)."""

    methods: list[str] = setting(
        ["grad_norm", "input_x_grad", "integrated_gradients"], "attribution methods"
    )
    checkpoints: str = setting("final", "which checkpoints are explained", choices=("final", "all"))
    ig_steps: int = setting(32, "integrated-gradients steps")
    ig_method: str = setting("gausslegendre", "integrated-gradients quadrature", cli=False)
    ig_tolerance: float = setting(
        0.01, "completeness gap (nats) that triggers more steps", cli=False
    )
    ig_max_steps: int = setting(512, "most integrated-gradients steps", cli=False)
    deletion_k: list[int] = setting([1, 3, 8], "characters replaced in the deletion test")
    deletion_draws: int = setting(10, "random draws per prompt in the deletion test", cli=False)
    deletion_replacement: str = setting("unk", "replacement: unk or space", cli=False)
    bootstrap: int = setting(1000, "bootstrap resamples of the intervals", cli=False)
    seed: int = setting(0, "seed of the random draws and the bootstrap", cli=False)
    heatmap_prompts: int = setting(2, "prompts per corpus in heatmap.html", cli=False)
    adapted: bool = setting(True, "zero- vs few-shot through the adapted models", cli=False)
    batch_size: int = setting(64, "prompts per forward pass", cli=False)
    occlusion: list[str] = setting(
        ["unk", "space"],
        "occlusion baselines (unk, space) the gradient methods are compared with; empty: none",
    )
    occlusion_checkpoints: int = setting(
        3, "history checkpoints occluded, spread over the trained ones (0: every one)", cli=False
    )

    def check(self) -> None:
        super().check()
        object.__setattr__(self, "methods", check_methods(self.methods))
        if self.checkpoints not in ("final", "all"):
            raise ConfigError(f"checkpoints must be 'final' or 'all', got {self.checkpoints!r}")
        quadrature(self.ig_steps, self.ig_method)
        if self.deletion_replacement not in ("unk", "space"):
            raise ConfigError(
                f"deletion replacement must be 'unk' or 'space', got {self.deletion_replacement!r}"
            )
        if any(k < 1 for k in self.deletion_k) or self.deletion_draws < 1:
            raise ConfigError("deletion k values and deletion draws must be at least 1")
        bad = [b for b in self.occlusion if b not in ("unk", "space")]
        if bad:
            raise ConfigError(f"occlusion baselines are 'unk' and 'space', got {bad[0]!r}")
        object.__setattr__(self, "occlusion", list(dict.fromkeys(self.occlusion)))
        if self.occlusion_checkpoints < 0:
            raise ConfigError(
                f"occlusion_checkpoints must be 0 (every one) or more, got {self.occlusion_checkpoints}"
            )
        if self.batch_size < 1 or self.bootstrap < 10:
            raise ConfigError("batch size must be >= 1 and bootstrap >= 10")

    def method(self, name: str, model: GPT) -> Attribution:
        """The method ``name`` on ``model``, with these integrated-gradients settings."""
        return make_method(
            name,
            model,
            ig_steps=self.ig_steps,
            ig_method=self.ig_method,
            ig_tolerance=self.ig_tolerance,
            ig_max_steps=self.ig_max_steps,
        )
