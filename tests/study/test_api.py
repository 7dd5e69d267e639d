"""The package root's public API: cheap to import, every name resolves, and what it
offers works on a real run (a model loaded, a stage run)."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import domaingpt
from domaingpt.errors import ConfigError, DomainGPTError


def test_import_is_cheap_and_has_no_side_effects(tmp_path):
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import domaingpt\n"
        "print(sorted(m for m in set(sys.modules) - before))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    loaded = eval(out.stdout)
    assert [m for m in loaded if m.startswith("domaingpt")] == ["domaingpt"]
    assert not {"torch", "numpy", "pandas", "matplotlib"} & set(loaded)
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_every_public_name_resolves_to_its_module():
    assert set(domaingpt.__all__) == set(domaingpt._EXPORTS)
    assert set(domaingpt.__all__) <= set(dir(domaingpt))
    for name, module in domaingpt._EXPORTS.items():
        assert getattr(domaingpt, name) is getattr(importlib.import_module(module), name)
    assert domaingpt.Study is importlib.import_module("domaingpt.study").Study
    with pytest.raises(AttributeError):
        domaingpt.no_such_name  # noqa: B018
    assert (importlib.resources.files("domaingpt") / "py.typed").is_file()


def test_load_a_model_and_run_a_stage(smoke_study, tmp_path):
    loaded = domaingpt.load_model(smoke_study.root / "models" / "math")
    same = domaingpt.load_checkpoint(
        domaingpt.find_checkpoint(smoke_study.root / "models" / "math")
    )
    assert loaded.info.iteration == 60 and loaded.info.meta.corpus == "math"
    assert loaded.info.tensor_path == same.info.tensor_path
    text = domaingpt.generate_text(loaded.model, loaded.vocab, "\n", 20, seed=1)
    assert len(text) == 20

    # One stage on a copy of the run, as `domaingpt evaluate --out COPY` runs it.
    run = tmp_path / "run"
    shutil.copytree(smoke_study.root, run)
    (run / "evaluate" / "zero_shot.csv").unlink()
    written, _ = domaingpt.run_stage("evaluate", run, bootstrap=0)
    zero_shot = run / "evaluate" / "zero_shot.csv"
    assert zero_shot in written.values(), written
    mine = pd.read_csv(zero_shot).sort_values(["model", "corpus"])
    theirs = pd.read_csv(smoke_study.root / "evaluate" / "zero_shot.csv")
    theirs = theirs.sort_values(["model", "corpus"])
    assert len(mine) == 9
    assert mine["loss_nats"].tolist() == pytest.approx(theirs["loss_nats"].tolist(), abs=1e-9)

    with pytest.raises(DomainGPTError, match="runs on its own"):
        domaingpt.run_stage("train", run)
    with pytest.raises(ConfigError, match="no_such_setting"):
        domaingpt.run_stage("evaluate", run, no_such_setting=1)
