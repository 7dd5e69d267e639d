"""``domaingpt run``: the whole study, its cache, resumption, failures and bad study files.

One smoke study on the three synthetic corpora (``corpora`` in conftest) is shared by all
tests here (and by the report tests); a test that changes a run works on a copy of it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import domaingpt.training.trainer
from domaingpt.cli import main
from domaingpt.context.rundir import RunDir
from domaingpt.core.claims import CLAIM_COLUMNS
from domaingpt.core.io import read_jsonl
from domaingpt.core.tables import read_table
from domaingpt.errors import ConfigError, DomainGPTError
from domaingpt.study import Study, load_study, run_study

ANALYSES = (
    "evaluate",
    "adapt",
    "softmax",
    "lens",
    "similarity",
    "saliency",
    "attention",
    "quality",
)
STAGE_NAMES = ("stats", "train", *ANALYSES, "report")


@pytest.fixture(scope="module")
def smoke(smoke_study):
    return smoke_study


def _statuses(result) -> dict[str, str]:
    return {o.stage: o.status for o in result.outcomes}


def test_smoke_study_end_to_end(smoke, corpora):
    status = _statuses(smoke.result)
    assert list(status) == list(STAGE_NAMES)
    assert [s.name for s in load_study(preset="smoke").stages] == list(STAGE_NAMES)
    for stage in STAGE_NAMES:
        assert status[stage] == "done", (stage, smoke.log)
    assert smoke.result.exit_code == 0

    root = smoke.root
    study_toml = (root / "study.toml").read_text()
    assert study_toml.endswith(corpora.study.read_text())  # the study file, copied
    spec = json.loads((root / "study.json").read_text())
    assert spec["corpora"] == [str(p) for p in corpora.paths]
    versions = json.loads((root / "versions.json").read_text())
    assert {"domaingpt", "torch", "numpy", "pandas", "python"} <= set(versions)

    study = Study.load(root)
    stats = study["stats"]["summary"].set_index("corpus")
    for name, path in zip(corpora.names, corpora.paths, strict=True):
        assert stats.loc[name, "unique_characters"] == len(set(path.read_text()))
    train = study["train"]["summary"].set_index("model")
    assert sorted(train.index) == ["math", "shakespeare", "wikipedia"]
    assert (train["iterations"] == 60).all()
    # Training helps: every model ends well below its loss at initialisation.
    assert (train["final_val_loss"] < train["initial_val_loss"] - 0.5).all()
    samples = study["train"]["samples"]
    assert sorted(samples["iter"].unique()) == [0, 10, 30, 60]

    if True:
        zs = study["evaluate"]["zero_shot"]
        final = zs[zs["iteration"] == 60]
        assert len(final) == 9
        assert np.isfinite(final["loss_nats"]).all()
        assert (final["ci_low"] <= final["loss_nats"]).all()
        assert (final["loss_nats"] <= final["ci_high"]).all()
        # Even 60 iterations make each corpus best predicted by its own model.
        matrix = final.pivot_table(index="model", columns="corpus", values="loss_nats")
        for c in matrix.columns:
            assert matrix[c].idxmin() == c, matrix

    for stage in ANALYSES:
        rec = study.run.record(stage)
        assert rec is not None and rec.status == "done"
        if rec.status == "done":
            assert rec.outputs and rec.key
            assert all(isinstance(df.columns, object) for df in study[stage].values())
    assert study.figures["stats"] and (root / "report.html").is_file()
    assert (root / "report.md").is_file()
    assert list(study.conclusions.columns) == CLAIM_COLUMNS
    for stage in ("stats", *ANALYSES):
        claims = read_table(root / study.stage(stage).name / "claims.csv")
        assert list(claims.columns) == CLAIM_COLUMNS and len(claims), stage


def test_second_run_does_no_work(smoke, corpora, tmp_path_factory):
    before = {s: (smoke.root / "stages" / f"{s}.json").read_bytes() for s in STAGE_NAMES}
    model_files = {p: p.stat().st_mtime_ns for p in (smoke.root / "models").rglob("*")}
    for name in ("study.toml", "study.json", "versions.json", "report.html"):
        model_files[smoke.root / name] = (smoke.root / name).stat().st_mtime_ns
    log: list[str] = []
    if True:
        t0 = time.perf_counter()
        result = run_study(
            corpora.smoke(),
            smoke.root,
            progress=False,
            log=log.append,
        )
        seconds = time.perf_counter() - t0
    status = _statuses(result)
    for stage in STAGE_NAMES:
        assert status[stage] in ("skipped", "unavailable"), (stage, log)
        if status[stage] == "skipped":
            assert (smoke.root / "stages" / f"{stage}.json").read_bytes() == before[stage]
    assert sum("unchanged, skipped" in line for line in log) == sum(
        s == "skipped" for s in status.values()
    )
    assert {p: p.stat().st_mtime_ns for p in model_files} == model_files
    assert seconds < max(10.0, smoke.seconds / 4), log


def test_force_redoes_one_stage_only(smoke, corpora, tmp_path, monkeypatch):
    root = smoke.copy(tmp_path / "run")
    log: list[str] = []
    result = run_study(
        corpora.smoke(),
        root,
        force=["stats"],
        progress=False,
        log=log.append,
    )
    status = _statuses(result)
    assert status["stats"] == "done"
    assert status["train"] == "skipped"
    # Statistics are deterministic: the same files, so nothing after them is redone.
    assert status["report"] == "skipped"
    with pytest.raises(ConfigError, match="did you mean 'train'"):
        run_study(corpora.smoke(), root, force=["trian"])


def test_a_failing_stage_is_reported_and_the_rest_stays(smoke, corpora, tmp_path, monkeypatch):
    import domaingpt.stages.evaluate

    root = smoke.copy(tmp_path / "run")
    stage = "evaluate"

    def boom(*args, **kwargs):
        raise DomainGPTError("the disk is full (simulated)")

    monkeypatch.setattr(domaingpt.stages.evaluate.results, "zero_shot_table", boom)
    log: list[str] = []
    result = run_study(
        corpora.smoke(),
        root,
        force=[stage],
        progress=False,
        log=log.append,
    )
    status = _statuses(result)
    assert status[stage] == "failed" and result.exit_code == 2
    assert "the disk is full (simulated)" in result.failed[0].message
    assert status["train"] == "skipped"  # earlier stages stay done
    assert status["report"] == "done"  # the report is rewritten with the part missing
    rec = result.run.record(stage)
    assert rec.status == "failed" and "disk is full" in rec.message
    html = (root / "report.html").read_text()
    assert "Missing:" in html and "disk is full (simulated)" in html
    assert Study.load(root).status(stage) == "failed"

    # Fixed: the same command redoes only the failed stage (and the report).
    monkeypatch.undo()
    result = run_study(corpora.smoke(), root, progress=False, log=log.append)
    status = _statuses(result)
    assert status[stage] == "done" and status["train"] == "skipped" and result.exit_code == 0


def test_cli_reports_a_failing_stage_in_one_line_per_failure(
    smoke, corpora, tmp_path, monkeypatch, capsys
):
    import domaingpt.stages.stats.results

    root = smoke.copy(tmp_path / "run")

    def boom(*args, **kwargs):
        raise RuntimeError("unexpected bug (simulated)")

    monkeypatch.setattr(domaingpt.stages.stats.results, "compute_stats", boom)
    code = main(
        [
            *("run", str(corpora.study), "--preset", "smoke", "--out", str(root)),
            *("--quiet", "--force", "stats"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 1  # not a user error: a bug, with its traceback kept
    assert "error: stage stats failed: RuntimeError: unexpected bug (simulated)" in err
    assert (root / "stages" / "stats.log").read_text().startswith("Traceback")
    assert "Traceback" not in err


LIGHT_ANALYSES = """
[evaluate]
bootstrap = 10
[adapt]
pairs = ["shakespeare:math"]
starts = ["final"]
seeds = 1
iters = 5
schedule = [0, 5]
eval_windows = 4
final_windows = 8
sample_chars = 8
[probe]
prompts_per_corpus = 2
length = 16
[lens]
prompts_per_corpus = 2
length = 16
[similarity]
prompts_per_corpus = 2
length = 16
[attention]
prompts_per_corpus = 2
length = 16
[saliency]
methods = ["grad_norm"]
prompts_per_corpus = 2
length = 16
deletion_k = [1]
deletion_draws = 2
bootstrap = 10
occlusion = ["unk"]
occlusion_checkpoints = 1
[quality]
samples = 1
chars = 40
n_slices = 2
adapt = false
"""


def _tiny_study(tmp_path: Path, corpora: list[str], iters: int = 40) -> Path:
    """A study of tiny models and the lightest analyses (over the smoke preset)."""
    path = tmp_path / "tiny.toml"
    path.write_text(
        "[study]\n"
        f"corpora = {json.dumps(corpora)}\n"
        f"[train]\nmax_iters = {iters}\ncheckpoints = [0, {iters}]\nresume_interval = 20\n"
        "eval_tokens = 1024\nsample_chars = 24\n" + LIGHT_ANALYSES
    )
    return path


def test_a_fourth_user_corpus_joins_and_an_interrupted_run_resumes(
    smoke, corpora, tmp_path, capsys, monkeypatch
):
    # The shared smoke run gets a fourth corpus: one line in a study file.
    out = smoke.copy(tmp_path / "run")
    vocab_before = json.loads((out / "vocab.json").read_text())["fingerprint"]
    notes = tmp_path / "data" / "notes.txt"
    notes.parent.mkdir()
    lines = [
        f"Entry {i}: the committee met on day {i % 28 + 1} and agreed on item {i * 7 % 100}."
        for i in range(400)
    ]
    lines.insert(200, '<script>alert("pwned")</script> & <b>bold</b>')
    notes.write_text("\n".join(lines) + "\n")
    study_file = tmp_path / "four.toml"
    analyses = LIGHT_ANALYSES.replace('"shakespeare:math"', f'"shakespeare:{notes}"')
    three = ", ".join(f'"{p}"' for p in corpora.paths)
    study_file.write_text(f'[study]\ncorpora = [{three}, "data/notes.txt"]\n' + analyses)
    argv = ["run", str(study_file), "--preset", "smoke", "--out", str(out), "--quiet"]

    # Ctrl-C while the new model trains (iteration 45 of 60; resumable checkpoint at 30)...
    real_step = domaingpt.training.trainer.Trainer.step

    def step(self):
        if self.iteration == 45:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(domaingpt.training.trainer.Trainer, "step", step)
    assert main(argv) == 130
    assert "interrupted" in capsys.readouterr().err
    assert RunDir(out).record("stats").status == "done"
    assert RunDir(out).record("train") is None  # not done, so not skipped next time
    ckpts = out / "models" / "notes" / "checkpoints"
    assert max(p.name for p in ckpts.glob("resume-*.json")) == "resume-0000030.json"
    mtime = (out / "models" / "shakespeare" / "metrics.jsonl").stat().st_mtime_ns

    # ... and the same command continues where it stopped.
    monkeypatch.undo()
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 0, err
    log = (out / "log.txt").read_text()
    assert "already holds every character of notes: kept" in log
    assert "model 1/4 (shakespeare): finished earlier with this configuration, skipped" in log
    assert "resuming notes from iteration 30" in log
    assert "stage 1/11: stats — unchanged, skipped" in log.split("interrupted")[-1]
    # The three models of the smoke run were neither retrained nor touched.
    assert (out / "models" / "shakespeare" / "metrics.jsonl").stat().st_mtime_ns == mtime
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["fingerprint"] == vocab_before
    assert set(vocab["corpora"]) == {"shakespeare", "math", "wikipedia", "notes"}
    rows = read_jsonl(out / "models" / "notes" / "metrics.jsonl")
    iters = [r["iter"] for r in rows]
    assert iters == sorted(set(iters)) and iters[-1] == 60 and "val_loss_full" in rows[-1]

    study = Study.load(out)
    assert study.status("train") == "done"
    assert list(study["train"]["summary"]["model"]) == ["shakespeare", "math", "wikipedia", "notes"]
    final = study["evaluate"]["zero_shot"]
    assert len(final[final["iteration"] == 60]) == 16
    assert study["adapt"]["summary"]["target"].tolist() == ["notes"]
    html = (out / "report.html").read_text()
    assert "Notes" in html
    assert "<script>" not in html and "&lt;script&gt;alert(&quot;pwned&quot;)" in html


# --- bad study files: clear errors before any work -----------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[probe]\nprompts_per_corpuss = 3\n", "did you mean 'softmax.prompts_per_corpus'"),
        ("[evaluate]\nbootstrapp = 3\n", "did you mean 'evaluate.bootstrap'"),
        ("[evaluate]\nbootstrap = -1\n", "[evaluate]"),
        ("[train]\nlrr = 0.1\n", "did you mean 'train.lr'"),
        ("[evalute]\n", "did you mean [evaluate]"),
        ("[study]\ncorpra = []\n", "did you mean 'study.corpora'"),
        ('[study]\ncorpora = "shakespeare"\n', "non-empty list"),
        ('[study]\nname = "../escape"\n', "simple name"),
        ('[study]\npreset = "cpu-mni"\n', "did you mean 'cpu-mini'"),
        ("[softmax]\nprompts_per_corpus = 'many'\n", "prompts_per_corpus must be an integer"),
        # not declared a path by any stage: an unknown key, never guessed from its name
        ('[evaluate]\noutput_dir = "../../etc"\n', "unknown key 'evaluate.output_dir'"),
        ("[study\n", "not valid TOML"),
        ('[study]\nranks = "both"\n', "study.ranks in"),
    ],
)
def test_bad_study_file_names_the_key(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_study(path, preset="smoke")
    assert message in str(err.value)


def test_missing_corpus_or_study_file_is_one_line_error(tmp_path, corpora, capsys):
    path = tmp_path / "missing.toml"
    path.write_text(f'[study]\ncorpora = ["{corpora.path("shakespeare")}", "nowhere/gone.txt"]\n')
    out = str(tmp_path / "r")
    code = main(["run", str(path), "--preset", "smoke", "--out", out])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert str(tmp_path / "nowhere" / "gone.txt") in err and "does not exist" in err
    assert not (tmp_path / "r" / "stages").exists()  # nothing ran

    code = main(["run", str(tmp_path / "nope.toml"), "--out", str(tmp_path / "r2")])
    err = capsys.readouterr().err
    assert code == 2 and "study file" in err and "does not exist" in err

    code = main(["run", "--preset", "smok", "--out", str(tmp_path / "r3")])
    err = capsys.readouterr().err
    assert code == 2 and "did you mean 'smoke'" in err


def test_study_file_layers_over_the_preset(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('[study]\ncorpora = ["shakespeare", "texts/a.txt"]\n[train]\nmax_iters = 7\n')
    spec = load_study(path, preset="smoke")
    assert spec.name == "mine" and spec.base == "smoke"
    assert spec.corpora == ("shakespeare", str((tmp_path / "texts" / "a.txt").resolve()))
    cfg = spec.config()
    assert cfg.train.max_iters == 7 and cfg.model.n_embd == 32  # the rest from smoke
    assert spec.analyses.get("softmax", {}).get("prompts_per_corpus") == 8
    # Choosing another training preset drops the preset study's [train] overrides.
    path.write_text('[study]\ncorpora = ["shakespeare"]\npreset = "cpu-mini"\n')
    cfg = load_study(path, preset="smoke").config()
    assert cfg.train.max_iters == 2000 and cfg.model.n_embd == 128


def test_default_study_is_cpu_on_the_three_corpora():
    spec = load_study()
    assert spec.name == "cpu" and spec.corpora == ("shakespeare", "math", "wikipedia")
    gpu_study = load_study(preset="gpu")
    gpu = gpu_study.config()
    assert gpu.model.n_layer == 6 and gpu.model.n_embd == 384 and gpu.model.block_size == 256
    assert gpu.model.n_head == 6 and gpu.model.dropout == 0.2
    # long enough for the study's hardening claims: history at 1000, 4000 and 14,000
    assert gpu.train.max_iters >= 15000
    assert {1000, 4000, 14000, gpu.train.max_iters} <= set(gpu.train.checkpoints)
    adapt = gpu_study.settings("adapt")
    assert adapt.iters == 200 and adapt.seeds == 3


def test_study_load_needs_a_run(tmp_path):
    with pytest.raises(DomainGPTError, match="does not exist"):
        Study.load(tmp_path / "nothing")
    study = Study.load(tmp_path)
    assert study.status("evaluate") == "absent"
    with pytest.raises(DomainGPTError):
        study["evaluate"]


def test_a_run_written_under_the_earlier_stage_names_loads(smoke, tmp_path):
    """Runs written before ``probe`` became ``softmax`` and ``evaluate`` left ``eval/``:
    their folders and records are read under the new names, tables unchanged, and the
    old command name still runs the stage."""
    root = smoke.copy(tmp_path / "old")
    (root / "softmax").rename(root / "probe")
    (root / "evaluate").rename(root / "eval")
    (root / "stages" / "softmax.json").rename(root / "stages" / "probe.json")
    old, new = Study.load(root), Study.load(smoke.root)
    assert old.records["softmax"].status == "done"
    assert old.status("softmax") == old.status("probe") == new.status("probe") == "done"
    for stage in ("softmax", "evaluate"):
        for name, table in new[stage].items():
            pd.testing.assert_frame_equal(old[stage][name], table, check_dtype=False)
    assert old["probe"].keys() == new["softmax"].keys()  # the earlier name looks it up
    assert {c.claim for c in old.view("softmax").claims} == {
        c.claim for c in new.view("softmax").claims
    }
