"""Importing domaingpt changes nothing outside it: every module of the package, imported
in a fresh process (as a notebook would), leaves matplotlib's backend and settings, the
warnings filter, the modules already imported, torch's thread count and the working
directory as they were, and so does drawing a figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import importlib, json, os, pkgutil, sys, warnings

import matplotlib
matplotlib.use("svg")  # a backend of the user's (a notebook's is its inline one)
import torch
torch.set_num_threads(3)  # the user's choice, not torch's default

modules = dict(sys.modules)
filters = list(warnings.filters)
rc = {k: repr(v) for k, v in matplotlib.rcParams.items()}
state = (os.getcwd(), torch.get_num_threads(), matplotlib.get_backend())

import domaingpt

imported = []
for info in pkgutil.walk_packages(domaingpt.__path__, "domaingpt."):
    if info.name.rsplit(".", 1)[-1] == "__main__":  # a program, run, not imported
        continue
    importlib.import_module(info.name)
    imported.append(info.name)

# Drawing a figure changes none of it either.
from domaingpt.training.plots import plot_loss_curves
rows = [{"iter": i, "train_loss": 3.0 - i / 100, "val_loss": 3.1 - i / 100} for i in (0, 50)]
drawn = plot_loss_curves({"m": rows}, "loss.png")

print("RESULT " + json.dumps({
    "drawn": os.path.getsize(drawn),
    "imported": imported,
    "replaced": sorted(k for k, v in modules.items() if sys.modules.get(k) is not v),
    "filters": filters == list(warnings.filters),
    "rc": sorted(k for k, v in matplotlib.rcParams.items() if rc.get(k) != repr(v)),
    "state": [os.getcwd(), torch.get_num_threads(), matplotlib.get_backend()],
    "before": list(state),
}))
"""


def test_importing_every_module_changes_nothing_outside_the_package(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parents[1] / "src"))
    env.pop("MPLBACKEND", None)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
    out = json.loads(line.removeprefix("RESULT "))
    assert len(out["imported"]) > 100  # every module of the package, not a few
    assert "domaingpt.report.plotting" in out["imported"]
    assert out["replaced"] == []
    assert out["filters"] is True
    assert out["rc"] == []
    assert out["before"] == [str(tmp_path), 3, "svg"]
    assert out["state"] == out["before"]
    assert out["drawn"] > 1000 and (tmp_path / "loss.svg").is_file()
