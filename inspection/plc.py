"""PLC / L2 output: JSON messages on a ZeroMQ PUB socket, topics defect, coil, alarm, heartbeat.

This module formats and publishes; it decides nothing and reads no database. What goes out is
what the recorder decided and stored (`inspection.records.events`, passed to `publish`): each
defect, each grade row (with its id), each alarm (with its ``alarm_id``, the row in ``alarms``).

Framing: multipart ``[topic, json]``, the topic as ASCII bytes (subscribers filter on it), the
body UTF-8 JSON with ``schema_version``, ``topic``, ``seq``, ``line``, ``time`` and the topic's
fields. ``inspection/schemas/plc-<topic>.schema.json`` is the contract; every message is checked
against it before it leaves, so a bug raises `PlcMessageError` here instead of reaching a PLC.
A refused message does not consume a sequence number (no false gap).

Why ``seq``: a PUB socket never blocks and never tells the sender it dropped a message. When a
subscriber is slower than the line and its queue (SNDHWM here, RCVHWM there) is full, ZeroMQ
discards messages for that subscriber only, silently. So the publisher cannot count those
drops; each subscriber sees them as a jump in the per-topic ``seq``. What the publisher can count
(`stats`): messages sent per topic, messages refused by validation, and sends that failed outright.

Restarts: with a `SequenceLedger` (the recorder keeps one in the line database,
`inspection.records.plc_sequence`) each start of the publisher is a new ``epoch``, carried in every
message, and every topic's ``seq`` continues after the last one numbered before, so a PLC sees
``seq`` rise across a recorder restart and can tell a restart (new epoch) from a replay (an epoch or
``seq`` it has seen already). The ledger is written before the messages leave, once per burst
(`batch`), so a ``seq`` is never sent twice. Without a ledger, ``seq`` starts at 1 and there is no
``epoch``.

Threading: a ZeroMQ socket must be used from one thread only, so this class has no timer
thread and no queue. The owner (the recorder's loop) calls `tick()` between units of work and
the heartbeat goes out when due. That is deliberate: a heartbeat proves the owner's loop is
alive, whereas a timer thread would keep beating while the loop is wedged.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import zmq

from inspection.curve import Curve, describe
from inspection.errors import SteelInspectError, TransportError
from inspection.records.events import AlarmRaised, DefectRecorded, GradeDecided, RecorderEvent
from inspection.schemas import TOPICS, load_schema, validate
from inspection.transport import bound_address, close_socket, open_socket, parse_endpoint

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
DEFAULT_SNDHWM = 10_000  # messages per subscriber; at ~500 B each about 5 MB, minutes of defects
DEFAULT_HEARTBEAT_S = 1.0
ENVELOPE = ("schema_version", "topic", "seq", "epoch", "line", "time")


class PlcMessageError(SteelInspectError, ValueError):
    """An outgoing PLC message does not match its JSON Schema; it was not sent."""


class SequenceLedger(Protocol):
    """Where a publisher keeps its epoch and sequence numbers across restarts."""

    def resume(self, line: str, process: str) -> tuple[int, dict[str, int]]:
        """A new epoch, and the last seq numbered per topic before it."""
        ...

    def save(self, last: Mapping[str, int]) -> None:
        """Note the last seq numbered per topic; called before those messages are sent."""
        ...


def iso_time(time_ns: int | None = None) -> str:
    """ISO 8601 UTC with milliseconds and a ``Z``, e.g. ``2026-11-23T15:40:00.123Z``."""
    ns = time.time_ns() if time_ns is None else int(time_ns)
    seconds, rest_ns = divmod(ns, 1_000_000_000)  # integer arithmetic: a float would round the ns
    stamp = datetime.fromtimestamp(seconds, UTC) + timedelta(microseconds=rest_ns // 1000)
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def build_message(topic: str, payload: Mapping[str, Any], *, seq: int, line: str,
                  time_ns: int | None = None, epoch: int | None = None) -> dict[str, Any]:
    """The full message (envelope + payload), checked against the schema; `PlcMessageError` if not."""
    if topic not in TOPICS:
        raise PlcMessageError(f"PLC topic: expected one of {', '.join(TOPICS)}, got {topic!r}")
    clash = sorted(set(ENVELOPE) & set(payload))
    if clash:
        raise PlcMessageError(f"PLC {topic} payload: {clash[0]} is set by the publisher, not the payload")
    message = {"schema_version": SCHEMA_VERSION, "topic": topic, "seq": seq,
               **({"epoch": epoch} if epoch is not None else {}), "line": line, "time": iso_time(time_ns),
               **_plain(payload)}
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


def coverage_alarm(*, coil: str, coverage: float, required: float, severity: int = 2,
                   frames_lost: int | None = None) -> dict[str, Any]:
    """The ``coverage`` alarm payload: a coil inspected below the required share (put on hold), with
    the frames no record shows when the recorder counted any (``frames_lost``)."""
    lost = {"frames_lost": frames_lost} if frames_lost else {}
    return {"kind": "coverage", "coil": coil, "severity": severity,
            "message": f"coil {coil} inspected {coverage:.2%} < required {required:.2%}: on hold",
            "details": {"coverage": coverage, "required": required, **lost}}


class PlcPublisher:
    """PUB socket for PLC messages; use from one thread; call `tick()` often from the owner's loop."""

    def __init__(self, endpoint: str, line: str, *, process: str = "recorder",
                 sndhwm: int = DEFAULT_SNDHWM, heartbeat_s: float = DEFAULT_HEARTBEAT_S, linger_ms: int = 500,
                 socket_options: Mapping[int, int] | None = None, context: zmq.Context | None = None,
                 curve: Curve | None = None, ledger: SequenceLedger | None = None) -> None:
        """`socket_options`: more ZeroMQ options set before bind / connect (e.g. ``zmq.TCP_KEEPALIVE``
        for links through firewalls, ``zmq.SNDBUF``); `curve`: this side's keys (None: plain);
        `ledger`: where the epoch and sequence numbers survive a restart (None: from 1, no epoch)."""
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s: expected a number > 0, got {heartbeat_s!r}")
        self.line, self.process = line, process
        self.heartbeat_s = heartbeat_s
        self.counters: dict[str, int] = {"frames": 0, "defects": 0, "drops": 0}
        self.status = "ok"
        # the newest signed audit chain head ({seq, head, key_id, hmac}), set by the recorder's loop:
        # every heartbeat carries it, so the PLC / L2 side holds an anchor outside the line database
        self.audit_anchor: dict[str, Any] | None = None
        self._seq = dict.fromkeys(TOPICS, 0)
        self._sent = dict.fromkeys(TOPICS, 0)
        self._refused = 0
        self._send_failures = 0
        self._unsaved = 0  # bursts sent although the ledger could not note their seq (see `_send`)
        self._ledger = ledger
        self._held: list[tuple[str, bytes]] | None = None  # a burst being collected (`batch`)
        self.last_send_ns: int | None = None
        self.epoch: int | None = None
        self._started = time.monotonic()
        self._next_heartbeat = self._started  # the first tick() beats at once
        spec = parse_endpoint(endpoint, "bind")
        try:
            self._socket = open_socket(context or zmq.Context.instance(), zmq.PUB, spec, hwm=sndhwm,
                                       linger_ms=linger_ms, options=socket_options, curve=curve)
        except TransportError as exc:
            raise TransportError(f"PLC endpoint {endpoint!r}: {exc}") from None
        self.endpoint = bound_address(self._socket, spec)
        if ledger is not None:
            try:
                self.epoch, last = ledger.resume(line, process)
            except BaseException:
                close_socket(self._socket)
                raise
            self._seq.update({topic: seq for topic, seq in last.items() if topic in self._seq})
            log.info("PLC publisher epoch %d: seq continues after %s", self.epoch,
                     json.dumps({t: s for t, s in self._seq.items() if s}) if any(self._seq.values()) else "none")
        log.info("PLC publisher %s %s (line %s, SNDHWM %d, heartbeat every %.1f s, %s)",
                 spec.role, self.endpoint, line, sndhwm, heartbeat_s, describe(curve))

    @classmethod
    def from_config(cls, config: Any, **kwargs: Any) -> PlcPublisher:
        """A publisher on the line config's ``endpoints.plc`` for its line id (`kwargs` as for the
        constructor; the recorder passes its keys as `curve`)."""
        return cls(config.endpoints.plc, config.id, **kwargs)

    def publish(self, topic: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Validate, number and send one message (inside `batch`: at the end of it); returns it."""
        try:
            message = build_message(topic, payload, seq=self._seq.get(topic, 0) + 1, line=self.line,
                                    epoch=self.epoch)
            body = json.dumps(message, separators=(",", ":"), allow_nan=False).encode()
        except (PlcMessageError, TypeError, ValueError) as exc:
            self._refused += 1
            raise exc if isinstance(exc, PlcMessageError) else PlcMessageError(
                f"PLC {topic} message refused: {exc}") from None
        self._seq[topic] = message["seq"]
        if self._held is not None:
            self._held.append((topic, body))
        else:
            self._send([(topic, body)])
        return message

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Messages published inside go out together at its end, after one ledger write for all of
        them (a database commit per message would cost more than the recorder's inserts)."""
        if self._held is not None:  # nested: the outer batch sends
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self._send(held)

    def _send(self, messages: list[tuple[str, bytes]]) -> None:
        if self._ledger is not None:
            try:
                self._ledger.save({topic: self._seq[topic] for topic, _ in messages})
            except Exception as exc:  # noqa: BLE001 - the PLC still gets its messages
                # Sent anyway: a PLC needs the defect more than the guarantee. Only a restart before the
                # next successful write could number these again, and that restart has a new epoch.
                self._unsaved += 1
                log.error("PLC seq not saved in the line database, sending anyway: %s", exc)
        failed: zmq.ZMQError | None = None
        self.last_send_ns = time.time_ns()  # when this burst was handed to the socket (`inspection.stage_times`)
        for topic, body in messages:
            try:
                self._socket.send_multipart([topic.encode(), body], flags=zmq.NOBLOCK)
                self._sent[topic] += 1
            except zmq.Again:  # not raised by PUB today (it drops instead); counted should that change
                self._send_failures += 1
            except zmq.ZMQError as exc:
                self._send_failures += 1
                failed = failed or exc
        if failed is not None:
            raise TransportError(f"PLC publisher {self.endpoint}: send failed: {failed}") from None

    def defect(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a defect (its severe alarm, if any, is the recorder's decision: `alarm`)."""
        return self.publish("defect", payload)

    def coil(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Publish a coil grade event (graded | regraded | hold | override)."""
        return self.publish("coil", payload)

    def alarm(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """Publish an alarm payload (see the ``*_alarm`` helpers)."""
        return self.publish("alarm", payload)

    def heartbeat(self) -> dict[str, Any]:
        """Publish a heartbeat now with the current `status` and `counters`."""
        self._next_heartbeat = time.monotonic() + self.heartbeat_s
        anchor = {"audit_anchor": dict(self.audit_anchor)} if self.audit_anchor else {}
        return self.publish("heartbeat", {
            "process": self.process, "pid": os.getpid(), "uptime_s": round(self.uptime_s, 3),
            "interval_s": self.heartbeat_s, "status": self.status,
            "counters": {**self.counters, "plc_refused": self._refused, "plc_send_failures": self._send_failures,
                         **({"plc_seq_unsaved": self._unsaved} if self._ledger is not None else {})},
            **anchor})

    def tick(self) -> dict[str, Any] | None:
        """Send the heartbeat if it is due; returns it, or None. Call from the owner's loop."""
        return self.heartbeat() if time.monotonic() >= self._next_heartbeat else None

    @property
    def uptime_s(self) -> float:
        return time.monotonic() - self._started

    def stats(self) -> dict[str, Any]:
        """What the sender can know: sent per topic, refused, failed sends, last seq per topic."""
        return {"sent": dict(self._sent), "refused": self._refused, "send_failures": self._send_failures,
                "last_seq": dict(self._seq), "epoch": self.epoch, "seq_unsaved": self._unsaved}

    def close(self) -> None:
        """Close the socket; queued messages get up to the linger time to leave, never a hang."""
        if not self._socket.closed:
            close_socket(self._socket)
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


PLC_ALARM_KINDS = ("severe_defect", "periodic", "coverage", "worker")  # `model` alarms stay in the database


def publish(publisher: PlcPublisher, event: RecorderEvent) -> dict[str, Any] | None:
    """Format one of the recorder's events as its PLC message and send it; returns what was sent
    (None for an alarm kind the PLC schema has no value for, see inspection/schemas/README.md)."""
    if isinstance(event, DefectRecorded):
        return publisher.defect(defect_payload(event.row, model_version=event.model_version or "unknown",
                                               model_sha256=event.model_sha256))
    if isinstance(event, GradeDecided):
        return publisher.coil({"event": event.event, "coil": event.coil, "grade": event.grade,
                               "reasons": event.reasons, "coverage": event.coverage, "counts": event.counts,
                               "defects_total": event.defects_total, "rule_set": event.rule_set,
                               "rule_set_version": event.rule_set_version, "by": event.by})
    if event.kind not in PLC_ALARM_KINDS:
        return None
    return publisher.alarm(alarm_payload(event))


def alarm_payload(event: AlarmRaised) -> dict[str, Any]:
    """The alarm topic's fields for a stored alarm (``alarm_id`` = its row in ``alarms``)."""
    details = {k: v for k, v in event.details.items() if k != "severity"}
    if event.kind == "periodic":
        payload = periodic_defect_alarm(
            coil=event.coil or "", surface=details["surface"], defect_class=details["class"],
            across_mm=details["across_mm"], pitch_mm=details["pitch_mm"], count=details["count"],
            roll_diameter_mm=details.get("roll_diameter_mm"), severity=event.severity)
    elif event.kind == "coverage":
        payload = {**coverage_alarm(coil=event.coil or "", coverage=details.get("coverage") or 0.0,
                                    required=details.get("required") or 0.0, severity=event.severity,
                                    frames_lost=details.get("frames_lost")),
                   "message": event.message}
    else:  # severe_defect, model, worker: the recorder's message and figures as they are
        payload = {"kind": event.kind, "coil": event.coil, "severity": event.severity, "message": event.message,
                   "details": details}
    return {**payload, "alarm_id": event.alarm_id}
