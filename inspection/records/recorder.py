"""The recorder: the single writer of a line database.

It binds a ZeroMQ PULL socket at the line's ``endpoints.results``, decodes worker messages
(`messages`), and writes them in batched transactions (flush after ``batch_messages`` messages or
``flush_ms``) through `Store.apply_batch`, which is idempotent. A coil is finalised (graded,
periodic defects searched, review queue filled) once its coverage is proven -- every camera sent
coil_end and all its frames are inspected or explicitly dropped -- or ``grace_s`` after its first
coil_end, in which case the coverage gate puts it on hold. Late frames regrade it.

SIGTERM / SIGINT: stop receiving, drain what is already queued in the socket, flush, close.
Malformed messages are logged and counted, never recorded. ``on_event(kind, payload)`` receives
``defect`` (each newly recorded defect fragment, with ``merged_into`` when it continues an already
recorded defect across a frame seam, see `store.BatchResult`), ``coil`` (a coil's grade) and
``alarm`` events, so a PLC publisher can be attached without changing this module.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import zmq

from inspection.errors import TransportError
from inspection.frame import CoilEvent
from inspection.process import StopFlag
from inspection.records import queries
from inspection.records.errors import RecordError
from inspection.records.messages import ResultMessage, WorkerStatus, decode
from inspection.records.periodic import Point, find_periodic
from inspection.records.store import Store

log = logging.getLogger(__name__)
EventHook = Callable[[str, dict[str, Any]], None]


@dataclass
class RecorderStats:
    messages: int = 0
    rejected: int = 0
    batches: int = 0
    new_defects: int = 0
    duplicate_defects: int = 0
    new_frames: int = 0
    seam_links: int = 0  # defect fragments linked across frame seams (one defect, counted once)
    coils_graded: int = 0
    alarms: int = 0
    finalise_s: float = 0.0  # time spent grading coils, searching roll marks and filling the queue
    last_error: str | None = None
    grades: dict[str, str] = field(default_factory=dict)


class Recorder:
    """Receive, batch, record and finalise coils for one line."""

    def __init__(self, store: Store, endpoint: str, line: str, *, batch_messages: int = 500,
                 flush_ms: float = 200.0, grace_s: float = 30.0, rcv_hwm: int = 10_000,
                 on_event: EventHook | None = None, context: zmq.Context | None = None,
                 on_tick: Callable[[RecorderStats], None] | None = None, finalise_on_stop: bool = False) -> None:
        self.store, self.endpoint, self.line = store, endpoint, line
        self.batch_messages, self.flush_s, self.grace_s = batch_messages, flush_ms / 1000.0, grace_s
        self.on_event = on_event
        self.on_tick = on_tick  # called once per loop, in this thread (PLC heartbeats)
        # When the whole line stops, nothing more can arrive: incomplete coils are graded (held) at
        # once. A recorder restarted alone keeps them pending and gives them `grace_s` again.
        self.finalise_on_stop = finalise_on_stop
        self.quiet_ms = 1000  # at stop, drain until nothing arrived for this long
        self.stats = RecorderStats()
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.PULL)
        self._sock.setsockopt(zmq.RCVHWM, rcv_hwm)
        self._sock.setsockopt(zmq.LINGER, 0)
        try:
            self._sock.bind(endpoint)
        except zmq.ZMQError as exc:
            self._sock.close()
            raise TransportError(f"recorder: cannot bind {endpoint}: {exc}") from None
        self._buffer: list[ResultMessage] = []
        self._first_at = 0.0
        self._pending: dict[str, float] = {c: time.monotonic() for c in _ungraded_ended(store)}
        self._rate = (time.monotonic(), 0, 0)
        # Latest WorkerStatus per worker, written once per report so a silent worker's row ages.
        self._workers: dict[str, dict[str, Any]] = {}

    def run(self, stop: StopFlag) -> RecorderStats:
        """Loop until `stop` is set; always flushes and closes before returning."""
        log.info("recorder for line %s listening on %s (batch %d msgs / %.0f ms, grace %.0f s, "
                 "%d coils pending)", self.line, self.endpoint, self.batch_messages, self.flush_s * 1000,
                 self.grace_s, len(self._pending))
        last_status = last_log = time.monotonic()
        try:
            while not stop.is_set():
                self.poll(timeout_ms=self._wait_ms())
                if self.on_tick is not None:
                    try:
                        self.on_tick(self.stats)
                    except Exception:  # noqa: BLE001 - an output hook must never stop recording
                        log.exception("recorder: on_tick hook failed")
                now = time.monotonic()
                if now - last_status >= 1.0:
                    try:
                        self._check_pending()
                        self._status()
                    except sqlite3.OperationalError as exc:  # locked or full: try again next second
                        log.error("grading / status update failed, will retry: %s", exc)
                    last_status = now
                if now - last_log >= 30.0:  # what was applied, for the operator's log
                    s = self.stats
                    log.info("recorder: %d messages (%d rejected), %d batches, %d defects (+%d duplicates), "
                             "%d frames, %d coils graded, %d alarms, %d coils pending", s.messages,
                             s.rejected, s.batches, s.new_defects, s.duplicate_defects, s.new_frames,
                             s.coils_graded, s.alarms, len(self._pending))
                    last_log = now
        finally:
            self.close()
        return self.stats

    def poll(self, timeout_ms: int = 100) -> None:
        """Receive what is waiting (up to a batch), and flush when the batch is full or old enough."""
        if self._sock.poll(timeout_ms, zmq.POLLIN):
            self._drain(self.batch_messages - len(self._buffer))
        if self._buffer and (len(self._buffer) >= self.batch_messages
                             or time.monotonic() - self._first_at >= self.flush_s):
            self.flush()

    def _wait_ms(self) -> int:
        if not self._buffer:
            return 100
        return max(0, min(100, int((self._first_at + self.flush_s - time.monotonic()) * 1000)))

    def _drain(self, limit: int) -> None:
        for _ in range(max(limit, 1)):
            try:
                parts = self._sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            self.stats.messages += 1
            try:
                message = decode(parts)
            except RecordError as exc:
                self.stats.rejected += 1
                self.stats.last_error = str(exc)
                log.warning("rejected message %d: %s", self.stats.messages, exc)
                continue
            if isinstance(message, WorkerStatus):  # health, not evidence: kept for the next status write
                self._workers[message.worker] = {"host": message.host, "pid": message.pid,
                                                 "reported_ns": message.time_ns, **message.stats}
                continue
            if not self._buffer:
                self._first_at = time.monotonic()
            self._buffer.append(message)

    def flush(self) -> None:
        """Write the buffered messages in one transaction and finalise coils that became complete."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        try:
            result = self.store.apply_batch(batch, want_rows=self.on_event is not None)
        except sqlite3.OperationalError as exc:
            # Locked past the busy timeout (a long console write) or a full disk: keep the batch
            # in memory and retry at the next flush instead of dropping what the workers sent.
            self._buffer = batch + self._buffer
            self._first_at = time.monotonic()
            self.stats.last_error = f"flush failed, will retry: {exc}"
            log.error("flush of %d messages failed, will retry: %s", len(batch), exc)
            return
        self.stats.batches += 1
        self.stats.new_defects += result.new_defects
        self.stats.duplicate_defects += result.duplicate_defects
        self.stats.new_frames += result.new_frames
        self.stats.seam_links += result.seam_links
        log.debug("applied %d messages: %d new defects (%d duplicates), %d frames, audit seq %s", len(batch),
                  result.new_defects, result.duplicate_defects, result.new_frames, result.audit_seq)
        if self.on_event:
            for row in result.defect_rows:
                self._emit("defect", row)
        now = time.monotonic()
        for coil in result.coil_ends:
            self._pending.setdefault(coil, now)
        for coil in _coils_without_end(self.store, batch):
            # A camera started a new coil but this one's coil_end never came (lost with a crashed
            # worker): wait `grace_s` for it, then the coverage gate holds the coil.
            if coil not in self._pending:
                log.warning("coil %s: a camera started its next coil without a coil_end for it", coil)
                self._pending[coil] = now
        touched = {m.coil for m in batch} - set(self._pending)
        for coil in touched:  # late frames of an already graded coil: regrade (recorded only if it changes)
            if coil in self.stats.grades or self.store.db.execute("SELECT 1 FROM grades WHERE coil=? LIMIT 1",
                                                                  (coil,)).fetchone():
                self._grade(coil, "late-frames", finalise=False)
        self._check_pending()

    def _check_pending(self) -> None:
        now = time.monotonic()
        for coil, since in list(self._pending.items()):
            if queries.coverage(self.store.db, coil)["complete"]:
                self._finalise(coil, "coil_end")
            elif now - since >= self.grace_s:
                self._finalise(coil, "grace-timeout")

    def _finalise(self, coil: str, trigger: str) -> None:
        started = time.perf_counter()
        result = self._grade(coil, trigger, finalise=True)
        points = [Point(d["id"], d["surface"], d["effective_class"], d["along_mm"], d["across_mm"])
                  for d in queries.coil_defects(self.store.db, coil, include_rejected=False)]
        for finding in find_periodic(points):
            self._alarm(coil, "periodic", finding.message(), surface=finding.surface, class_=finding.cls,
                        across_mm=finding.across_mm, pitch_mm=finding.pitch_mm,
                        roll_diameter_mm=finding.roll_diameter_mm, count=finding.count,
                        details={"defect_ids": list(finding.defect_ids)})
        if result.grade == "hold":
            self._alarm(coil, "coverage", f"coil {coil} on hold: {result.reasons[0]}")
        queued = self.store.enqueue_reviews(coil)
        self._pending.pop(coil, None)  # only now: a failure above leaves the coil pending, retried
        self.stats.finalise_s += time.perf_counter() - started
        log.info("coil %s graded %s (%s, coverage %.2f%%, %d defects, %d queued for review)", coil,
                 result.grade, trigger, result.coverage * 100, result.counted, queued)

    def _grade(self, coil: str, trigger: str, *, finalise: bool) -> Any:
        result = self.store.grade_coil(coil, trigger, force=finalise)
        changed = self.stats.grades.get(coil) != result.grade
        self.stats.grades[coil] = result.grade
        self.stats.coils_graded += finalise
        if finalise or changed:
            self._emit("coil", {"coil": coil, "grade": result.grade, "reasons": list(result.reasons),
                                "coverage": result.coverage, "defects": result.counted, "trigger": trigger})
        return result

    def _alarm(self, coil: str, kind: str, message: str, **fields: Any) -> None:
        alarm_id = self.store.add_alarm(kind, message, coil=coil, **fields)
        self.stats.alarms += 1
        log.warning("alarm %d: %s", alarm_id, message)
        payload = {"id": alarm_id, "coil": coil, "kind": kind, "message": message, **fields}
        if "class_" in payload:
            payload["class"] = payload.pop("class_")
        self._emit("alarm", payload)

    def _emit(self, kind: str, payload: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(kind, payload)
        except Exception:  # noqa: BLE001 - a broken subscriber must not stop recording
            log.exception("on_event hook failed for a %s event", kind)

    def _status(self) -> None:
        t0, frames0, defects0 = self._rate
        now = time.monotonic()
        dt = max(now - t0, 1e-6)
        self.store.set_status({f"recorder:{self.line}": {
            "pid": os.getpid(), "endpoint": self.endpoint, "messages": self.stats.messages,
            "rejected": self.stats.rejected, "frames_per_s": (self.stats.new_frames - frames0) / dt,
            "defects_per_s": (self.stats.new_defects - defects0) / dt, "pending_coils": sorted(self._pending),
            "alarms": self.stats.alarms, "last_error": self.stats.last_error},
            **{f"worker:{self.line}:{name}": status for name, status in self._workers.items()}})
        self._workers = {}
        self._rate = (now, self.stats.new_frames, self.stats.new_defects)

    def close(self) -> None:
        """Drain what already arrived, flush it, finalise complete coils, close the socket."""
        try:
            while True:  # until the socket stays quiet: results still in flight from workers are not lost
                before = self.stats.messages
                self._drain(self.batch_messages)
                self.flush()
                if self.stats.messages == before and not self._sock.poll(self.quiet_ms, zmq.POLLIN):
                    break
            if self.finalise_on_stop:  # coils cut short by the stop, even without any coil_end, are held
                for (coil,) in self.store.db.execute(
                        "SELECT id FROM coils WHERE line = ? AND NOT EXISTS (SELECT 1 FROM grades g "
                        "WHERE g.coil = coils.id)", (self.line,)).fetchall():
                    self._pending.setdefault(coil, time.monotonic())
            for coil in list(self._pending):
                if queries.coverage(self.store.db, coil)["complete"]:
                    self._finalise(coil, "coil_end")
                elif self.finalise_on_stop:
                    self._finalise(coil, "line-stopped")
            self._status()
        finally:
            if self._buffer:
                log.error("recorder stopping with %d unwritten messages (database unavailable)", len(self._buffer))
            self._sock.close(linger=0)
            log.info("recorder stopped: %s", {k: v for k, v in vars(self.stats).items() if k != "grades"})


def _coils_without_end(store: Store, batch: list[ResultMessage]) -> list[str]:
    """Ungraded coils a camera left without a coil_end before starting one of the coil starts in `batch`."""
    coils: list[str] = []
    for message in batch:
        if isinstance(message, CoilEvent) and message.kind == "coil_start":
            coils += [row[0] for row in store.db.execute(
                "SELECT s.coil FROM coil_events s WHERE s.camera = ? AND s.kind = 'coil_start' AND s.coil != ? "
                "AND s.time_ns < ? AND NOT EXISTS (SELECT 1 FROM coil_events e WHERE e.coil = s.coil "
                "AND e.camera = s.camera AND e.kind = 'coil_end') "
                "AND NOT EXISTS (SELECT 1 FROM grades g WHERE g.coil = s.coil)",
                (message.source.camera, message.coil, message.time_ns)).fetchall()]
    return coils


def _ungraded_ended(store: Store) -> list[str]:
    """Coils that ended but were never graded (the recorder stopped before): finalise them now."""
    rows = store.db.execute("SELECT DISTINCT coil FROM coil_events WHERE kind='coil_end' "
                            "AND coil NOT IN (SELECT coil FROM grades)").fetchall()
    return [r[0] for r in rows]


def run_recorder(config: Any, *, db: str | os.PathLike[str] | None = None,
                 crops: str | os.PathLike[str] | None = None,
                 endpoint: str | None = None, stop: StopFlag | None = None, on_event: EventHook | None = None,
                 on_store: Callable[[Store], None] | None = None, **options: Any) -> RecorderStats:
    """Process entry point: the line `config` (`inspection.config.LineConfig`) read once, run until stopped.

    `options` go to `Recorder` (batch_messages, flush_ms, grace_s, rcv_hwm, on_tick). `on_store` is
    called with the open `Store` before recording starts (the PLC bridge reads grades through it).
    """
    from inspection.records.crops import CropStore
    from inspection.records.grading import load_rules

    rules = load_rules(config.records.rules)
    store = Store(db or config.database, rules=rules, coverage_min=config.records.coverage_min,
                  crops=CropStore(crops or config.crops_dir), seam_margin_px=config.records.seam_margin_px,
                  seam_min_overlap=config.records.seam_min_overlap)
    try:
        store.register_line(config.id, config.type, config.strip_width_mm, [
            {"id": c.id, "surface": c.surface, "width_px": c.width_px, "mm_per_px_across": c.mm_per_px_across,
             "mm_per_px_along": c.mm_per_px_along, "offset_mm": c.offset_mm} for c in config.cameras])
        log.info("recorder: database %s, rule set %s v%s (sha256 %s), coverage_min %.3f", store.path,
                 rules.name, rules.version, rules.sha256[:12], store.coverage_min)
        if on_store is not None:
            on_store(store)
        options.setdefault("flush_ms", config.records.flush_ms)
        recorder = Recorder(store, endpoint or config.endpoints.results, config.id, on_event=on_event,
                            **options)
        return recorder.run(stop or StopFlag())
    finally:
        store.close()
