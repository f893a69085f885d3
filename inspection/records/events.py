"""What the recorder decided and stored, as typed events for its outputs (the PLC publisher).

Every event is emitted only after the row it describes is committed, and carries that row's id, so
a message on the PLC output can always be traced to its row (`alarms.id`, `grades.id`,
`defects.id`). Outputs format and publish these; they never decide anything nor read the database.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class DefectRecorded:
    """A newly recorded defect fragment: its ``defects`` row, with ``merged_into`` (the id of the
    defect's first fragment) and ``group_severity`` when it continues a defect cut by a frame seam."""

    row: dict[str, Any]
    model_version: str | None
    model_sha256: str | None

    @classmethod
    def of(cls, row: dict[str, Any], model_version: str | None, model_sha256: str | None) -> DefectRecorded:
        """``DefectRecorded(row, model_version, model_sha256)``, built at half the cost: a frozen
        dataclass sets each field through ``object.__setattr__``, and the recorder builds one per
        defect (20,000 a second at a busy line). The same value (equal, frozen)."""
        event = object.__new__(cls)
        fields = event.__dict__
        fields["row"], fields["model_version"], fields["model_sha256"] = row, model_version, model_sha256
        return event


@dataclass(frozen=True)
class GradeDecided:
    """A new row of a coil's grade history, whoever wrote it (the recorder, or an inspector's
    override or review in the console); `event` is graded | regraded | hold | override."""

    grade_id: int
    coil: str
    event: str
    grade: str
    reasons: list[str]
    coverage: float | None
    counts: dict[str, int]
    defects_total: int
    rule_set: str | None
    rule_set_version: str | None
    by: str | None


@dataclass(frozen=True)
class AlarmRaised:
    """A stored ``alarms`` row: `kind` is severe_defect | periodic | coverage | model | worker."""

    alarm_id: int
    kind: str
    coil: str | None
    severity: int
    message: str
    details: dict[str, Any] = field(default_factory=dict)


RecorderEvent = DefectRecorded | GradeDecided | AlarmRaised
