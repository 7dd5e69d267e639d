"""Checkpoints round-trip exactly, and a damaged or foreign file is refused without ever
being unpickled."""

from __future__ import annotations

import errno
import json
import pickle

import pytest
import torch

from domaingpt.data.vocab import Vocab
from domaingpt.errors import CheckpointError
from domaingpt.model.checkpoint import (
    CheckpointMeta,
    find_checkpoint,
    list_checkpoints,
    load_checkpoint,
    newest_valid,
    read_info,
    save_checkpoint,
)
from domaingpt.model.gpt import GPT, GPTConfig

VOCAB = Vocab.from_texts(["abcdefgh \n"])


def make(tmp_path, iteration=5, kind="iter"):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=1, n_head=2, n_embd=8, block_size=8, vocab_size=VOCAB.size))
    info = save_checkpoint(
        tmp_path,
        kind,
        iteration,
        model,
        VOCAB,
        CheckpointMeta(val_loss=1.5),
        {"extra.t": torch.arange(3)},
    )
    return model, info


def test_roundtrip_is_exact_and_tied(tmp_path):
    model, info = make(tmp_path)
    loaded = load_checkpoint(read_info(info.json_path))
    idx = torch.randint(0, VOCAB.size, (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(idx)[0], loaded.model(idx)[0], rtol=0, atol=0)
    assert loaded.model.head.weight.data_ptr() == loaded.model.tok_emb.weight.data_ptr()
    assert loaded.vocab == VOCAB and loaded.iteration == 5 and loaded.meta.val_loss == 1.5
    assert torch.equal(loaded.tensors["extra.t"], torch.arange(3))


def test_truncated_or_altered_tensor_file_is_detected(tmp_path):
    _, info = make(tmp_path)
    blob = info.tensor_path.read_bytes()
    info.tensor_path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(CheckpointError, match=r"iter-0000005.safetensors is truncated or altered"):
        load_checkpoint(info)
    altered = bytearray(blob)
    altered[-3] ^= 1
    info.tensor_path.write_bytes(bytes(altered))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(info)


class _Plant:
    """Unpickling this writes a file: the attack a pickle checkpoint allows."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickle_renamed_as_checkpoint_is_rejected_and_never_executed(tmp_path):
    _, info = make(tmp_path)
    planted = tmp_path / "PWNED"
    payload = pickle.dumps(_Plant(str(planted)))
    assert not planted.exists()
    # (a) the tensor file replaced by a pickle, JSON record untouched
    info.tensor_path.write_bytes(payload)
    with pytest.raises(CheckpointError):
        load_checkpoint(info)
    # (b) a pickle whose JSON record claims its checksum: safetensors refuses to parse it
    record = json.loads(info.json_path.read_text())
    import hashlib

    record |= {"tensor_sha256": hashlib.sha256(payload).hexdigest(), "tensor_bytes": len(payload)}
    info.json_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="not a valid safetensors file"):
        load_checkpoint(read_info(info.json_path))
    # (c) a torch.save'd .pt handed over directly
    pt = tmp_path / "model.pt"
    pt.write_bytes(payload)
    with pytest.raises(CheckpointError):
        find_checkpoint(pt)
    assert not planted.exists()


def test_json_that_is_not_a_checkpoint(tmp_path):
    (tmp_path / "iter-0000001.json").write_text('{"hello": 1}')
    with pytest.raises(CheckpointError, match="not a domaingpt checkpoint"):
        read_info(tmp_path / "iter-0000001.json")
    (tmp_path / "iter-0000002.json").write_text("{truncat")
    with pytest.raises(CheckpointError, match="corrupt"):
        read_info(tmp_path / "iter-0000002.json")
    assert list_checkpoints(tmp_path) == []  # unreadable records are skipped, not fatal


def test_shape_mismatch_is_a_clear_error(tmp_path):
    _, info = make(tmp_path)
    record = json.loads(info.json_path.read_text())
    record["model_config"]["n_embd"] = 16
    info.json_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="does not fit"):
        load_checkpoint(read_info(info.json_path))


def test_find_checkpoint_by_iteration_lists_what_exists(tmp_path):
    for it in (0, 10, 20):
        make(tmp_path, it)
    assert find_checkpoint(tmp_path).iteration == 20
    assert find_checkpoint(tmp_path, 10).iteration == 10
    with pytest.raises(CheckpointError, match="available: 0, 10, 20"):
        find_checkpoint(tmp_path, 15)
    with pytest.raises(CheckpointError, match="does not exist"):
        find_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no checkpoints"):
        find_checkpoint(tmp_path / "empty")


def test_newest_valid_skips_damaged(tmp_path):
    make(tmp_path, 1, "resume")
    _, bad = make(tmp_path, 2, "resume")
    bad.tensor_path.write_bytes(b"garbage")
    seen = []
    loaded = newest_valid(tmp_path, "resume", warn=seen.append)
    assert loaded.iteration == 1 and "resume-0000002" in seen[0]


@pytest.mark.parametrize(
    ("vocab", "message"),
    [
        (None, "no valid vocabulary ('vocab')"),  # no record at all
        ({"chars": "ba"}, "sorted by code point"),
        ({"chars": "ab", "fingerprint": "0" * 64}, "fingerprint"),
        ({"unk": "<unk>"}, "malformed vocabulary record"),
        ("abc", "malformed vocabulary record"),
    ],
)
def test_a_missing_or_malformed_vocabulary_is_a_checkpoint_error(tmp_path, vocab, message):
    _, info = make(tmp_path)
    record = json.loads(info.json_path.read_text())
    if vocab is None:
        del record["vocab"]
    else:
        record["vocab"] = vocab
    info.json_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match="has no valid vocabulary") as caught:
        load_checkpoint(read_info(info.json_path))
    assert message in str(caught.value)


def test_a_bug_while_reading_the_vocabulary_is_not_reported_as_a_bad_checkpoint(
    tmp_path, monkeypatch
):
    _, info = make(tmp_path)

    def broken(data):
        raise ZeroDivisionError("a bug, not a damaged file")

    monkeypatch.setattr(Vocab, "from_json", broken)
    with pytest.raises(ZeroDivisionError):
        load_checkpoint(info)


def _break_json(info):
    text = info.json_path.read_text()
    info.json_path.write_text(text.replace('"format"', '"format" oops', 1))


def test_a_record_with_a_syntax_error_is_named_not_taken_for_absent(tmp_path):
    """It said "no checkpoint at iteration 0"; it says the record is not valid JSON."""
    infos = [make(tmp_path, it)[1] for it in (0, 10, 20)]
    _break_json(infos[0])
    with pytest.raises(CheckpointError, match=r"iter-0000000\.json is not valid JSON"):
        find_checkpoint(tmp_path, 0)
    assert find_checkpoint(tmp_path, 10).iteration == 10  # the others still load
    _break_json(infos[2])  # the final one: never silently replaced by iteration 10
    with pytest.raises(CheckpointError, match=r"iter-0000020\.json is not valid JSON"):
        find_checkpoint(tmp_path)
    _break_json(infos[1])  # none left: the newest damaged one is named
    with pytest.raises(CheckpointError, match=r"iter-0000020\.json is not valid JSON"):
        find_checkpoint(tmp_path)


def test_a_nanogpt_pickle_checkpoint_is_named_and_never_loaded(tmp_path):
    """nanoGPT writes out/ckpt.pt with torch.save; it said "no checkpoints in ckpt.pt"."""
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"model": {"w": torch.zeros(2)}, "iter_num": 5}, out / "ckpt.pt")
    (tmp_path / "model.bin").write_bytes(pickle.dumps({"a": 1}))
    for target in (out / "ckpt.pt", out, tmp_path / "model.bin"):
        with pytest.raises(CheckpointError, match="PyTorch pickle checkpoint") as e:
            find_checkpoint(target)
        assert "never unpickles" in str(e.value) and "domaingpt train" in str(e.value)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(CheckpointError, match="not a domaingpt checkpoint"):
        find_checkpoint(tmp_path / "notes.txt")


def test_selecting_checkpoints_names_a_damaged_record(tmp_path):
    """evaluate's "final" and "all" never silently skip a record that does not parse."""
    from domaingpt.model.checkpoint import select_checkpoints

    ckdir = tmp_path / "checkpoints"
    infos = [make(ckdir, it)[1] for it in (0, 10, 20)]
    assert [c.iteration for c in select_checkpoints(tmp_path, "all")] == [0, 10, 20]
    _break_json(infos[1])
    assert [c.iteration for c in select_checkpoints(tmp_path, "final")] == [20]
    with pytest.raises(CheckpointError, match=r"iter-0000010\.json is not valid JSON"):
        select_checkpoints(tmp_path, "all")
    _break_json(infos[2])
    with pytest.raises(CheckpointError, match=r"iter-0000020\.json is not valid JSON"):
        select_checkpoints(tmp_path, "final")


@pytest.mark.parametrize(
    ("error", "said", "not_said"),
    [
        (PermissionError(errno.EACCES, "Permission denied"), "permission", "disk space"),
        (OSError(errno.ENOSPC, "No space left on device"), "free some disk space", "permission"),
    ],
)
def test_a_checkpoint_that_cannot_be_written_says_why(tmp_path, monkeypatch, error, said, not_said):
    from domaingpt.model import checkpoint

    def refuse(path, data):
        error.filename = str(path)
        raise error

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", refuse)
    with pytest.raises(CheckpointError) as e:
        make(tmp_path)
    assert said in str(e.value) and not_said not in str(e.value)
    assert "--resume" in str(e.value) and not list(tmp_path.iterdir())


def test_a_tampered_model_size_is_refused_before_allocating(tmp_path):
    _, info = make(tmp_path)
    record = json.loads(info.json_path.read_text())
    record["model_config"]["n_embd"] = 32768  # 13 GB per matrix, were it built
    info.json_path.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"n_embd must be in \[1, 16,384\]"):
        load_checkpoint(read_info(info.json_path))
