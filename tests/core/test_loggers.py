"""The logger registry: names checked against it, ``--set`` lists, runtime keys (a change
of loggers retrains nothing), a missing extra as one line, and W&B's online/offline choice."""

from __future__ import annotations

import socket
import sys

import pytest

from domaingpt.core.config import RUNTIME_TRAIN_KEYS, build_config, from_dict, read_toml
from domaingpt.core.loggers import (
    EXTRA,
    LOGGERS,
    Loggers,
    require_loggers,
    wandb_reachable,
)
from domaingpt.errors import ConfigError
from domaingpt.stages.adapt import AdaptSettings
from domaingpt.stages.train import TrainSettings
from domaingpt.training.modeldir import ModelRecord, config_differences


def test_registry_and_default():
    assert list(LOGGERS) == ["csv", "tensorboard", "wandb"]
    assert build_config("smoke").train.loggers == ["csv"]


@pytest.mark.parametrize(
    ("item", "want"),
    [
        ("train.loggers=csv,tensorboard", ["csv", "tensorboard"]),
        ("train.loggers=tensorboard", ["tensorboard"]),
        ("train.loggers= csv , wandb ", ["csv", "wandb"]),
        ('train.loggers=["csv", "wandb"]', ["csv", "wandb"]),  # a TOML list, as --set reads
        ("train.loggers=", []),
    ],
)
def test_set_reads_a_comma_list_or_a_toml_list(item, want):
    assert build_config("smoke", [item]).train.loggers == want


def test_toml_list_in_a_preset_table():
    data = read_toml('[train]\nloggers = ["csv", "tensorboard"]\n', "test")
    assert from_dict(data).validate().train.loggers == ["csv", "tensorboard"]


def test_unknown_or_repeated_logger_is_refused():
    with pytest.raises(ConfigError, match=r"unknown logger 'nope'; known loggers are csv, "):
        build_config("smoke", ["train.loggers=csv,nope"])
    with pytest.raises(ConfigError, match="names a logger twice"):
        build_config("smoke", ["train.loggers=csv,csv"])
    with pytest.raises(ConfigError, match=r"adapt\.loggers: unknown logger 'tb'"):
        AdaptSettings(loggers=["tb"])
    with pytest.raises(ConfigError, match="must be a list of a string"):
        build_config("smoke", ["train.loggers=[1]"])


def test_loggers_are_runtime_keys():
    """A change of loggers is neither another model nor another stage result."""
    assert "loggers" in RUNTIME_TRAIN_KEYS
    a = TrainSettings(preset="smoke")
    b = TrainSettings(preset="smoke", train={"loggers": ["csv", "tensorboard"]})
    assert b.config.train.loggers == ["csv", "tensorboard"]
    assert a.key_dict() == b.key_dict()
    old = ModelRecord(config=a.config.to_dict())
    assert config_differences(old, ModelRecord(config=b.config.to_dict())) == []
    assert AdaptSettings().key_dict() == AdaptSettings(loggers=["wandb"]).key_dict()
    assert "loggers" not in AdaptSettings().key_dict()


@pytest.mark.parametrize(("name", "module"), [("tensorboard", "tensorboard"), ("wandb", "wandb")])
def test_missing_extra_is_one_line_naming_the_install(monkeypatch, name, module):
    monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
    with pytest.raises(ConfigError) as e:
        require_loggers(["csv", name])
    message = str(e.value)
    assert "\n" not in message
    assert message == (
        f"the {name} logger needs the {module} package, which is not installed: {EXTRA}"
    )
    assert EXTRA == "pip install 'domaingpt[loggers]'"
    require_loggers(["csv"])  # csv needs nothing


class _Recording:
    def __init__(self, fail_close: bool = False) -> None:
        self.rows: list[tuple[int, dict]] = []
        self.closed = False
        self.fail_close = fail_close

    def log(self, step, scalars):
        self.rows.append((step, dict(scalars)))

    def close(self):
        self.closed = True
        if self.fail_close:
            raise RuntimeError("close failed")


def test_loggers_fan_out_drop_none_and_close_every_one():
    a, b = _Recording(fail_close=True), _Recording()
    both = Loggers([a, b])
    both.log(0, {"train_loss": None, "val_loss": 4.5, "tokens_per_s": None})
    both.log(5, {"train_loss": None})  # nothing left: not logged
    both.log(10, {"train_loss": 3, "val_loss": 3.5})
    assert a.rows == b.rows == [(0, {"val_loss": 4.5}), (10, {"train_loss": 3.0, "val_loss": 3.5})]
    with pytest.raises(RuntimeError, match="close failed"):
        both.close()
    assert a.closed and b.closed


@pytest.fixture
def no_wandb_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))


def test_wandb_offline_without_a_key(no_wandb_key, monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("no key: the network must not be tried")

    monkeypatch.setattr(socket, "create_connection", refuse)
    assert wandb_reachable() is False


def test_wandb_key_from_netrc_and_server_probe(no_wandb_key, monkeypatch, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    try:
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{port}")
        netrc_file = tmp_path / "netrc"
        netrc_file.write_text("machine 127.0.0.1\n  login user\n  password KEY\n")
        netrc_file.chmod(0o600)
        monkeypatch.setenv("NETRC", str(netrc_file))
        assert wandb_reachable() is True  # a key and a server that answers: online
    finally:
        server.close()
    # The same key, the server gone: offline (a refused connection, no waiting).
    assert wandb_reachable() is False
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_API_KEY", "KEY")
    assert wandb_reachable() is False
