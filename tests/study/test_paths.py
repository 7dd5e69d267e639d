"""Which settings are paths is declared on the field (``setting(path=...)``), never
guessed from a key's name: a study file's input paths resolve relative to the file,
output paths stay inside the run directory."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from domaingpt.context.prompts import UserPromptSettings
from domaingpt.core.settings import StageSettings, path_fields, setting
from domaingpt.errors import ConfigError
from domaingpt.study import load_study
from domaingpt.study.spec import _resolve_paths


@dataclass(frozen=True)
class FilesSettings(StageSettings):
    notes_file: str = setting("", "a label that happens to end in _file")
    inputs: list[str] = setting([], "files to read", path="input")
    out: str = setting("", "a file to write", path="output")


def test_the_declared_fields_are_the_paths():
    assert path_fields(FilesSettings) == {"data_dir": "input", "inputs": "input", "out": "output"}
    assert path_fields(UserPromptSettings) == {"data_dir": "input", "prompt_file": "input"}


def test_only_declared_fields_resolve(tmp_path):
    kinds = path_fields(FilesSettings)
    table = {"notes_file": "a.txt", "inputs": ["x.txt", "/abs/y.txt"], "out": "sub/o.csv"}
    got = _resolve_paths("files", table, kinds, tmp_path, "s.toml")
    assert got == {
        "notes_file": "a.txt",
        "inputs": [str((tmp_path / "x.txt").resolve()), "/abs/y.txt"],
        "out": "sub/o.csv",
    }
    for bad in ("../o.csv", "/tmp/o.csv"):
        with pytest.raises(ConfigError, match=r"files\.out = .* cannot leave"):
            _resolve_paths("files", {"out": bad}, kinds, tmp_path, "s.toml")


def test_a_study_files_prompt_file_is_relative_to_it(tmp_path):
    study = tmp_path / "studies" / "mine.toml"
    study.parent.mkdir()
    study.write_text('[probe]\nprompt_file = "prompts/p.txt"\ndata_dir = "texts"\n')
    spec = load_study(study, preset="smoke", check=False)
    table = spec.analyses["softmax"]
    assert table["prompt_file"] == str((tmp_path / "studies" / "prompts" / "p.txt").resolve())
    assert table["data_dir"] == str((tmp_path / "studies" / "texts").resolve())
