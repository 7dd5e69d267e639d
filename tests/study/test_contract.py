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
from domaingpt.context.stage import Stage
from domaingpt.core.claims import Claim
from domaingpt.core.settings import RUNTIME_FIELDS, StageSettings
from domaingpt.errors import ConfigError
from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT

SRC = Path(__file__).resolve().parents[2] / "src" / "domaingpt"
STAGES = (*BUILTIN_STAGES, REPORT)
#: The layers, bottom first: a module imports only from its own layer and the layers
#: below it. Within a layer the packages import each other without a cycle
#: (:func:`package_cycles`). ``root`` is the package's ``__init__`` (the lazy facade).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "core"),  # pure helpers: io, settings, statistics, claims, threads ...
    ("data",),  # corpora, vocabularies, encodings, batches
    ("report",),  # the report's document, figures and formats
    ("model",),  # the GPT, its checkpoints, sampling
    ("scoring",),  # the fast evaluator
    ("training",),  # the training loop and a model's folder
    ("context",),  # the run directory, the stage contract, a run's splits and prompts
    ("interop",),  # models in and out: Hugging Face, nanoGPT, lm-eval
    ("stages",),
    ("study",),
    ("cli", "launch", "__main__", "api", "root"),
)
LAYER_OF = {name: i for i, names in enumerate(LAYERS) for name in names}

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
    if parts[0] != "domaingpt":
        return ()
    if len(parts) < 2:
        return ("root",)
    if parts[1] == "stages":
        return ("stages", parts[2]) if len(parts) > 2 else ("stages",)
    return (parts[1],)


def forbidden(module: str, target: str) -> str | None:
    """Why ``module`` may not import ``target``, or None when it may."""
    here, there = _area(module), _area(target)
    if not here or not there:
        return None
    if LAYER_OF[there[0]] > LAYER_OF[here[0]]:
        return f"{here[0]}/ imports {there[0]}/, a layer above it (see LAYERS)"
    if here[0] == "stages" and len(here) == 2 and there[0] == "stages" and there != here:
        if len(there) == 2:
            return f"stage {here[1]} imports stage {there[1]} (shared code belongs below)"
        return f"stage {here[1]} imports the stages package"
    if here == ("study",) and there[0] == "stages" and module != "domaingpt.study.pipeline":
        return "study/ imports a stage (only study/pipeline.py holds the stage list)"
    return None


def package_edges(root: Path = SRC) -> set[tuple[str, str]]:
    """(importer, imported) between the top-level packages (and stage packages)."""
    edges = set()
    for path in sorted(root.rglob("*.py")):
        module = module_name(path, root)
        source = path.read_text(encoding="utf-8")
        for target in imported(source, module, path.name == "__init__.py"):
            here, there = _area(module), _area(target)
            if here and there and here != there and there != ("root",):
                edges.add((".".join(here), ".".join(there)))
    return edges


def package_cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """Every strongly connected group of more than one package (Tarjan's algorithm)."""
    graph: dict[str, list[str]] = {}
    for a, b in sorted(edges):
        graph.setdefault(a, []).append(b)
        graph.setdefault(b, [])
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return groups


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
        "stages/softmax/__init__.py": "from . import compute\nfrom .compute import y\n",
        "stages/softmax/compute.py": "from domaingpt.core import io\n",
        "context/stage.py": "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from domaingpt.stages.adapt import jobs\n",
        "report/html.py": "from domaingpt.study.load import Study\n",
        "study/load.py": "from domaingpt.stages.adapt import stage\n",
        "study/pipeline.py": "from domaingpt.stages import adapt\n",
        "cli/__init__.py": "from domaingpt.stages import adapt\n",
        "core/io.py": "from domaingpt.data.vocab import Vocab\n",  # upward, one layer
        "model/gpt.py": "def f():\n    from ..context import rundir\n",  # upward, relative
        "data/vocab.py": "from domaingpt.core import io\n",  # downward: allowed
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    found = violations(root)
    offenders = sorted({line.split(":")[0] for line in found})
    assert offenders == [
        "domaingpt/context/stage.py",
        "domaingpt/core/io.py",
        "domaingpt/model/gpt.py",
        "domaingpt/report/html.py",
        "domaingpt/stages/saliency/claims.py",
        "domaingpt/stages/saliency/compute.py",
        "domaingpt/stages/saliency/section.py",
        "domaingpt/study/load.py",
    ], found
    assert any("stage saliency imports stage probe" in line for line in found)
    assert any("core/ imports data/, a layer above it" in line for line in found)


def test_the_packages_import_each_other_without_a_cycle():
    edges = package_edges()
    assert ("stages.lens", "context") in edges and ("context", "core") in edges  # it sees
    assert package_cycles(edges) == []


def test_a_planted_cycle_between_packages_is_found():
    edges = {("core", "data"), ("data", "model"), ("model", "core"), ("cli", "core")}
    assert package_cycles(edges) == [["core", "data", "model"]]
    assert package_cycles(edges - {("model", "core")}) == []


def test_every_package_has_a_layer():
    packages = {p.name for p in SRC.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    modules = {p.stem for p in SRC.glob("*.py") if p.stem != "__init__"}
    assert packages | modules | {"root"} <= set(LAYER_OF) | {"presets", "studies"}


# --- (b) settings --------------------------------------------------------------------


def _ids(stages: tuple[Stage, ...]) -> list[str]:
    return [s.name for s in stages]


def test_the_pipeline_is_a_list_of_stages_with_unique_names():
    assert all(isinstance(s, Stage) for s in STAGES)
    assert len({s.name for s in STAGES}) == len(STAGES)
    names = [n for s in STAGES for n in (s.name, *s.aliases)]
    assert len(set(names)) == len(names)  # a name or an earlier name: one stage each
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
