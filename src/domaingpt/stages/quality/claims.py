"""The study's judgements of its samples, checked on the sample-quality tables.

The thresholds that decide them are settings of the stage, recorded in
``quality/settings.json`` (the ``settings`` table), so the verdicts are a function of
what the stage wrote.
"""

from __future__ import annotations

import dataclasses

from domaingpt.core.claims import Claim, holds_if
from domaingpt.core.stage import Tables
from domaingpt.stages.quality.compute import SampleQualitySettings, sample_quality_claims


def thresholds(tables: Tables) -> SampleQualitySettings:
    """The settings the stage ran with (the defaults for a run that did not record them)."""
    recorded = tables.get("settings")
    if recorded is None or recorded.empty:
        return SampleQualitySettings()
    row = recorded.iloc[0].to_dict()
    names = {f.name for f in dataclasses.fields(SampleQualitySettings) if f.init}
    return SampleQualitySettings(**{k: v for k, v in row.items() if k in names})


def claims(tables: Tables) -> list[Claim]:
    rows = sample_quality_claims(tables, thresholds(tables))
    return [
        Claim(
            r["claim"],
            holds_if(None if r["holds"] is None else bool(r["holds"])),
            f"{r['measure']}. {r['evidence']}",
            str(r["scope"]),
        )
        for r in rows.to_dict("records")
    ]
