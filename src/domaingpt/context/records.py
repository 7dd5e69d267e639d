"""A stage's record: what ``stages/<stage>.json`` says, read and written only here.

The runner writes one record per stage when the stage ends (done, failed) or cannot run
(blocked); :meth:`RunDir.record <domaingpt.context.rundir.RunDir.record>` reads it back.
The statuses are a :class:`~enum.StrEnum`, so the file holds the same strings it always
did and the run directories of earlier versions load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any


class StageStatus(StrEnum):
    """Where a stage stands in a run."""

    DONE = "done"
    FAILED = "failed"
    BLOCKED = "blocked"  # a stage it needs did not complete
    ABSENT = "absent"  # never run: no record (or one that cannot be read)
    SKIPPED = "skipped"  # an outcome, never a record: done earlier, nothing changed


#: ``{relative path: [size, sha256]}`` of the files a stage wrote.
Outputs = dict[str, list]


@dataclass(frozen=True)
class StageRecord:
    """One stage's record. A field left at ``None`` is not written, so a record's file
    holds what its status needs: a done record its key, settings, inputs and outputs; a
    failed one its message (and traceback, for a bug); a blocked one its message and the
    results it keeps (``kept``: its last done record)."""

    stage: str
    status: StageStatus
    message: str | None = None
    key: str | None = None
    settings: dict[str, Any] | None = None
    inputs: dict[str, Any] | None = None
    outputs: Outputs = field(default_factory=dict)
    version: str | None = None
    at: str | None = None
    seconds: float | None = None
    cpu_seconds: float | None = None
    traceback: str | None = None
    kept: StageRecord | None = None

    @property
    def done(self) -> bool:
        return self.status == StageStatus.DONE

    def to_dict(self) -> dict[str, Any]:
        """The record as its JSON file holds it (the keys in this order)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "outputs" and not value and not self.done:
                continue  # only a done record lists outputs
            if value is None:
                continue
            if f.name == "status":
                value = str(value)
            elif f.name == "kept":
                value = value.to_dict()
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: Any, stage: str) -> StageRecord | None:
        """A record as the runner writes it (any version), else None: an unreadable
        record makes its stage run again, never an AttributeError on every run.

        A record written before statuses were checked, without one, reads as absent;
        a status this version does not know is unreadable (the stage runs again)."""
        if not isinstance(data, dict):
            return None
        status = data.get("status", StageStatus.ABSENT)
        outputs = data.get("outputs", {})
        if not isinstance(status, str) or status not in _STATUSES:
            return None
        if not _well_formed_outputs(outputs):
            return None
        kept = data.get("kept")
        if kept is not None:
            kept = cls.from_dict(kept, stage)
        return cls(
            stage=_str_or_none(data.get("stage")) or stage,
            status=StageStatus(status),
            message=_str_or_none(data.get("message")),
            key=_str_or_none(data.get("key")),
            settings=_dict_or_none(data.get("settings")),
            inputs=_dict_or_none(data.get("inputs")),
            outputs=outputs,
            version=_str_or_none(data.get("version")),
            at=_str_or_none(data.get("at")),
            seconds=_number_or_none(data.get("seconds")),
            cpu_seconds=_number_or_none(data.get("cpu_seconds")),
            traceback=_str_or_none(data.get("traceback")),
            kept=kept,
        )


_STATUSES = frozenset(s.value for s in StageStatus)


def _well_formed_outputs(outputs: Any) -> bool:
    return isinstance(outputs, dict) and all(
        isinstance(v, list)
        and len(v) == 2
        and isinstance(v[0], int)
        and not isinstance(v[0], bool)
        and isinstance(v[1], str)
        for v in outputs.values()
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _dict_or_none(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _number_or_none(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None
