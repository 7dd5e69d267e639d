"""A study file, read and checked: corpora, the training config, the stages and their tables.

A *study file* is TOML::

    [study]
    name = "mine"                                   # run directory: runs/mine
    corpora = ["shakespeare", "math", "wikipedia", "data/notes.txt"]
    models = { math = "nanogpt:out-math" }          # trained elsewhere (interop.external)
    preset = "cpu-fast"                             # the training preset of every model
    stages = ["my_stages.attention:stage"]          # your own stages (optional)
    [train]                                         # overrides of the training preset
    max_iters = 3000
    [probe]                                         # one table per stage, mapped onto
    prompts_per_corpus = 32                         # its settings dataclass
    [attention]                                     # ... your stage's too

It is layered over a shipped study preset (``smoke``, ``cpu`` — the default — or
``gpu``, in ``domaingpt/studies/``): keys it sets win, everything else comes from the
preset. Setting ``[study] preset`` drops the preset study's ``[model]``/``[train]``/
``[data]`` overrides (they were meant for its own training preset). Paths in a study
file — corpora, prompt files, stage modules — are relative to the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import importlib
import importlib.machinery
import importlib.util
import re
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import ModuleType
from typing import Any

from domaingpt.context.stage import Stage
from domaingpt.core.config import TRAIN_SECTIONS, RunConfig, read_config_text, read_toml
from domaingpt.core.distributed import RANK_MODES
from domaingpt.core.environment import check_environment
from domaingpt.core.limits import check_threads
from domaingpt.core.settings import StageSettings, path_fields, settings_from_table, unknown_key
from domaingpt.data.corpus import Corpus
from domaingpt.errors import ConfigError
from domaingpt.interop.external import check_models, resolve_models
from domaingpt.study.pipeline import BUILTIN_STAGES, REPORT, TRAIN

STUDY_PRESETS = ("smoke", "cpu", "gpu")
DEFAULT_PRESET = "cpu"
STUDY_KEYS = (
    "name",
    "corpora",
    "models",
    "preset",
    "data_dir",
    "description",
    "threads",
    "stages",
    "ranks",
)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_STAGE_REF = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def preset_study_text(preset: str) -> str:
    """The shipped study file of a preset (``smoke``, ``cpu``, ``gpu``)."""
    if preset not in STUDY_PRESETS:
        close = difflib.get_close_matches(preset, STUDY_PRESETS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"unknown study preset {preset!r}: {hint}presets are {', '.join(STUDY_PRESETS)}"
        )
    return (resources.files("domaingpt") / "studies" / f"{preset}.toml").read_text("utf-8")


# --- a user's own stages -------------------------------------------------------------


@dataclass(frozen=True)
class StageRef:
    """``module.path:attribute`` of a user's stage, and the folder it is imported from."""

    ref: str
    base: str  # the study file's folder, where a stage module of its own is looked for

    @property
    def module(self) -> str:
        return self.ref.partition(":")[0]

    @property
    def top(self) -> str:
        """The top-level module or package: ``my_stages`` of ``my_stages.attention``."""
        return self.module.split(".")[0]

    def local_source(self) -> Path | None:
        """The top-level package (folder, with or without ``__init__.py``) or module (file)
        in the study file's folder."""
        folder, file = Path(self.base) / self.top, Path(self.base) / f"{self.top}.py"
        if folder.is_dir():
            return folder
        return file if file.is_file() else None

    def private_name(self) -> str:
        """The name a module of the study file's folder is imported under: its own name,
        the folder and the SHA-256 of its source, so an edit is a new module, two study
        folders never share one, and no installed module is shadowed. The same on every
        rank of a study (a job's function is found by it)."""
        h = hashlib.sha256(f"{Path(self.base).resolve()}\0{self.code_digest()}".encode())
        return f"_domaingpt_stage_{self.top}_{h.hexdigest()[:16]}"

    def load(self) -> Stage:
        """Import the stage: a module of the study file's folder under its
        :meth:`private_name` (imported again only when its source changed; its own
        modules import each other relatively, ``from .compute import run``), any other
        as installed."""
        module_name, _, attr = self.ref.partition(":")
        local = self.local_source()
        try:
            if local is None:
                module = importlib.import_module(module_name)
            else:
                module = _import_local(local, self.private_name(), module_name)
        except SystemExit as e:  # the module ended the process on import: refused, not exit 0
            raise ConfigError(
                f"cannot import stage {self.ref!r} (from {self.base}): it called "
                f"sys.exit({e.code!r}) on import; a stage module must only define its stage"
            ) from None
        except Exception as e:
            raise ConfigError(
                f"cannot import stage {self.ref!r} (from {self.base}): {type(e).__name__}: {e}"
            ) from None
        stage = getattr(module, attr, None)
        if not isinstance(stage, Stage):
            got = "nothing" if stage is None else type(stage).__name__
            raise ConfigError(
                f"stage {self.ref!r}: {module_name}.{attr} must be a domaingpt.context.stage.Stage, "
                f"got {got}"
            )
        return stage

    def code_digest(self) -> str:
        """SHA-256 of the stage's source: every ``.py`` file of its top-level package
        (or its module file), so that editing any of them re-runs the stage."""
        source = self.local_source() or _source_path(sys.modules.get(self.top))
        if source is None:
            return ""
        files = sorted(source.rglob("*.py")) if source.is_dir() else [source]
        h = hashlib.sha256()
        for f in files:
            rel = f.relative_to(source).as_posix() if source.is_dir() else f.name
            h.update(rel.encode() + b"\0" + f.read_bytes() + b"\0")
        return h.hexdigest()


def _import_local(source: Path, name: str, module_name: str) -> ModuleType:
    """``module_name`` from ``source`` (the top-level package folder or module file),
    its top level imported as ``name``. Nothing is put on ``sys.path`` and nothing in
    ``sys.modules`` is replaced: the modules are added under the private name only
    (a package's relative imports and a job's pickled functions find them there)."""
    rest = module_name.split(".")[1:]
    if name not in sys.modules:
        if source.is_dir() and not (source / "__init__.py").is_file():  # a plain folder
            spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
            spec.submodule_search_locations = [str(source)]
        elif source.is_dir():
            spec = importlib.util.spec_from_file_location(
                name, source / "__init__.py", submodule_search_locations=[str(source)]
            )
        else:
            spec = importlib.util.spec_from_file_location(name, source)
        if spec is None:
            raise ImportError(f"{source} is not a Python module")
        top = importlib.util.module_from_spec(spec)
        sys.modules[name] = top
        try:
            if spec.loader is not None:
                spec.loader.exec_module(top)
        except BaseException:
            del sys.modules[name]  # only the entry this call added
            raise
    return importlib.import_module(".".join([name, *rest]))


def _source_path(module: Any) -> Path | None:
    """A module's file, or its package's folder (a namespace package's first one)."""
    path = getattr(module, "__file__", None)
    if path:
        path = Path(path)
        return path.parent if path.name == "__init__.py" else path
    folders = list(getattr(module, "__path__", None) or [])
    return Path(folders[0]) if folders else None


#: Names a user's stage cannot take: the built-in stages' (the report's too), the study
#: file's other tables, and ``all`` (``--force all``).
RESERVED_NAMES = frozenset(
    {n for s in (*BUILTIN_STAGES, REPORT) for n in (s.name, *s.aliases)}
    | {"study", "all", *TRAIN_SECTIONS}
)


def _check_own_stage(ref: StageRef, stage: Stage, before: list[Stage]) -> None:
    """A user's stage: a free simple name and a folder of its own inside the run (never a
    built-in stage's, the report's or ``stages/`` of the records: a stage's folder is
    what its fingerprint covers and what a rerun replaces)."""
    if not _NAME.match(stage.name):
        raise ConfigError(f"stage {ref.ref!r}: its name {stage.name!r} must be a simple name")
    if stage.name in RESERVED_NAMES or stage.name in [s.name for s in before]:
        raise ConfigError(
            f"stage {ref.ref!r} is named {stage.name!r}, which is taken (by a built-in stage, "
            "a study table or a stage before it): give the Stage another name"
        )
    taken = {n: f"stage {s.name!r}" for s in (*before, REPORT) for n in (s.name, *s.aliases)}
    taken.update(stages="the stage records", models="the trained models")
    for name in (stage.name, *stage.aliases):
        if name in taken:
            raise ConfigError(
                f"stage {ref.ref!r} is named {name!r}, the folder of {taken[name]} in a run: "
                "give the Stage another name"
            )


def load_stages(refs: Iterable[StageRef]) -> tuple[tuple[Stage, ...], dict[str, str]]:
    """The built-in stages, then the user's, then the report (which reads them all); and
    the SHA-256 of each user stage's source, taken when it was imported.

    A user's stage may need or use any stage before it; names must be unique.
    """
    stages = list(BUILTIN_STAGES)
    code: dict[str, str] = {}
    for ref in refs:
        stage = ref.load()
        known = [s.name for s in stages]
        _check_own_stage(ref, stage, stages)
        for dep in (*stage.needs, *stage.uses):
            if dep not in known and dep != "*":
                raise ConfigError(
                    f"stage {stage.name!r} needs {dep!r}, which is not a stage before it "
                    f"(stages: {', '.join(known)})"
                )
        stages.append(stage)
        code[stage.name] = ref.code_digest()
    return (*stages, REPORT), code


def resolve_stages(refs: Iterable[StageRef]) -> tuple[Stage, ...]:
    """:func:`load_stages` without the digests."""
    return load_stages(refs)[0]


def _stage_refs(value: Any, base: Path, where: str) -> tuple[StageRef, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(
            f'study.stages in {where} must be a list like ["my_stages.attention:stage"]'
        )
    for v in value:
        if not _STAGE_REF.match(v):
            raise ConfigError(
                f"study.stages entry {v!r} in {where} must be module.path:attribute, "
                'e.g. "my_stages.attention:stage"'
            )
    return tuple(StageRef(v, str(base)) for v in value)


# --- the spec ------------------------------------------------------------------------


def _looks_like_path(name: str) -> bool:
    return "/" in name or "\\" in name or name.endswith(".txt")


def _resolve_input(value: str, base: Path) -> str:
    p = Path(value).expanduser()
    return str(p if p.is_absolute() else (base / p).resolve())


def _resolve_paths(
    section: str, values: dict[str, Any], kinds: dict[str, str], base: Path, source: str
) -> dict:
    """A stage's table with the paths its settings declare (``kinds``, from
    :func:`~domaingpt.core.settings.path_fields`) resolved: a file to read relative to
    the study file; a file to write relative to the run directory, never outside it."""
    out = {}
    for key, value in values.items():
        items = value if isinstance(value, list) else [value]
        if kinds.get(key) == "output":
            for item in items:
                p = Path(item) if isinstance(item, str) else None
                if p is not None and (p.is_absolute() or ".." in p.parts):
                    raise ConfigError(
                        f"{section}.{key} = {item!r} in {source}: output paths are relative "
                        "to the run directory and cannot leave it"
                    )
        elif kinds.get(key) == "input":
            if isinstance(value, str) and value:
                value = _resolve_input(value, base)
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                value = [_resolve_input(v, base) for v in value]
        out[key] = value
    return out


@dataclass(frozen=True)
class StudySpec:
    """A study, resolved: corpora, training config, its stages and their tables."""

    name: str
    corpora: tuple[str, ...]  # built-in names or absolute paths
    preset: str  # training preset: a shipped name or an absolute .toml path
    overrides: dict[str, dict[str, Any]]  # [model] / [train] / [data]
    analyses: dict[str, dict[str, Any]]  # stage -> its table, paths resolved
    base: str  # the study preset this builds on
    source: Path | None = None  # the study file, if any
    text: str | None = None  # its text, copied into the run
    data_dir: str | None = None
    description: str = ""
    threads: int = 0  # torch threads for every stage; 0: torch's default
    ranks: str = "jobs"  # under torchrun: "jobs" spread over the ranks, or "ddp" per model
    stage_refs: tuple[StageRef, ...] = ()
    stages: tuple[Stage, ...] = field(default=(), compare=False)
    stage_code: dict[str, str] = field(default_factory=dict, compare=False)  # user stage: sha
    models: dict[str, str] = field(default_factory=dict)  # corpus -> a model trained elsewhere

    def config(self) -> RunConfig:
        """The training configuration shared by every model of the study."""
        return self.settings(TRAIN.name).config

    @property
    def where(self) -> str:
        return str(self.source) if self.source else f"the {self.base} study preset"

    def stage(self, name: str) -> Stage:
        """The study's stage called ``name``; an unknown name suggests the closest one."""
        for s in self.stages:
            if s.called(name):
                return s
        names = [s.name for s in self.stages]
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(f"unknown stage {name!r}: {hint}stages are {', '.join(names)}")

    def settings(
        self,
        stage: str,
        *,
        corpora: list[Corpus] | None = None,
        data_dir: str | Path | None = None,
        offline: bool = False,
    ) -> StageSettings:
        """The settings of a stage, built from its table and the study.

        Fields the table does not set are filled from the study where the class has them:
        ``corpora`` (every stage sees the study's corpora), ``data_dir`` and ``offline``.
        The training stage's settings come from ``[study] preset`` and the
        ``[model]``/``[train]``/``[data]`` tables instead.
        """
        cls = self.stage(stage).settings
        if self.stage(stage) is TRAIN:
            table = {"preset": self.preset, **{k: dict(v) for k, v in self.overrides.items()}}
            if self.models:
                table["models"] = dict(self.models)
        else:
            table = dict(self.analyses.get(stage, {}))
        names = {f.name for f in dataclasses.fields(cls)}
        if "corpora" in names and "corpora" not in table and corpora is not None:
            table["corpora"] = [c.name if c.builtin else str(c.path) for c in corpora]
        data_dir = data_dir or self.data_dir
        if "data_dir" in names and "data_dir" not in table and data_dir:
            table["data_dir"] = str(data_dir)
        if "offline" in names and "offline" not in table and offline:
            table["offline"] = True
        try:
            return settings_from_table(cls, table, stage, source=self.where)
        except SystemExit as e:  # a user's settings class ended the process: refused
            raise ConfigError(
                f"the settings of stage {stage!r} called sys.exit({e.code!r}); a settings "
                "check fails by raising ConfigError"
            ) from None

    def check_before_run(
        self,
        corpora: list[Corpus],
        *,
        threads: int,
        data_dir: str | Path | None = None,
        offline: bool = False,
    ) -> None:
        """Everything a run of the study can check before its first stage: the
        environment, the thread count, and each stage's settings against the study
        (:meth:`StageSettings.check_study`: ``[adapt] pairs`` naming a corpus the study does
        not train, a prompt file that cannot be read). A mistake found here costs nothing;
        found by its stage, it costs every stage before it."""
        check_environment()
        check_threads("--threads", threads)
        names = [c.name for c in corpora]
        for stage in self.stages:
            settings = self.settings(
                stage.name, corpora=corpora, data_dir=data_dir, offline=offline
            )
            settings.check_study(names)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "base": self.base,
            "description": self.description,
            "source": str(self.source) if self.source else None,
            "corpora": list(self.corpora),
            "models": dict(self.models),
            "preset": self.preset,
            "data_dir": self.data_dir,
            "threads": self.threads,
            "ranks": self.ranks,
            "stages": [{"ref": r.ref, "base": r.base} for r in self.stage_refs],
            "overrides": self.overrides,
            "analyses": self.analyses,
        }


def _check_sections(data: dict[str, Any], source: str, stage_names: Iterable[str]) -> None:
    known = ("study", *TRAIN_SECTIONS, *(s for s in stage_names if s not in TRAIN_SECTIONS))
    for section, values in data.items():
        if section not in known:
            close = difflib.get_close_matches(section, known, n=1, cutoff=0.5)
            hint = f"; did you mean [{close[0]}]?" if close else ""
            raise ConfigError(
                f"unknown section [{section}] in {source}{hint} (known: {', '.join(known)})"
            )
        if not isinstance(values, dict):
            raise ConfigError(f"[{section}] in {source} must be a table")
    for key in data.get("study", {}):
        if key not in STUDY_KEYS:
            raise unknown_key(f"study.{key}", [f"study.{k}" for k in STUDY_KEYS], source)


def _renamed_sections(data: dict[str, Any], stages: Iterable[Stage], source: str) -> dict[str, Any]:
    """``data`` with each table named by an earlier name of a stage (``[probe]``) under
    the stage's name (``[softmax]``); both at once is an error."""
    renamed = dict(data)
    for stage in stages:
        for alias in stage.aliases:
            if alias in renamed:
                if stage.name in renamed:
                    raise ConfigError(
                        f"[{alias}] and [{stage.name}] in {source} are one stage's table "
                        f"({alias} is its earlier name): keep [{stage.name}]"
                    )
                renamed[stage.name] = renamed.pop(alias)
    return renamed


def _merge(base: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) for k, v in base.items()}
    if "preset" in user.get("study", {}):
        for section in TRAIN_SECTIONS:
            merged.pop(section, None)
    for section, values in user.items():
        merged.setdefault(section, {}).update(values)
    return merged


def load_study(
    path: str | Path | None = None, *, preset: str | None = None, check: bool = True
) -> StudySpec:
    """Read a study file (layered over the study preset ``preset``, default ``cpu``).

    With ``check`` every table is validated now (unknown keys, wrong types, the training
    config), so a typo fails before hours of training, not after.
    """
    base_name = preset or DEFAULT_PRESET
    base = read_toml(preset_study_text(base_name), f"study preset {base_name!r}")
    user: dict[str, Any] = {}
    text = None
    source = None
    base_dir = Path.cwd()
    if path is not None:
        source = Path(path).expanduser()
        text = read_config_text(source, "study file")  # a directory or FIFO: says which
        user = read_toml(text, f"study file {source}")
        source = source.resolve()
        base_dir = source.parent
    where = str(source) if source else f"study preset {base_name!r}"
    refs = _stage_refs(user.get("study", {}).get("stages"), base_dir, where)
    stages, stage_code = load_stages(refs)
    if path is not None:
        user = _renamed_sections(user, stages, f"study file {source}")
        _check_sections(user, f"study file {source}", [s.name for s in stages])
    merged = _merge(base, user)
    study = merged.get("study", {})

    corpora = study.get("corpora")
    if not isinstance(corpora, list) or not corpora or not all(isinstance(c, str) for c in corpora):
        raise ConfigError(f"study.corpora in {where} must be a non-empty list of names or paths")
    user_corpora = user.get("study", {}).get("corpora") is not None
    resolved = tuple(
        _resolve_input(c, base_dir) if _looks_like_path(c) and user_corpora else c for c in corpora
    )
    models = resolve_models(user.get("study", {}).get("models"), base_dir, where)
    check_models(models, [Path(c).stem if _looks_like_path(c) else c for c in resolved], where)
    train_preset = study.get("preset", "cpu-mini")
    if not isinstance(train_preset, str):
        raise ConfigError(f"study.preset in {where} must be a preset name or a .toml path")
    if "preset" in user.get("study", {}) and (
        train_preset.endswith(".toml") or _looks_like_path(train_preset)
    ):
        train_preset = _resolve_input(train_preset, base_dir)
    # A study file without a name is named after the file, not after its preset.
    name = user.get("study", {}).get("name") or (source.stem if source else study.get("name"))
    name = name or base_name
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(
            f"study.name {name!r} in {where} must be a simple name (letters, digits, . _ -): "
            "it names the run directory runs/NAME"
        )
    data_dir = study.get("data_dir")
    if data_dir is not None:
        if not isinstance(data_dir, str):
            raise ConfigError(f"study.data_dir in {where} must be a path")
        if "data_dir" in user.get("study", {}):
            data_dir = _resolve_input(data_dir, base_dir)
    threads = study.get("threads", 0)
    if not isinstance(threads, int) or isinstance(threads, bool) or threads < 0:
        raise ConfigError(f"study.threads in {where} must be 0 (torch's default) or more")
    check_threads(f"study.threads in {where}", threads)
    ranks = study.get("ranks", "jobs")
    if ranks not in RANK_MODES:
        raise ConfigError(
            f"study.ranks in {where} must be {' or '.join(map(repr, RANK_MODES))}: the "
            "study's jobs spread over torchrun's ranks, or each model trained by all of them"
        )
    tables = {s.name: s for s in stages if s.name not in TRAIN_SECTIONS}
    spec = StudySpec(
        name=name,
        corpora=resolved,
        preset=train_preset,
        overrides={s: dict(merged[s]) for s in TRAIN_SECTIONS if s in merged},
        analyses={
            s: _resolve_paths(s, merged[s], path_fields(stage.settings), base_dir, where)
            for s, stage in tables.items()
            if s in merged
        },
        base=base_name,
        source=source,
        text=text,
        data_dir=data_dir,
        description=str(
            user.get("study", {}).get("description", "") if source else study.get("description", "")
        ),
        threads=threads,
        ranks=ranks,
        stage_refs=refs,
        stages=stages,
        stage_code=stage_code,
        models=models,
    )
    if check:
        for stage in stages:
            spec.settings(stage.name)
    return spec
