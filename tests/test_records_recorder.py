"""The recorder over a real ZeroMQ PUSH -> PULL socket on loopback, with a real SQLite file.

A recorder in this process binds ``tcp://127.0.0.1:*`` and the test pushes to the address it
reports; a recorder process gets an ``ipc://`` endpoint in the test's folder, known before it starts.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import zmq

from inspection.config import load_config
from inspection.line.process import StopFlag
from inspection.line.recorder import RecorderLoop, SourceCheck
from inspection.records import queries
from inspection.records.audit import verify
from inspection.records.crops import CropStore
from inspection.records.db import open_db
from inspection.records.events import AlarmRaised, DefectRecorded, GradeDecided
from inspection.records.store import Store
from inspection.results import encode
from inspection.testing.synthetic import coil_messages
from tests.line_configs import write_line_config
from tests.waits import wait_connected, wait_for

LOOPBACK = "tcp://127.0.0.1:*"  # the recorder binds a free port the system picks and reports it
CAMERAS = [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}]


def _store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "line.db", crops=CropStore(tmp_path / "crops"))
    store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
    return store


def _start(
    store: Store, endpoint: str, **options: object
) -> tuple[RecorderLoop, StopFlag, threading.Thread, list]:
    events: list = []
    recorder = RecorderLoop(store, endpoint, "demo-hot-1", on_event=events.append, **options)
    stop = StopFlag(install=False)
    thread = threading.Thread(target=recorder.run, args=(stop,), daemon=True)
    thread.start()
    return recorder, stop, thread, events


def _push(endpoint: str, messages: list) -> None:
    """Send `messages` as a worker does; returns once the recorder at `endpoint` has accepted the
    connection and every message has been handed to it."""
    ctx = zmq.Context()  # its own, so that terminating it waits for exactly these messages
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    try:
        wait_connected(sock, endpoint, what=f"the recorder's results socket at {endpoint}")
        for m in messages:
            sock.send_multipart(encode(m))
    finally:
        sock.close()
        ctx.term()  # returns when everything queued went out (or the 5 s linger ran out)


def _wait(predicate, what: str, timeout: float = 20.0) -> None:  # noqa: ANN001
    # a database the child has created but whose tables it has not yet: not yet
    wait_for(predicate, timeout, what, ignore=(sqlite3.OperationalError,))


def test_recorder_records_grades_and_emits_events(tmp_path: Path) -> None:
    store = _store(tmp_path)
    recorder, stop, thread, events = _start(store, LOOPBACK, batch_messages=50, flush_ms=50)
    endpoint = recorder.receiver.address
    messages = coil_messages("COIL-A", length_m=40, defects_per_frame=0.8, crops=True, seed=3)
    sent_defects = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    _push(endpoint, messages)
    _push(endpoint, [b for b in messages if hasattr(b, "defects")][:5])  # a worker re-sends 5 frames
    reader = open_db(tmp_path / "line.db", readonly=True)
    _wait(lambda: reader.execute("SELECT count(*) FROM grades").fetchone()[0] == 1, "the coil's grade row")
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    assert reader.execute("SELECT count(*) FROM defects").fetchone()[0] == sent_defects
    assert queries.coverage(reader, "COIL-A")["complete"] is True
    kinds = [type(e) for e in events]
    assert kinds.count(DefectRecorded) == sent_defects and kinds.count(GradeDecided) == 1
    assert recorder.stats.duplicate_defects == sum(
        len(m.defects)
        for m in messages
        if hasattr(m, "defects") and m.index < 5 and m.source.camera == "top-1"
    )
    crop = reader.execute("SELECT crop_sha256 FROM defects LIMIT 1").fetchone()[0]
    assert CropStore(tmp_path / "crops").get(crop).startswith(b"\x89PNG")
    assert verify(reader).ok
    # the recording thread's CPU time, per phase, for `bench records` (none of it is negative: the
    # finalisation's share is taken out of "after_commit", not counted twice)
    phases = recorder.stats.cpu_s
    assert {"receive", "decode", "verify", "write", "publish", "after_commit", "finalise"} <= phases.keys()
    assert all(v >= 0 for v in phases.values()) and phases["write"] > 0


def test_malformed_messages_are_counted_not_recorded(tmp_path: Path) -> None:
    store = _store(tmp_path)
    recorder, stop, thread, _ = _start(store, LOOPBACK, flush_ms=20)
    good = coil_messages("COIL-B", length_m=5, defects_per_frame=1.0, seed=1)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(recorder.receiver.address)
    sock.send_multipart([b"not json"])
    sock.send_multipart([b'{"v": 1, "type": "frame_result"}'])
    for m in good:
        sock.send_multipart(encode(m))
    sock.close()
    _wait(lambda: recorder.stats.messages == len(good) + 2, f"the recorder to count {len(good) + 2} messages")
    stop.set()
    thread.join(10)
    assert recorder.stats.rejected == 2
    assert "missing field" in recorder.stats.last_error
    assert store.db.execute("SELECT count(*) FROM frames").fetchone()[0] == 2 * 4


def test_results_from_another_line_or_camera_are_refused_and_alarmed(tmp_path: Path) -> None:
    # Issue 12: results of a line or camera that is not configured were recorded under this line.
    store = _store(tmp_path)
    check = SourceCheck("demo-hot-1", "hot", {c["id"]: c["surface"] for c in CAMERAS})
    recorder, stop, thread, events = _start(store, LOOPBACK, flush_ms=20, sources=check)
    real = coil_messages("COIL-R", length_m=5, defects_per_frame=1.0, seed=1)
    foreign = [*coil_messages("COIL-X", line="other-line", length_m=5, seed=2),
               *coil_messages("COIL-Y", cameras=[("side-9", "top")], length_m=5, seed=3),
               *coil_messages("COIL-Z", cameras=[("top-1", "bottom")], length_m=5, seed=4)]
    _push(recorder.receiver.address, foreign + real)
    _wait(lambda: recorder.stats.messages == len(foreign) + len(real), "the recorder to count every message")
    _wait(lambda: any(isinstance(e, AlarmRaised) and e.kind == "worker" and e.details["rejected"] == len(foreign)
                      for e in events), "the worker alarm counting every refused message")
    stop.set()
    thread.join(10)
    assert recorder.stats.rejected == len(foreign)
    assert "surface" in recorder.stats.last_error  # the last refused message names what was wrong
    coils = {r[0] for r in store.db.execute("SELECT DISTINCT coil FROM frames").fetchall()}
    assert coils == {"COIL-R"}
    message, details = store.db.execute(
        "SELECT message, details FROM alarms WHERE kind = 'worker' ORDER BY rowid DESC LIMIT 1").fetchone()
    assert "not from this line" in message and json.loads(details)["rejected"] == len(foreign)
    assert verify(store.db).ok


def test_incomplete_coil_is_held_after_grace(tmp_path: Path) -> None:
    store = _store(tmp_path)
    recorder, stop, thread, events = _start(store, LOOPBACK, flush_ms=20, grace_s=0.5)
    _push(recorder.receiver.address, coil_messages("COIL-C", length_m=20, skip_frames=[3, 4], seed=2))
    _wait(lambda: recorder.stats.coils_graded == 1, "the incomplete coil to be graded after its grace")
    stop.set()
    thread.join(10)
    grade = queries.current_grade(store.db, "COIL-C")
    assert grade["grade"] == "hold" and "inspection incomplete" in grade["reasons"][0]
    assert [e.kind for e in events if isinstance(e, AlarmRaised)] == ["coverage"]


_CHILD = """
import sys
from inspection.line.process import StopFlag
from inspection.line.recorder import RecorderLoop, SourceCheck
from inspection.records.store import Store
store = Store(sys.argv[1])
store.register_line("demo-hot-1", "hot", 1600.0,
                    [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}])
RecorderLoop(store, sys.argv[2], "demo-hot-1", batch_messages=10, flush_ms=10).run(StopFlag())
"""


def test_recorder_killed_mid_coil_loses_nothing_committed(tmp_path: Path, ipc_endpoint: str) -> None:
    db_path = tmp_path / "line.db"
    messages = coil_messages("COIL-K", length_m=60, defects_per_frame=0.5, seed=5)
    half = len(messages) // 2
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db_path), ipc_endpoint], cwd=Path(__file__).parents[1]
    )
    try:
        _push(ipc_endpoint, messages[:half])
        _wait(db_path.exists, f"the recorder process to create {db_path}")
        reader = open_db(db_path, readonly=True)
        _wait(lambda: reader.execute("SELECT count(*) FROM frames").fetchone()[0] >= half - 2,
              f"at least {half - 2} frame rows from the recorder process")
        committed = reader.execute("SELECT count(*) FROM defects").fetchone()[0]
        keys = set(reader.execute("SELECT coil, camera, frame_index, defect_index FROM defects").fetchall())
        reader.close()
    finally:
        child.kill()  # SIGKILL: no clean shutdown
        child.wait(10)
    store = _store(tmp_path)  # restart on the same file
    recorder, stop, thread, _ = _start(store, ipc_endpoint, flush_ms=20)
    assert (
        set(store.db.execute("SELECT coil, camera, frame_index, defect_index FROM defects").fetchall())
        == keys
    )
    assert len(keys) == committed
    _push(ipc_endpoint, messages)  # the workers re-send the whole coil
    _wait(lambda: recorder.stats.coils_graded == 1, "the restarted recorder to grade the re-sent coil")
    stop.set()
    thread.join(10)
    expected = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    assert store.db.execute("SELECT count(*) FROM defects").fetchone()[0] == expected
    assert verify(store.db).ok


def test_recorder_command_flushes_everything_on_sigterm(tmp_path: Path, ipc_dir: Path, ipc_endpoint: str) -> None:
    import signal

    db_path = tmp_path / "line.db"
    # the config's own endpoints (its PLC output) are ipc sockets of this test, never the demo's ports
    config = write_line_config(tmp_path, ipc_dir=ipc_dir, curve=False)  # the test plays a worker with a bare socket
    line_id = load_config(config).id
    # batches never fill and never age out: only the SIGTERM path can write these messages
    child = subprocess.Popen([sys.executable, "-m", "inspection", "recorder", "--config", str(config),
                              "--db", str(db_path), "--crops", str(tmp_path / "crops"), "--endpoint", ipc_endpoint,
                              "--batch", "1000000", "--flush-ms", "600000"],
                             cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        messages = coil_messages("COIL-T", length_m=10, defects_per_frame=1.0, seed=9)
        _push(ipc_endpoint, messages)  # returns once the recorder has bound, so its database exists
        status = open_db(db_path, readonly=True)
        try:
            def received() -> int:  # the recorder's live status row (written every second) counts what arrived
                row = status.execute("SELECT value FROM status WHERE key = ?", [f"recorder:{line_id}"]).fetchone()
                return json.loads(row[0])["messages"] if row else 0

            _wait(lambda: received() == len(messages), f"the recorder's status to count all {len(messages)} messages")
            assert status.execute("SELECT count(*) FROM defects").fetchone()[0] == 0  # all received, none written
        finally:
            status.close()
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=30)
    finally:
        child.kill()
    assert child.returncode == 0, out
    assert "received SIGTERM" in out and "recorder stopped" in out
    reader = open_db(db_path, readonly=True)
    expected = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    assert reader.execute("SELECT count(*) FROM defects").fetchone()[0] == expected
    assert queries.current_grade(reader, "COIL-T") is not None  # complete coil finalised on the way out
    assert verify(reader).ok


def test_locked_database_delays_the_flush_without_losing_messages(tmp_path: Path) -> None:
    store = _store(tmp_path)
    store.db.execute("PRAGMA busy_timeout = 50")
    recorder = RecorderLoop(store, LOOPBACK, "demo-hot-1", batch_messages=1000, flush_ms=10)
    messages = coil_messages("COIL-L", length_m=8, defects_per_frame=1.0, seed=4)
    _push(recorder.receiver.address, messages)
    blocker = sqlite3.connect(tmp_path / "line.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # e.g. a long write by another process
    try:
        _wait(lambda: (recorder.poll(50), recorder.stats.messages == len(messages))[1],
              f"the recorder to take all {len(messages)} messages")
        _wait(lambda: (recorder.poll(10), "will retry" in (recorder.stats.last_error or ""))[1],
              "the recorder to report the locked database ('will retry')")
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    recorder.flush()
    recorder.close()
    expected = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    assert store.db.execute("SELECT count(*) FROM defects").fetchone()[0] == expected


def test_severe_alarm_threshold_is_the_recorders_decision(tmp_path: Path) -> None:
    """Severity 3 raises a stored alarm by default, severity 2 does not unless configured; none when off."""
    from dataclasses import replace

    from inspection.records.recorder import Recorder
    from inspection.results import FrameResult

    messages = coil_messages("COIL-S", length_m=8, defects_per_frame=1.0, seed=4)
    frames = [m for m in messages if isinstance(m, FrameResult) and m.defects]
    major = replace(frames[0], defects=(replace(frames[0].defects[0], severity=2),))
    for minimum, expected in ((3, []), (2, ["severe_defect"]), (None, [])):
        store = Store(tmp_path / f"s{minimum}.db")
        store.register_line("demo-hot-1", "hot", 1600.0, CAMERAS)
        events: list = []
        recorder = Recorder(store, "demo-hot-1", on_event=events.append, alarm_min_severity=minimum)
        recorder.add([major])
        recorder.flush()
        assert [e.kind for e in events if isinstance(e, AlarmRaised)] == expected
        assert [r[0] for r in store.db.execute("SELECT kind FROM alarms")] == expected
        store.close()
