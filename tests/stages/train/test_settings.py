"""``[train] vocabulary``: what the models trained here read, refused when unknown, and
in the stage's key only when it is not the default (a run made before it keeps its key)."""

from __future__ import annotations

import pytest

from domaingpt.errors import ConfigError
from domaingpt.stages.train.results import TrainSettings


def test_vocabulary_setting() -> None:
    with pytest.raises(ConfigError, match=r"^train.vocabulary = 'bytes': give one of auto, "):
        TrainSettings(preset="smoke", train={"vocabulary": "bytes"})
    chars = TrainSettings(preset="smoke", train={"vocabulary": "characters"})
    auto = TrainSettings(preset="smoke", train={"vocabulary": "auto"})
    assert chars.vocabulary == "characters" and auto.vocabulary == "auto"
    assert auto.key_dict() == TrainSettings(preset="smoke").key_dict()
    assert chars.key_dict()["vocabulary"] == "characters" and "vocabulary" not in auto.key_dict()
    assert "vocabulary" not in chars.config.to_dict()["train"]  # not a training setting
    # an imported model's corpus: its tokenizer for the models trained here
    named = TrainSettings(
        preset="smoke", train={"vocabulary": "math"}, models={"math": "hf:somewhere"}
    )
    assert named.vocabulary == "math" and named.key_dict()["vocabulary"] == "math"
    with pytest.raises(ConfigError, match=r"'wiki': give one of auto, characters, 'math' \("):
        TrainSettings(preset="smoke", train={"vocabulary": "wiki"}, models={"math": "hf:x"})
