"""The stage contract: what every analysis of a study is made of.

A stage is one :class:`Stage` value with the same parts for every analysis, built in or
a user's own:

``settings``   a frozen :class:`~domaingpt.core.settings.StageSettings` subclass: what the
               stage computes (its fields are the study file's ``[name]`` table and the
               options of ``domaingpt NAME``);
``run``        ``run(ctx, settings) -> {name: path}``: compute, write tables and figures
               under ``ctx.out``, return what it wrote;
``load``       ``load(run) -> {name: DataFrame}``: the tables back, nothing recomputed;
``claims``     ``claims(tables) -> [Claim]``: the study's statements checked on those
               tables — a pure function, testable on hand-made tables;
``section``    ``section(view) -> Section``: the stage's part of the report.

``needs`` are stages that must have finished first; ``uses`` stages whose results the
stage reads when they exist. Both are part of its cache key. A user's stage is the same
value in the user's own module, named in a study file (``[study] stages =
["my_stages.attention:stage"]``); see ``examples/``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from domaingpt.context.records import StageStatus
from domaingpt.context.rundir import RunDir
from domaingpt.core.claims import Claim, unmeasured, write_claims
from domaingpt.core.device import oom_hint
from domaingpt.core.inference import (
    combine,
    replicate_tables,
    replicates_of,
    with_replicate_column,
)
from domaingpt.core.progress import Log, stderr_log
from domaingpt.core.settings import StageSettings
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
    of the study, for the report. ``force``: rerun even finished sub-jobs.
    """

    run: RunDir
    stage: Stage
    corpora: list[Corpus] = field(default_factory=list)
    progress: bool = True
    log: Log = stderr_log
    force: bool = False
    stages: tuple[Stage, ...] = ()
    study: Any = None  # the StudySpec when run by `domaingpt run`

    @property
    def out(self) -> Path:
        """The stage's own folder in the run directory."""
        return self.run.root / self.stage.folder


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
        return self.run.root / self.stage.folder

    def figures(self) -> list[Path]:
        """The PNG figures the stage wrote, by path."""
        return sorted(self.out.rglob("*.png")) if self.out.is_dir() else []


def _no_claims(tables: Tables) -> list[Claim]:
    return []


#: Stages whose results are read even without a "done" record: a partly trained run,
#: or the first stages of an old run directory.
ALWAYS_READ = ("stats", "train")


def read_stage(stage: Stage, run: RunDir) -> Tables:
    """A stage's tables (with a ``replicate`` column beside each table's model column);
    an error naming the stage when it has not completed."""
    status = run.status(stage.name)
    if status != StageStatus.DONE and stage.name not in ALWAYS_READ:
        raise DomainGPTError(f"{stage.name} has not completed in {run.root} (status: {status})")
    return with_replicate_column(stage.load(run))


def stage_view(
    stage: Stage, run: RunDir, corpora: list[str], figdir: Path, tables: Tables | None = None
) -> StageView:
    """What the report shows of a stage: its tables (or why there are none) and claims.

    Never raises: a stage whose results cannot be read is a view without tables, with the
    reason, so one broken stage cannot take the report down.
    """
    status = run.status(stage.name)
    reason = ""
    if tables is None:
        try:
            tables = read_stage(stage, run)
        except DomainGPTError as e:
            record = run.record(stage.name)
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
    load: Callable[[RunDir], Tables]
    claims: Callable[[Tables], list[Claim]] = _no_claims
    section: Callable[[StageView], Section] | None = None
    needs: tuple[str, ...] = ()
    uses: tuple[str, ...] = ()
    subdir: str = ""  # the stage's folder in a run; default: its name
    help: str = ""  # one line for `domaingpt --help`
    # what its command prints: a function of the written files, or the key of a written
    # Markdown file to print as it is
    summary: Callable[[Mapping[str, Path]], str] | str | None = None
    section_title: str = ""  # the report's heading and the claims' section; default: title
    command: bool = True  # a `domaingpt NAME` command generated from its settings

    @property
    def folder(self) -> str:
        return self.subdir or self.name

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
    """Run a stage, then check its claims on what it wrote (``<folder>/claims.csv``).

    The one way a stage runs, from ``domaingpt run`` and from its own command alike. Out
    of memory is a one-line error naming the batch size to lower; ``settings.threads``
    torch threads inside, restored after.
    """
    with torch_threads(settings.threads), oom_hint(*settings.memory_setting()):
        written = {k: Path(v) for k, v in (ctx.stage.run(ctx, settings) or {}).items()}
    claims: list[Claim] = []
    if ctx.stage.claims is not _no_claims:
        claims = ctx.stage.checked_claims(ctx.stage.load(ctx.run))
        written["claims"] = write_claims(claims, ctx.out / "claims.csv")
    return written, claims
