"""No command deletes or writes anything outside its run directory: not through a
symbolic link planted in the run, not through a corpus whose name is ``.`` or ``..``.

Each test works in a sandbox folder holding the run directory and things that are not
the run's (a victim file, a folder of someone else's files, the user's corpus); the
sandbox outside the run is compared, entry by entry with SHA-256, before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from domaingpt.cli import main
from domaingpt.context.rundir import RunDir
from domaingpt.core.io import append_text, write_json
from domaingpt.errors import DomainGPTError
from domaingpt.study import run_study

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


def quietly(*argv: object, corpora) -> int:
    """``domaingpt ARGV --quiet``; a built-in corpus's name in ARGV means the synthetic
    corpus of that name, and ``run`` without a study file the smoke study on them."""

    def synthetic(arg: str) -> str:
        return ",".join(str(corpora.path(n)) if n in corpora.names else n for n in arg.split(","))

    args = [synthetic(str(a)) for a in argv]
    if args[0] == "run" and (len(args) == 1 or args[1].startswith("-")):
        args.insert(1, str(corpora.study))
    return main([*args, "--quiet"])


def test_commands_that_succeed_write_only_inside_their_run(box, corpora, capsys):
    """train (fresh, again with --overwrite), stats, evaluate and sample: the sandbox
    outside the run directory is exactly as it was."""
    run = box / "run"
    before = outside(box, run)
    smoke = ["--preset", "smoke", "--set", "train.max_iters=10", "--set", "train.threads=1"]
    assert quietly("train", "notes.txt", *smoke, "--out", run, corpora=corpora) == 0
    assert quietly("train", "notes.txt", *smoke, "--out", run, "--overwrite", corpora=corpora) == 0
    assert quietly("stats", "shakespeare", "notes.txt", "--out", run, corpora=corpora) == 0
    given = ["--corpora", "shakespeare,notes.txt"]  # (a run that finds its own: issue 17.1)
    assert quietly("evaluate", "--out", run, *given, "--threads", "1", corpora=corpora) == 0
    assert quietly("sample", run / "models" / "notes", "--chars", "20", corpora=corpora) == 0
    capsys.readouterr()
    assert (run / "models" / "notes" / "checkpoints").is_dir()
    assert outside(box, run) == before


@pytest.mark.parametrize("corpus", ["..txt", "...txt"])
@pytest.mark.parametrize("command", ["train", "stats", "run"])
def test_a_corpus_named_dot_or_dotdot_deletes_nothing(box, corpus, command, corpora, capsys):
    """Its model name would be ``.`` (the run's models/) or ``..`` (the run itself):
    refused with one line before anything is written, with --overwrite too."""
    run = box / "run"
    sh = corpora.path("shakespeare")
    (box / "study.toml").write_text(f'[study]\ncorpora = ["{sh}", "{corpus}"]\n')
    argv = {
        "train": ["train", corpus, "--preset", "smoke", "--overwrite", "--out", run],
        "stats": ["stats", "shakespeare", corpus, "--out", run],
        "run": ["run", "study.toml", "--preset", "smoke", "--out", run],
    }[command]
    before = outside(box, box / "nothing")  # the whole sandbox, the run included
    assert quietly(*argv, corpora=corpora) == 2
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
    ("evaluate", "others", ["evaluate"]),
]


@pytest.mark.parametrize(("rel", "target", "argv"), LINKS, ids=[x[0] for x in LINKS])
def test_a_link_planted_in_the_run_is_refused_and_its_target_unchanged(
    box, rel, target, argv, corpora, capsys
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
    assert quietly(*argv, *smoke, "--out", run, corpora=corpora) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "symbolic link" in err
    assert outside(box, box / "nothing") == before  # the link and what it points to


def test_the_python_api_refuses_links_too(box, corpora):
    run = RunDir(box / "run")
    (run.root / "log.txt").symlink_to(box / "victim.txt")
    with pytest.raises(DomainGPTError, match="symbolic link"):
        run_study(corpora.smoke(), run.root, progress=False)
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


# ---------------------------------------------------------------------------------------
# Every --overwrite replaces only what domaingpt wrote (train, import-hf, export), and a
# refused one changes nothing: checked before anything is deleted or written.


def model_files(run: Path, name: str = "shakespeare") -> dict[str, tuple]:
    """The model directory ``models/NAME``, entry by entry."""
    return outside(run / "models" / name, run / "nothing")


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory) -> Path:
    """The trained model as a Hugging Face folder (``domaingpt export``)."""
    pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from domaingpt.interop.hf import export

    out = tmp_path_factory.mktemp("exported") / "hf"
    export(trained / "models" / "shakespeare", out, log=lambda m: None)
    return out


def _edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("bad", ["activation", "tokenizer"])
def test_a_refused_import_overwrite_leaves_the_model_it_would_replace(
    box, exported, bad, cli_error
):
    """Issue 26.1: the import is checked whole (config, tokenizer against its recorded
    fingerprint, weights) before models/NAME is touched."""
    run = box / "run"
    source = box / "bad-export"
    shutil.copytree(exported, source)
    if bad == "activation":
        _edit_json(source / "config.json", activation_function="gelu_new")
    else:  # a word among the characters: not the tokenizer it was exported with
        tok = json.loads((source / "tokenizer.json").read_text())
        tok["model"]["vocab"]["the"] = tok["model"]["vocab"].pop("t")
        (source / "tokenizer.json").write_text(json.dumps(tok))
    before = outside(box, box / "nothing")
    err = cli_error("import-hf", source, "--out", run, "--name", "shakespeare", "--overwrite")
    assert (
        "exact GELU of the model config" if bad == "activation" else "fingerprint differs"
    ) in err
    assert outside(box, box / "nothing") == before  # the trained model, resume files too
    assert any((run / "models" / "shakespeare" / "checkpoints").glob("resume-*.safetensors"))


def test_import_overwrite_replaces_a_model_and_never_a_users_folder(box, exported, cli, cli_error):
    """Issue 26.2: a folder at models/NAME that domaingpt did not write is refused, as
    ``train --overwrite`` refuses it; an imported model replaces a model directory."""
    run = box / "run"
    mine = run / "models" / "mywork"
    mine.mkdir()
    (mine / "thesis.tex").write_text("someone's work\n")
    before = outside(box, box / "nothing")
    err = cli_error("import-hf", exported, "--out", run, "--name", "mywork", "--overwrite")
    assert str(mine) in err and "--name" in err  # the folder, and the way around it
    assert outside(box, box / "nothing") == before
    # The trained model is replaced by the import (its history checkpoint only); the
    # rest of the run is as it was.
    before = outside(box, run / "models" / "shakespeare")
    code, _, err = cli("import-hf", exported, "--out", run, "--overwrite", "-q")
    assert code == 0, err
    names = sorted(p.name for p in (run / "models" / "shakespeare" / "checkpoints").iterdir())
    assert names == ["iter-0000010.json", "iter-0000010.safetensors"]
    assert outside(box, run / "models" / "shakespeare") == before
    assert not [p for p in (run / "models").iterdir() if p.name.startswith(".")]


def test_train_overwrite_refuses_a_users_folder_and_replaces_a_model(box, corpora, capsys):
    """The same rule for ``train --overwrite``: a user's folder stays, a model is replaced."""
    run = box / "run"
    smoke = ["--preset", "smoke", "--set", "train.max_iters=10", "--set", "train.threads=1"]
    mine = run / "models" / "notes"
    mine.mkdir()
    (mine / "thesis.tex").write_text("someone's work\n")
    before = outside(box, box / "nothing")
    argv = ["train", "notes.txt", *smoke, "--out", run, "--overwrite"]
    assert quietly(*argv, corpora=corpora) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and str(mine) in err
    assert outside(box, box / "nothing") == before
    shutil.rmtree(mine)
    assert quietly(*argv, corpora=corpora) == 0
    assert quietly(*argv, corpora=corpora) == 0  # the model it wrote: replaced
    assert (run / "models" / "notes" / "checkpoints" / "iter-0000010.json").is_file()


def test_export_overwrite_replaces_only_an_earlier_export(box, exported, cli, cli_error):
    """Issue 26.3: an export owns only the files it writes; a user's file beside them
    makes ``--overwrite`` refuse, and nothing there changes."""
    run, out = box / "run", box / "published"
    model = run / "models" / "shakespeare"
    code, _, err = cli("export", model, out, "--all", "-q")
    assert code == 0, err
    (out / "important.txt").write_text("the user's\n")
    before = outside(box, run)
    err = cli_error("export", model, out, "--overwrite")
    assert "important.txt" in err and "only an earlier export" in err
    assert outside(box, run) == before
    (out / "important.txt").unlink()
    before = outside(box, out)
    code, _, err = cli("export", model, out, "--overwrite", "-q")  # the export: replaced
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in exported.iterdir())
    assert outside(box, out) == before  # nothing beside it: no lock, no temporary folder


def test_two_exports_to_one_folder_at_once_are_refused(box, cli, cli_error):
    """Issue 26.4: OUT is claimed while an export writes it; a second one is refused
    with one line, and a later ``--overwrite`` replaces the first one's export."""
    from domaingpt.core.owned import claim

    run, out = box / "run", box / "published"
    model = run / "models" / "shakespeare"
    before = outside(box, run)
    with claim(out):  # an export writing OUT now (an OS lock: as another process's)
        err = cli_error("export", model, out)
        assert "being written by another domaingpt process" in err
        err = cli_error("export", model, out, "--overwrite")
        assert "being written by another domaingpt process" in err
    assert outside(box, run) == before
    assert cli("export", model, out, "-q")[0] == 0
    assert "--overwrite" in cli_error("export", model, out)
    assert cli("export", model, out, "--overwrite", "-q")[0] == 0


def test_export_all_names_an_unreadable_checkpoint_record(box, cli_error):
    """Issue 26.10: "all" never silently means "all but one"."""
    pytest.importorskip("transformers")
    run, out = box / "run", box / "published"
    record = run / "models" / "shakespeare" / "checkpoints" / "iter-0000000.json"
    record.write_text("{")
    before = outside(box, box / "nothing")
    err = cli_error("export", run / "models" / "shakespeare", out, "--all")
    assert "iter-0000000.json" in err and "not valid JSON" in err
    assert outside(box, box / "nothing") == before


def test_a_model_whose_run_json_is_lost_is_refused_then_replaced_with_overwrite(
    box, corpora, capsys
):
    """Issue 26.14 for ``train``: the message names the repair, and --overwrite (which
    deletes only what training wrote) is it."""
    run = box / "run"
    (run / "models" / "shakespeare" / "run.json").unlink()
    before = outside(box, box / "nothing")
    train = ["train", "shakespeare", "--out", run, "--preset", "smoke"]
    train += ["--set", "train.max_iters=10", "--set", "train.threads=1"]
    assert quietly(*train, "--resume", corpora=corpora) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "run.json is missing" in err and "--overwrite" in err
    assert outside(box, box / "nothing") == before
    assert quietly(*train, "--overwrite", corpora=corpora) == 0
    assert (run / "models" / "shakespeare" / "run.json").is_file()


def test_resume_retrains_a_truncated_final_checkpoint(box, corpora, capsys):
    """Issue 26.7 for ``train --resume``: the damaged checkpoint is said and written
    again (from the newest resumable checkpoint before it), never kept as finished."""
    from domaingpt.model.checkpoint import find_checkpoint, load_checkpoint

    run = box / "run"
    final = run / "models" / "shakespeare" / "checkpoints" / "iter-0000010.safetensors"
    whole = final.read_bytes()
    final.write_bytes(whole[:1000])
    argv = ["train", corpora.path("shakespeare"), "--out", run, "--resume"]
    assert main([*map(str, argv), "--set", "train.threads=1"]) == 0
    err = capsys.readouterr().err
    assert str(final) in err and "iteration 10" in err  # the damaged file, and what is redone
    load_checkpoint(find_checkpoint(run / "models" / "shakespeare"))  # verifies the checksum
    assert final.read_bytes() == whole  # the same weights: the training is deterministic
