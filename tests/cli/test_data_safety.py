"""No command deletes or writes anything outside its run directory: not through a
symbolic link planted in the run, not through a corpus whose name is ``.`` or ``..``.

Each test works in a sandbox folder holding the run directory and things that are not
the run's (a victim file, a folder of someone else's files, the user's corpus); the
sandbox outside the run is compared, entry by entry with SHA-256, before and after.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from domaingpt.cli import main
from domaingpt.core.io import append_text, write_json
from domaingpt.core.rundir import RunDir
from domaingpt.errors import DomainGPTError
from domaingpt.study import load_study, run_study

TEXT = "To be, or not to be, that is the question.\n" * 1200


def outside(box: Path, run: Path) -> dict[str, tuple]:
    """Every entry of ``box`` that is not inside ``run``: kind and content (or target)."""
    entries: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(box):
        for name in dirs + files:
            path = Path(folder) / name
            if path == run or run in path.parents:
                continue
            rel = path.relative_to(box).as_posix()
            if path.is_symlink():
                entries[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                entries[rel] = ("dir",)
            else:
                entries[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
    return entries


@pytest.fixture(scope="module")
def trained(train_smoke, tmp_path_factory) -> Path:
    """A run with a 10-iteration Shakespeare model, copied by each test that changes it."""
    run = tmp_path_factory.mktemp("safety") / "run"
    assert train_smoke(run, "train.max_iters=10", "train.threads=1") == 0
    return run


@pytest.fixture
def box(tmp_path, trained, monkeypatch) -> Path:
    """A sandbox: ``run/`` (a copy of the trained run), a victim file, someone else's
    folder and the user's corpus files, among them ``..txt`` and ``...txt``."""
    shutil.copytree(trained, tmp_path / "run")
    (tmp_path / "victim.txt").write_text("not the run's\n")
    other = tmp_path / "others"
    other.mkdir()
    (other / "thesis.tex").write_text("someone else's work\n")
    for name in ("notes.txt", "..txt", "...txt"):
        (tmp_path / name).write_text(TEXT)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def quietly(*argv: object, data_dir: Path) -> int:
    return main([*map(str, argv), "--data-dir", str(data_dir), "--quiet"])


def test_commands_that_succeed_write_only_inside_their_run(box, data_dir, capsys):
    """train (fresh, again with --overwrite), stats, evaluate and sample: the sandbox
    outside the run directory is exactly as it was."""
    run = box / "run"
    before = outside(box, run)
    smoke = ["--preset", "smoke", "--set", "train.max_iters=10", "--set", "train.threads=1"]
    assert quietly("train", "notes.txt", *smoke, "--out", run, data_dir=data_dir) == 0
    assert (
        quietly("train", "notes.txt", *smoke, "--out", run, "--overwrite", data_dir=data_dir) == 0
    )
    assert quietly("stats", "shakespeare", "notes.txt", "--out", run, data_dir=data_dir) == 0
    corpora = ["--corpora", "shakespeare,notes.txt"]  # (a run that finds its own: issue 17.1)
    assert quietly("evaluate", "--out", run, *corpora, "--threads", "1", data_dir=data_dir) == 0
    assert quietly("sample", run / "models" / "notes", "--chars", "20", data_dir=data_dir) == 0
    capsys.readouterr()
    assert (run / "models" / "notes" / "checkpoints").is_dir()
    assert outside(box, run) == before


@pytest.mark.parametrize("corpus", ["..txt", "...txt"])
@pytest.mark.parametrize("command", ["train", "stats", "run"])
def test_a_corpus_named_dot_or_dotdot_deletes_nothing(box, corpus, command, data_dir, capsys):
    """Its model name would be ``.`` (the run's models/) or ``..`` (the run itself):
    refused with one line before anything is written, with --overwrite too."""
    run = box / "run"
    (box / "study.toml").write_text(f'[study]\ncorpora = ["shakespeare", "{corpus}"]\n')
    argv = {
        "train": ["train", corpus, "--preset", "smoke", "--overwrite", "--out", run],
        "stats": ["stats", "shakespeare", corpus, "--out", run],
        "run": ["run", "study.toml", "--preset", "smoke", "--out", run],
    }[command]
    before = outside(box, box / "nothing")  # the whole sandbox, the run included
    assert quietly(*argv, data_dir=data_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot name a model" in err
    assert outside(box, box / "nothing") == before


#: Where a link is planted, what it points to, and a command that would write there.
LINKS = [
    (".lock", "victim.txt", ["train", "shakespeare", "--resume"]),
    ("log.txt", "victim.txt", ["run", "--preset", "smoke"]),
    ("models/shakespeare/metrics.jsonl", "victim.txt", ["train", "shakespeare", "--resume"]),
    ("models/shakespeare/samples.jsonl", "victim.txt", ["train", "shakespeare", "--overwrite"]),
    ("models/shakespeare", "others", ["train", "shakespeare", "--overwrite"]),
    ("models/shakespeare/checkpoints", "others", ["train", "shakespeare", "--resume"]),
    ("vocab.json", "victim.txt", ["stats", "shakespeare"]),
    ("stats", "others", ["stats", "shakespeare"]),
    ("eval", "others", ["evaluate"]),
]


@pytest.mark.parametrize(("rel", "target", "argv"), LINKS, ids=[x[0] for x in LINKS])
def test_a_link_planted_in_the_run_is_refused_and_its_target_unchanged(
    box, rel, target, argv, data_dir, capsys
):
    run = box / "run"
    link = run / rel
    if link.is_dir():
        shutil.rmtree(link)
    link.unlink(missing_ok=True)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(box / target)
    before = outside(box, box / "nothing")
    smoke = ["--preset", "smoke"] if argv[0] == "train" else []
    assert quietly(*argv, *smoke, "--out", run, data_dir=data_dir) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "symbolic link" in err
    assert outside(box, box / "nothing") == before  # the link and what it points to


def test_the_python_api_refuses_links_too(box, data_dir):
    run = RunDir(box / "run")
    (run.root / "log.txt").symlink_to(box / "victim.txt")
    with pytest.raises(DomainGPTError, match="symbolic link"):
        run_study(load_study(preset="smoke"), run.root, data_dir=data_dir, progress=False)
    with pytest.raises(DomainGPTError, match="symbolic link"):
        append_text(run.root / "log.txt", "appended\n")
    assert (box / "victim.txt").read_text() == "not the run's\n"


def test_an_atomic_write_replaces_a_link_instead_of_following_it(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep\n")
    link = tmp_path / "record.json"
    link.symlink_to(victim)
    write_json(link, {"a": 1})
    assert victim.read_text() == "keep\n"
    assert not link.is_symlink() and '"a": 1' in link.read_text()
