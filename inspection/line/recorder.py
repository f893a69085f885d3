"""The recorder process: results socket in, line database written, PLC output published.

One entry point (`main`) serves `steel-inspect recorder` and the recorder that `steel-inspect run`
starts, so both honour the same config keys and both publish to the PLC (``endpoints.plc``).
The loop (`RecorderLoop`) owns the two sockets and drives the records-side `Recorder`, which decides
and stores; the PLC publisher only formats and sends what it emits (`inspection.plc.publish`).

SIGTERM / SIGINT: stop receiving, drain what is already queued in the socket until it stays quiet,
flush, finalise, close.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import zmq

from inspection import curve as curves
from inspection.curve import Curve
from inspection.line.process import StopFlag, settle_gc
from inspection.records.events import RecorderEvent
from inspection.records.recorder import Recorder, RecorderStats
from inspection.records.store import Store
from inspection.transport import Endpoint, ResultReceiver

log = logging.getLogger(__name__)
DEFAULT_RCV_HWM = 10_000  # result messages queued at the recorder: seconds of a busy line
CURVE_STATUS_S = 5.0  # the refusal count's status row is rewritten at least this often (the console's
                      # Line page marks rows older than 15 s stale)


@dataclasses.dataclass(frozen=True)
class SourceCheck:
    """The streams a line has (its id and type, each camera's surface): a result from anything else
    is refused before it is recorded, counted with the malformed ones and raises the ``worker``
    alarm. Without it a worker of another line, or a test tool pointed at the wrong port, would
    record coils and grades under this line's name."""

    line: str
    line_type: str
    cameras: dict[str, str]  # camera id -> surface

    @classmethod
    def from_config(cls, config: Any) -> SourceCheck:
        return cls(config.id, config.type, {c.id: c.surface for c in config.cameras})

    def refuse(self, message: Any) -> str | None:
        """Why `message` is not from this line, or None (worker status reports carry no stream)."""
        source = getattr(message, "source", None)
        if source is None:
            return None
        if source.line != self.line or source.line_type != self.line_type:
            return (f"source: line {source.line!r} ({source.line_type}) is not this recorder's line "
                    f"{self.line!r} ({self.line_type})")
        surface = self.cameras.get(source.camera)
        if surface is None:
            return f"source: camera {source.camera!r} is not one of line {self.line!r}'s ({', '.join(self.cameras)})"
        if surface != source.surface:
            return f"source: camera {source.camera!r} looks at the {surface} surface, not {source.surface!r}"
        return None


class RecorderLoop:
    """The results socket, the records-side `Recorder` and (optionally) the PLC publisher, in one
    thread: receive, write in batches, housekeeping every second, heartbeat.

    With `curve` (the recorder's keys on the results link) the clients refused for unknown keys
    are counted in the PLC heartbeat (``curve_refused``) and in the status row
    ``recorder:<line>:curve``, which the console's Line page lists with the processes."""

    def __init__(self, store: Store, endpoint: str | Endpoint, line: str, *, rcv_hwm: int = DEFAULT_RCV_HWM,
                 publisher: Any = None, on_event: Callable[[RecorderEvent], None] | None = None,
                 context: zmq.Context | None = None, curve: Curve | None = None,
                 sources: SourceCheck | None = None, **options: Any) -> None:
        from inspection.plc import publish

        self.receiver = ResultReceiver(endpoint, hwm=rcv_hwm, context=context, curve=curve)
        self.sources = sources
        self.foreign = 0  # well-formed messages from a line, camera or surface this line does not have
        self._foreign_error: str | None = None
        self.secured = curve is not None
        self._refusals: tuple[dict[str, int] | None, float] = (None, 0.0)  # last written, when
        self.publisher = publisher

        def emit(event: RecorderEvent) -> None:
            if publisher is not None:
                publish(publisher, event)
            if on_event is not None:
                on_event(event)

        self._bursts = 0  # nesting depth of `_burst`: only the outermost one sends
        self.recorder = Recorder(store, line, on_event=emit, endpoint=self.receiver.address, burst=self._burst,
                                 **options)
        self.quiet_ms = 1000  # at stop, drain until nothing arrived for this long

    @property
    def stats(self) -> RecorderStats:
        return self.recorder.stats

    def run(self, stop: StopFlag | Any) -> RecorderStats:
        """Loop until `stop` is set; always drains, flushes and closes before returning."""
        r = self.recorder
        log.info("recorder for line %s listening on %s (batch %d msgs / %.0f ms, grace %.0f s)", r.line,
                 self.receiver.address, r.batch_messages, r.flush_s * 1000, r.grace_s)
        last_housekeeping = last_log = time.monotonic()
        try:
            while not stop.is_set():
                self.poll(r.wait_ms())
                self.tick()
                now = time.monotonic()
                if now - last_housekeeping >= 1.0:
                    with self._burst():
                        r.housekeeping()
                    self._report_refusals(now)
                    last_housekeeping = now
                if now - last_log >= 30.0:  # what was applied, for the operator's log
                    s = r.stats
                    log.info("recorder: %d messages (%d rejected), %d batches, %d defects (+%d duplicates), "
                             "%d frames, %d coils graded, %d alarms", s.messages, s.rejected, s.batches,
                             s.new_defects, s.duplicate_defects, s.new_frames, s.coils_graded, s.alarms)
                    last_log = now
        finally:
            self.close()
        return r.stats

    def poll(self, timeout_ms: int = 100) -> None:
        """Receive what is waiting (up to a batch), and flush when the batch is full or old enough."""
        if self.receiver.poll(timeout_ms):
            self._take(self.recorder.room)
        if self.recorder.due():
            self.flush()

    def flush(self) -> None:
        self.recorder.flush()  # its own bursts: the batch's defects as soon as it commits, then the rest

    @contextlib.contextmanager
    def _burst(self) -> Iterator[None]:
        """What one unit of work decides goes to the PLC together (`PlcPublisher.batch`: one write
        of the sequence numbers per burst); a plain publisher, or none, sends as it goes. Nested
        bursts send with the outermost one, which also tells the stage log when they left."""
        batch = getattr(self.publisher, "batch", None)
        self._bursts += 1
        try:
            with batch() if batch is not None else contextlib.nullcontext():
                yield
        finally:
            self._bursts -= 1
        stages = self.recorder.stage_log
        if stages is not None and not self._bursts:
            stages.sent(getattr(self.publisher, "last_send_ns", None))

    def _take(self, limit: int) -> int:
        cpu, decoded = time.thread_time(), self.receiver.decode_cpu_s
        messages = self.receiver.receive(limit)
        decode = self.receiver.decode_cpu_s - decoded
        stats = self.recorder.stats
        stats.cpu_s["decode"] = stats.cpu_s.get("decode", 0.0) + decode
        cpu = stats.charge("receive", cpu + decode)  # the socket's share: what `receive` took besides decoding
        if self.sources is not None:
            kept = []
            for message in messages:
                reason = self.sources.refuse(message)
                if reason is None:
                    kept.append(message)
                    continue
                self.foreign += 1
                self._foreign_error = reason
                log.warning("rejected message %d: %s", self.receiver.messages, reason)
            messages = kept
        last_error = self._foreign_error if self.foreign else self.receiver.last_error
        self.recorder.add(messages, self.receiver.messages, self.receiver.rejected + self.foreign, last_error)
        stats.charge("verify", cpu)  # the line's sources and (with `seals`) each result's camera signature
        return len(messages)

    def tick(self) -> None:
        """Give the PLC heartbeat the recorder's counters and send it when due."""
        if self.publisher is None:
            return
        s = self.recorder.stats
        try:
            self.publisher.counters.update(frames=s.new_frames, defects=s.new_defects, drops=s.rejected)
            checkpoint = self.recorder.checkpoint  # the PLC / L2 keeps an anchor outside the line's machines
            self.publisher.audit_anchor = checkpoint.as_dict() if checkpoint is not None else None
            if self.secured:
                self.publisher.counters["curve_refused"] = curves.refused_total()
            self.publisher.tick()
        except Exception:  # noqa: BLE001 - an output must never stop recording
            log.exception("PLC heartbeat failed")

    def _report_refusals(self, now: float) -> None:
        """The status row of refused clients, when the count changed or the row is getting old."""
        if not self.secured:
            return
        counts, reasons = curves.refused(), curves.refused_by_reason()
        written, at = self._refusals
        if counts == written and now - at < CURVE_STATUS_S:
            return
        try:
            self.recorder.store.set_status({f"recorder:{self.recorder.line}:curve": {
                "pid": os.getpid(), "curve": "on", "refused_unknown_keys": reasons[curves.UNKNOWN_KEY],
                "refused_failed_handshakes": reasons[curves.HANDSHAKE],
                **{f"refused_{link}": n for link, n in sorted(counts.items())}}})
        except sqlite3.OperationalError as exc:  # locked or full: the next second tries again
            log.error("CURVE status update failed, will retry: %s", exc)
            return
        self._refusals = (counts, now)

    def close(self) -> None:
        """Drain what already arrived until the socket stays quiet, flush, finalise, close."""
        try:
            while True:  # results still in flight from workers are not lost
                before = self.receiver.messages
                self._take(self.recorder.batch_messages)
                self.flush()
                if self.receiver.messages == before and not self.receiver.poll(self.quiet_ms):
                    break
            with self._burst():
                self.recorder.finish()
            self._refusals = (None, 0.0)  # the final count, whatever was written last
            self._report_refusals(time.monotonic())
            self.tick()
        finally:
            self.receiver.close()
            if self.recorder.stage_log is not None:
                self.recorder.stage_log.close()
            log.info("recorder stopped: %s",
                     {k: v for k, v in vars(self.recorder.stats).items() if k != "grades"})


def main(config_path: str | None, config_overrides: dict[str, Any] | None = None, *, db: str | None = None,
         crops: str | None = None, endpoint: str | None = None, summary_path: str | None = None,
         stop: StopFlag | None = None, **options: Any) -> RecorderStats:
    """The recorder process: config read once and logged, signals, store + sockets built, loop,
    everything closed in `finally`. `options` go to `Recorder` (batch_messages, grace_s,
    finalise_on_stop, ...); ``flush_ms`` defaults to the config's ``[records] flush_ms``.

    The store signs every audit event with the audit key (made here on a first start, refused when
    the database holds signatures of a lost key) and the recorder anchors the signed head in the
    anchor file (``[records] audit_anchor``, default beside the database) and the PLC heartbeat."""
    from inspection.config import load_config, log_config
    from inspection.plc import PlcPublisher
    from inspection.records.checkpoints import AnchorLog, ensure_key
    from inspection.records.crops import CropStore
    from inspection.records.grading import load_rules
    from inspection.records.plc_sequence import PlcSequence
    from inspection.records.seals import SealCheck
    from inspection.security import curve_for, verify_keys_for
    from inspection.transport import parse_endpoint

    stop = stop or StopFlag()
    config = load_config(config_path, config_overrides)
    log_config(config, log)
    # Keys before the database: a missing key file stops the recorder before it touches anything.
    results = parse_endpoint(endpoint or config.endpoints.results, "bind")
    results_curve = curve_for(config, "results", "recorder", [results])
    plc_curve = curve_for(config, "plc", "recorder", [parse_endpoint(config.endpoints.plc, "bind")])
    verify_keys = verify_keys_for(config)  # each camera's public signing key: results must carry its signature
    if verify_keys is not None:
        options.setdefault("seals", SealCheck(verify_keys))
        log.info("recorder: results must be signed by their camera (%d camera key(s) from %s)", len(verify_keys),
                 config.keys_dir)
    rules = load_rules(config.records.rules)
    if db and not crops and Path(db) != config.database:
        crops = str(Path(db).parent / "crops")  # a database given on the command line keeps its crops beside it
    database = Path(db or config.database)
    audit_key, made = ensure_key(config.audit_key_path, database)
    if made:
        log.info("audit key made: %s (first start; keep it: audit verify needs it)", config.audit_key_path)
    anchors = AnchorLog(config.audit_anchor_for(database))
    store = Store(database, rules=rules, coverage_min=config.records.coverage_min,
                  crops=CropStore(crops or config.crops_dir), seam_margin_px=config.records.seam_margin_px,
                  seam_min_overlap=config.records.seam_min_overlap, seam_one_to_one=config.records.seam_one_to_one,
                  review_budget_per_hour=config.records.review_budget_per_hour, audit_key=audit_key)
    stats = RecorderStats()
    try:
        store.register_line(config.id, config.type, config.strip_width_mm, [
            {"id": c.id, "surface": c.surface, "width_px": c.width_px, "mm_per_px_across": c.mm_per_px_across,
             "mm_per_px_along": c.mm_per_px_along, "offset_mm": c.offset_mm} for c in config.cameras])
        log.info("recorder: database %s, rule set %s v%s (sha256 %s), coverage_min %.3f", store.path,
                 rules.name, rules.version, rules.sha256[:12], store.coverage_min)
        log.info("recorder: audit events signed with key %s (%s), anchored in %s every %.0f s and at coil end",
                 audit_key.key_id, config.audit_key_path, anchors.path, config.records.anchor_s)
        recovered = store.recover_crops()  # a recorder that died mid-batch left staged crops
        if recovered is not None and (recovered.moved or recovered.deleted):
            log.warning("crops left by a recorder that stopped mid-batch: %d of recorded defects put in place, "
                        "%d of a batch that never committed deleted", recovered.moved, recovered.deleted)
        options.setdefault("flush_ms", config.records.flush_ms)
        options.setdefault("anchor_s", config.records.anchor_s)
        if config.records.stage_log is not None:  # the latency breakdown (`inspection.stage_times`)
            from inspection.stage_times import StageLog

            options.setdefault("stage_log", StageLog(config.records.stage_log))
            log.info("recorder: stage times of every published defect appended to %s", config.records.stage_log)
        # the PLC's seq continues after a restart, under a new epoch (`inspection.records.plc_sequence`)
        with PlcPublisher.from_config(config, process="recorder", curve=plc_curve,
                                      ledger=PlcSequence(store.db)) as publisher:
            loop = RecorderLoop(store, results, config.id, publisher=publisher, curve=results_curve,
                                sources=SourceCheck.from_config(config), anchors=anchors, **options)
            settle_gc()  # built: from here on the loop allocates and frees per batch (see `settle_gc`)
            stats = loop.run(stop)
    finally:
        store.close()
        if summary_path:
            summary = {**dataclasses.asdict(stats),
                       **({"curve_refused": curves.refused_total()} if results_curve or plc_curve else {})}
            Path(summary_path).write_text(json.dumps(summary, default=str), encoding="utf-8")
        log.info("recorder process %d done", os.getpid())
    return stats
