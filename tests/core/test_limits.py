"""Reads of files a user names are bounded, numbers read from files are checked against
the limits before anything is allocated, thread counts are bounded by the machine, and
the environment is checked before a command writes anything."""

from __future__ import annotations

import errno
import os
import threading

import pytest
import torch

from domaingpt.core.config import build_config
from domaingpt.core.environment import check_environment
from domaingpt.core.io import read_user_text
from domaingpt.core.limits import (
    MODEL_LIMITS,
    bounded_float,
    bounded_int,
    check_model_shape,
    max_threads,
)
from domaingpt.errors import ConfigError, DomainGPTError, disk_error, one_line
from domaingpt.model.gpt import GPT, GPTConfig


def test_a_regular_file_is_read_whole(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("één\nzwei\n", encoding="utf-8")
    assert read_user_text(path, "prompt file") == "één\nzwei\n"


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: os.mkfifo(p), "named pipe (FIFO)"),
        (lambda p: p.mkdir(), "a directory"),
        (lambda p: p.symlink_to("/dev/zero"), "a character device"),
        (lambda p: None, "does not exist"),
        (lambda p: p.write_bytes(b"ok \xff"), "not UTF-8 text (byte 3)"),
    ],
    ids=["fifo", "dir", "dev-zero", "missing", "latin1"],
)
def test_anything_but_a_text_file_is_refused_at_once_saying_what_it_is(tmp_path, make, said):
    path = tmp_path / "thing"
    make(path)
    result: list[BaseException] = []

    def read() -> None:  # in a thread: a read that blocked would hang the test run
        try:
            read_user_text(path, "prompt file")
        except BaseException as e:
            result.append(e)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(30)
    assert not t.is_alive(), "the read blocked"
    assert isinstance(result[0], DomainGPTError)
    assert said in str(result[0]) and str(path) in str(result[0])


def test_a_file_over_the_limit_is_refused_without_reading_it(tmp_path):
    path = tmp_path / "big.txt"
    path.write_text("x" * 101)
    assert read_user_text(path, "study file", limit=101) == "x" * 101
    with pytest.raises(DomainGPTError, match="larger than 100 bytes"):
        read_user_text(path, "study file", limit=100)


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("abc", "must be an integer, got 'abc'"),
        (True, "must be an integer"),
        (2e9, "must be in [1, 16,384], got 2,000,000,000"),
        (0, "got 0"),
        (1.5, "must be an integer"),
    ],
)
def test_bounded_int_refuses_what_is_not_a_size_in_range(value, said):
    with pytest.raises(DomainGPTError) as e:
        bounded_int("config.json: n_embd", value, 1, MODEL_LIMITS["n_embd"])
    assert said in str(e.value)


def test_bounded_values_pass_through():
    assert bounded_int("x", 16384.0, 1, 16384) == 16384
    assert bounded_float("x", 1) == 1.0
    with pytest.raises(DomainGPTError, match="must be a number, got 'tiny'"):
        bounded_float("layer_norm_epsilon", "tiny")
    with pytest.raises(DomainGPTError, match="finite"):
        bounded_float("layer_norm_epsilon", float("nan"))


def test_a_model_config_from_a_file_is_checked_before_a_model_is_built():
    with pytest.raises(DomainGPTError, match="n_embd must be in"):
        check_model_shape("record", {"n_embd": 32768})
    with pytest.raises(DomainGPTError, match="vocab_size must be an integer"):
        GPTConfig.from_dict({"n_embd": 8, "n_head": 2, "vocab_size": "many"}, "record")
    with pytest.raises(DomainGPTError, match="must be a JSON object"):
        GPTConfig.from_dict("n_embd", "record")


def test_tensors_that_do_not_fit_the_config_are_refused_before_allocating():
    small = GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=4, vocab_size=5)
    state = GPT(small).state_dict()
    small.check_state(state, "ok")  # its own tensors fit
    big = GPTConfig(n_layer=1, n_head=2, n_embd=16384, block_size=4, vocab_size=5)
    with pytest.raises(
        ConfigError, match=r"tok_emb.weight is \(5, 8\), the config says \(5, 16384\)"
    ):
        big.check_state(state, "record")


def test_thread_counts_are_bounded_by_the_machine():
    most = max_threads()
    assert most >= (os.cpu_count() or 1)
    assert build_config("smoke", [f"train.threads={most}"]).train.threads == most
    with pytest.raises(ConfigError, match=f"at most {most}"):
        build_config("smoke", [f"train.threads={most + 1}"])
    before = torch.get_num_threads()
    with pytest.raises(ConfigError, match="at most"):
        build_config("smoke", ["train.threads=100000"])
    assert torch.get_num_threads() == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DOMAINGPT_AUTOCAST", "bogus"),
        ("DOMAINGPT_AUTOCAST", "tpu:bfloat16"),
        ("DOMAINGPT_FAULT", "garbage"),
        ("DOMAINGPT_FAULT", "train.step:0"),
        ("DOMAINGPT_DIST_TIMEOUT", "soon"),
        ("DOMAINGPT_STUDY_TIMEOUT", "-5"),
    ],
)
def test_a_bad_environment_variable_is_one_error_naming_it(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=name):
        check_environment()


def test_good_environment_values_pass(monkeypatch):
    for name, value in (
        ("DOMAINGPT_AUTOCAST", "cpu:bfloat16"),
        ("DOMAINGPT_FAULT", "train.step:3"),
        ("DOMAINGPT_DIST_TIMEOUT", "30"),
    ):
        monkeypatch.setenv(name, value)
    check_environment()


def test_disk_errors_say_what_happened():
    full = disk_error(OSError(errno.ENOSPC, "No space left on device", "/r/x"))
    denied = disk_error(PermissionError(errno.EACCES, "Permission denied", "/r/checkpoints"))
    assert full == "/r/x: No space left on device; the disk is full: free some disk space"
    assert denied == "/r/checkpoints: Permission denied; check the permissions of the path"
    assert disk_error(OSError(errno.EIO, "I/O error")) is None


def test_an_error_message_is_always_one_line():
    assert one_line("corpus /tmp/a\nb.txt\tgone") == "corpus /tmp/a\\nb.txt\\tgone"
    assert one_line("naïve 中文 ok") == "naïve 中文 ok"
