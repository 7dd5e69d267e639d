"""The report's first section: what this run found, before any table.

How many of the study's claims hold, do not hold or could not be tested at this run's
scale; the claims that flipped against the study, each with the numbers it rests on; the
zero-shot matrix beside the study's; the answer to the study's open question (does
partial training make adaptation easier?); and a link into each detailed section with
its verdicts. Everything here is read from the claims and files the stages wrote.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from domaingpt.core import published
from domaingpt.core.claims import VERDICTS, Claim, Verdict, counts
from domaingpt.report.document import Section

SUMMARY_ID = "summary"
#: Evidence longer than this is cut in the summary (the section has all of it).
EVIDENCE_CHARS = 240


def _short(text: str, limit: int = EVIDENCE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _plural(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def tally(claims: list[Claim]) -> str:
    """``12 claims: 5 hold, 1 partly holds, 4 do not hold, 2 could not be tested ...``"""
    n = counts(claims)
    return (
        f"{_plural(len(claims), 'claim', 'claims')} of the study checked on this run: "
        f"{n[Verdict.HOLDS]} hold, {n[Verdict.PARTLY]} partly hold, "
        f"{n[Verdict.FAILS]} do not hold, {n[Verdict.ONE_MODEL]} rest on one model of "
        f"their domain (no verdict: a claim about a domain needs at least two replicate "
        f"models, [train] seeds), and {n[Verdict.UNMEASURED]} could not be tested "
        "at this run's scale (the run has no data for them, e.g. it ends before the "
        "iteration a claim is about)."
    )


def _claim_text(c: Claim, limit: int = EVIDENCE_CHARS) -> str:
    return f"{c.headline()}: {_short(c.evidence, limit)}"


def _link(c: Claim, section_of: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    sid, title = section_of.get(c.stage, ("conclusions", "Conclusions"))
    return {"href": f"#{sid}", "link": title}


def summary_section(
    claims: list[Claim],
    section_of: Mapping[str, tuple[str, str]],
    headline_figure: Path | None,
) -> Section:
    """The findings first. ``section_of`` maps a stage to its section's (id, title)."""
    s = Section(SUMMARY_ID, "Findings at a glance", lead=True)
    if not claims:
        s.missing("no stage has results yet: run `domaingpt run` first")
        return s
    s.p(tally(claims))
    flipped = [c for c in claims if c.verdict == Verdict.FAILS]
    s.h3("Where this run disagrees with the study")
    if flipped:
        s.items(
            [
                {"verdict": str(c.verdict), "text": _claim_text(c), **_link(c, section_of)}
                for c in flipped
            ],
            more="more claims that do not hold",
        )
    else:
        s.p("Every claim this run could test holds at least partly.")
    s.h3("Zero-shot loss: this run beside the study")
    if headline_figure is not None and headline_figure.is_file():
        s.figure(headline_figure)
    else:
        s.note("No zero-shot matrix: the evaluate stage has not run.")
    s.h3("Does partial training make adaptation easier?")
    early = [c for c in claims if c.claim == published.EARLY_EASIER]
    if early:
        s.items(
            [
                {"verdict": str(c.verdict), "text": _claim_text(c, 10_000), **_link(c, section_of)}
                for c in early
            ]
        )
    else:
        s.note("Not measured: the adapt stage has not run from early checkpoints.")
    s.h3("The detailed sections")
    rows = []
    for stage, (sid, title) in section_of.items():
        mine = claims if sid == "conclusions" else [c for c in claims if c.stage == stage]
        n = counts(mine)
        verdicts = ", ".join(f"{v}: {n[v]}" for v in VERDICTS if n[v]) or "no claims"
        rows.append({"text": f"{title}: {verdicts}", "href": f"#{sid}", "link": "read"})
    s.items(rows, collapse=False)
    return s
