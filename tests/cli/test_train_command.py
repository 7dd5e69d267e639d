"""``domaingpt train`` writes nothing until its inputs are validated (issue 17): a
rejected corpus leaves no vocab.json to change the next model, and --vocab for a run
with another vocabulary is an error, not silently ignored."""

from __future__ import annotations

import json
import re

from domaingpt.context.rundir import RunDir
from domaingpt.context.training import encode_for_training
from domaingpt.context.vocabulary import build_vocab, save_vocab
from domaingpt.core.config import build_config
from domaingpt.data.corpus import resolve_corpus

SMOKE = ["--preset", "smoke", "-q", "--set", "train.threads=1", "--set", "train.max_iters=30"]


def _val_loss(stdout: str) -> float:
    return float(re.match(r"val_loss (\S+)", stdout).group(1))


def test_a_rejected_corpus_leaves_nothing_to_change_the_next_model(
    cli, cli_error, corpora, tmp_path
):
    verse, vocab = corpora.path("shakespeare"), ["--vocab", corpora.vocab]
    clean = tmp_path / "clean"
    code, out, err = cli("train", verse, "--out", clean, *vocab, *SMOKE)
    assert code == 0, err
    # Ten characters none of the corpora has: too short to train on, so refused ...
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ʘǂǁ€☃ʘǂǁ€☃", encoding="utf-8")
    run = tmp_path / "run"
    with_tiny = ["--vocab", f"{corpora.vocab},{tiny}"]  # a vocabulary it would change
    assert "too short" in cli_error("train", tiny, "--out", run, *with_tiny, *SMOKE)
    assert not run.exists()  # no vocab.json, no empty run directory
    # ... and the next model is the model a clean run trains, to the last digit.
    code, after, err = cli("train", verse, "--out", run, *vocab, *SMOKE)
    assert code == 0, err
    assert _val_loss(after) == _val_loss(out)
    assert (run / "vocab.json").read_bytes() == (clean / "vocab.json").read_bytes()

    # A model directory that cannot be trained into is found before vocab.json is written.
    other = tmp_path / "other"
    (other / "models" / "shakespeare").mkdir(parents=True)
    (other / "models" / "shakespeare" / "notes.txt").write_text("mine")
    err = cli_error("train", verse, "--out", other, *vocab, *SMOKE)
    assert str(other / "models" / "shakespeare") in err
    assert not (other / "vocab.json").exists()


def test_vocab_conflicting_with_the_runs_vocabulary_is_an_error(cli, cli_error, corpora, tmp_path):
    run = tmp_path / "run"
    argv = ["--out", run, *SMOKE]
    verse, math = corpora.path("shakespeare"), corpora.path("math")
    code, _, err = cli("train", verse, "--vocab", f"{verse},{math}", *argv)
    assert code == 0, err
    vocab = (run / "vocab.json").read_bytes()
    assert list(json.loads(vocab)["corpora"]) == ["shakespeare", "math"]
    err = cli_error("train", math, "--vocab", verse, *argv)
    # the option, the run's vocabulary file and the corpora it was built from
    assert f"--vocab {verse}" in err and str(run / "vocab.json") in err
    assert "shakespeare, math" in err
    assert not (run / "models" / "math").exists() and (run / "vocab.json").read_bytes() == vocab
    # The same corpora again name the run's own vocabulary: accepted.
    code, _, err = cli("train", math, "--vocab", f"{verse},{math}", *argv)
    assert code == 0, err
    assert (run / "vocab.json").read_bytes() == vocab


def test_an_unknown_character_is_the_same_log_line_on_both_paths(cli, data_dir, tmp_path):
    """``domaingpt train`` runs the train stage's job: a character the run's vocabulary
    lacks is trained as <unk> and said in the stage's log line, not a Python warning."""
    shakespeare = resolve_corpus("shakespeare", data_dir)
    run = RunDir(tmp_path / "run")
    save_vocab(run, build_vocab([shakespeare]), [shakespeare])
    notes = tmp_path / "notes.txt"
    notes.write_text(shakespeare.path.read_text(encoding="utf-8")[:20000] + "☃☃☃")
    quiet = [a for a in SMOKE if a != "-q"]
    code, _, err = cli("train", notes, "--out", run.root, "--data-dir", data_dir, *quiet)
    assert code == 0, err
    line = (
        f"warning: 3 characters of notes are not in the run's vocabulary ({run.vocab_path}) "
        "and are trained as <unk>"
    )
    assert line in err.splitlines()
    assert "model notes: training, 30 iterations" in err.splitlines()
    # The stage's path: the same function, the same line.
    logs: list[str] = []
    cfg = build_config("smoke", ["train.max_iters=30"])
    encode_for_training(run, resolve_corpus(notes), run.vocab(), cfg, logs.append)
    assert logs == [line]
