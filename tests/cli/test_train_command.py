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
    cli, cli_error, data_dir, tmp_path
):
    clean = tmp_path / "clean"
    code, out, err = cli("train", "shakespeare", "--out", clean, "--data-dir", data_dir, *SMOKE)
    assert code == 0, err
    # Ten characters none of the corpora has: too short to train on, so refused ...
    tiny = tmp_path / "tiny.txt"
    tiny.write_text("ʘǂǁ€☃ʘǂǁ€☃", encoding="utf-8")
    run = tmp_path / "run"
    assert "too short" in cli_error("train", tiny, "--out", run, "--data-dir", data_dir, *SMOKE)
    assert not run.exists()  # no vocab.json, no empty run directory
    # ... and the next model is the model a clean run trains, to the last digit.
    code, after, err = cli("train", "shakespeare", "--out", run, "--data-dir", data_dir, *SMOKE)
    assert code == 0, err
    assert _val_loss(after) == _val_loss(out)
    assert (run / "vocab.json").read_bytes() == (clean / "vocab.json").read_bytes()

    # A model directory that cannot be trained into is found before vocab.json is written.
    other = tmp_path / "other"
    (other / "models" / "shakespeare").mkdir(parents=True)
    (other / "models" / "shakespeare" / "notes.txt").write_text("mine")
    err = cli_error("train", "shakespeare", "--out", other, "--data-dir", data_dir, *SMOKE)
    assert "not a domaingpt model directory" in err
    assert not (other / "vocab.json").exists()


def test_vocab_conflicting_with_the_runs_vocabulary_is_an_error(cli, cli_error, data_dir, tmp_path):
    run = tmp_path / "run"
    argv = ["--out", run, "--data-dir", data_dir, *SMOKE]
    code, _, err = cli("train", "shakespeare", "--vocab", "shakespeare,math", *argv)
    assert code == 0, err
    vocab = (run / "vocab.json").read_bytes()
    assert list(json.loads(vocab)["corpora"]) == ["shakespeare", "math"]
    err = cli_error("train", "math", "--vocab", "shakespeare", *argv)
    assert "--vocab shakespeare: the run already has another vocabulary" in err
    assert "built from shakespeare, math" in err and "drop --vocab" in err
    assert not (run / "models" / "math").exists() and (run / "vocab.json").read_bytes() == vocab
    # The same corpora again name the run's own vocabulary: accepted.
    code, _, err = cli("train", "math", "--vocab", "shakespeare,math", *argv)
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
