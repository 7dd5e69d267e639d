"""The stage contract: what every analysis of a study is made of.

A stage is one :class:`Stage` value with the same parts for every analysis, built in or
a user's own:

``settings``   a frozen :class:`~domaingpt.core.settings.StageSettings` subclass: what the
               stage computes (its fields are the study file's ``[name]`` table and the
               options of ``domaingpt NAME``);
``run``        ``run(ctx, settings) -> {name: path}``: compute, write its tables with
               ``ctx.write_table`` and its figures under ``ctx.out``, return what it
               wrote (the runner adds ``settings.json`` and ``claims.csv``);
``tables``     the tables it writes (``ctx.out/<name>.csv``), read back by default;
               ``optional`` the ones it writes only sometimes;
``load``       only where reading needs more than the declared tables:
               ``load(results) -> {name: DataFrame}`` given its :class:`Results`;
``claims``     ``claims(tables) -> [Claim]``: the study's statements checked on those
               tables — a pure function, testable on hand-made tables;
``section``    ``section(view) -> Section``: the stage's part of the report.

``needs`` are stages that must have finished first; ``uses`` stages whose results the
stage reads when they exist. Both are part of its cache key. The stage's name is its
folder in a run, its command, its study-file table and its record; ``aliases`` are its
earlier names, still accepted for commands and read in old run directories. A user's stage is the same
value in the user's own module, named in a study file (``[study] stages =
["my_stages.attention:stage"]``); see ``examples/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from domaingpt.context.activations import ActivationCache
from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.context.rundir import RunDir
from domaingpt.core.claims import Claim, unmeasured, write_claims
from domaingpt.core.device import oom_hint
from domaingpt.core.distributed import Ranks
from domaingpt.core.inference import (
    combine,
    replicate_tables,
    replicates_of,
    with_replicate_column,
)
from domaingpt.core.io import read_json, write_json
from domaingpt.core.progress import Log, stderr_log
from domaingpt.core.settings import StageSettings
from domaingpt.core.tables import read_table, write_table
from domaingpt.core.threads import torch_threads
from domaingpt.errors import DomainGPTError

if TYPE_CHECKING:
    from domaingpt.data.corpus import Corpus
    from domaingpt.report.document import Section

Tables = dict[str, pd.DataFrame]


@dataclass
class StageContext:
    """What a stage's ``run`` gets besides its settings.

    ``corpora``: the study's corpora, resolved (empty when a stage runs from its own
    command, where the run's models say which corpora there are). ``stages``: every stage
    of the study, for the report. ``force``: rerun even finished sub-jobs. ``ranks``:
    the processes the stage's jobs spread over (:func:`~domaingpt.core.distributed.map_ranks`;
    default this one alone). ``activations``: the run's forward-pass cache, shared by the
    stages of one run (the runner passes one to every stage; default a cache of its own).
    """

    run: RunDir
    stage: Stage
    corpora: list[Corpus] = field(default_factory=list)
    progress: bool = True
    log: Log = stderr_log
    force: bool = False
    stages: tuple[Stage, ...] = ()
    study: Any = None  # the StudySpec when run by `domaingpt run`
    ranks: Ranks = field(default_factory=Ranks)
    activations: ActivationCache = field(default_factory=ActivationCache)

    @property
    def out(self) -> Path:
        """The stage's own folder in the run directory (where it writes)."""
        return self.run.root / self.stage.name

    def write_table(self, name: str, table: pd.DataFrame) -> Path:
        """Write one of the stage's declared tables, ``<out>/<name>.csv`` (atomically)."""
        if name not in (*self.stage.tables, *self.stage.optional):
            raise DomainGPTError(
                f"stage {self.stage.name} writes a table {name!r} it does not declare "
                f"(its tables: {', '.join((*self.stage.tables, *self.stage.optional))})"
            )
        return write_table(table, self.out / f"{name}.csv")

    def results(self, name: str) -> Tables:
        """The tables of the stage ``name``, one this stage ``needs`` or ``uses``, read
        as that stage reads them (its own ``load``)."""
        stage = next((s for s in self.stages if s.called(name)), None)
        if stage is None:
            raise DomainGPTError(f"stage {self.stage.name} reads {name!r}: not in this study")
        if stage.name not in (*self.stage.needs, *self.stage.uses) and "*" not in self.stage.uses:
            raise DomainGPTError(
                f"stage {self.stage.name} reads {name!r}, which it neither needs nor uses"
            )
        return stage.read(self.run)


@dataclass(frozen=True)
class Results:
    """A stage's results in a run directory: its folder and the tables it declares."""

    stage: Stage
    run: RunDir

    @property
    def folder(self) -> Path:
        """Where they are: the stage's folder, or an earlier name's in an old run."""
        return self.stage.folder_in(self.run)

    def table(self, name: str) -> pd.DataFrame:
        """One table; an error naming the command that writes it when it is missing."""
        path = self.folder / f"{name}.csv"
        if not path.is_file():
            raise DomainGPTError(
                f"no {self.stage.name} results in {self.folder} ({path.name} is missing); "
                f"run `domaingpt {self.stage.name} --out {self.run.root}` first"
            )
        try:
            return read_table(path)
        except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
            raise DomainGPTError(f"{path}: cannot be read as CSV ({e})") from None

    def tables(self) -> Tables:
        """Every declared table (an optional one only when it was written)."""
        found = {name: self.table(name) for name in self.stage.tables}
        for name in self.stage.optional:
            if (self.folder / f"{name}.csv").is_file():
                found[name] = self.table(name)
        return found

    def settings(self) -> dict[str, Any] | None:
        """The settings the stage ran with (``settings.json``), None for none."""
        path = self.folder / "settings.json"
        return read_json(path) if path.is_file() else None


@dataclass
class StageView:
    """A stage's results as the report sees them (``tables`` None: not available)."""

    stage: Stage
    run: RunDir
    tables: Tables | None
    status: StageStatus
    reason: str
    corpora: list[str]
    figdir: Path
    claims: list[Claim] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.stage.folder_in(self.run)

    def figures(self) -> list[Path]:
        """The PNG figures the stage wrote, by path."""
        return sorted(self.out.rglob("*.png")) if self.out.is_dir() else []


def _no_claims(tables: Tables) -> list[Claim]:
    return []


def read_stage(stage: Stage, run: RunDir) -> Tables:
    """A stage's tables (with a ``replicate`` column beside each table's model column);
    an error naming the stage when it has not completed."""
    status = stage.status(run)
    if status != StageStatus.DONE and not stage.read_unfinished:
        raise DomainGPTError(f"{stage.name} has not completed in {run.root} (status: {status})")
    return with_replicate_column(stage.read(run))


def stage_view(
    stage: Stage, run: RunDir, corpora: list[str], figdir: Path, tables: Tables | None = None
) -> StageView:
    """What the report shows of a stage: its tables (or why there are none) and claims.

    Never raises: a stage whose results cannot be read is a view without tables, with the
    reason, so one broken stage cannot take the report down.
    """
    status = stage.status(run)
    reason = ""
    if tables is None:
        try:
            tables = read_stage(stage, run)
        except DomainGPTError as e:
            record = stage.record(run)
            message = (record.message if record else None) or ""
            reason = {
                StageStatus.FAILED: f"the stage failed: {message}",
                StageStatus.BLOCKED: f"the stage did not run: {message}",
                StageStatus.ABSENT: "the stage has not run yet",
            }.get(status, str(e))
            reason = f"{stage.name}: {reason}"
        except (Exception, SystemExit) as e:
            reason = f"{stage.name}: cannot read its results ({type(e).__name__}: {e})"
    claims: list[Claim] = []
    if tables is not None:
        try:
            claims = stage.checked_claims(tables)
        except (
            Exception,
            SystemExit,
        ) as e:  # a claim that cannot be computed is reported, not raised
            claims = Claim.of(
                stage.name,
                stage.heading,
                [unmeasured(f"the claims of {stage.name}", f"{type(e).__name__}: {e}")],
            )
    return StageView(stage, run, tables, status, reason, corpora, figdir, claims)


@dataclass(frozen=True)
class Stage:
    """One analysis of a study; see the module documentation for its parts."""

    name: str
    title: str
    settings: type[StageSettings]
    run: Callable[[StageContext, Any], Mapping[str, Path]]
    _: KW_ONLY  # the rest by name
    tables: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    load: Callable[[Results], Tables] | None = None  # default: the declared tables
    claims: Callable[[Tables], list[Claim]] = _no_claims
    section: Callable[[StageView], Section] | None = None
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()  # earlier names: commands and old run directories
    # read even without a "done" record: a partly trained run, an old run's first stages
    read_unfinished: bool = False
    help: str = ""  # one line for `domaingpt --help`
    # what its command prints: a function of the written files, or the key of a written
    # Markdown file to print as it is
    summary: Callable[[Mapping[str, Path]], str] | str | None = None
    section_title: str = ""  # the report's heading and the claims' section; default: title
    headline: str = ""  # a figure in its folder the report's summary shows first
    command: bool = True  # a `domaingpt NAME` command generated from its settings

    def read(self, run: RunDir) -> Tables:
        """The stage's tables in ``run``, nothing recomputed."""
        results = Results(self, run)
        return results.tables() if self.load is None else self.load(results)

    # Where an earlier name of the stage (``aliases``) is resolved, for every caller.
    def called(self, name: str) -> bool:
        """``name`` is this stage's name or one of its earlier names."""
        return name == self.name or name in self.aliases

    def folder_in(self, run: RunDir) -> Path:
        """The stage's folder in ``run`` (an earlier name's in an old run)."""
        return run.stage_folder(self.name, self.aliases)

    def record(self, run: RunDir) -> StageRecord | None:
        """The stage's record in ``run`` (under an earlier name in an old run)."""
        return run.record(self.name, self.aliases)

    def status(self, run: RunDir) -> StageStatus:
        return run.status(self.name, self.aliases)

    @property
    def heading(self) -> str:
        return self.section_title or self.title[:1].upper() + self.title[1:]

    def summary_text(self, written: Mapping[str, Path]) -> str | None:
        """What ``domaingpt NAME`` prints after running the stage (``None``: nothing)."""
        if isinstance(self.summary, str):
            return written[self.summary].read_text(encoding="utf-8")
        return None if self.summary is None else self.summary(written)

    def checked_claims(self, tables: Tables) -> list[Claim]:
        """``claims(tables)`` labelled with this stage and its report section: made on
        each replicate model's rows, then combined across the replicates
        (:mod:`domaingpt.core.inference`). Tables that name no model (a corpus's
        statistics) are checked once, as they are."""
        replicates = replicates_of(tables)
        if not replicates:
            return Claim.of(self.name, self.heading, self.claims(tables))
        per = {r: self.claims(replicate_tables(tables, r)) for r in replicates}
        return Claim.of(self.name, self.heading, combine(per))


def run_stage(ctx: StageContext, settings: StageSettings) -> tuple[dict[str, Path], list[Claim]]:
    """Run a stage, record its settings (``<name>/settings.json``), then check its claims
    on what it wrote (``<name>/claims.csv``).

    The one way a stage runs, from ``domaingpt run`` and from its own command alike. Out
    of memory is a one-line error naming the batch size to lower; ``settings.threads``
    torch threads inside, restored after.
    """
    with torch_threads(settings.threads), oom_hint(*settings.memory_setting(ctx.stage.name)):
        written = {k: Path(v) for k, v in (ctx.stage.run(ctx, settings) or {}).items()}
    written["settings"] = write_json(ctx.out / "settings.json", settings.to_dict())
    claims: list[Claim] = []
    if ctx.stage.claims is not _no_claims:
        claims = ctx.stage.checked_claims(ctx.stage.read(ctx.run))
        written["claims"] = write_claims(claims, ctx.out / "claims.csv")
    return written, claims
