"""The recorder's decisions: record what the workers sent, finalise coils, decide every alarm.

This is the records side of the recorder process (`inspection.line.recorder` owns its socket and
loop). Messages are buffered and written in batched transactions (after `batch_messages` messages
or `flush_ms`) through `Store.apply_batch`, which is idempotent. A coil is finalised (graded,
periodic defects searched, review queue filled) once its coverage is proven -- every camera sent
coil_end and all its frames are inspected or explicitly dropped -- or `grace_s` after its first
coil_end, in which case the coverage gate puts it on hold. Late frames regrade it.

Every alarm is decided here, stored in the audited ``alarms`` table (its severity in ``details``)
and only then emitted (`events.AlarmRaised`, with the row's id; a coil's finalisation -- grade,
alarms, review queue -- is one transaction whose events wait for its commit):

- ``severe_defect``: a recorded defect at or above `alarm_min_severity` (a defect cut by frame
  seams is judged on its whole size, and alarmed once; `alarms.severe_defects`), stored in the
  batch's own transaction with one audit event for the batch's alarms, each sent right after its
  defect, and summarised in the log (`alarms.SevereLog`: one line at most every 5 s);
- ``periodic``: a roll mark found when the coil is finalised;
- ``coverage``: a coil finalised below the coverage gate (on hold);
- ``model``: the model that inspects a line type changed (a promote or rollback reached the line);
- ``worker``: messages rejected as malformed, or a worker that stopped reporting; results refused
  for a missing or wrong camera signature (`seals`: not recorded, counted in ``refused_unsigned`` /
  ``refused_bad_signature``) and re-sent frames or coil events that conflict with their record
  (`duplicates`, ``conflicting_duplicates``): at most one alarm per camera and reason every
  `SOURCE_ALARM_S`, with the count it stands for (`alarm_gate`).

Anchors: the store signs every audit event it writes when it holds the audit key; the recorder
copies the newest signed checkpoint (`checkpoints.latest`, O(1)) to the append-only anchor file
every `anchor_s`, at every coil end and at stop, and keeps it in `checkpoint` for the PLC heartbeat.

Shadow mode's messages (`shadow_results.ShadowResult`) are taken out of each batch and written after
it, in their own transaction and tables (`Store.record_shadow`): no event, alarm or grade comes of them.

Stage times (`inspection.stage_times`): with a `StageLog` the recorder stamps when it took each
result, when the batch's write began and committed, and hands each new defect to the log as its
event goes out; the owner's loop says when its PLC messages left (`StageLog.sent`).

Grade rows are emitted as `events.GradeDecided` whoever wrote them (this recorder, or an override or
review in the console, another process): `housekeeping` looks for new rows every second.
"""

from __future__ import annotations

import contextlib
import logging
import operator
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from inspection.frame import CoilEvent
from inspection.records import alarms, checkpoints, line_reads, queries
from inspection.records import seals as seals_module
from inspection.records.alarm_gate import AlarmGate
from inspection.records.checkpoints import AnchorLog, Checkpoint
from inspection.records.coil_rows import CoilRows
from inspection.records.db import write_transaction
from inspection.records.errors import StoreError
from inspection.records.events import AlarmRaised, DefectRecorded, GradeDecided, RecorderEvent
from inspection.records.periodic import find_periodic
from inspection.records.seals import SealCheck
from inspection.records.store import BatchResult, Store
from inspection.results import FrameResult, ResultMessage, WorkerStatus
from inspection.shadow_results import ShadowResult
from inspection.stage_times import StageLog

log = logging.getLogger(__name__)
EventHook = Callable[[RecorderEvent], None]
DEFAULT_ALARM_SEVERITY = 3  # critical defects raise an alarm
SEVERITY = {"periodic": 2, "coverage": 2, "model": 1, "worker": 2}
WORKER_SILENT_S = 10.0  # a worker that has not reported for this long gets an alarm (once)
ALARMED_MEMORY = 10_000  # recent defects whose severe alarm was sent (the next fragment is a frame away)
_POINT_FIELDS = operator.itemgetter("id", "surface", "effective_class", "along_mm", "across_mm")
SOURCE_ALARM_S = 10.0  # refused or conflicting results: one alarm per camera and reason this often


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
    coils_read_back: int = 0  # finalised from a read of the coil, not from the rows kept (`coil_rows`)
    alarms: int = 0
    crops_failed: int = 0  # defects recorded without their crop (the crop folder could not be written)
    finalise_s: float = 0.0  # time spent grading coils, searching roll marks and filling the queue
    shadow_frames: int = 0  # frames a shadow model also inspected, and where it disagreed (`record_shadow`)
    shadow_disagreements: int = 0
    refused_unsigned: int = 0  # results without their camera's signature (`seals`), not recorded
    refused_bad_signature: int = 0  # results whose signature is not their camera's, not recorded
    conflicting_duplicates: int = 0  # re-sent frames / coil events differing from their record (first kept)
    last_error: str | None = None
    grades: dict[str, str] = field(default_factory=dict)
    # CPU seconds of the recording thread per phase (`time.thread_time`): "receive" (socket),
    # "decode", "write" (apply_batch with its alarms), "publish" (events of the batch), "finalise"
    # (coil grading, roll marks, review queue) and "after_commit" (the rest of a flush). On a shared
    # machine CPU time is the steady figure where the wall clock also counts other jobs; ZeroMQ's own
    # I/O thread is in no phase (`bench records` reports the process total beside these).
    cpu_s: dict[str, float] = field(default_factory=dict)

    def charge(self, phase: str, since: float) -> float:
        """Add the thread's CPU time from `since` (a `time.thread_time()`) to `phase`; the time now."""
        now = time.thread_time()
        self.cpu_s[phase] = self.cpu_s.get(phase, 0.0) + (now - since)
        return now


class Recorder:
    """Buffer, record and finalise coils for one line; emit what was decided (see the module docstring)."""

    def __init__(self, store: Store, line: str, *, batch_messages: int = 500, flush_ms: float = 200.0,
                 grace_s: float = 30.0, on_event: EventHook | None = None, finalise_on_stop: bool = False,
                 alarm_min_severity: int | None = DEFAULT_ALARM_SEVERITY, endpoint: str = "",
                 anchors: AnchorLog | None = None, anchor_s: float = 60.0, seals: SealCheck | None = None,
                 stage_log: StageLog | None = None,
                 burst: Callable[[], contextlib.AbstractContextManager[Any]] | None = None,
                 keep_coil_rows: bool = True) -> None:
        """`seals`: the cameras' public signing keys; with them, only results their camera signed are
        recorded (None: a line whose cameras do not sign, ``[security] curve = false``). `burst`: what
        the outputs send together (`PlcPublisher.batch`): a batch's defects go out in one burst as soon
        as it commits, what the flush decides next (coils) in another. `keep_coil_rows`: finalise a
        coil from the defect rows this recorder committed (`coil_rows`) instead of reading it back."""
        self.store, self.line, self.endpoint = store, line, endpoint
        self.batch_messages, self.flush_s, self.grace_s = batch_messages, flush_ms / 1000.0, grace_s
        self.on_event = on_event
        # When the whole line stops, nothing more can arrive: incomplete coils are graded (held) at
        # once. A recorder restarted alone keeps them pending and gives them `grace_s` again.
        self.finalise_on_stop = finalise_on_stop
        self.alarm_min_severity = alarm_min_severity
        self.stats = RecorderStats()
        self._buffer: list[ResultMessage] = []
        self._first_at = 0.0
        self._pending: dict[str, float] = {c: time.monotonic() for c in line_reads.ungraded_ended_coils(store.db)}
        self._rate = (time.monotonic(), 0, 0)
        self._workers: dict[str, dict[str, Any]] = {}  # latest WorkerStatus per worker since the last status write
        self._worker_seen: dict[str, float] = {}
        self._worker_silent: set[str] = set()
        self._rejected_alarmed = 0
        self.seals = seals
        self._gate = AlarmGate(SOURCE_ALARM_S)
        self._crops_failing = False  # alarmed once per run of failures, again after crops were written
        self._alarmed: dict[int, None] = {}  # heads of the defects alarmed lately (insertion order: oldest first)
        self._severe_log = alarms.SevereLog(log)
        self._models: dict[str, tuple[str, str]] = {}  # line type -> (version, sha256) inspecting it
        self._model_rows: dict[int, tuple[str, str] | None] = {}
        self._grade_counts: dict[int, dict[str, int]] = {}  # grade id -> the class counts it was decided on
        self._coil_rows = CoilRows() if keep_coil_rows else None  # committed defects of coils not yet finalised
        self._held: list[RecorderEvent] | None = None  # events of a decision whose transaction is open
        # Grades recorded before this process started were published by its predecessor.
        self._last_grade_id = line_reads.last_grade_id(store.db)
        self.anchors, self.anchor_s = anchors, anchor_s
        self.stage_log = stage_log  # the latency breakdown's stamps (None: off, nothing is timed)
        self._burst = burst or contextlib.nullcontext
        self.checkpoint: Checkpoint | None = None  # the newest signed chain head (the PLC heartbeat's anchor)
        self._anchored_at = time.monotonic()

    # -- input ---------------------------------------------------------------------------------
    def add(self, messages: Sequence[ResultMessage], received: int = 0, rejected: int = 0,
            last_error: str | None = None) -> None:
        """Take decoded messages; `received`, `rejected` and `last_error` are the socket's running
        figures (messages that arrived, malformed ones, the last reason)."""
        self.stats.messages, self.stats.rejected = max(received, self.stats.messages), rejected
        if last_error is not None and rejected:
            self.stats.last_error = last_error
        now = time.monotonic()
        if self.stage_log is not None:
            self.stage_log.received(messages)
        for message in messages:
            if isinstance(message, WorkerStatus):  # health, not evidence: kept for the next status write
                self._workers[message.worker] = {"host": message.host, "pid": message.pid,
                                                 "reported_ns": message.time_ns, **message.stats}
                self._worker_seen[message.worker] = now
                self._worker_silent.discard(message.worker)
                continue
            if self.seals is not None and self._refused(message):
                continue
            if not self._buffer:
                self._first_at = now
            self._buffer.append(message)

    def _refused(self, message: ResultMessage) -> bool:
        """Count and hold for the alarm a result its camera did not sign (the rest of its batch is kept)."""
        assert self.seals is not None
        refusal = self.seals.refuse(message)
        if refusal is None:
            return False
        reason, text = refusal
        if reason == seals_module.UNSIGNED:
            self.stats.refused_unsigned += 1
        else:
            self.stats.refused_bad_signature += 1
        camera = message.source.camera  # type: ignore[union-attr]
        self._gate.add((reason, camera), text, {"camera": camera})
        log.debug("refused a result for camera %s: %s", camera, text)
        return True

    def due(self) -> bool:
        """True when the buffer is full or its oldest message has waited `flush_ms`."""
        return bool(self._buffer) and (len(self._buffer) >= self.batch_messages
                                       or time.monotonic() - self._first_at >= self.flush_s)

    def wait_ms(self) -> int:
        """How long the owner's loop may wait for input before the buffer is due."""
        if not self._buffer:
            return 100
        return max(0, min(100, int((self._first_at + self.flush_s - time.monotonic()) * 1000)))

    @property
    def room(self) -> int:
        """Messages the buffer takes before a batch is full."""
        return max(1, self.batch_messages - len(self._buffer))

    # -- writing ---------------------------------------------------------------------------------
    def flush(self) -> None:
        """Write the buffered messages in one transaction and finalise coils that became complete."""
        if not self._buffer:
            return
        batch, self._buffer = self._buffer, []
        finalised_before = self.stats.cpu_s.get("finalise", 0.0)
        shadow = [m for m in batch if isinstance(m, ShadowResult)]
        if shadow:
            batch = [m for m in batch if not isinstance(m, ShadowResult)]
        flush_ns = time.time_ns()
        cpu = time.thread_time()
        try:
            result = self.store.apply_batch(batch, want_rows=True, alarms=self._severe_alarms)
        except sqlite3.OperationalError as exc:
            # Locked past the busy timeout (a long console write) or a full disk: keep the batch
            # in memory and retry at the next flush instead of dropping what the workers sent.
            self._buffer = batch + shadow + self._buffer
            self._first_at = time.monotonic()
            self.stats.last_error = f"flush failed, will retry: {exc}"
            log.error("flush of %d messages failed, will retry: %s", len(batch), exc)
            self.stats.charge("write", cpu)
            return
        if self._coil_rows is not None:  # committed: what finalising the coil will read
            if result.stored_rows:
                self._coil_rows.add(result.stored_rows)
            else:
                self._coil_rows.add_read(result.defect_rows)
        cpu = self.stats.charge("write", cpu)
        if self.stage_log is not None:
            self.stage_log.committed(batch, flush_ns)
        self.stats.batches += 1
        self.stats.new_defects += result.new_defects
        self.stats.duplicate_defects += result.duplicate_defects
        self.stats.new_frames += result.new_frames
        self.stats.seam_links += result.seam_links
        self._watch_crops(result.crops_written, result.crops_failed, result.crop_error)
        for conflict in result.conflicts:
            self.stats.conflicting_duplicates += 1
            what = (f"{conflict['kind']} for camera {conflict['camera']}, coil {conflict['coil']}, "
                    f"seq {conflict['seq']}" + (f" (frame {conflict['index']})" if "index" in conflict else ""))
            self._gate.add(("conflict", conflict["camera"]), f"{what} differs from the one recorded "
                           f"({', '.join(conflict['differs'])}); the first is kept", conflict)
        if result.conflicts:
            self._watch_sources()
        log.debug("applied %d messages: %d new defects (%d duplicates), %d frames, audit seq %s", len(batch),
                  result.new_defects, result.duplicate_defects, result.new_frames, result.audit_seq)
        # Committed: the batch's defects (and their severe alarms) leave now, in their own burst. Coil
        # work below (a finalisation reads and grades a whole coil) used to hold them back until the
        # end of the flush: tens of ms at every coil end (`bench inference`'s latency breakdown).
        with self._burst():
            self._watch_models(batch)
            self._emit_recorded(result)
        cpu = self.stats.charge("publish", cpu)
        with self._burst():
            self._after_commit(batch, result, shadow)
        # the coils finalised in it charged their own phase: "after_commit" is what is left
        self.stats.charge("after_commit", cpu)
        self.stats.cpu_s["after_commit"] -= self.stats.cpu_s.get("finalise", 0.0) - finalised_before

    def _after_commit(self, batch: list[ResultMessage], result: BatchResult, shadow: list[ShadowResult]) -> None:
        """What a committed batch starts: coils ended or left open, late frames, shadow results, grades."""
        now = time.monotonic()
        for coil in result.coil_ends:
            self._pending.setdefault(coil, now)
        for coil in self._coils_without_end(batch):
            # A camera started a new coil but this one's coil_end never came (lost with a crashed
            # worker): wait `grace_s` for it, then the coverage gate holds the coil.
            if coil not in self._pending:
                log.warning("coil %s: a camera started its next coil without a coil_end for it", coil)
                self._pending[coil] = now
        touched = {m.coil for m in batch} - set(self._pending)
        for coil in touched:  # late frames of an already graded coil: regrade (recorded only if it changes)
            if coil in self.stats.grades or line_reads.has_grade(self.store.db, coil):
                self._regrade(coil)
                if self._coil_rows is not None:  # graded: its late rows are not kept (a regrade reads them)
                    self._coil_rows.forget(coil)
        self._record_shadow(shadow)  # before finalising: a coil's queue reads its disagreements
        self._check_pending()
        self._publish_grades()

    def _record_shadow(self, shadow: list[ShadowResult]) -> None:
        if not shadow:
            return
        try:
            written = self.store.record_shadow(shadow)
        except sqlite3.OperationalError as exc:  # as in `flush`: kept, retried at the next flush
            self._buffer = [*shadow, *self._buffer]
            self._first_at = time.monotonic()
            log.error("shadow results of %d frames not written, will retry: %s", len(shadow), exc)
            return
        self.stats.shadow_frames += written.new_frames
        self.stats.shadow_disagreements += written.new_disagreements
        if written.crops_failed:
            log.error("%d shadow disagreement(s) recorded without their crop: %s", written.crops_failed,
                      written.crop_error)

    def _emit_recorded(self, result: BatchResult) -> None:
        """Each new defect, and right after it the severe-defect alarm committed with it."""
        raised = {alarm.details["defect_id"]: (alarm_id, alarm) for alarm_id, alarm in result.alarms}
        emit, stage_log, recorded = self._emit, self.stage_log, DefectRecorded.of
        models: dict[int | None, tuple[str | None, str | None]] = {}  # a batch has a model or two
        for row in result.defect_rows:
            model_id = row.get("model_id")
            model = models.get(model_id)
            if model is None:
                model = models[model_id] = self._model_of(model_id)
            emit(recorded(row, *model))
            if stage_log is not None:
                stage_log.emitted(row)
            if row["id"] in raised:
                alarm_id, alarm = raised[row["id"]]
                self._remember_alarmed(alarms.head_of(row))
                self.stats.alarms += 1
                self._severe_log.add(alarm_id, alarm)
                self._emit(alarm.event(alarm_id))
        self._severe_log.flush(time.monotonic())

    def housekeeping(self) -> None:
        """Once a second: finalise coils whose grace ran out, watch worker health, write the live
        status, emit grade rows written by other processes (console overrides and reviews)."""
        try:
            self._check_pending()
            self._watch_workers()
            self._watch_sources()
            self._status()
            self._publish_grades()
            self.anchor()
            self._severe_log.flush(time.monotonic())
        except sqlite3.OperationalError as exc:  # locked or full: try again next second
            log.error("grading / status update failed, will retry: %s", exc)

    def finish(self) -> None:
        """Flush, finalise what is complete (with `finalise_on_stop`: everything, held) and write status."""
        self.flush()
        if self.finalise_on_stop:  # coils cut short by the stop, even without any coil_end, are held
            for coil in line_reads.ungraded_coils(self.store.db, self.line):
                self._pending.setdefault(coil, time.monotonic())
        for coil in list(self._pending):
            if queries.coverage(self.store.db, coil)["complete"]:
                self._finalise(coil, "coil_end")
            elif self.finalise_on_stop:
                self._finalise(coil, "line-stopped")
        self._watch_sources(force=True)
        self._status()
        self._publish_grades()
        self.anchor(force=True)
        self._severe_log.flush(time.monotonic(), force=True)
        if self._buffer:
            log.error("recorder stopping with %d unwritten messages (database unavailable)", len(self._buffer))

    # -- coils -----------------------------------------------------------------------------------
    def _coils_without_end(self, batch: list[ResultMessage]) -> list[str]:
        coils: list[str] = []
        for message in batch:
            if isinstance(message, CoilEvent) and message.kind == "coil_start":
                coils += line_reads.coils_left_open(self.store.db, message.source.camera, message.coil,
                                                    message.time_ns)
        return coils

    def _check_pending(self) -> None:
        now = time.monotonic()
        for coil, since in list(self._pending.items()):
            if queries.coverage(self.store.db, coil)["complete"]:
                self._finalise(coil, "coil_end")
            elif now - since >= self.grace_s:
                self._finalise(coil, "grace-timeout")

    def _finalise(self, coil: str, trigger: str) -> None:
        started, cpu = time.perf_counter(), time.thread_time()
        db = self.store.db
        # One transaction, one read of the coil's defects (the costliest query of a coil) for the
        # grade, the roll-mark search, the review queue and the grade's class counts: a review from
        # the console cannot slip in between them, and nothing is published before it commits. The
        # read is of the rows this recorder committed when they are all of the coil's (`coil_rows`);
        # a recorder restarted in the middle of the coil reads it from the database.
        with self._decision():
            kept = self._coil_rows.rows(db, coil) if self._coil_rows is not None else None
            if kept is None:
                defects = queries.coil_defects(db, coil, lean=True)
                self.stats.coils_read_back += 1
                log.debug("coil %s: finalised from a read of its defects (not all of them kept)", coil)
            else:
                defects = queries.lean_coil_defects(db, coil, kept)
            counted = queries.not_rejected(defects)
            result = self.store.grade_coil(coil, trigger, force=True, defects=defects)
            grade_id, counts = line_reads.last_grade_id(db), line_reads.class_counts(db, coil, counted)
            points = list(map(_POINT_FIELDS, counted))  # `periodic.Point`'s fields, a tuple built in C
            for finding in find_periodic(points):
                self._alarm("periodic", finding.message(), coil=coil, surface=finding.surface,
                            class_=finding.cls, across_mm=finding.across_mm, pitch_mm=finding.pitch_mm,
                            roll_diameter_mm=finding.roll_diameter_mm, count=finding.count,
                            details={"defect_ids": list(finding.defect_ids)})
            if result.grade == "hold":
                # frames no record shows (a process died holding them): counted here, not only implied
                lost = queries.coverage(db, coil)["lost"]
                self._alarm("coverage", f"coil {coil} on hold: {result.reasons[0]}"
                                        + (f"; {lost} frame(s) lost (in no record)" if lost else ""), coil=coil,
                            details={"coverage": result.coverage, "required": self.store.coverage_min,
                                     "frames_lost": lost})
            queued = self.store.enqueue_reviews(coil, defects=defects)
        # committed: only now (a failure above leaves the coil pending, retried)
        if self._coil_rows is not None:
            self._coil_rows.forget(coil)
        self._grade_counts[grade_id] = counts
        self.stats.grades[coil] = result.grade
        self.stats.coils_graded += 1
        self._pending.pop(coil, None)
        self.anchor(force=True)  # the coil's grade and alarms, signed and anchored before it leaves the line
        self.stats.finalise_s += time.perf_counter() - started
        self.stats.charge("finalise", cpu)
        log.info("coil %s graded %s (%s, coverage %.2f%%, %d defects, %d queued for review)", coil,
                 result.grade, trigger, result.coverage * 100, result.counted, queued)

    def _regrade(self, coil: str) -> None:
        """Late frames of a coil already graded: grade again (a row only if the grade changes)."""
        self.stats.grades[coil] = self.store.grade_coil(coil, "late-frames").grade

    def _publish_grades(self) -> None:
        rows = line_reads.grades_since(self.store.db, self._last_grade_id, self._grade_counts)
        self._grade_counts = {}
        for row in rows:
            self._last_grade_id = row["id"]
            self._emit(GradeDecided(grade_id=row["id"], coil=row["coil"], event=row["event"], grade=row["grade"],
                                    reasons=row["reasons"], coverage=row["coverage"], counts=row["counts"],
                                    defects_total=row["defects_total"], rule_set=row["rule_set"],
                                    rule_set_version=row["rule_set_version"], by=row["by"]))

    def anchor(self, *, force: bool = False) -> None:
        """Read the newest signed checkpoint; append it to the anchor file when `anchor_s` has passed
        (or `force`) and it is newer than the last one written. A failed append is logged, never
        fatal: recording goes on, and the next anchor covers everything before it."""
        self.checkpoint = checkpoints.latest(self.store.db)
        now = time.monotonic()
        if self.anchors is None or self.checkpoint is None or not (force or now - self._anchored_at >= self.anchor_s):
            return
        self._anchored_at = now
        try:
            if self.anchors.append(self.checkpoint, time.time_ns()):
                log.debug("audit anchor: seq %d", self.checkpoint.seq)
        except StoreError as exc:
            log.error("audit anchor not written: %s", exc)

    # -- alarms ------------------------------------------------------------------------------------
    def _severe_alarms(self, rows: list[dict[str, Any]]) -> list[alarms.Alarm]:
        """The batch's severe-defect alarms (`alarms.severe_defects`), stored with its defects."""
        if self.alarm_min_severity is None:
            return []
        return alarms.severe_defects(rows, self.alarm_min_severity, self._alarmed)

    def _remember_alarmed(self, head: int) -> None:
        self._alarmed[head] = None
        while len(self._alarmed) > ALARMED_MEMORY:
            self._alarmed.pop(next(iter(self._alarmed)))

    def _watch_crops(self, written: int, failed: int, error: str | None) -> None:
        """A crop folder that cannot be written (full, gone, read-only) raises one ``worker`` alarm;
        the defects are recorded without their crops meanwhile, counted in ``crops_failed``."""
        if failed:
            self.stats.crops_failed += failed
            self.stats.last_error = error
            if not self._crops_failing:
                self._crops_failing = True
                self._alarm("worker", f"crop files cannot be written: defects are recorded without their crops "
                                      f"({error})",
                            details={"process": f"recorder:{self.line}", "reason": "crops not written",
                                     "crops_failed": self.stats.crops_failed})
            else:
                log.error("%d more defect(s) recorded without their crop (%d in all): %s", failed,
                          self.stats.crops_failed, error)
        elif written and self._crops_failing:
            self._crops_failing = False
            log.warning("crop files are written again (%d defect(s) were recorded without theirs)",
                        self.stats.crops_failed)

    def _watch_models(self, batch: list[ResultMessage]) -> None:
        for message in batch:
            if not isinstance(message, FrameResult):
                continue
            now = (message.model_version, message.model_sha256)
            before = self._models.get(message.source.line_type)
            self._models[message.source.line_type] = now
            if before is not None and before != now:
                self._alarm("model", f"{message.source.line_type} strip is now inspected by model {now[0]} "
                            f"(was {before[0]})", details={"line_type": message.source.line_type,
                                                            "version": now[0], "sha256": now[1],
                                                            "previous": before[0]})

    def _watch_workers(self) -> None:
        if self.stats.rejected > self._rejected_alarmed:
            new = self.stats.rejected - self._rejected_alarmed
            self._rejected_alarmed = self.stats.rejected
            self._alarm("worker", f"{new} result message(s) rejected, malformed or not from this line "
                                  f"(last: {self.stats.last_error})",
                        details={"process": f"recorder:{self.line}", "reason": "rejected messages",
                                 "rejected": self.stats.rejected})
        now = time.monotonic()
        for worker, seen in self._worker_seen.items():
            if now - seen >= WORKER_SILENT_S and worker not in self._worker_silent:
                self._worker_silent.add(worker)
                self._alarm("worker", f"worker {worker} has not reported for {now - seen:.0f} s",
                            details={"process": worker, "reason": "silent"})

    def _watch_sources(self, *, force: bool = False) -> None:
        """The held refusals and conflicts, one ``worker`` alarm per camera and reason when due."""
        titles = {seals_module.UNSIGNED: "refused: no camera signature",
                  seals_module.BAD_SIGNATURE: "refused: not signed by the camera's key",
                  "conflict": "conflicting duplicate(s): a frame or coil already recorded, reported differently"}
        for gated in self._gate.due(time.monotonic(), force=force):
            reason, camera = gated.key  # type: ignore[misc]
            self._alarm("worker", f"{gated.count} result(s) for camera {camera} {titles[reason]} (last: {gated.last})",
                        coil=gated.details.get("coil"),
                        details={"process": f"recorder:{self.line}", "reason": reason, "camera": camera,
                                 "count": gated.count, "last": gated.last,
                                 **{k: v for k, v in gated.details.items() if k in ("seq", "index", "differs")}})

    def _alarm(self, kind: str, message: str, *, coil: str | None = None, details: dict[str, Any] | None = None,
               **fields: Any) -> None:
        """Store one alarm of `kind` (its severity: `SEVERITY`), then emit it."""
        alarm = alarms.Alarm(kind, message, coil, SEVERITY[kind], fields, details or {})
        alarm_id = self.store.add_alarm(kind, message, coil=coil, details=alarm.stored_details(), **fields)
        self._emit(alarm.event(alarm_id))

    @contextlib.contextmanager
    def _decision(self) -> Iterator[None]:
        """One write transaction for a decision and what it stores; the events it emits are held
        until it commits (a PLC must never hear of a row that was rolled back) and dropped if it
        does not (the coil stays pending and is decided again)."""
        held: list[RecorderEvent] = []
        outer, self._held = self._held, held
        try:
            with write_transaction(self.store.db):
                yield
        finally:
            self._held = outer
        for event in held:
            self._emit(event)

    # -- outputs -------------------------------------------------------------------------------------
    def _model_of(self, model_id: int | None) -> tuple[str | None, str | None]:
        if model_id is None:
            return None, None
        if model_id not in self._model_rows:
            self._model_rows[model_id] = line_reads.model(self.store.db, model_id)
        found = self._model_rows[model_id]
        return found if found is not None else (None, None)

    def _emit(self, event: RecorderEvent) -> None:
        if self._held is not None:  # inside a decision's transaction: after it commits
            self._held.append(event)
            return
        if isinstance(event, AlarmRaised) and event.kind != "severe_defect":  # those: `SevereLog`, per batch
            self.stats.alarms += 1
            log.warning("alarm %d: %s", event.alarm_id, event.message)
        if self.on_event is None:
            return
        try:
            self.on_event(event)
        except Exception:  # noqa: BLE001 - a broken output must not stop recording
            log.exception("output failed for %s", type(event).__name__)

    def _status(self) -> None:
        t0, frames0, defects0 = self._rate
        now = time.monotonic()
        dt = max(now - t0, 1e-6)
        self.store.set_status({f"recorder:{self.line}": {
            "pid": os.getpid(), "endpoint": self.endpoint, "messages": self.stats.messages,
            "rejected": self.stats.rejected, "frames_per_s": (self.stats.new_frames - frames0) / dt,
            "defects_per_s": (self.stats.new_defects - defects0) / dt, "pending_coils": sorted(self._pending),
            "alarms": self.stats.alarms, "crops_failed": self.stats.crops_failed, "last_error": self.stats.last_error,
            "shadow_frames": self.stats.shadow_frames, "shadow_disagreements": self.stats.shadow_disagreements,
            "refused_unsigned": self.stats.refused_unsigned, "refused_bad_signature": self.stats.refused_bad_signature,
            "conflicting_duplicates": self.stats.conflicting_duplicates},
            **{f"worker:{self.line}:{name}": status for name, status in self._workers.items()}})
        self._workers = {}
        self._rate = (now, self.stats.new_frames, self.stats.new_defects)
