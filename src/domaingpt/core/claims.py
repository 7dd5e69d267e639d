"""The study's claims checked against a run: one record, one verdict vocabulary.

Every stage turns its tables into :class:`Claim` records with a pure function (its
``claims``), so a verdict is a fact about the numbers a run wrote, testable on small
hand-made tables. The claim's wording (and any number quoted from the study) comes from
:mod:`domaingpt.core.published`; the evidence gives this run's numbers in words, and
``numbers`` the same numbers as data.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from domaingpt.core.tables import read_table, write_table


def display(name: str) -> str:
    """``shakespeare`` -> ``Shakespeare`` (corpus and model names in prose)."""
    name = str(name)
    return name[:1].upper() + name[1:]


class Verdict(StrEnum):
    HOLDS = "holds"
    PARTLY = "partly"
    FAILS = "does not hold"
    ONE_MODEL = "one model"  # measured on a single model of the domain: no verdict about it
    UNMEASURED = "not measured"


VERDICTS = tuple(Verdict)
CLAIM_COLUMNS = [
    "stage",
    "section",
    "claim",
    "scope",
    "verdict",
    "evidence",
    "numbers",
    "effect",
    "per_model",
]


@dataclass(frozen=True)
class Claim:
    """One statement of the study, checked on one scope of this run.

    ``scope`` says what the check covers ("Shakespeare, Math, Wikipedia", "math model",
    "in-domain prompts"); it is empty when the claim is about the whole run. ``stage``
    and ``section`` are filled in by the stage that made the claim (see
    :meth:`Claim.of`).

    A claim is made on one trained model per domain (one replicate), then combined
    across replicates (:mod:`domaingpt.core.inference`), where the model is the unit of
    inference. ``effect`` is what is combined: this model's estimate of the claim's
    effect, signed so that a positive value supports the claim and zero is its null
    (out- minus in-domain entropy for "out-of-domain prompts show higher entropy",
    first minus final entropy for "entropy falls"). ``None``: the claim has no such
    number, and its replicates are combined by their verdicts alone. ``per_model``:
    the claim is about one named model (e.g. "this model beats nanoGPT's 1.8857"), not
    about its domain; it is listed for every replicate, never combined.
    """

    claim: str
    verdict: Verdict
    evidence: str
    scope: str = ""
    numbers: Mapping[str, float | int | str | None] = field(default_factory=dict)
    stage: str = ""
    section: str = ""
    effect: float | None = None
    per_model: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "verdict", Verdict(self.verdict))
        if self.effect is not None:
            effect = float(self.effect)
            object.__setattr__(self, "effect", effect if math.isfinite(effect) else None)

    @classmethod
    def of(cls, stage: str, section: str, claims: Iterable[Claim]) -> list[Claim]:
        """``claims`` labelled with the stage and report section they belong to."""
        return [
            Claim(**{**asdict(c), "stage": stage, "section": section, "verdict": c.verdict})
            for c in claims
        ]

    def headline(self) -> str:
        """``claim (scope)``: the claim as one phrase (a closing full stop dropped)."""
        scope = f" ({self.scope})" if self.scope else ""
        return f"{self.claim.rstrip().rstrip('.')}{scope}"

    def line(self) -> str:
        """``[holds] claim (scope): evidence`` — how the CLI prints a claim."""
        return f"[{self.verdict}] {self.headline()}: {self.evidence}"


def unmeasured(claim: str, why: str, scope: str = "") -> Claim:
    return Claim(claim, Verdict.UNMEASURED, why, scope)


def smallest_effect(effects: Iterable[float]) -> float | None:
    """The effect of a claim checked on several models, pairs or checkpoints at once:
    the smallest finite one, positive only where every one is, as such a claim holds
    only where every one does; None when none is finite."""
    finite = [e for e in effects if math.isfinite(e)]
    return min(finite) if finite else None


def verdict_of(flags: Sequence[bool]) -> Verdict:
    """All true: holds; some: partly; none: does not hold; no data: not measured."""
    if not flags:
        return Verdict.UNMEASURED
    if all(flags):
        return Verdict.HOLDS
    return Verdict.PARTLY if any(flags) else Verdict.FAILS


def holds_if(condition: bool | None) -> Verdict:
    """True: holds; False: does not hold; None: not measured."""
    if condition is None:
        return Verdict.UNMEASURED
    return Verdict.HOLDS if condition else Verdict.FAILS


def _clean(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy scalars
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def claims_frame(claims: Iterable[Claim]) -> pd.DataFrame:
    """Claims as a table (``numbers`` as a JSON object per row)."""
    rows = []
    for c in claims:
        row = asdict(c)
        row["verdict"] = str(c.verdict)
        row["numbers"] = json.dumps(
            {k: _clean(v) for k, v in c.numbers.items()}, ensure_ascii=False, sort_keys=True
        )
        row["effect"] = np.nan if c.effect is None else c.effect
        rows.append(row)
    return pd.DataFrame(rows, columns=CLAIM_COLUMNS)


def frame_claims(df: pd.DataFrame) -> list[Claim]:
    """The inverse of :func:`claims_frame`."""
    out = []
    for r in df.to_dict("records"):
        numbers = r.get("numbers")
        out.append(
            Claim(
                claim=str(r["claim"]),
                verdict=Verdict(r["verdict"]),
                evidence="" if pd.isna(r.get("evidence")) else str(r["evidence"]),
                scope="" if pd.isna(r.get("scope")) else str(r.get("scope", "")),
                numbers=json.loads(numbers) if isinstance(numbers, str) and numbers else {},
                stage="" if pd.isna(r.get("stage")) else str(r.get("stage", "")),
                section="" if pd.isna(r.get("section")) else str(r.get("section", "")),
                effect=None if pd.isna(r.get("effect", np.nan)) else float(r["effect"]),
                per_model=str(r.get("per_model", False)).lower() == "true",
            )
        )
    return out


def write_claims(claims: Iterable[Claim], path: Path) -> Path:
    return write_table(claims_frame(claims), path)


def read_claims(path: Path) -> list[Claim]:
    return frame_claims(read_table(path))


def counts(claims: Iterable[Claim]) -> dict[Verdict, int]:
    """How many claims have each verdict (every verdict present, in the vocabulary's order)."""
    out = dict.fromkeys(VERDICTS, 0)
    for c in claims:
        out[c.verdict] += 1
    return out
