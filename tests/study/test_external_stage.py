"""A user's own stage, added by a study file: examples/attention_stage in the smoke study.

The example runs from a copy of ``examples/`` (so a test can edit it) into a copy of the
smoke study's run, so only the new stage and the report do work.
"""

from __future__ import annotations

import shutil
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from domaingpt.core.claims import VERDICTS, Verdict
from domaingpt.errors import ConfigError
from domaingpt.study import StageRef, Study, load_study, run_study
from domaingpt.study.pipeline import BUILTIN_STAGES

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
BUILT_IN = [s.name for s in BUILTIN_STAGES]


def copy_examples(dest: Path) -> Path:
    """``examples/attention_study.toml`` and its stage package, copied under ``dest``."""
    dest.mkdir(parents=True)
    shutil.copy(EXAMPLES / "attention_study.toml", dest)
    shutil.copytree(
        EXAMPLES / "attention_stage",
        dest / "attention_stage",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return dest / "attention_study.toml"


def run(study_file: Path, out: Path, data_dir: Path):
    return run_study(
        load_study(study_file, preset="smoke"),
        out,
        data_dir=data_dir,
        progress=False,
        log=lambda m: None,
    )


def statuses(result) -> dict[str, str]:
    return {o.stage: o.status for o in result.outcomes}


@pytest.fixture(scope="module")
def attention_run(smoke_study, tmp_path_factory, data_dir) -> tuple[Path, Path, dict]:
    """The smoke run with the example stage added: (study file, run dir, first statuses)."""
    tmp = tmp_path_factory.mktemp("external")
    study_file = copy_examples(tmp / "examples")
    root = smoke_study.copy(tmp / "run")
    result = run(study_file, root, data_dir)
    assert result.ok, [o.message for o in result.failed]
    return study_file, root, statuses(result)


def test_only_the_new_stage_and_the_report_run(attention_run):
    _, _, status = attention_run
    assert list(status) == [*BUILT_IN, "attention", "report"]
    assert all(status[s] == "skipped" for s in BUILT_IN), status
    assert status["attention"] == "done" and status["report"] == "done"


def test_its_tables_load_like_a_built_in_stages(attention_run):
    _, root, _ = attention_run
    study = Study.load(root)
    assert study.status("attention") == "done"
    tables = study["attention"]
    distance, per_prompt = tables["distance"], tables["per_prompt"]
    # smoke: 3 models x 4 checkpoints x 3 prompt corpora x 2 layers x 2 heads
    assert len(distance) == 3 * 4 * 3 * 2 * 2
    assert set(distance["iteration"]) == {0, 10, 30, 60}
    assert (distance["n"] == 8).all() and (distance["length"] == 32).all()
    assert len(per_prompt) == 3 * 4 * 24 * 2 * 2
    assert set(per_prompt["domain"]) == {"in", "out"}
    assert ((per_prompt["distance"] >= 0) & (per_prompt["distance"] <= 31)).all()
    # An untrained model (std-0.02 weights) attends almost uniformly: (L - 1) / 4 = 7.75.
    init = distance[distance["iteration"] == 0]["mean_distance"]
    assert np.allclose(init, 7.75, atol=0.1)
    # The table is the per-prompt values averaged per corpus.
    g = per_prompt.groupby(["model", "iteration", "prompt_corpus", "layer", "head"])["distance"]
    means = distance.set_index(["model", "iteration", "prompt_corpus", "layer", "head"])
    pd.testing.assert_series_equal(
        g.mean().sort_index(), means["mean_distance"].sort_index(), check_names=False
    )
    assert study.figures["attention"] == [root / "attention" / "distance.png"]


def test_its_claims_and_section_reach_the_conclusions_and_the_report(attention_run):
    _, root, _ = attention_run
    conclusions = Study.load(root).conclusions
    mine = conclusions[conclusions["stage"] == "attention"]
    assert len(mine) == 2
    assert set(mine["verdict"]) <= {str(v) for v in VERDICTS}
    assert (mine["section"] == "Attention: how far back each head looks").all()
    html = (root / "report.html").read_text(encoding="utf-8")
    assert 'id="attention"' in html and "Attention: how far back each head looks" in html
    assert "Attention becomes more local as training progresses" in html
    written = pd.read_csv(root / "report" / "conclusions.csv")
    assert (written["stage"] == "attention").sum() == 2


def test_a_second_run_skips_it_and_an_edit_runs_it_again(attention_run, data_dir):
    study_file, root, _ = attention_run
    again = statuses(run(study_file, root, data_dir))
    assert set(again.values()) == {"skipped"}, again
    key = Study.load(root).records["attention"]["key"]

    # Its source is part of its key: any file of the package, not only __init__.py.
    section = study_file.parent / "attention_stage" / "section.py"
    section.write_text(section.read_text() + "\n# edited\n")
    edited = statuses(run(study_file, root, data_dir))
    assert edited["attention"] == "done" and edited["report"] == "done", edited
    assert all(edited[s] == "skipped" for s in BUILT_IN)
    assert Study.load(root).records["attention"]["key"] != key


# --- the example's parts, on hand-made input -------------------------------------------


@pytest.fixture(scope="module")
def example():
    stage = StageRef("attention_stage:stage", str(EXAMPLES)).load()
    return stage, sys.modules["attention_stage.compute"]


def test_mean_distance_by_hand(example):
    _, compute = example
    T = 4
    uniform = torch.tril(torch.ones(T, T))
    uniform = uniform / uniform.sum(-1, keepdim=True)
    previous = torch.zeros(T, T)
    previous[0, 0] = 1
    previous[torch.arange(1, T), torch.arange(T - 1)] = 1  # each query looks one back
    pattern = torch.stack([uniform, previous, torch.eye(T)])[None]  # (1, 3 heads, T, T)
    got = compute.mean_distance(pattern)
    # uniform: query i averages 0..i back, i/2; mean over i = 0..3 is 0.75 = (T - 1)/4
    torch.testing.assert_close(got, torch.tensor([[0.75, 0.75, 0.0]]))


def per_prompt_table(values: dict[tuple[str, int, int], list[float]]) -> pd.DataFrame:
    """In-domain rows: ``{(model, iteration, layer): [distance of prompt 0, 1, ...]}``."""
    rows = [
        {
            "model": model,
            "model_corpus": model,
            "iteration": it,
            "prompt_id": i,
            "prompt_corpus": model,
            "domain": "in",
            "layer": layer,
            "head": 0,
            "distance": d,
        }
        for (model, it, layer), ds in values.items()
        for i, d in enumerate(ds)
    ]
    return pd.DataFrame(rows)


def test_claims_on_a_hand_made_table(example):
    stage, _ = example
    table = per_prompt_table(
        {
            # a: more local with training (every prompt falls), last layer further back
            ("a", 0, 0): [8.0, 8.1, 7.9, 8.0],
            ("a", 0, 1): [8.0, 8.0, 8.0, 8.0],
            ("a", 100, 0): [2.0, 2.5, 1.5, 2.2],
            ("a", 100, 1): [6.0, 6.2, 5.9, 6.1],
            # b: unchanged by training (paired differences straddle zero)
            ("b", 0, 0): [8.0, 8.0, 8.0, 8.0],
            ("b", 0, 1): [8.0, 8.0, 8.0, 8.0],
            ("b", 100, 0): [8.5, 7.5, 8.4, 7.6],
            ("b", 100, 1): [7.5, 8.5, 7.6, 8.4],
        }
    )
    local, deeper = stage.claims({"per_prompt": table})
    assert local.verdict == Verdict.PARTLY  # a holds, b does not
    assert local.numbers["a_change"] == pytest.approx(4.05 - 8.0)
    assert "a 8.00 → 4.05 characters" in local.evidence
    assert deeper.verdict == Verdict.PARTLY
    assert deeper.numbers["a_difference"] == pytest.approx(6.05 - 2.05)
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
            from domaingpt.core.stage import Stage

            @dataclass(frozen=True)
            class MineSettings(StageSettings):
                SECTION = "mine"

            stage = Stage("mine", {title!r}, MineSettings, lambda c, s: {{}}, lambda r: {{}})
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


def test_a_stage_module_named_like_an_imported_one_is_refused(tmp_path):
    write_stage(tmp_path, "json", "shadow")
    with pytest.raises(ConfigError, match=r"already imported .*rename json\.py"):
        StageRef("json:stage", str(tmp_path)).load()


def test_a_stage_in_a_plain_folder_is_keyed_by_every_file_of_it(tmp_path):
    """``my_stages/attention.py`` without ``__init__.py``: the folder is its source."""
    write_stage(tmp_path / "my_stages", "attention", "plain folder")
    (tmp_path / "my_stages" / "helpers.py").write_text("SCALE = 1\n")
    ref = StageRef("my_stages.attention:stage", str(tmp_path))
    assert ref.load().title == "plain folder"
    digest = ref.code_digest()
    (tmp_path / "my_stages" / "helpers.py").write_text("SCALE = 2\n")
    assert ref.code_digest() != digest
