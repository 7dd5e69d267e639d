"""A run directory read back for a notebook: every stage's tables, figures and claims.

``Study.load("runs/cpu")["evaluate"]["zero_shot"]`` is a DataFrame; nothing is re-run.
The stages are the built-in ones plus any the study file added (recorded in
``study.json``), so a user's stage loads like a built-in one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Stage, StageView, Tables, read_stage, stage_view
from domaingpt.core.claims import Claim, claims_frame
from domaingpt.core.inference import adjust
from domaingpt.core.io import read_json
from domaingpt.errors import DomainGPTError
from domaingpt.study.pipeline import REPORT
from domaingpt.study.spec import StageRef, resolve_stages


def read_study_record(root: Path) -> dict[str, Any]:
    """A run's ``study.json`` (empty when there is none), its shape checked: a damaged one
    is a one-line error naming it, never an AttributeError deep in a reader."""
    path = Path(root) / "study.json"
    if not path.is_file():
        return {}
    spec = read_json(path)
    problem = ""
    if not isinstance(spec, dict):
        problem = f"a JSON {type(spec).__name__}, not an object"
    elif not isinstance(spec.get("name", ""), str):
        problem = "its name is not a string"
    elif not isinstance(spec.get("corpora", []), list) or not all(
        isinstance(c, str) for c in spec.get("corpora", [])
    ):
        problem = "its corpora are not a list of names"
    elif not isinstance(spec.get("stages", []), list) or not all(
        isinstance(s, dict) and isinstance(s.get("ref"), str) and isinstance(s.get("base"), str)
        for s in spec.get("stages", [])
    ):
        problem = "its stages are not a list of {ref, base}"
    if problem:
        raise DomainGPTError(
            f"{path} is damaged ({problem}); `domaingpt run` with the run's study file "
            "writes it again"
        )
    return spec


class Study:
    """A run directory read back; nothing is re-run.

    ``study["evaluate"]`` is the dict of DataFrames that stage wrote (its ``load``);
    ``study.figures["stats"]`` the PNG files of a stage; ``study.records`` the stage
    records (status, seconds, key); ``study.spec`` the resolved study file;
    ``study.conclusions`` every claim checked, as a table.
    """

    def __init__(self, root: str | Path, stages: tuple[Stage, ...] | None = None) -> None:
        self.root = Path(root)
        self.run = RunDir(self.root)
        self._stages = stages
        self._tables: dict[str, Tables] = {}

    @classmethod
    def load(cls, root: str | Path) -> Study:
        root = Path(root)
        if not root.is_dir():
            raise DomainGPTError(f"run directory {root} does not exist: run `domaingpt run` first")
        return cls(root)

    # -- metadata ----------------------------------------------------------------------
    @property
    def spec(self) -> dict[str, Any]:
        return read_study_record(self.root)

    @property
    def versions(self) -> dict[str, str]:
        p = self.root / "versions.json"
        return read_json(p) if p.is_file() else {}

    @property
    def stages(self) -> tuple[Stage, ...]:
        """The run's stages in order: built in, the study file's own, the report."""
        if self._stages is None:
            refs = [StageRef(s["ref"], s["base"]) for s in self.spec.get("stages", [])]
            self._stages = resolve_stages(refs)
        return self._stages

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.called(name):
                return s
        raise DomainGPTError(
            f"unknown stage {name!r}: stages are {', '.join(s.name for s in self.stages)}"
        )

    @property
    def records(self) -> dict[str, StageRecord]:
        return {s.name: rec for s in self.stages if (rec := s.record(self.run))}

    def status(self, stage: str) -> StageStatus:
        """done, failed, blocked, or absent (never run)."""
        found = self.stage(stage)
        return found.status(self.run)

    def corpora(self) -> list[str]:
        """The study's corpora by name, in the study's order (else the trained models)."""
        names = [
            Path(c).stem if ("/" in c or "\\" in c or c.endswith(".txt")) else c
            for c in self.spec.get("corpora", [])
        ]
        return names or self.run.trained_models()

    # -- results -----------------------------------------------------------------------
    def tables(self, stage: str) -> Tables:
        """Every table of a stage as DataFrames (read once, then cached)."""
        found = self.stage(stage)  # an earlier name finds the stage too
        if found.name not in self._tables:
            self._tables[found.name] = read_stage(found, self.run)
        return self._tables[found.name]

    def __getitem__(self, stage: str) -> Tables:
        return self.tables(stage)

    def view(self, stage: str, figdir: Path | None = None) -> StageView:
        """What the report shows of a stage: its tables (or why there are none), claims."""
        found = self.stage(stage)
        tables = self._tables.get(found.name)
        return stage_view(found, self.run, self.corpora(), figdir or self.root / "report", tables)

    @property
    def figures(self) -> dict[str, list[Path]]:
        """PNG figures by stage (sorted by path)."""
        out: dict[str, list[Path]] = {}
        for s in self.stages:
            d = s.folder_in(self.run)
            if d.is_dir() and (found := sorted(d.rglob("*.png"))):
                out[s.name] = found
        return out

    def claims(self) -> list[Claim]:
        """Every stage's claims, computed from its tables now (missing stages: none), their
        p-values adjusted together as the report does."""
        return adjust(c for s in self.stages if s is not REPORT for c in self.view(s.name).claims)

    @property
    def conclusions(self) -> pd.DataFrame:
        """Every claim checked on this run: stage, section, claim, scope, verdict, evidence."""
        return claims_frame(self.claims())

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    def __repr__(self) -> str:
        status = ", ".join(f"{s}={r.get('status')}" for s, r in self.records.items())
        return f"Study({str(self.root)!r}: {status})"
