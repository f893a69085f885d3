"""PLC / L2 output: JSON messages on a ZeroMQ PUB socket, topics defect, coil, alarm, heartbeat.

Framing: multipart ``[topic, json]``, the topic as ASCII bytes (subscribers filter on it), the
body UTF-8 JSON with ``schema_version``, ``topic``, ``seq``, ``line``, ``time`` and the topic's
fields. ``inspection/schemas/plc-<topic>.schema.json`` is the contract; every message is checked
against it before it leaves, so a bug raises `PlcMessageError` here instead of reaching a PLC.
A refused message does not consume a sequence number (no false gap).

Why ``seq``: a PUB socket never blocks and never tells the sender it dropped a message. When a
subscriber is slower than the line and its queue (SNDHWM here, RCVHWM there) is full, ZeroMQ
discards messages for that subscriber only, silently. So the publisher cannot count those
drops; each subscriber sees them as a jump in the per-topic ``seq`` (starting at 1; a drop back
to 1 means the publisher restarted). What the publisher can count (`stats`): messages sent per
topic, messages refused by validation, and sends that failed outright.

Threading: a ZeroMQ socket must be used from one thread only, so this class has no timer
thread and no queue. The owner (the recorder's loop) calls `tick()` between units of work and
the heartbeat goes out when due. That is deliberate: a heartbeat proves the owner's loop is
alive, whereas a timer thread would keep beating while the loop is wedged.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import zmq

from inspection.errors import SteelInspectError, TransportError
from inspection.schemas import TOPICS, load_schema, validate

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_SNDHWM = 10_000  # messages per subscriber; at ~500 B each about 5 MB, minutes of defects
DEFAULT_HEARTBEAT_S = 1.0
DEFAULT_ALARM_SEVERITY = 3
ENVELOPE = ("schema_version", "topic", "seq", "line", "time")


class PlcMessageError(SteelInspectError, ValueError):
    """An outgoing PLC message does not match its JSON Schema; it was not sent."""


def parse_endpoint(spec: str, default_role: str = "bind") -> tuple[str, str]:
    """``"bind:tcp://..."`` / ``"connect:tcp://..."`` / ``"tcp://..."`` -> (role, address)."""
    role, sep, address = spec.partition(":")
    if sep and role in ("bind", "connect"):
        spec, default_role = address, role
    if "://" not in spec:
        raise TransportError(f"PLC endpoint {spec!r}: expected [bind:|connect:]transport://address")
    return default_role, spec


def iso_time(time_ns: int | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, e.g. ``2026-11-23T15:40:00.123Z``."""
    ns = time.time_ns() if time_ns is None else int(time_ns)
    seconds, rest_ns = divmod(ns, 1_000_000_000)  # integer arithmetic: a float would round the ns
    stamp = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest_ns // 1000)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_message(topic: str, payload: Mapping[str, Any], *, seq: int, line: str,
                  time_ns: int | None = None) -> dict[str, Any]:
    """The full message (envelope + payload), checked against the schema; `PlcMessageError` if not."""
    if topic not in TOPICS:
        raise PlcMessageError(f"PLC topic: expected one of {', '.join(TOPICS)}, got {topic!r}")
    clash = sorted(set(ENVELOPE) & set(payload))
    if clash:
        raise PlcMessageError(f"PLC {topic} payload: {clash[0]} is set by the publisher, not the payload")
    message = {"schema_version": SCHEMA_VERSION, "topic": topic, "seq": seq, "line": line,
               "time": iso_time(time_ns), **_plain(payload)}
    errors = validate(topic, message)
    if errors:
        raise PlcMessageError(f"PLC {topic} message refused: {'; '.join(errors[:5])}")
    return message


def defect_payload(record: Mapping[str, Any], **overrides: Any) -> dict[str, Any]:
    """The defect topic's fields picked from a defect record (extra keys such as box pixels are
    ignored); ``captured_ns`` becomes ``captured_time``; `overrides` win (e.g. model_version)."""
    merged = {**record, **overrides}
    if merged.get("captured_time") is None and merged.get("captured_ns") is not None:
        merged["captured_time"] = iso_time(merged["captured_ns"])
    merged.setdefault("defect_id", merged.get("id"))
    fields = set(load_schema("defect")["properties"]) - set(ENVELOPE)
    return {key: merged[key] for key in sorted(fields) if key in merged}


def severe_defect_alarm(defect: Mapping[str, Any], min_severity: int = DEFAULT_ALARM_SEVERITY,
                        ) -> dict[str, Any] | None:
    """The ``severe_defect`` alarm payload for a defect at or above `min_severity`, else None."""
    severity = defect.get("severity")
    if not isinstance(severity, int) or severity < min_severity:
        return None
    keys = ("camera", "surface", "frame_index", "defect_index", "class", "score", "along_mm", "across_mm",
            "defect_id", "merged_into")
    return {
        "kind": "severe_defect", "coil": defect.get("coil"), "severity": severity,
        "message": (f"severity {severity} {defect.get('class')} on coil {defect.get('coil')} "
                    f"({defect.get('surface')}) at {_mm(defect.get('along_mm'))} along, "
                    f"{_mm(defect.get('across_mm'))} across"),
        "details": {k: defect[k] for k in keys if k in defect},
    }


def periodic_defect_alarm(*, coil: str, surface: str, defect_class: str, across_mm: float, pitch_mm: float,
                          count: int, roll_diameter_mm: float | None = None, severity: int = 2,
                          **extra: Any) -> dict[str, Any]:
    """The ``periodic_defect`` alarm payload (roll marks); the diameter defaults to pitch / pi."""
    import math

    diameter = roll_diameter_mm if roll_diameter_mm is not None else round(pitch_mm / math.pi, 1)
    details = {"class": defect_class, "surface": surface, "across_mm": across_mm, "pitch_mm": pitch_mm,
               "roll_diameter_mm": diameter, "count": count, **extra}
    return {"kind": "periodic_defect", "coil": coil, "severity": severity, "details": details,
            "message": (f"periodic {defect_class} on coil {coil} ({surface}) at {_mm(across_mm)} across: "
                        f"{count} marks, pitch {_mm(pitch_mm)}, roll diameter ~{_mm(diameter)}")}


def coverage_alarm(*, coil: str, coverage: float, required: float, severity: int = 2) -> dict[str, Any]:
    """The ``coverage`` alarm payload: a coil inspected below the required share (put on hold)."""
    return {"kind": "coverage", "coil": coil, "severity": severity,
            "message": f"coil {coil} inspected {coverage:.2%} < required {required:.2%}: on hold",
            "details": {"coverage": coverage, "required": required}}


class PlcPublisher:
    """PUB socket for PLC messages; use from one thread; call `tick()` often from the owner's loop."""

    def __init__(self, endpoint: str, line: str, *, process: str = "recorder",
                 sndhwm: int = DEFAULT_SNDHWM, heartbeat_s: float = DEFAULT_HEARTBEAT_S,
                 alarm_min_severity: int | None = DEFAULT_ALARM_SEVERITY, linger_ms: int = 500,
                 socket_options: Mapping[int, int] | None = None, context: zmq.Context | None = None) -> None:
        """`socket_options`: more ZeroMQ options set before bind / connect (e.g. ``zmq.TCP_KEEPALIVE``
        for links through firewalls, ``zmq.SNDBUF``)."""
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s: expected a number > 0, got {heartbeat_s!r}")
        self.line, self.process = line, process
        self.heartbeat_s, self.alarm_min_severity = heartbeat_s, alarm_min_severity
        self.counters: dict[str, int] = {"frames": 0, "defects": 0, "drops": 0}
        self.status = "ok"
        self._seq = dict.fromkeys(TOPICS, 0)
        self._sent = dict.fromkeys(TOPICS, 0)
        self._refused = 0
        self._send_failures = 0
        self._started = time.monotonic()
        self._next_heartbeat = self._started  # the first tick() beats at once
        role, address = parse_endpoint(endpoint)
        self._socket = (context or zmq.Context.instance()).socket(zmq.PUB)
        self._socket.setsockopt(zmq.SNDHWM, sndhwm)
        self._socket.setsockopt(zmq.LINGER, linger_ms)
        for option, value in (socket_options or {}).items():
            self._socket.setsockopt(option, value)
        try:
            getattr(self._socket, role)(address)
        except zmq.ZMQError as exc:
            self._socket.close(0)
            raise TransportError(f"PLC endpoint {endpoint!r}: cannot {role}: {exc}") from None
        self.endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT) if role == "bind" else address
        log.info("PLC publisher %s %s (line %s, SNDHWM %d, heartbeat every %.1f s)",
                 role, self.endpoint, line, sndhwm, heartbeat_s)

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> PlcPublisher:
        """A publisher on the line config's ``endpoints.plc`` for its line id."""
        return cls(config.endpoints.plc, config.id, **kwargs)

    def publish(self, topic: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, number and send one message; returns what was sent."""
        try:
            message = build_message(topic, payload, seq=self._seq.get(topic, 0) + 1, line=self.line)
            body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        except (PlcMessageError, TypeError, ValueError) as exc:
            self._refused += 1
            raise exc if isinstance(exc, PlcMessageError) else PlcMessageError(
                f"PLC {topic} message refused: {exc}") from None
        self._seq[topic] = message["seq"]
        try:
            self._socket.send_multipart([topic.encode(), body], flags=zmq.NOBLOCK)
            self._sent[topic] += 1
        except zmq.Again:  # not raised by PUB today (it drops instead); counted should that change
            self._send_failures += 1
        except zmq.ZMQError as exc:
            self._send_failures += 1
            raise TransportError(f"PLC publisher {self.endpoint}: send failed: {exc}") from None
        return message

    def defect(self, payload: Mapping[str, Any], *, alarm_severity: int | None = None) -> list[dict[str, Any]]:
        """Publish a defect, plus a ``severe_defect`` alarm when it reaches the alarm severity.

        `alarm_severity` replaces the payload's severity for the alarm decision (the severity of the
        whole defect when this is one fragment of a defect cut by a frame seam).
        """
        sent = [self.publish("defect", payload)]
        if self.alarm_min_severity is not None:
            judged = payload if alarm_severity is None else {**payload, "severity": alarm_severity}
            alarm = severe_defect_alarm(judged, self.alarm_min_severity)
            if alarm is not None:
                sent.append(self.publish("alarm", alarm))
        return sent

    def coil(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a coil grade event (graded | regraded | hold | override)."""
        return self.publish("coil", payload)

    def alarm(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Publish an alarm payload (see the ``*_alarm`` helpers)."""
        return self.publish("alarm", payload)

    def heartbeat(self) -> dict[str, Any]:
        """Publish a heartbeat now with the current `status` and `counters`."""
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        return self.publish("heartbeat", {
            "process": self.process, "pid": os.getpid(), "uptime_s": round(self.uptime_s, 3),
            "interval_s": self.heartbeat_s, "status": self.status,
            "counters": {**self.counters, "plc_refused": self._refused,
                         "plc_send_failures": self._send_failures}})

    def tick(self) -> dict[str, Any] | None:
        """Send the heartbeat if it is due; returns it, or None. Call from the owner's loop."""
        return self.heartbeat() if time.monotonic() >= self._next_heartbeat else None

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def stats(self) -> dict[str, Any]:
        """What the sender can know: sent per topic, refused, failed sends, last seq per topic."""
        return {"sent": dict(self._sent), "refused": self._refused, "send_failures": self._send_failures,
                "last_seq": dict(self._seq)}

    def close(self) -> None:
        """Close the socket; queued messages get up to the linger time to leave, never a hang."""
        if not self._socket.closed:
            self._socket.close()
            log.info("PLC publisher %s closed: %s", self.endpoint, json.dumps(self.stats()))

    def __enter__(self) -> PlcPublisher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()


def _plain(value: Any) -> Any:
    """Numpy scalars (from the worker) as Python numbers, without importing numpy here."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        return value.item()
    return value


def _mm(value: Any) -> str:
    return f"{value:.0f} mm" if isinstance(value, int | float) else "? mm"


class RecorderBridge:
    """The recorder's ``on_event(kind, payload)`` hook, turned into PLC messages.

    - ``defect`` rows become defect messages (model version looked up from the row's model_id);
      a severe one also raises the publisher's ``severe_defect`` alarm. A fragment of a defect cut
      by a frame seam carries ``merged_into`` (the defect it continues); the alarm is judged on
      the whole defect's severity, once per defect.
    - ``alarm`` events (recorder kinds ``periodic`` / ``coverage``) become alarm messages.
    - ``coil`` messages are driven by the ``grades`` table, the one record of every grade decision
      (automatic, regrade after review, inspector override, even when written by the console
      process): each ``coil`` event and each `tick` publishes the grade rows not yet published.
    Call `tick` from the recorder's loop: it publishes new grade rows and the heartbeat when due.
    Use it from the recorder's thread only (it shares the recorder's database connection).
    """

    def __init__(self, publisher: PlcPublisher, db: Any, *, coverage_min: float,
                 periodic_severity: int = 2, coverage_severity: int = 2) -> None:
        self.publisher, self.db, self.coverage_min = publisher, db, coverage_min
        self.periodic_severity, self.coverage_severity = periodic_severity, coverage_severity
        self._models: dict[int, tuple[str, str]] = {}
        self._alarmed: dict[int, None] = {}  # defects (first fragment's id) whose severe alarm was sent
        # Grades recorded before this process started were published by its predecessor.
        self._last_grade_id = db.execute("SELECT coalesce(max(id), 0) FROM grades").fetchone()[0]

    def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == "defect":
            version, sha256 = self._model(payload.get("model_id"))
            message = defect_payload(payload, model_version=version, model_sha256=sha256)
            self.publisher.defect(message, alarm_severity=self._alarm_severity(payload))
        elif kind == "alarm":
            self.publisher.alarm(self._alarm(payload))
        elif kind == "coil":
            self.publish_grades()

    def _alarm_severity(self, row: Mapping[str, Any]) -> int:
        """The severity a severe-defect alarm is judged on: for a fragment of a defect cut by a frame
        seam, the whole defect's; 0 (no alarm) for a defect whose alarm was already sent."""
        head = row.get("merged_into") or row.get("id")
        if head is not None and head in self._alarmed:
            return 0
        severity = max(int(row.get("severity") or 0), int(row.get("group_severity") or 0))
        threshold = self.publisher.alarm_min_severity
        if head is not None and threshold is not None and severity >= threshold:
            self._alarmed[head] = None
            while len(self._alarmed) > 10_000:  # recent defects only: its next fragment is a frame away
                self._alarmed.pop(next(iter(self._alarmed)))
        return severity

    def tick(self, status: str | None = None, **counters: int) -> None:
        """Publish new grade rows, update the heartbeat's counters / status, beat when due."""
        self.publish_grades()
        self.publisher.counters.update(counters)
        if status is not None:
            self.publisher.status = status
        self.publisher.tick()

    def publish_grades(self) -> int:
        """Publish every grade row added since the last call; returns how many."""
        from inspection.records import queries

        rows = self.db.execute("SELECT id, coil, grade, source, reasons, rule_set, rule_version, "
                               "coverage, defects_counted, by FROM grades WHERE id > ? ORDER BY id",
                               (self._last_grade_id,)).fetchall()
        for gid, coil, grade, source, reasons, rule_set, rule_version, coverage, counted, by in rows:
            self._last_grade_id = gid
            earlier = self.db.execute("SELECT 1 FROM grades WHERE coil=? AND id<? LIMIT 1",
                                      (coil, gid)).fetchone()
            event = ("override" if source == "override" else "hold" if grade == "hold"
                     else "regraded" if earlier else "graded")
            counts: dict[str, int] = {}
            for d in queries.coil_defects(self.db, coil, include_rejected=False):
                counts[d["effective_class"]] = counts.get(d["effective_class"], 0) + 1
            self.publisher.coil({
                "event": event, "coil": coil, "grade": grade, "reasons": json.loads(reasons),
                "coverage": coverage, "counts": counts,
                "defects_total": counted if counted is not None else sum(counts.values()),
                "rule_set": rule_set, "rule_set_version": rule_version, "by": by})
        return len(rows)

    def _alarm(self, event: dict[str, Any]) -> dict[str, Any]:
        if event.get("kind") == "periodic":
            return periodic_defect_alarm(
                coil=event["coil"], surface=event["surface"], defect_class=event["class"],
                across_mm=event["across_mm"], pitch_mm=event["pitch_mm"], count=event["count"],
                roll_diameter_mm=event.get("roll_diameter_mm"), severity=self.periodic_severity,
                **({"alarm_id": event["id"]} if "id" in event else {}))
        if event.get("kind") == "coverage":
            row = self.db.execute("SELECT coverage FROM grades WHERE coil=? ORDER BY id DESC LIMIT 1",
                                  (event["coil"],)).fetchone()
            alarm = coverage_alarm(coil=event["coil"], coverage=row[0] if row and row[0] is not None else 0.0,
                                   required=self.coverage_min, severity=self.coverage_severity)
            return {**alarm, "message": event.get("message") or alarm["message"]}
        return {"kind": "worker", "coil": event.get("coil"), "severity": 2,
                "message": str(event.get("message") or event.get("kind")), "details": dict(event)}

    def _model(self, model_id: Any) -> tuple[str, str | None]:
        if model_id is None:
            return "unknown", None
        if model_id not in self._models:
            row = self.db.execute("SELECT version, sha256 FROM models WHERE id=?", (model_id,)).fetchone()
            self._models[model_id] = (row[0], row[1]) if row else ("unknown", None)
        return self._models[model_id]
