"""Model directories (issue 17): --overwrite deletes only a domaingpt model directory,
--resume reads the model's own configuration, raising train.max_iters extends a model
deterministically, and --overwrite is never suggested where it would delete work.

Real Shakespeare, the smoke preset, 20-40 iterations, one thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest

from domaingpt.cli import main
from domaingpt.context.rundir import read_run_json
from domaingpt.core.config import build_config
from domaingpt.core.io import read_jsonl, write_json
from domaingpt.errors import DomainGPTError
from domaingpt.training import trainer as trainer_mod
from domaingpt.training.modeldir import ModelRecord, is_model_dir, read_record, write_record
from domaingpt.training.trainer import lr_at

SETS = ["train.max_iters=20", "train.checkpoints=[0, 10, 20]", "train.eval_tokens=1024"]
SETS += ["train.resume_interval=5", "train.sample_chars=16", "train.threads=1"]


def _train(out: Path, corpora, *extra: str) -> list:
    """``domaingpt train shakespeare`` (the synthetic one) into ``out``, quiet, with
    ``extra`` options."""
    verse = corpora.path("shakespeare")
    return ["train", verse, "--vocab", corpora.vocab, "--out", out, "-q", *extra]


def _sets(sets: list[str] = SETS) -> list[str]:
    return [a for s in sets for a in ("--set", s)]


def _files(root: Path) -> dict[str, str]:
    """Every file under ``root`` with its SHA-256: what a refused command must not change."""
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".lock"
    }


def _interrupt_at(monkeypatch, iteration: int) -> None:
    real_step = trainer_mod.Trainer.step

    def step(self):
        if self.iteration == iteration:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(trainer_mod.Trainer, "step", step)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpora) -> Path:
    """A run with a finished 20-iteration model of the verse (smoke preset + SETS)."""
    out = tmp_path_factory.mktemp("modeldir") / "run"
    assert main([str(a) for a in _train(out, corpora, "--preset", "smoke", *_sets())]) == 0
    return out


def test_a_trained_model_directory_is_one_and_others_are_not(trained, tmp_path):
    model = trained / "models" / "shakespeare"
    assert is_model_dir(model)
    copy = shutil.copytree(model, tmp_path / "copy")
    (copy / "my_notes.txt").write_text("mine")
    assert not is_model_dir(copy)
    (copy / "my_notes.txt").unlink()
    (copy / "checkpoints" / "README").write_text("mine")
    assert not is_model_dir(copy)
    (tmp_path / "folder").mkdir()
    assert not is_model_dir(tmp_path / "folder")


@pytest.mark.parametrize("extra", [["my_notes.txt"], ["run.json", "my_notes.txt"]])
def test_overwrite_never_deletes_a_folder_that_is_not_a_model_directory(
    cli_error, corpora, tmp_path, extra
):
    out = tmp_path / "run"
    folder = out / "models" / "shakespeare"
    folder.mkdir(parents=True)
    for name in extra:  # a user's folder; or one with a run.json among the user's files
        (folder / name).write_text('{"config": {}}' if name == "run.json" else "precious")
    before = _files(out)
    err = cli_error(*_train(out, corpora, "--preset", "smoke", "--overwrite"))
    assert str(folder) in err and "--overwrite" in err  # the folder, and why it stays
    assert _files(out) == before  # nothing deleted, and no vocab.json written


def test_resume_reads_the_models_own_configuration(
    cli, cli_error, trained, corpora, tmp_path, monkeypatch
):
    # Interrupted at iteration 13 (resumable checkpoint at 10) ...
    out = tmp_path / "run"
    _interrupt_at(monkeypatch, 13)
    assert cli(*_train(out, corpora, "--preset", "smoke", *_sets()))[0] == 130
    monkeypatch.undo()
    # ... then resumed with --resume alone: the preset and every --set come from run.json.
    code, out_text, err = cli(*_train(out, corpora, "--resume"))
    assert code == 0, err
    ckpts = "models/shakespeare/checkpoints"
    assert (out / ckpts / "iter-0000020.safetensors").read_bytes() == (
        trained / ckpts / "iter-0000020.safetensors"
    ).read_bytes()
    assert out_text.startswith("val_loss ")
    # Repeating --preset without the --set options is another configuration: refused,
    # and --overwrite (which would delete the model) is not suggested.
    before = _files(out)
    err = cli_error(*_train(out, corpora, "--resume", "--preset", "smoke"))
    model = str(out / "models" / "shakespeare")
    assert model in err and "train.checkpoints" in err  # the model, the setting that differs
    assert "--preset" in err and "--overwrite" not in err
    err = cli_error(*_train(out, corpora, "--preset", "smoke", *_sets()))
    assert model in err and "iteration 20" in err and "--resume" in err
    assert "--overwrite" not in err
    assert _files(out) == before


def test_extending_a_finished_model_continues_it_deterministically(
    cli, cli_error, trained, corpora, tmp_path, monkeypatch
):
    a, b = (shutil.copytree(trained, tmp_path / n) for n in ("a", "b"))
    model = Path("models/shakespeare")
    iter20 = (trained / model / "checkpoints" / "iter-0000020.safetensors").read_bytes()
    extend = ["--resume", "--set", "train.max_iters=40"]
    code, _, err = cli(*_train(a, corpora, *extend))
    assert code == 0, err
    # The same extension, interrupted at iteration 33 and resumed with --resume alone
    # (run.json now says 40), reaches the same bytes.
    _interrupt_at(monkeypatch, 33)
    assert cli(*_train(b, corpora, *extend))[0] == 130
    monkeypatch.undo()
    code, _, err = cli(*_train(b, corpora, "--resume"))
    assert code == 0, err
    for run in (a, b):
        ckpts = run / model / "checkpoints"
        assert [p.name for p in sorted(ckpts.glob("iter-*.json"))] == [
            f"iter-{i:07d}.json" for i in (0, 10, 20, 40)
        ]
        assert (ckpts / "iter-0000020.safetensors").read_bytes() == iter20  # kept as it was
    for name in ("iter-0000040.safetensors", "resume-0000040.safetensors"):
        assert (a / model / "checkpoints" / name).read_bytes() == (
            b / model / "checkpoints" / name
        ).read_bytes()
    record = json.loads((a / model / "run.json").read_text())
    assert record["config"]["train"]["max_iters"] == 40
    assert record["extensions"] == [{"from_iteration": 20, "max_iters": [20, 40]}]
    # The learning rate: the schedule of max_iters 20 up to iteration 20, then that of
    # max_iters 40 (lr_decay_iters 0 decays over max_iters): a warm restart at 20.
    spec20 = build_config("smoke", SETS).train
    spec40 = dataclasses.replace(spec20, max_iters=40)
    rows = {r["iter"]: r for r in read_jsonl(a / model / "metrics.jsonl")}
    assert sorted(rows) == [0, 10, 20, 30, 40]
    assert rows[20]["lr"] == lr_at(19, spec20) < 1.1 * spec20.min_lr
    assert rows[30]["lr"] == lr_at(29, spec40) > 3 * spec20.min_lr
    assert rows[40]["lr"] == lr_at(39, spec40)
    assert "val_loss_full" in rows[20] and "val_loss_full" in rows[40]
    # A model is never shortened.
    before = _files(a)
    err = cli_error(*_train(a, corpora, "--resume", "--set", "train.max_iters=30"))
    assert "iteration 40" in err and "train.max_iters=30" in err
    assert _files(a) == before


def test_a_model_begun_and_stopped_before_its_first_checkpoint_is_started_again(
    tmp_path, corpora, monkeypatch, capsys
):
    """A model directory holding only ``run.json`` (a command stopped before the first
    checkpoint) has nothing to lose: the same command starts it, never "trained to
    iteration -1"."""
    from domaingpt.training import loop

    out = tmp_path / "run"
    argv = [str(a) for a in _train(out, corpora, "--preset", "smoke", *_sets())]
    real_prepare = loop.prepare_model_dir

    def prepare_then_stop(*args, **kwargs):
        real_prepare(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "prepare_model_dir", prepare_then_stop)
    assert main(argv) == 130
    model = out / "models" / "shakespeare"
    assert (model / "run.json").is_file() and not (model / "checkpoints").exists()
    monkeypatch.setattr(loop, "prepare_model_dir", real_prepare)
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    assert (model / "checkpoints" / "iter-0000020.json").is_file()


#: A run.json as domaingpt 0.x wrote it, once extended.
OLD_RUN_JSON = {
    "corpus": "shakespeare",
    "corpus_sha256": "ab" * 32,
    "vocab_fingerprint": "cd" * 32,
    "config": {"model": {"block_size": 64}, "train": {"max_iters": 60}, "data": {}},
    "domaingpt_version": "0.9.0",
    "torch_version": "2.13.0",
    "corpus_path": "/data/shakespeare.txt",
    "extensions": [{"from_iteration": 30, "max_iters": [30, 60]}],
}


def test_an_old_run_json_reads_and_writes_back_unchanged(tmp_path):
    """run.json is a dataclass now, read and written in one place; an earlier run's
    file loads, and writing it back changes no byte. A key this version does not know
    is kept."""
    write_json(tmp_path / "run.json", OLD_RUN_JSON)
    before = (tmp_path / "run.json").read_bytes()
    record = read_record(tmp_path)
    assert record == read_run_json(tmp_path)
    assert (record.corpus, record.section("train"), record.extensions[0]["from_iteration"]) == (
        "shakespeare",
        {"max_iters": 60},
        30,
    )
    write_record(tmp_path, record)
    assert (tmp_path / "run.json").read_bytes() == before
    write_json(tmp_path / "run.json", {**OLD_RUN_JSON, "notes": "mine"})
    record = read_record(tmp_path)
    assert record.extra == {"notes": "mine"}
    assert record.to_dict() == {**OLD_RUN_JSON, "notes": "mine"}


def test_a_continued_models_record_keeps_what_only_the_old_one_says():
    old = ModelRecord.from_dict({**OLD_RUN_JSON, "imported_from": "x", "notes": "mine"})
    new = ModelRecord(corpus="shakespeare", config={"train": {"max_iters": 90}})
    merged = new.over(old)
    assert merged.config == {"train": {"max_iters": 90}} and merged.imported_from == "x"
    assert merged.extensions == OLD_RUN_JSON["extensions"] and merged.extra == {"notes": "mine"}


def test_a_damaged_run_json_is_named_and_one_without_a_config_still_reads(tmp_path):
    write_json(tmp_path / "run.json", {**OLD_RUN_JSON, "config": {"model": 3}})
    with pytest.raises(DomainGPTError, match=r"run\.json is damaged"):
        read_run_json(tmp_path)
    with pytest.raises(DomainGPTError, match=r"run\.json is unreadable"):
        read_record(tmp_path)
    write_json(tmp_path / "run.json", {"corpus": "math"})
    assert read_run_json(tmp_path).corpus == "math"  # what the stages read
    with pytest.raises(DomainGPTError, match="cannot be continued"):
        read_record(tmp_path)  # what training needs: its config
