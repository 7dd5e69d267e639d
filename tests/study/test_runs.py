"""``domaingpt runs`` and ``domaingpt compare``: runs found under a folder, and what
differs between two of them (settings, losses, the zero-shot matrix, verdicts)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from domaingpt.context.rundir import RunDir
from domaingpt.errors import DomainGPTError
from domaingpt.study.runs import compare_runs, find_runs, in_domain_losses, runs_table


@pytest.fixture(scope="module")
def two_runs(smoke_study, tmp_path_factory):
    """The smoke run as ``runs/a``, and ``runs/b``: a copy with other settings, worse
    in-domain losses (so verdicts change), and one stage failed."""
    root = tmp_path_factory.mktemp("runs")
    a = smoke_study.copy(root / "a")
    b = smoke_study.copy(root / "nested" / "b")
    zs_path = b / "evaluate" / "zero_shot.csv"
    zs = pd.read_csv(zs_path)
    zs.loc[zs["model"] == zs["corpus"], "loss_nats"] += 2.0
    zs.to_csv(zs_path, index=False)
    record = json.loads((b / "stages" / "evaluate.json").read_text())
    record["settings"]["bootstrap"] = 7
    (b / "stages" / "evaluate.json").write_text(json.dumps(record))
    quality = json.loads((b / "stages" / "quality.json").read_text())
    quality["status"] = "failed"
    (b / "stages" / "quality.json").write_text(json.dumps(quality))
    (root / "notes").mkdir()
    (root / "notes" / "todo.txt").write_text("not a run")
    return root, a, b


def test_runs_are_found_and_summarised(two_runs):
    root, a, b = two_runs
    assert find_runs(root) == [a, b]
    assert find_runs(a) == [a]
    table = runs_table(root).set_index("run")
    assert table.loc[str(a), "study"] == "smoke"
    assert table.loc[str(a), "stages"] == "11 done"
    assert table.loc[str(b), "stages"] == "10 done, quality failed"
    assert table.loc[str(a), "models"] == "shakespeare math wikipedia"
    losses = in_domain_losses(RunDir(a))
    zs = pd.read_csv(a / "evaluate" / "zero_shot.csv")
    own = zs[(zs["model"] == "math") & (zs["corpus"] == "math")]
    assert losses["math"] == pytest.approx(own["loss_nats"].iloc[-1])
    assert f"math {losses['math']:.4f}" in table.loc[str(a), "in-domain loss"]


def test_compare_shows_what_differs(two_runs):
    _, a, b = two_runs
    c = compare_runs(a, b)
    assert c.settings.to_dict("records") == [
        {"setting": "evaluate.bootstrap", "A": "100", "B": "7"}
    ]
    assert list(c.losses["model"]) == ["shakespeare", "math", "wikipedia"]
    assert c.losses["B - A"].tolist() == pytest.approx([2.0, 2.0, 2.0])
    diag = c.matrix[c.matrix["model"] == c.matrix["corpus"]]
    off = c.matrix[c.matrix["model"] != c.matrix["corpus"]]
    assert len(c.matrix) == 9 and diag["B - A"].tolist() == pytest.approx([2.0] * 3)
    assert off["B - A"].abs().max() == 0
    # Own-corpus losses 2 nats worse: the zero-shot claims flip.
    flipped = c.verdicts[c.verdicts["stage"] == "evaluate"]
    assert len(flipped) >= 1
    assert set(flipped["verdict A"]) != set(flipped["verdict B"])
    assert set(c.verdict_counts["verdict"]) <= {
        "holds",
        "partly",
        "does not hold",
        "one model",
        "not measured",
    }


def test_cli_runs_and_compare(two_runs, cli, cli_error, tmp_path):
    root, a, b = two_runs
    code, out, err = cli("runs", root)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["run", "study", "stages"]
    assert any(line.startswith(str(a)) and "smoke" in line for line in lines)
    code, out, _ = cli("runs", tmp_path)
    assert code == 0 and "no runs under" in out
    code, out, err = cli("compare", a, b)
    assert code == 0, err
    for title in ("Settings that differ", "In-domain loss", "Zero-shot matrix", "Verdicts"):
        assert title in out
    assert "evaluate.bootstrap" in out
    assert "2.0000" in out.split("In-domain loss")[1].split("Zero-shot")[0]
    code, out, _ = cli("compare", a, a)
    assert "(the same settings)" in out and "(every verdict is the same)" in out
    assert "not a run directory" in cli_error("compare", a, tmp_path)
    assert "not a folder" in cli_error("runs", tmp_path / "missing")


@pytest.mark.parametrize("damage", ["[1, 2]\n", "{not json", '{"stages": "mine"}'])
def test_a_damaged_study_json_is_flagged_and_the_other_runs_still_listed(
    two_runs, tmp_path, damage
):
    _, a, _ = two_runs
    bad = tmp_path / "runs" / "bad"
    bad.mkdir(parents=True)
    (bad / "study.json").write_text(damage)
    (tmp_path / "runs" / "a").symlink_to(a)
    table = runs_table(tmp_path / "runs")
    rows = {r["run"]: r for r in table.to_dict("records")}
    assert rows[str(bad)]["study"] == "DAMAGED" and "study.json" in rows[str(bad)]["stages"]
    assert rows[str(tmp_path / "runs" / "a")]["study"] == "smoke"
    with pytest.raises(DomainGPTError, match=r"study\.json"):
        compare_runs(bad, a)
