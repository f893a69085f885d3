"""The recorder over a real ZeroMQ PUSH -> PULL socket on loopback, with a real SQLite file."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import zmq

from inspection.line.process import StopFlag
from inspection.line.recorder import RecorderLoop
from inspection.records import queries
from inspection.records.audit import verify
from inspection.records.crops import CropStore
from inspection.records.db import open_db
from inspection.records.events import AlarmRaised, DefectRecorded, GradeDecided
from inspection.records.store import Store
from inspection.results import encode
from inspection.testing.synthetic import coil_messages

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
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(endpoint)
    for m in messages:
        sock.send_multipart(encode(m))
    sock.close()  # linger: everything is delivered before close returns


def _wait(predicate, timeout: float = 20.0) -> bool:  # noqa: ANN001
    import sqlite3

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return True
        except sqlite3.OperationalError:  # the child has created the file but not yet its tables
            pass
        time.sleep(0.05)
    return False


def test_recorder_records_grades_and_emits_events(tmp_path: Path, tcp_endpoint: str) -> None:
    store = _store(tmp_path)
    recorder, stop, thread, events = _start(store, tcp_endpoint, batch_messages=50, flush_ms=50)
    messages = coil_messages("COIL-A", length_m=40, defects_per_frame=0.8, crops=True, seed=3)
    sent_defects = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    _push(tcp_endpoint, messages)
    _push(tcp_endpoint, [b for b in messages if hasattr(b, "defects")][:5])  # a worker re-sends 5 frames
    reader = open_db(tmp_path / "line.db", readonly=True)
    assert _wait(lambda: reader.execute("SELECT count(*) FROM grades").fetchone()[0] == 1)
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


def test_malformed_messages_are_counted_not_recorded(tmp_path: Path, tcp_endpoint: str) -> None:
    store = _store(tmp_path)
    recorder, stop, thread, _ = _start(store, tcp_endpoint, flush_ms=20)
    good = coil_messages("COIL-B", length_m=5, defects_per_frame=1.0, seed=1)
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.LINGER, 5000)
    sock.connect(tcp_endpoint)
    sock.send_multipart([b"not json"])
    sock.send_multipart([b'{"v": 1, "type": "frame_result"}'])
    for m in good:
        sock.send_multipart(encode(m))
    sock.close()
    assert _wait(lambda: recorder.stats.messages == len(good) + 2)
    stop.set()
    thread.join(10)
    assert recorder.stats.rejected == 2
    assert "missing field" in recorder.stats.last_error
    assert store.db.execute("SELECT count(*) FROM frames").fetchone()[0] == 2 * 4


def test_incomplete_coil_is_held_after_grace(tmp_path: Path, tcp_endpoint: str) -> None:
    store = _store(tmp_path)
    recorder, stop, thread, events = _start(store, tcp_endpoint, flush_ms=20, grace_s=0.5)
    _push(tcp_endpoint, coil_messages("COIL-C", length_m=20, skip_frames=[3, 4], seed=2))
    assert _wait(lambda: recorder.stats.coils_graded == 1)
    stop.set()
    thread.join(10)
    grade = queries.current_grade(store.db, "COIL-C")
    assert grade["grade"] == "hold" and "inspection incomplete" in grade["reasons"][0]
    assert [e.kind for e in events if isinstance(e, AlarmRaised)] == ["coverage"]


_CHILD = """
import sys
from inspection.line.process import StopFlag
from inspection.line.recorder import RecorderLoop
from inspection.records.store import Store
store = Store(sys.argv[1])
store.register_line("demo-hot-1", "hot", 1600.0,
                    [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}])
RecorderLoop(store, sys.argv[2], "demo-hot-1", batch_messages=10, flush_ms=10).run(StopFlag())
"""


def test_recorder_killed_mid_coil_loses_nothing_committed(tmp_path: Path, tcp_endpoint: str) -> None:
    db_path = tmp_path / "line.db"
    messages = coil_messages("COIL-K", length_m=60, defects_per_frame=0.5, seed=5)
    half = len(messages) // 2
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(db_path), tcp_endpoint], cwd=Path(__file__).parents[1]
    )
    try:
        _push(tcp_endpoint, messages[:half])
        reader = open_db(db_path, readonly=True) if _wait(db_path.exists) else None
        assert reader is not None
        assert _wait(lambda: reader.execute("SELECT count(*) FROM frames").fetchone()[0] >= half - 2)
        committed = reader.execute("SELECT count(*) FROM defects").fetchone()[0]
        keys = set(reader.execute("SELECT coil, camera, frame_index, defect_index FROM defects").fetchall())
        reader.close()
    finally:
        child.kill()  # SIGKILL: no clean shutdown
        child.wait(10)
    store = _store(tmp_path)  # restart on the same file
    recorder, stop, thread, _ = _start(store, tcp_endpoint, flush_ms=20)
    assert (
        set(store.db.execute("SELECT coil, camera, frame_index, defect_index FROM defects").fetchall())
        == keys
    )
    assert len(keys) == committed
    _push(tcp_endpoint, messages)  # the workers re-send the whole coil
    assert _wait(lambda: recorder.stats.coils_graded == 1)
    stop.set()
    thread.join(10)
    expected = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    assert store.db.execute("SELECT count(*) FROM defects").fetchone()[0] == expected
    assert verify(store.db).ok


def test_recorder_command_flushes_everything_on_sigterm(tmp_path: Path, tcp_endpoint: str) -> None:
    import signal

    db_path = tmp_path / "line.db"
    # batches never fill and never age out: only the SIGTERM path can write these messages
    child = subprocess.Popen([sys.executable, "-m", "inspection", "recorder", "--db", str(db_path),
                              "--crops", str(tmp_path / "crops"), "--endpoint", tcp_endpoint,
                              "--batch", "1000000", "--flush-ms", "600000"],
                             cwd=Path(__file__).parents[1], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        assert _wait(lambda: db_path.exists())
        messages = coil_messages("COIL-T", length_m=10, defects_per_frame=1.0, seed=9)
        _push(tcp_endpoint, messages)
        time.sleep(0.5)  # let the messages reach the recorder's receive queue
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


def test_locked_database_delays_the_flush_without_losing_messages(tmp_path: Path, tcp_endpoint: str) -> None:
    import sqlite3

    store = _store(tmp_path)
    store.db.execute("PRAGMA busy_timeout = 50")
    recorder = RecorderLoop(store, tcp_endpoint, "demo-hot-1", batch_messages=1000, flush_ms=10)
    messages = coil_messages("COIL-L", length_m=8, defects_per_frame=1.0, seed=4)
    _push(tcp_endpoint, messages)
    blocker = sqlite3.connect(tmp_path / "line.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # e.g. a long write by another process
    try:
        assert _wait(lambda: (recorder.poll(50), recorder.stats.messages == len(messages))[1])
        assert _wait(lambda: (recorder.poll(10), "will retry" in (recorder.stats.last_error or ""))[1])
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    recorder.flush()
    recorder.close()
    expected = sum(len(m.defects) for m in messages if hasattr(m, "defects"))
    assert store.db.execute("SELECT count(*) FROM defects").fetchone()[0] == expected
