"""The stage contract's runner: claims written, threads scoped, the command's summary."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from domaingpt.context.rundir import RunDir
from domaingpt.context.stage import Stage, StageContext, run_stage
from domaingpt.core.claims import Claim, Verdict
from domaingpt.core.settings import StageSettings, setting


@dataclass(frozen=True)
class CountSettings(StageSettings):
    SECTION = "count"
    n: int = setting(3, "rows to write")


def _run(ctx: StageContext, settings: CountSettings) -> dict[str, Path]:
    ctx.out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"i": range(settings.n), "threads": torch.get_num_threads()})
    frame.to_csv(ctx.out / "rows.csv", index=False)
    (ctx.out / "summary.md").write_text(f"{settings.n} rows\n", encoding="utf-8")
    return {"rows": ctx.out / "rows.csv", "summary_md": ctx.out / "summary.md"}


def _load(run: RunDir) -> dict[str, pd.DataFrame]:
    return {"rows": pd.read_csv(run.root / "count" / "rows.csv")}


def _claims(tables: dict[str, pd.DataFrame]) -> list[Claim]:
    n = len(tables["rows"])
    verdict = Verdict.HOLDS if n >= 3 else Verdict.FAILS
    return [Claim("at least three rows", verdict, f"{n} rows")]


STAGE = Stage(
    name="count",
    title="rows",
    settings=CountSettings,
    run=_run,
    load=_load,
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


def test_a_summary_function_or_nothing() -> None:
    as_function = Stage("x", "x", CountSettings, _run, _load, summary=lambda w: f"{len(w)} files")
    assert as_function.summary_text({"a": Path("a")}) == "1 files"
    assert Stage("y", "y", CountSettings, _run, _load).summary_text({}) is None
