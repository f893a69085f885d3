"""The recorder process: results socket in, line database written, PLC output published.

One entry point (`main`) serves `steel-inspect recorder` and the recorder that `steel-inspect run`
starts, so both honour the same config keys and both publish to the PLC (``endpoints.plc``).
The loop (`RecorderLoop`) owns the two sockets and drives the records-side `Recorder`, which decides
and stores; the PLC publisher only formats and sends what it emits (`inspection.plc.publish`).

SIGTERM / SIGINT: stop receiving, drain what is already queued in the socket until it stays quiet,
flush, finalise, close.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zmq

from inspection.line.process import StopFlag
from inspection.records.events import RecorderEvent
from inspection.records.recorder import Recorder, RecorderStats
from inspection.records.store import Store
from inspection.transport import ResultReceiver

log = logging.getLogger(__name__)
DEFAULT_RCV_HWM = 10_000  # result messages queued at the recorder: seconds of a busy line


class RecorderLoop:
    """The results socket, the records-side `Recorder` and (optionally) the PLC publisher, in one
    thread: receive, write in batches, housekeeping every second, heartbeat."""

    def __init__(self, store: Store, endpoint: str, line: str, *, rcv_hwm: int = DEFAULT_RCV_HWM,
                 publisher: Any = None, on_event: Callable[[RecorderEvent], None] | None = None,
                 context: zmq.Context | None = None, **options: Any) -> None:
        from inspection.plc import publish

        self.receiver = ResultReceiver(endpoint, hwm=rcv_hwm, context=context)
        self.publisher = publisher

        def emit(event: RecorderEvent) -> None:
            if publisher is not None:
                publish(publisher, event)
            if on_event is not None:
                on_event(event)

        self.recorder = Recorder(store, line, on_event=emit, endpoint=self.receiver.address, **options)
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
                    r.housekeeping()
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
            self.recorder.flush()

    def flush(self) -> None:
        self.recorder.flush()

    def _take(self, limit: int) -> int:
        messages = self.receiver.receive(limit)
        self.recorder.add(messages, self.receiver.messages, self.receiver.rejected, self.receiver.last_error)
        return len(messages)

    def tick(self) -> None:
        """Give the PLC heartbeat the recorder's counters and send it when due."""
        if self.publisher is None:
            return
        s = self.recorder.stats
        try:
            self.publisher.counters.update(frames=s.new_frames, defects=s.new_defects, drops=s.rejected)
            self.publisher.tick()
        except Exception:  # noqa: BLE001 - an output must never stop recording
            log.exception("PLC heartbeat failed")

    def close(self) -> None:
        """Drain what already arrived until the socket stays quiet, flush, finalise, close."""
        try:
            while True:  # results still in flight from workers are not lost
                before = self.receiver.messages
                self._take(self.recorder.batch_messages)
                self.recorder.flush()
                if self.receiver.messages == before and not self.receiver.poll(self.quiet_ms):
                    break
            self.recorder.finish()
            self.tick()
        finally:
            self.receiver.close()
            log.info("recorder stopped: %s",
                     {k: v for k, v in vars(self.recorder.stats).items() if k != "grades"})


def main(config_path: str | None, config_overrides: dict[str, Any] | None = None, *, db: str | None = None,
         crops: str | None = None, endpoint: str | None = None, summary_path: str | None = None,
         stop: StopFlag | None = None, **options: Any) -> RecorderStats:
    """The recorder process: config read once and logged, signals, store + sockets built, loop,
    everything closed in `finally`. `options` go to `Recorder` (batch_messages, grace_s,
    finalise_on_stop, ...); ``flush_ms`` defaults to the config's ``[records] flush_ms``."""
    from inspection.config import load_config, log_config
    from inspection.plc import PlcPublisher
    from inspection.records.crops import CropStore
    from inspection.records.grading import load_rules

    stop = stop or StopFlag()
    config = load_config(config_path, config_overrides)
    log_config(config, log)
    rules = load_rules(config.records.rules)
    if db and not crops and Path(db) != config.database:
        crops = str(Path(db).parent / "crops")  # a database given on the command line keeps its crops beside it
    store = Store(db or config.database, rules=rules, coverage_min=config.records.coverage_min,
                  crops=CropStore(crops or config.crops_dir), seam_margin_px=config.records.seam_margin_px,
                  seam_min_overlap=config.records.seam_min_overlap)
    stats = RecorderStats()
    try:
        store.register_line(config.id, config.type, config.strip_width_mm, [
            {"id": c.id, "surface": c.surface, "width_px": c.width_px, "mm_per_px_across": c.mm_per_px_across,
             "mm_per_px_along": c.mm_per_px_along, "offset_mm": c.offset_mm} for c in config.cameras])
        log.info("recorder: database %s, rule set %s v%s (sha256 %s), coverage_min %.3f", store.path,
                 rules.name, rules.version, rules.sha256[:12], store.coverage_min)
        options.setdefault("flush_ms", config.records.flush_ms)
        with PlcPublisher.from_config(config, process="recorder") as publisher:
            loop = RecorderLoop(store, endpoint or config.endpoints.results, config.id, publisher=publisher,
                                **options)
            stats = loop.run(stop)
    finally:
        store.close()
        if summary_path:
            Path(summary_path).write_text(json.dumps(dataclasses.asdict(stats), default=str), encoding="utf-8")
        log.info("recorder process %d done", os.getpid())
    return stats
