"""A user's own stage, added by a study file: examples/norms_stage in the smoke study.

The example runs from a copy of ``examples/`` (so a test can edit it) into a copy of the
smoke study's run, so only the new stage and the report do work.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from domaingpt.context.prompts import Prompt, PromptSet
from domaingpt.core.claims import VERDICTS, Verdict
from domaingpt.errors import ConfigError
from domaingpt.model.gpt import GPT, GPTConfig
from domaingpt.study import StageRef, Study, load_study, run_study
from domaingpt.study.pipeline import BUILTIN_STAGES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILT_IN = [s.name for s in BUILTIN_STAGES]


def copy_examples(dest: Path, corpora) -> Path:
    """``examples/norms_study.toml`` and its stage package, copied under ``dest``; the
    study names the synthetic corpora (the example uses the preset's, the real ones)."""
    dest.mkdir(parents=True)
    text = (EXAMPLES / "norms_study.toml").read_text()
    (dest / "norms_study.toml").write_text(text.replace("[study]\n", "[study]\n" + corpora.line, 1))
    shutil.copytree(
        EXAMPLES / "norms_stage",
        dest / "norms_stage",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return dest / "norms_study.toml"


def run(study_file: Path, out: Path):
    return run_study(
        load_study(study_file, preset="smoke"),
        out,
        progress=False,
        log=lambda m: None,
    )


def statuses(result) -> dict[str, str]:
    return {o.stage: o.status for o in result.outcomes}


@pytest.fixture(scope="module")
def norms_run(smoke_study, tmp_path_factory, corpora) -> tuple[Path, Path, dict]:
    """The smoke run with the example stage added: (study file, run dir, first statuses)."""
    tmp = tmp_path_factory.mktemp("external")
    study_file = copy_examples(tmp / "examples", corpora)
    root = smoke_study.copy(tmp / "run")
    result = run(study_file, root)
    assert result.ok, [o.message for o in result.failed]
    return study_file, root, statuses(result)


def test_only_the_new_stage_and_the_report_run(norms_run):
    _, _, status = norms_run
    assert list(status) == [*BUILT_IN, "norms", "report"]
    assert all(status[s] == "skipped" for s in BUILT_IN), status
    assert status["norms"] == "done" and status["report"] == "done"


def test_the_example_never_duplicates_a_built_in_stage():
    stage = StageRef("norms_stage:stage", str(EXAMPLES)).load()
    assert stage.name not in BUILT_IN


def test_its_tables_load_like_a_built_in_stages(norms_run):
    _, root, _ = norms_run
    study = Study.load(root)
    assert study.status("norms") == "done"
    tables = study["norms"]
    norms, per_prompt = tables["norms"], tables["per_prompt"]
    # smoke: 3 models x 4 checkpoints x 3 prompt corpora x 3 layers (embeddings + 2 blocks)
    assert len(norms) == 3 * 4 * 3 * 3
    assert set(norms["iteration"]) == {0, 10, 30, 60}
    assert (norms["n"] == 8).all()
    assert len(per_prompt) == 3 * 4 * 24 * 3
    assert set(per_prompt["domain"]) == {"in", "out"}
    assert (per_prompt["norm"] > 0).all()
    # Untrained embeddings (token + position, std 0.02 each, 32 dims): sqrt(32 * 2 * 0.02²).
    init = norms[(norms["iteration"] == 0) & (norms["layer"] == 0)]["mean_norm"]
    assert np.allclose(init, 0.16, atol=0.01)
    # The table is the per-prompt values averaged per corpus.
    g = per_prompt.groupby(["model", "iteration", "prompt_corpus", "layer"])["norm"]
    means = norms.set_index(["model", "iteration", "prompt_corpus", "layer"])
    pd.testing.assert_series_equal(
        g.mean().sort_index(), means["mean_norm"].sort_index(), check_names=False
    )
    assert study.figures["norms"] == [root / "norms" / "norms.png"]


def test_its_claims_and_section_reach_the_conclusions_and_the_report(norms_run):
    _, root, _ = norms_run
    conclusions = Study.load(root).conclusions
    mine = conclusions[conclusions["stage"] == "norms"]
    assert len(mine) == 2
    assert set(mine["verdict"]) <= {str(v) for v in VERDICTS}
    heading = "The residual stream: how large it grows, layer by layer"
    assert (mine["section"] == heading).all()
    html = (root / "report.html").read_text(encoding="utf-8")
    assert 'id="norms"' in html and heading in html
    assert "The residual stream grows as training progresses" in html
    written = pd.read_csv(root / "report" / "conclusions.csv")
    assert (written["stage"] == "norms").sum() == 2


def test_a_second_run_skips_it_and_an_edit_runs_it_again(norms_run):
    study_file, root, _ = norms_run
    again = statuses(run(study_file, root))
    assert set(again.values()) == {"skipped"}, again
    key = Study.load(root).records["norms"].key

    # Its source is part of its key: any file of the package, not only __init__.py.
    section = study_file.parent / "norms_stage" / "section.py"
    section.write_text(section.read_text() + "\n# edited\n")
    edited = statuses(run(study_file, root))
    assert edited["norms"] == "done" and edited["report"] == "done", edited
    assert all(edited[s] == "skipped" for s in BUILT_IN)
    assert Study.load(root).records["norms"].key != key


# --- the example's parts, on hand-made input -------------------------------------------


@pytest.fixture(scope="module")
def example():
    stage = StageRef("norms_stage:stage", str(EXAMPLES)).load()
    return stage, sys.modules[stage.run.__module__]


def test_norms_by_hand(example):
    _, compute = example
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, block_size=8, vocab_size=11)).eval()
    ids = torch.randint(0, 11, (3, 8), generator=torch.Generator().manual_seed(1))
    prompts = PromptSet([Prompt(i, "c", 0, "x" * 8, "x", ids[i].numpy(), 0, 0) for i in range(3)])
    got = compute.prompt_norms(model, prompts, batch_size=2, device=torch.device("cpu"))
    with torch.no_grad():
        x = model.tok_emb(ids) + model.pos_emb.weight[:8]
        expected = [x.norm(dim=-1).mean(-1)]
        for block in model.blocks:
            x = block(x)
            expected.append(x.norm(dim=-1).mean(-1))
    np.testing.assert_allclose(got, torch.stack(expected, 1).numpy(), rtol=1e-5)


def per_prompt_table(values: dict[tuple[str, int, int], list[float]]) -> pd.DataFrame:
    """In-domain rows: ``{(model, iteration, layer): [norm of prompt 0, 1, ...]}``."""
    rows = [
        {
            "model": model,
            "model_corpus": model,
            "iteration": it,
            "prompt_id": i,
            "prompt_corpus": model,
            "domain": "in",
            "layer": layer,
            "norm": d,
        }
        for (model, it, layer), ds in values.items()
        for i, d in enumerate(ds)
    ]
    return pd.DataFrame(rows)


def test_claims_on_a_hand_made_table(example):
    stage, _ = example
    table = per_prompt_table(
        {
            # a: grows with training (every prompt), the last layer larger
            ("a", 0, 0): [0.2, 0.2, 0.2, 0.2],
            ("a", 0, 1): [0.2, 0.2, 0.2, 0.2],
            ("a", 100, 0): [0.5, 0.6, 0.4, 0.5],
            ("a", 100, 1): [4.0, 4.2, 3.9, 4.1],
            # b: unchanged by training (paired differences straddle zero), layers alike
            ("b", 0, 0): [2.0, 2.0, 2.0, 2.0],
            ("b", 0, 1): [2.0, 2.0, 2.0, 2.0],
            ("b", 100, 0): [2.5, 1.5, 2.4, 1.6],
            ("b", 100, 1): [1.5, 2.5, 1.6, 2.4],
        }
    )
    grows, deeper = stage.claims({"per_prompt": table})
    assert grows.verdict == Verdict.PARTLY  # a holds, b does not
    assert grows.numbers["a_change"] == pytest.approx(2.275 - 0.2)
    assert "a 0.20 → " in grows.evidence and "iteration 0 → 100" in grows.evidence
    assert deeper.verdict == Verdict.PARTLY
    assert deeper.numbers["a_difference"] == pytest.approx(4.05 - 0.5)
    only_a = table[table["model"] == "a"]
    assert [c.verdict for c in stage.claims({"per_prompt": only_a})] == [Verdict.HOLDS] * 2
    one_checkpoint = only_a[(only_a["iteration"] == 100) & (only_a["layer"] == 0)]
    assert [c.verdict for c in stage.claims({"per_prompt": one_checkpoint})] == [
        Verdict.UNMEASURED
    ] * 2
    assert [c.verdict for c in stage.claims({})] == [Verdict.UNMEASURED] * 2


# --- importing a user's stage ----------------------------------------------------------


def write_stage(folder: Path, name: str, title: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.py").write_text(
        textwrap.dedent(
            f"""
            from dataclasses import dataclass
            from domaingpt.core.settings import StageSettings
            from domaingpt.context.stage import Stage

            @dataclass(frozen=True)
            class MineSettings(StageSettings):
                pass

            stage = Stage("mine", {title!r}, MineSettings, lambda c, s: {{}})
            """
        )
    )


def test_each_study_folder_imports_its_own_module_afresh(tmp_path):
    write_stage(tmp_path / "one", "my_stage", "first")
    write_stage(tmp_path / "two", "my_stage", "second")
    assert StageRef("my_stage:stage", str(tmp_path / "one")).load().title == "first"
    assert StageRef("my_stage:stage", str(tmp_path / "two")).load().title == "second"
    write_stage(tmp_path / "one", "my_stage", "edited")
    ref = StageRef("my_stage:stage", str(tmp_path / "one"))
    assert ref.load().title == "edited"  # an edit takes effect in the same process
    digest = ref.code_digest()
    write_stage(tmp_path / "one", "my_stage", "edited again")
    assert ref.code_digest() != digest


def test_importing_a_stage_changes_no_module_already_imported(tmp_path):
    """A stage module named like an imported one (``json``) is its own, under a private
    name: the imported one stays, nothing is put on ``sys.path``, and loading the same
    source again imports nothing anew."""
    write_stage(tmp_path, "json", "shadow")
    before, path = dict(sys.modules), list(sys.path)
    ref = StageRef("json:stage", str(tmp_path))
    stage = ref.load()
    assert stage.title == "shadow" and sys.modules["json"] is before["json"]
    assert sys.path == path
    assert all(sys.modules.get(k) is v for k, v in before.items())  # nothing replaced
    assert set(sys.modules) - set(before) == {ref.private_name()}
    assert ref.load() is stage


def test_a_stage_in_a_plain_folder_is_keyed_by_every_file_of_it(tmp_path):
    """``my_stages/attention.py`` without ``__init__.py``: the folder is its source."""
    write_stage(tmp_path / "my_stages", "attention", "plain folder")
    (tmp_path / "my_stages" / "helpers.py").write_text("SCALE = 1\n")
    ref = StageRef("my_stages.attention:stage", str(tmp_path))
    assert ref.load().title == "plain folder"
    digest = ref.code_digest()
    (tmp_path / "my_stages" / "helpers.py").write_text("SCALE = 2\n")
    assert ref.code_digest() != digest


# --- a user's stage cannot end the run as a success, nor take a built-in's place ------


def write_failing_stage(folder: Path, body: str, *, at_import: str = "", corpora=None) -> Path:
    """A study file adding the stage ``mine``, whose ``run`` executes ``body`` (on the
    synthetic ``corpora`` if given)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "failing.py").write_text(
        textwrap.dedent(
            f"""
            import errno, sys
            from dataclasses import dataclass
            from domaingpt.core.settings import StageSettings
            from domaingpt.context.stage import Stage
            {at_import}

            @dataclass(frozen=True)
            class MineSettings(StageSettings):
                pass

            def run(ctx, settings):
                {body}

            stage = Stage("mine", "mine", MineSettings, run)
            """
        )
    )
    study = folder / "study.toml"
    study.write_text(
        "[study]\n" + (corpora.line if corpora else "") + 'stages = ["failing:stage"]\n'
    )
    return study


@pytest.fixture
def smoke_copy(smoke_study, tmp_path) -> Path:
    return smoke_study.copy(tmp_path / "run")


@pytest.mark.parametrize("body", ["sys.exit(0)", "sys.exit()", "raise SystemExit(3)"])
def test_a_stage_that_calls_sys_exit_is_a_failed_stage_and_the_run_fails(
    smoke_copy, tmp_path, corpora, body, capsys
):
    from domaingpt.cli import main

    study = write_failing_stage(tmp_path / "s", body, corpora=corpora)
    code = main(["run", str(study), "--preset", "smoke", "--out", str(smoke_copy), "--quiet"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert "error: stage mine failed: it called sys.exit(" in err
    record = json.loads((smoke_copy / "stages" / "mine.json").read_text())
    assert record["status"] == "failed"
    assert Study.load(smoke_copy).run.status("report") == "done"  # the others still ran


def test_a_stage_interrupted_stops_the_run_as_an_interrupt(smoke_copy, tmp_path, corpora, capsys):
    from domaingpt.cli import main

    study = write_failing_stage(tmp_path / "s", "raise KeyboardInterrupt", corpora=corpora)
    code = main(["run", str(study), "--preset", "smoke", "--out", str(smoke_copy), "--quiet"])
    err = capsys.readouterr().err
    assert code == 130 and "interrupted" in err
    assert not (smoke_copy / "stages" / "mine.json").exists()  # not recorded as done


def test_a_full_disk_in_a_stage_is_one_clear_error(smoke_copy, tmp_path, corpora):
    study = write_failing_stage(
        tmp_path / "s",
        "raise OSError(errno.ENOSPC, 'No space left on device', str(ctx.out))",
        corpora=corpora,
    )
    result = run(study, smoke_copy)
    (failed,) = result.failed
    assert failed.stage == "mine" and failed.user_error and result.exit_code == 2
    assert "the disk is full: free some disk space, then run the same command again" in (
        failed.message
    )
    assert result.report_written  # the report ran after it: it may be named


def test_sys_exit_on_import_is_refused_before_anything_runs(tmp_path):
    study = write_failing_stage(tmp_path / "s", "pass", at_import="sys.exit(0)")
    with pytest.raises(ConfigError, match=r"called sys.exit\(0\) on import"):
        load_study(study, preset="smoke")


@pytest.mark.parametrize(
    ("name", "subdir", "said"),
    [
        ("report", "", "is named 'report', which is taken"),
        ("train", "", "which is taken"),
        ("all", "", "which is taken"),
        ("eval", "", "which is taken"),  # the evaluate stage's earlier name
        ("probe", "", "which is taken"),
        ("models", "", "the folder of the trained models"),
        ("stages", "", "the stage records"),
        ("mine", "eval", "the folder of stage 'evaluate'"),
    ],
)
def test_built_in_names_and_folders_are_reserved(tmp_path, name, subdir, said):
    (tmp_path / "taker.py").write_text(
        textwrap.dedent(
            f"""
            from dataclasses import dataclass
            from domaingpt.core.settings import StageSettings
            from domaingpt.context.stage import Stage

            @dataclass(frozen=True)
            class TakerSettings(StageSettings):
                pass

            stage = Stage({name!r}, "t", TakerSettings, lambda c, s: {{}},
                          aliases=tuple(a for a in [{subdir!r}] if a))
            """
        )
    )
    (tmp_path / "study.toml").write_text('[study]\nstages = ["taker:stage"]\n')
    with pytest.raises(ConfigError, match=re.escape(said)):
        load_study(tmp_path / "study.toml", preset="smoke")


def test_a_settings_check_that_calls_sys_exit_is_refused(tmp_path):
    (tmp_path / "quitter.py").write_text(
        textwrap.dedent(
            """
            import sys
            from dataclasses import dataclass
            from domaingpt.core.settings import StageSettings
            from domaingpt.context.stage import Stage

            @dataclass(frozen=True)
            class QuitterSettings(StageSettings):
                def check(self):
                    sys.exit(4)

            stage = Stage("quitter", "q", QuitterSettings, lambda c, s: {})
            """
        )
    )
    (tmp_path / "study.toml").write_text('[study]\nstages = ["quitter:stage"]\n')
    with pytest.raises(ConfigError, match=r"stage 'quitter' called sys.exit\(4\)"):
        load_study(tmp_path / "study.toml", preset="smoke")
