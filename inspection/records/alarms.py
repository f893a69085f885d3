"""Alarms as values before they are stored, the severe-defect rule, and its log summary.

The recorder decides every alarm (`recorder`); the store records it with its audit event and only
then is it emitted (`events.AlarmRaised`, with the row's id). Severe-defect alarms are decided
per batch (`severe_defects`) and stored in the batch's own transaction (`Store.apply_batch`): at a
busy line they come by the hundred per second, so they share one insert and one audit event, and
the log gets a summary (`SevereLog`) instead of a line each.
"""

from __future__ import annotations

import logging
from collections.abc import Container, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from inspection.records import audit
from inspection.records.errors import StoreError
from inspection.records.events import AlarmRaised

# Severe-defect alarms come by the hundred per second, each with its details as canonical JSON, and
# `json.dumps` with its options costs about 6 us a call (it builds an encoder every time); msgspec
# writes the same text for a flat object of strings, ints and floats whose repr has no exponent
# (`json` writes 1e-05 where msgspec writes 0.00001): `details_json` takes it for those, `json`
# for anything else (`tests/test_records_finalise.py` compares the two spellings).
_SORTED_JSON = msgspec.json.Encoder(order="sorted")
_PLAIN_TYPES = frozenset({str, int, type(None)})


def details_json(details: Any) -> str:
    """`audit.canonical_json(details)`, the same text, faster for the flat details alarms carry."""
    if type(details) is not dict:
        return audit.canonical_json(details)
    for key, value in details.items():
        kind = type(value)
        if type(key) is not str or (kind not in _PLAIN_TYPES and not (
                kind is float and (value == 0.0 or 1e-4 <= abs(value) < 1e16))):
            return audit.canonical_json(details)
    try:
        return _SORTED_JSON.encode(details).decode()
    except (UnicodeEncodeError, TypeError, OverflowError):  # a lone surrogate in a text, say: as ever
        return audit.canonical_json(details)


COLUMNS = ("surface", "class_", "across_mm", "pitch_mm", "roll_diameter_mm", "count")  # besides details
_FIELDS = frozenset({*COLUMNS, "details"})
_DEFECT_KEYS = ("camera", "surface", "frame_index", "defect_index", "class", "score", "along_mm", "across_mm",
                "merged_into")


@dataclass(frozen=True)
class Alarm:
    """An alarm the recorder decided: `fields` are its columns (`COLUMNS`); `details` (stored as
    JSON) gets the severity added."""

    kind: str
    message: str
    coil: str | None
    severity: int
    fields: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, kind: str, message: str, coil: str | None, severity: int, fields: dict[str, Any],
           details: dict[str, Any]) -> Alarm:
        """``Alarm(kind, message, coil, severity, fields, details)`` with its fields filled at once, not
        through ``object.__setattr__`` one by one: one per severe defect (a tenth of `bench records`')."""
        alarm = object.__new__(cls)
        alarm.__dict__.update(kind=kind, message=message, coil=coil, severity=severity, fields=fields,
                              details=details)
        return alarm

    def stored_details(self) -> dict[str, Any]:
        return {**self.details, "severity": self.severity}

    def event(self, alarm_id: int) -> AlarmRaised:
        """What the outputs get once the row `alarm_id` is committed."""
        extra = {("class" if k == "class_" else k): v for k, v in self.fields.items()}
        return AlarmRaised(alarm_id, self.kind, self.coil, self.severity, self.message,
                           {**extra, **self.stored_details()})


def row(kind: str, message: str, coil: str | None, fields: dict[str, Any], time_ns: int) -> dict[str, Any]:
    """The ``alarms`` row; `fields` are `COLUMNS` and ``details`` (anything else is refused)."""
    if not _FIELDS.issuperset(fields):
        unknown = set(fields) - _FIELDS
        raise StoreError(f"add_alarm: unknown field {sorted(unknown)[0]!r}")
    details = fields.get("details")
    return {"coil": coil, "kind": kind, "surface": fields.get("surface"), "class": fields.get("class_"),
            "across_mm": fields.get("across_mm"), "pitch_mm": fields.get("pitch_mm"),
            "roll_diameter_mm": fields.get("roll_diameter_mm"), "count": fields.get("count"), "message": message,
            "details": details_json(details) if details is not None else None, "time_ns": time_ns}


def head_of(defect: dict[str, Any]) -> int:
    """The id a defect is alarmed under: its first fragment's when frame seams cut it."""
    return defect.get("merged_into") or defect["id"]


def severe_defects(defects: Iterable[dict[str, Any]], min_severity: int, alarmed: Container[int]) -> list[Alarm]:
    """One alarm per new defect at or above `min_severity`; a defect cut by frame seams is judged on
    its whole size (``group_severity``) and alarmed once, by whichever fragment reaches it first
    (`alarmed`: heads alarmed by earlier batches). Pure: the caller remembers the heads once stored."""
    out: list[Alarm] = []
    seen: set[int] = set()
    for d in defects:  # every new defect of the batch passes here: the common case returns early
        severity = d["severity"]
        if d.get("group_severity"):
            severity = max(severity, d["group_severity"])
        if severity < min_severity:
            continue
        head = head_of(d)
        if head in seen or head in alarmed:
            continue
        seen.add(head)
        details = {"defect_id": d["id"], **{k: d[k] for k in _DEFECT_KEYS if d.get(k) is not None}}
        out.append(Alarm.of("severe_defect",
                         f"severity {severity} {d['class']} on coil {d['coil']} ({d['surface']}) at "
                         f"{d['along_mm']:.0f} mm along, {d['across_mm']:.0f} mm across",
                         d["coil"], severity, {"surface": d["surface"], "class_": d["class"],
                                               "across_mm": d["across_mm"]}, details))
    return out


class SevereLog:
    """Severe-defect alarms in the operator's log: one summary line at most every `every_s` (each
    alarm is in the database, on the PLC output and at DEBUG in the log)."""

    def __init__(self, log: logging.Logger, every_s: float = 5.0) -> None:
        self.log, self.every_s = log, every_s
        self._ids: list[int] = []
        self._coils: dict[str, int] = {}
        self._first = ""
        self._logged_at = float("-inf")

    def add(self, alarm_id: int, alarm: Alarm) -> None:
        """Count a stored alarm in the next summary (`flush` writes it)."""
        self.log.debug("alarm %d: %s", alarm_id, alarm.message)
        if not self._ids:
            self._first = alarm.message
        self._ids.append(alarm_id)
        if alarm.coil is not None:
            self._coils[alarm.coil] = self._coils.get(alarm.coil, 0) + 1

    def flush(self, now: float, *, force: bool = False) -> None:
        """Write the summary of the alarms added since the last one, when `every_s` has passed since
        it (the recorder calls this after each batch, every second, and with `force` at stop)."""
        if not self._ids or not (force or now - self._logged_at >= self.every_s):
            return
        coils = ", ".join(f"{coil} ({n})" for coil, n in list(self._coils.items())[:5])
        more = f" and {len(self._coils) - 5} more coils" if len(self._coils) > 5 else ""
        span = f"alarm {self._ids[0]}" if len(self._ids) == 1 else f"alarms {min(self._ids)}..{max(self._ids)}"
        self.log.warning("%s: %d severe_defect on coil %s%s; first: %s", span, len(self._ids), coils, more,
                         self._first)
        self._ids, self._coils, self._logged_at = [], {}, now
