"""The stage contract's runner: declared tables written and read back, settings and
claims recorded, threads scoped, the command's summary, earlier names of a stage."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import torch

from domaingpt.context.records import StageRecord, StageStatus
from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Stage, StageContext, run_stage
from domaingpt.core.claims import Claim, Verdict
from domaingpt.core.io import read_json
from domaingpt.core.settings import StageSettings, setting
from domaingpt.errors import DomainGPTError


@dataclass(frozen=True)
class CountSettings(StageSettings):
    n: int = setting(3, "rows to write")


def _run(ctx: StageContext, settings: CountSettings) -> dict[str, Path]:
    frame = pd.DataFrame({"i": range(settings.n), "threads": torch.get_num_threads()})
    rows = ctx.write_table("rows", frame)
    (ctx.out / "summary.md").write_text(f"{settings.n} rows\n", encoding="utf-8")
    return {"rows": rows, "summary_md": ctx.out / "summary.md"}


def _claims(tables: dict[str, pd.DataFrame]) -> list[Claim]:
    n = len(tables["rows"])
    verdict = Verdict.HOLDS if n >= 3 else Verdict.FAILS
    return [Claim("at least three rows", verdict, f"{n} rows")]


STAGE = Stage(
    name="count",
    title="rows",
    settings=CountSettings,
    run=_run,
    tables=("rows",),
    claims=_claims,
    summary="summary_md",
)


def test_run_stage_scopes_threads_and_writes_claims(tmp_path: Path) -> None:
    before = torch.get_num_threads()
    ctx = StageContext(RunDir(tmp_path), STAGE, progress=False, log=lambda m: None)
    written, claims = run_stage(ctx, CountSettings(n=2, threads=1))
    assert torch.get_num_threads() == before  # restored after the stage
    assert pd.read_csv(written["rows"])["threads"].tolist() == [1, 1]
    assert [(c.verdict, c.evidence) for c in claims] == [(Verdict.FAILS, "2 rows")]
    back = pd.read_csv(written["claims"])
    assert back["verdict"].tolist() == [Verdict.FAILS.value]
    assert STAGE.summary_text(written) == "2 rows\n"
    assert read_json(written["settings"]) == CountSettings(n=2, threads=1).to_dict()
    assert STAGE.read(RunDir(tmp_path))["rows"]["i"].tolist() == [0, 1]  # the default load


def test_a_table_the_stage_does_not_declare_is_refused(tmp_path: Path) -> None:
    ctx = StageContext(RunDir(tmp_path), STAGE, progress=False, log=lambda m: None)
    with pytest.raises(DomainGPTError, match="does not declare"):
        ctx.write_table("other", pd.DataFrame({"a": [1]}))
    assert not (tmp_path / "count" / "other.csv").exists()


def test_a_missing_table_names_the_command_that_writes_it(tmp_path: Path) -> None:
    with pytest.raises(DomainGPTError, match=r"rows\.csv is missing.*domaingpt count"):
        STAGE.read(RunDir(tmp_path))


def test_an_earlier_name_is_read_where_the_new_one_is_absent(tmp_path: Path) -> None:
    renamed = dataclasses.replace(STAGE, name="tally", aliases=("count",))
    ctx = StageContext(RunDir(tmp_path), STAGE, progress=False, log=lambda m: None)
    run_stage(ctx, CountSettings(n=4))
    RunDir(tmp_path).write_record(StageRecord("count", StageStatus.DONE, key="k"))
    assert renamed.read(RunDir(tmp_path))["rows"]["i"].tolist() == [0, 1, 2, 3]
    assert RunDir(tmp_path).status("tally", renamed.aliases) == "done"
    assert RunDir(tmp_path).status("tally") == "absent"


def test_a_summary_function_or_nothing() -> None:
    as_function = Stage("x", "x", CountSettings, _run, summary=lambda w: f"{len(w)} files")
    assert as_function.summary_text({"a": Path("a")}) == "1 files"
    assert Stage("y", "y", CountSettings, _run).summary_text({}) is None


def test_a_stage_reads_the_tables_of_a_stage_it_uses_and_no_other(tmp_path: Path) -> None:
    """``ctx.results(name)``: a stage it needs or uses, by its name or an earlier one,
    read as that stage reads itself; any other stage is refused."""
    run_stage(StageContext(RunDir(tmp_path), STAGE, progress=False, log=lambda m: None),
              CountSettings(n=2))  # fmt: skip
    counted = dataclasses.replace(STAGE, aliases=("tally",))
    reader = Stage("reader", "r", CountSettings, _run, uses=("count",))
    loner = Stage("loner", "l", CountSettings, _run)
    stages = (counted, reader, loner)
    ctx = StageContext(RunDir(tmp_path), reader, stages=stages)
    assert ctx.results("count")["rows"]["i"].tolist() == [0, 1]
    assert ctx.results("tally")["rows"]["i"].tolist() == [0, 1]
    with pytest.raises(DomainGPTError, match="neither needs nor uses"):
        StageContext(RunDir(tmp_path), loner, stages=stages).results("count")
    with pytest.raises(DomainGPTError, match="not in this study"):
        ctx.results("missing")
