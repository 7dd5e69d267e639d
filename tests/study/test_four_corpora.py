"""A user's own corpus through every stage (issue 17): four corpora — the three built-in
ones and a user's text file — from ``domaingpt run`` and from the individual commands
(train ×4, evaluate, adapt, probe, saliency, quality), each stage finding the user's file
by itself from the path its model recorded.

Light settings: tiny models, a few prompts, adaptation pairs that start from and go to
the user's corpus (the pair that could not be adapted before).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import StageContext
from domaingpt.data.corpus import resolve_corpus
from domaingpt.stages import adapt
from domaingpt.stages.adapt import AdaptSettings

NAMES = ["shakespeare", "math", "wikipedia", "notes"]
STAGES = ("stats", "train", "evaluate", "adapt", "softmax", "saliency", "quality", "report")
TRAIN = ["max_iters=20", "checkpoints=[0, 10, 20]", "eval_tokens=1024", "sample_chars=24"]
ANALYSES = """
[evaluate]
bootstrap = 10
[adapt]
pairs = ["notes:shakespeare", "math:notes"]
seeds = 1
iters = 4
schedule = [0, 4]
eval_windows = 4
final_windows = 8
sample_chars = 8
[probe]
prompts_per_corpus = 2
length = 16
[saliency]
checkpoints = "final"
methods = ["grad_norm"]
prompts_per_corpus = 2
length = 16
deletion_k = [1]
deletion_draws = 2
bootstrap = 10
[quality]
samples = 1
chars = 40
n_slices = 2
adapt_samples = 1
"""
# The same settings as command-line options.
COMMANDS = {
    "evaluate": "--bootstrap 10",
    "adapt": "--pairs notes:shakespeare,math:notes --seeds 1 --iters 4 --schedule 0,4 "
    "--eval-windows 4",
    "softmax": "--prompts-per-corpus 2 --length 16",
    "saliency": "--checkpoints final --methods grad_norm --prompts-per-corpus 2 --length 16 "
    "--deletion-k 1",
    "quality": "--samples 1 --chars 40",
}


@pytest.fixture(scope="module")
def notes(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Path:
    """A user's text: every 7th line of the real Wikipedia corpus, about 40,000 characters."""
    lines = (data_dir / "wikipedia.txt").read_text(encoding="utf-8").splitlines()
    kept, size = [], 0
    for line in lines[3::7]:
        if size > 40_000:
            break
        if line.strip():
            kept.append(line)
            size += len(line) + 1
    path = tmp_path_factory.mktemp("user") / "notes.txt"
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    return path


def _check_every_stage_saw_four_models(root: Path) -> None:
    """Each analysis has rows for the user's model and the user's corpus."""
    zs = pd.read_csv(root / "evaluate" / "zero_shot.csv")
    assert sorted(zs["model"].unique()) == sorted(NAMES)
    assert sorted(zs["corpus"].unique()) == sorted(NAMES)
    mine = zs[(zs["model"] == "notes") & (zs["corpus"] == "notes")]
    assert len(mine) == 1 and bool(mine["in_domain"].iloc[0])
    final = pd.read_csv(root / "adapt" / "final.csv")
    assert {("notes", "shakespeare"), ("math", "notes")} == set(
        zip(final["source"], final["target"], strict=True)
    )
    assert final["target_loss"].notna().all()
    last = pd.read_csv(root / "softmax" / "last.csv")
    assert set(last["model"]) == set(NAMES) and "notes" in set(last["prompt_corpus"])
    per_prompt = pd.read_csv(root / "saliency" / "per_prompt.csv")
    assert "notes" in set(per_prompt["model"])
    assert (root / "quality" / "profile_notes.json").is_file()
    assert "notes" in set(pd.read_csv(root / "quality" / "checkpoints.csv")["model"])


def test_four_corpus_study_runs_every_stage(cli, notes, data_dir, tmp_path, single_thread):
    study = tmp_path / "four.toml"
    study.write_text(
        f'[study]\nname = "four"\ncorpora = ["shakespeare", "math", "wikipedia", "{notes}"]\n'
        "threads = 1\n[train]\n" + "\n".join(k.replace("=", " = ") for k in TRAIN) + ANALYSES
    )
    out = tmp_path / "run"
    code, _, err = cli(
        "run", study, "--preset", "smoke", "--out", out, "--data-dir", data_dir, "-q"
    )
    assert code == 0, err
    run = RunDir(out)
    assert {s: run.status(s) for s in STAGES} == dict.fromkeys(STAGES, "done")
    recorded = json.loads((out / "models" / "notes" / "run.json").read_text())
    assert recorded["corpus_path"] == str(notes)
    _check_every_stage_saw_four_models(out)
    assert "Notes" in (out / "report.html").read_text(encoding="utf-8")


def test_four_corpora_through_the_individual_commands(
    cli, cli_error, notes, data_dir, tmp_path, monkeypatch, single_thread
):
    mine = tmp_path / "texts" / "notes.txt"  # a private copy: this test moves it
    mine.parent.mkdir()
    shutil.copy(notes, mine)
    out = tmp_path / "run"
    for corpus in ["shakespeare", "math", "wikipedia", str(mine)]:
        argv = ["train", corpus, "--preset", "smoke", "--out", out, "--data-dir", data_dir, "-q"]
        argv += [a for k in [*TRAIN, "threads=1"] for a in ("--set", f"train.{k}")]
        code, _, err = cli(*argv)
        assert code == 0, err
    # The analyses run elsewhere, with no --corpora: each finds notes.txt by itself.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    common = ["--out", out, "--data-dir", data_dir, "--threads", "1", "-q"]
    for command, options in COMMANDS.items():
        code, _, err = cli(command, *options.split(), *common)
        assert code == 0, (command, err)
    _check_every_stage_saw_four_models(out)

    # A moved user file: one line naming it and the option that points at it ...
    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.move(mine, moved / "notes.txt")
    err = cli_error("adapt", *COMMANDS["adapt"].split(), *common)
    assert f"corpus file {mine} of model 'notes' is gone" in err
    assert "--data-dir DIR" in err and "--corpora" not in err  # adapt has no --corpora
    assert "--corpora PATH" in cli_error("evaluate", *common)
    # ... found again through --data-dir (the built-in corpora then at the paths their
    # models recorded) or --corpora, its checksum verified ...
    moved_dir = ["--out", out, "--data-dir", moved, "--threads", "1", "-q"]
    code, _, err = cli("adapt", *COMMANDS["adapt"].split(), *moved_dir)
    assert code == 0, err
    # In a study (its file naming the new place), the study's corpora are looked at first.
    settings = AdaptSettings(pairs=["notes:shakespeare"], seeds=1, iters=2, data_dir=str(data_dir))
    study_corpora = [resolve_corpus(n, data_dir) for n in NAMES[:3]]
    study_corpora.append(resolve_corpus(str(moved / "notes.txt")))
    ctx = StageContext(RunDir(out), adapt.stage, study_corpora, progress=False, log=print)
    assert "summary_csv" in adapt.stage.run(ctx, settings)
    code, _, err = cli(
        "quality", *COMMANDS["quality"].split(), *common, "--corpora", moved / "notes.txt"
    )
    assert code == 0, err
    # ... and a changed file is refused: a model's validation split is a function of its bytes.
    with (moved / "notes.txt").open("a", encoding="utf-8") as f:
        f.write("one more line\n")
    err = cli_error("evaluate", *moved_dir)
    assert f"corpus file {moved / 'notes.txt'} of model 'notes' has changed" in err
