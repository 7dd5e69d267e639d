"""RunDir.corpus: a model's corpus found from what its run.json records, its checksum
verified; a moved or changed file is a one-line error naming the option to point at it.

The model directories here hold only what the lookup reads (run.json and a checkpoint
name); the corpora are real text (a user's file cut from Shakespeare, and the built-ins).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.context.rundir import RunDir
from domaingpt.core.io import write_json
from domaingpt.data.corpus import REGISTRY, resolve_corpus, sha256_file
from domaingpt.errors import CorpusError


def _model(run: RunDir, name: str, path: Path, sha: str | None = None) -> None:
    """A model of ``run`` trained on the file at ``path`` (as train records it)."""
    directory = run.model(name)
    (directory / "checkpoints").mkdir(parents=True)
    (directory / "checkpoints" / "iter-0000000.json").write_text("{}")
    record = {
        "corpus": name,
        "corpus_sha256": sha or sha256_file(path),
        "corpus_path": str(path.resolve()),
        "config": {"model": {"block_size": 16}, "data": {"val_fraction": 0.1}},
    }
    write_json(directory / "run.json", record)


@pytest.fixture
def notes(tmp_path: Path, corpora) -> Path:
    path = tmp_path / "texts" / "notes.txt"
    path.parent.mkdir()
    path.write_text(corpora.path("shakespeare").read_text(encoding="utf-8")[:5000])
    return path


def test_a_users_corpus_is_found_at_its_recorded_path(tmp_path, notes, monkeypatch):
    run = RunDir(tmp_path / "run")
    _model(run, "notes", notes)
    monkeypatch.chdir(tmp_path)  # not where the file is
    corpus = run.corpus("notes")
    assert (corpus.name, corpus.path, corpus.sha256) == ("notes", notes, sha256_file(notes))
    assert not corpus.builtin and corpus.read_text() == notes.read_text()


def test_a_moved_corpus_is_named_with_the_option_that_finds_it(tmp_path, notes):
    run = RunDir(tmp_path / "run")
    _model(run, "notes", notes)
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(notes, moved / "notes.txt")
    with pytest.raises(CorpusError) as e:
        run.corpus("notes")
    assert str(e.value) == (
        f"the corpus file {notes} of model 'notes' is gone (moved or deleted); pass the "
        "folder holding notes.txt with --data-dir DIR"
    )
    with pytest.raises(CorpusError, match=r"pass the file with --corpora PATH, or the folder"):
        run.corpus("notes", corpora_option=True)
    found = run.corpus("notes", data_dir=moved)
    assert found.path == moved / "notes.txt" and found.found_in == "data-dir"


def test_a_changed_corpus_is_refused(tmp_path, notes):
    run = RunDir(tmp_path / "run")
    _model(run, "notes", notes)
    trained_on = sha256_file(notes)
    with notes.open("a") as f:
        f.write("one more line\n")
    with pytest.raises(CorpusError) as e:
        run.corpus("notes")
    message = str(e.value)
    assert message.startswith(f"the corpus file {notes} of model 'notes' has changed")
    assert f"trained on {trained_on[:12]}" in message and "\n" not in message


def test_a_given_copy_under_another_name_is_the_models_corpus(tmp_path, notes):
    run = RunDir(tmp_path / "run")
    _model(run, "notes", notes)
    copy = tmp_path / "notes-v1.txt"
    shutil.copy(notes, copy)
    notes.unlink()
    given = resolve_corpus(str(copy))
    assert given.name == "notes-v1"
    assert run.corpus("notes", given=[given]).name == "notes"
    assert run.known_corpus(given).name == "notes"  # e.g. evaluate --corpora notes-v1.txt
    other = tmp_path / "other.txt"
    other.write_text("some other text entirely\n" * 20)
    assert run.known_corpus(resolve_corpus(str(other))).name == "other"


def test_a_builtin_corpus_is_found_by_name_or_at_its_recorded_path(tmp_path, data_dir):
    run = RunDir(tmp_path / "run")
    _model(run, "shakespeare", data_dir / "shakespeare.txt")
    assert run.corpus("shakespeare", data_dir=data_dir).builtin
    # --data-dir pointing at a folder without it (one holding a user's file): found at
    # the path its model recorded, with the registry's checksum, without downloading.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    corpus = run.corpus("shakespeare", data_dir=elsewhere, download=False)
    assert corpus.path == (data_dir / "shakespeare.txt").resolve()
    assert corpus.sha256 == REGISTRY["shakespeare"].sha256


@pytest.mark.parametrize(
    "record",
    [
        [1],
        {"status": 3},
        {"status": "done", "outputs": "x"},
        {"status": "done", "outputs": {"a.csv": 5}},
        {"status": "done", "outputs": {"a.csv": ["5", "abc"]}},
    ],
)
def test_a_malformed_stage_record_reads_as_none(tmp_path, record):
    """A damaged ``stages/NAME.json`` makes the stage run again, never an AttributeError."""
    run = RunDir(tmp_path)
    write_json(run.record_path("train"), record)
    assert run.record("train") is None and run.status("train") == "absent"
    good = {"status": "done", "outputs": {"a.csv": [5, "ab12"]}}
    write_json(run.record_path("train"), good)
    rec = run.record("train")
    assert (rec.stage, rec.status, rec.outputs) == ("train", StageStatus.DONE, good["outputs"])


@pytest.mark.parametrize(
    "record",
    [
        {
            "stage": "evaluate",
            "status": "done",
            "key": "ab",
            "settings": {"bootstrap": 0},
            "inputs": {"corpora": [["math", "cd"]], "train": "ef"},
            "outputs": {"eval/zero_shot.csv": [10, "12"]},
            "version": "0.9.0",
            "at": "2026-12-01T10:00:00+00:00",
            "seconds": 1.5,
            "cpu_seconds": 2.25,
        },
        {"stage": "lens", "status": "failed", "message": "boom", "at": "t", "seconds": 0.1},
        {
            "stage": "lens",
            "status": "blocked",
            "message": "needs train",
            "at": "t",
            "kept": {"stage": "lens", "status": "done", "key": "k", "outputs": {}},
        },
    ],
)
def test_a_stage_record_of_an_earlier_run_reads_and_writes_back_unchanged(tmp_path, record):
    """The statuses are an enum and the record a dataclass, but the file holds the same
    JSON: an old run directory loads, and rewriting its record changes no byte."""
    run = RunDir(tmp_path)
    write_json(run.record_path(record["stage"]), record)
    before = run.record_path(record["stage"]).read_bytes()
    rec = run.record(record["stage"])
    assert isinstance(rec, StageRecord) and rec.status == record["status"]
    assert run.status(record["stage"]) is StageStatus(record["status"])
    run.write_record(rec)
    assert run.record_path(record["stage"]).read_bytes() == before
    if record["status"] == "blocked":
        assert rec.kept is not None and rec.kept.done and rec.kept.key == "k"


def test_a_record_with_an_unknown_status_is_unreadable(tmp_path):
    run = RunDir(tmp_path)
    write_json(run.record_path("lens"), {"status": "running"})
    assert run.record("lens") is None and run.status("lens") is StageStatus.ABSENT
