"""The stage contract, checked on every stage of the pipeline: the import graph (no stage
reaches into another; the layers below never know the stages), frozen settings checked on
construction, a command whose options are the settings' fields with their defaults, and
claims that read empty tables without raising.

Fast: nothing trains, nothing is imported to walk the graph (the sources are parsed).
"""

from __future__ import annotations

import ast
import dataclasses
import re
import typing
from pathlib import Path

import pytest

from domaingpt.cli import main
from domaingpt.core.claims import Claim
from domaingpt.core.settings import RUNTIME_FIELDS, StageSettings
from domaingpt.core.stage import Stage
from domaingpt.errors import ConfigError
from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT

SRC = Path(__file__).resolve().parents[2] / "src" / "domaingpt"
STAGES = (*BUILTIN_STAGES, REPORT)
#: Packages below the stages: they serve every stage and may know none of them.
LOWER = ("core", "data", "model", "scoring", "training", "report")


# --- (a) the import graph ------------------------------------------------------------


def module_name(path: Path, root: Path = SRC) -> str:
    """``src/domaingpt/stages/adapt/jobs.py`` -> ``domaingpt.stages.adapt.jobs``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module ``source`` imports, anywhere in it (functions and ``TYPE_CHECKING``
    blocks too), relative imports resolved; ``from M import n`` gives both ``M`` and
    ``M.n`` (``n`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")
                parent = parent[: len(parent) - (node.level - 1)]
                base = ".".join([*parent, base] if base else parent)
            out.add(base)
            out.update(f"{base}.{alias.name}" for alias in node.names)
    return out


def _area(module: str) -> tuple[str, ...]:
    """``domaingpt.stages.adapt.jobs`` -> ("stages", "adapt"); ``domaingpt.core.io`` ->
    ("core",); anything outside domaingpt -> ()."""
    parts = module.split(".")
    if parts[0] != "domaingpt" or len(parts) < 2:
        return ()
    if parts[1] == "stages":
        return ("stages", parts[2]) if len(parts) > 2 else ("stages",)
    return (parts[1],)


def forbidden(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target``, or None when it may."""
    here, there = _area(module), _area(target)
    if not here or not there:
        return None
    if here[0] == "stages" and len(here) == 2 and there[0] == "stages" and there != here:
        if len(there) == 2:
            return f"stage {here[1]} imports stage {there[1]} (shared code belongs in core/)"
        return f"stage {here[1]} imports the stages package"
    if here[0] == "stages" and there[0] in ("study", "cli"):
        return f"stage {here[1]} imports {there[0]}/ (a stage knows no pipeline)"
    if here[0] in LOWER and there[0] in ("stages", "study", "cli"):
        return f"{here[0]}/ imports {there[0]}/ (only study/pipeline.py and cli/ know the stages)"
    if here == ("study",) and there[0] == "stages" and module != "domaingpt.study.pipeline":
        return "study/ imports a stage (only study/pipeline.py holds the stage list)"
    return None


def violations(root: Path = SRC) -> list[str]:
    found = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        source = path.read_text(encoding="utf-8")
        for target in sorted(imported(source, module, path.name == "__init__.py")):
            why = forbidden(module, target)
            if why:
                found.append(f"{path.relative_to(root.parent)}: {target}: {why}")
    return found


def test_no_stage_imports_another_and_no_lower_layer_knows_the_stages():
    assert list(SRC.glob("stages/*/__init__.py")), SRC
    assert violations() == []


def test_the_import_walk_catches_each_kind_of_violation(tmp_path):
    """The walker itself: absolute, relative, inside functions, ``from pkg import mod``."""
    root = tmp_path / "domaingpt"
    files = {
        "stages/__init__.py": "",
        "stages/saliency/__init__.py": "from domaingpt.stages.saliency.compute import x\n",
        "stages/saliency/compute.py": "def f():\n    from ..probe.compute import mean_ci\n",
        "stages/saliency/claims.py": "from domaingpt.stages import probe\n",
        "stages/saliency/section.py": "import domaingpt.study.pipeline\n",
        "stages/probe/__init__.py": "from . import compute\nfrom .compute import y\n",
        "stages/probe/compute.py": "from domaingpt.core import io\n",
        "core/stage.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from domaingpt.stages.adapt import jobs\n",
        "report/html.py": "from domaingpt.study.load import Study\n",
        "study/load.py": "from domaingpt.stages.adapt import stage\n",
        "study/pipeline.py": "from domaingpt.stages import adapt\n",
        "cli/__init__.py": "from domaingpt.stages import adapt\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    found = violations(root)
    offenders = sorted({line.split(":")[0] for line in found})
    assert offenders == [
        "domaingpt/core/stage.py",
        "domaingpt/report/html.py",
        "domaingpt/stages/saliency/claims.py",
        "domaingpt/stages/saliency/compute.py",
        "domaingpt/stages/saliency/section.py",
        "domaingpt/study/load.py",
    ], found
    assert any("stage saliency imports stage probe" in line for line in found)


# --- (b) settings --------------------------------------------------------------------


def _ids(stages: tuple[Stage, ...]) -> list[str]:
    return [s.name for s in stages]


def test_the_pipeline_is_a_list_of_stages_with_unique_names():
    assert all(isinstance(s, Stage) for s in STAGES)
    assert len({s.name for s in STAGES}) == len(STAGES)
    assert len({s.folder for s in STAGES}) == len(STAGES)
    names = [s.name for s in STAGES]
    for s in STAGES:  # what a stage needs runs before it
        deps = [n for n in (*s.needs, *s.uses) if n != "*"]  # "*": every stage before it
        assert all(names.index(n) < names.index(s.name) for n in deps), s.name


def _settings_fields(cls: type[StageSettings]) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.init]


@pytest.mark.parametrize("stage", STAGES, ids=_ids(STAGES))
def test_settings_are_frozen_and_constructible_with_defaults(stage: Stage):
    cls = stage.settings
    assert issubclass(cls, StageSettings) and cls is not StageSettings
    assert dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen
    settings = cls()
    assert {f.name for f in _settings_fields(cls)} >= RUNTIME_FIELDS
    name = _settings_fields(cls)[-1].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(settings, name, getattr(settings, name))
    assert cls(**settings.to_dict()) == settings  # what it says it is, it can be made from
    assert not RUNTIME_FIELDS & set(settings.key_dict())


@pytest.mark.parametrize("stage", STAGES, ids=_ids(STAGES))
def test_settings_refuse_bad_values_on_construction(stage: Stage):
    cls = stage.settings
    with pytest.raises(ConfigError, match="threads"):
        cls(threads=-1)
    for f in _settings_fields(cls):  # a value of no field's type, in each field
        with pytest.raises(ConfigError, match=f.name):
            cls(**{f.name: object()})


# --- (c) the command generated from the settings -------------------------------------


def _help(capsys: pytest.CaptureFixture[str], command: str) -> str:
    assert main([command, "--help"]) == 0  # main returns argparse's exit status
    return capsys.readouterr().out


def _options(help_text: str) -> dict[str, str]:
    """Each option of a ``--help`` text -> its entry, whitespace collapsed."""
    section = help_text.split("\noptions:\n", 1)[1]
    out = {}
    for entry in re.split(r"\n(?=  -)", section):
        text = " ".join(entry.split())
        for flag in re.findall(r"(?:^|, )(-[-\w]+)", text.split("  ")[0]):
            out[flag] = text
    return out


def _shown(default: object) -> str:
    """How ``--help`` shows a default (lists comma-separated, the empty string quoted)."""
    if isinstance(default, list):
        return ",".join(map(str, default)) or "none"
    if default == "":
        return "''"
    return str(default)


COMMANDS = tuple(s for s in STAGES if s.command)


@pytest.mark.parametrize("stage", COMMANDS, ids=_ids(COMMANDS))
def test_help_lists_every_cli_setting_with_its_default(stage: Stage, capsys):
    text = _help(capsys, stage.name)
    options = _options(text)
    hints = typing.get_type_hints(stage.settings)
    defaults = stage.settings()
    checked = 0
    for f in _settings_fields(stage.settings):
        if not f.metadata.get("cli"):
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        if not flag.startswith("-"):  # positional: required, so no default
            assert (f.metadata.get("metavar") or f.name) in text.split("\noptions:\n")[0]
            continue
        if hints[f.name] is bool and default:
            flag = "--no-" + flag[2:]
        assert flag in options, f"{stage.name}: no {flag} for {f.name} in\n{text}"
        entry = options[flag]
        first_words = " ".join(f.metadata["help"].split()[:3])
        assert first_words in entry, (flag, entry)
        checked += 1
        if hints[f.name] is bool:
            assert default or "default: on" not in entry
            assert not default or "default: on" in entry, entry
        elif f.metadata.get("repeat") and not default:
            assert "repeatable" in entry, entry
        elif "(default" in f.metadata["help"]:  # the help says in words what the default does
            continue
        else:
            assert f"(default: {_shown(default)})" in entry, (flag, entry)
    assert checked


def test_a_stage_command_describes_itself(capsys):
    for stage in COMMANDS:
        assert stage.help
        assert " ".join(stage.help.split()) in " ".join(_help(capsys, stage.name).split())


# --- (d) claims ------------------------------------------------------------------------


#: Stages whose claims still index a table they were not given; owned by the helpers now
#: converting them (remove the mark when their fix lands).
_CLAIM_STAGES = list(STAGES)


@pytest.mark.parametrize("stage", _CLAIM_STAGES, ids=_ids(STAGES))
def test_claims_of_empty_tables_are_claims(stage: Stage):
    claims = stage.claims({})
    assert isinstance(claims, list) and all(isinstance(c, Claim) for c in claims)
    labelled = stage.checked_claims({})
    assert all(c.stage == stage.name and c.section == stage.heading for c in labelled)
