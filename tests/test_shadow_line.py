"""Shadow mode on a line, with the registry's real models on real defects: the worker in-process,
real ZeroMQ to a real recorder (SQLite, crops, PLC publisher) and a PLC subscriber.

The same simulated stream (NEU-DET test-split defects pasted into strip, two cameras, two coils) runs
twice: with the active model alone, and with an older version of the same line type in shadow on
every frame. The shadow's disagreements must be recorded (with crops, audited), and everything the
line decides must be the same as without it: frames, defects, class counts, grades, alarms and every
PLC message. Only the review queue may differ, and only where active learning is meant to work.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import zmq

from inspection.commands.plc_listen import PlcListener
from inspection.config import LineConfig, load_config
from inspection.frame import Frame
from inspection.line.recorder import RecorderLoop
from inspection.plc import PlcPublisher
from inspection.records import audit
from inspection.records.crops import CropStore
from inspection.records.shadow import shadow_crop_store
from inspection.records.store import Store
from inspection.registry import Registry
from inspection.transport import ResultSender
from inspection.worker import InferenceWorker

pytestmark = [pytest.mark.slow, pytest.mark.datasets]
ACTIVE, SHADOW = "hot-20261201-4", "hot-20261123-3"  # the shipped int8 models: detection rate 0.92 vs 0.66
LOOPBACK = "tcp://127.0.0.1:*"


@pytest.fixture(scope="module")
def line(datasets_dir: Path) -> LineConfig:
    """The demo line, small frames, many pasted defects, the registry's real models on the CPU."""
    return load_config(None, {
        "model.name": ACTIVE, "worker.providers": "cpu", "worker.batch_size": 2, "worker.intra_op_threads": 1,
        "line.strip_width_mm": 800.0, "cameras.0.width_px": 800, "cameras.1.width_px": 800,
        "cameras.0.frame_height_px": 512, "cameras.1.frame_height_px": 512,
        "simulator.coil_length_m": 2.5, "simulator.defects_per_100m": 600.0, "simulator.coil_mix": [],
        "simulator.datasets": str(datasets_dir), "security.curve": False})


@pytest.fixture(scope="module")
def stream(line: LineConfig) -> list[Any]:
    """Both cameras' messages (coil events and frames) for two coils, interleaved frame by frame."""
    from cameras import open_source

    per_camera = []
    for camera in line.cameras:
        with open_source(line, camera, realtime=False, seed=11, max_coils=2) as source:
            per_camera.append(list(source))
    out: list[Any] = []
    for i in range(max(len(m) for m in per_camera)):
        out += [m[i] for m in per_camera if i < len(m)]
    assert sum(isinstance(m, Frame) for m in out) == 20  # 2 cameras x 2 coils x 5 frames of 0.5 m
    return out


def _run(line: LineConfig, stream: list[Any], folder: Path, shadow: str) -> dict[str, Any]:
    """One run of the stream through worker -> recorder -> PLC; what the PLC heard and the worker's stats."""
    config = dataclasses.replace(line, model=dataclasses.replace(line.model, shadow=shadow, shadow_share=1.0))
    context = zmq.Context()
    store = Store(folder / "line.db", crops=CropStore(folder / "crops"), review_budget_per_hour=2000.0)
    store.register_line(line.id, line.type, line.strip_width_mm, [{"id": c.id, "surface": c.surface}
                                                                   for c in line.cameras])
    publisher = PlcPublisher(LOOPBACK, line.id, context=context, heartbeat_s=3600)
    listener = PlcListener(publisher.endpoint, context=context)
    _join(listener, publisher)
    loop = RecorderLoop(store, LOOPBACK, line.id, publisher=publisher, context=context, batch_messages=50,
                        flush_ms=50, grace_s=60.0)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)  # the recorder's own thread
    thread.start()
    sender = ResultSender(loop.receiver.address, hwm=1000, linger_ms=10_000, context=context)
    feed: queue.Queue[Any] = queue.Queue()
    for message in stream:
        feed.put(message)

    def receive(timeout: float) -> Any:
        try:
            return feed.get(timeout=timeout)
        except queue.Empty:
            return None

    worker = InferenceWorker(config, Registry(config.model.registry), receive, sender.send)
    worker.load(line.type)
    stats = worker.run(should_stop=lambda: feed.empty() and not worker._pending)
    sender.close()
    frames = sum(isinstance(m, Frame) for m in stream)
    deadline = time.monotonic() + 120
    while loop.stats.coils_graded < 2 and time.monotonic() < deadline:  # both coils complete and graded
        time.sleep(0.1)
    stop.set()
    thread.join(60)
    assert not thread.is_alive() and loop.stats.new_frames == frames
    heard = _drain(listener)
    listener.close()
    publisher.close()
    store.close()
    context.destroy(linger=0)
    return {"plc": heard, "worker": stats}


def _join(listener: PlcListener, publisher: PlcPublisher) -> None:
    """Slow joiner: heartbeats until the subscriber hears one, so no later message is lost to it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        publisher.heartbeat()
        if listener.receive(0.05) is not None:
            while listener.receive(0.2) is not None:
                pass
            return
    raise AssertionError("the PLC subscriber never heard the publisher")


def _drain(listener: PlcListener) -> dict[str, list[dict[str, Any]]]:
    """Every message until the link stays quiet, per topic, without the publishing time."""
    by_topic: dict[str, list[dict[str, Any]]] = {}
    while (parts := listener.receive(2.0)) is not None:
        message = json.loads(parts[1])
        if message["topic"] != "heartbeat":
            message.pop("time")
            by_topic.setdefault(message["topic"], []).append(message)
    return by_topic


def _table(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql).fetchall()


RECORDS = {  # what the line decides, without the clock
    "frames": "SELECT coil, camera, frame_index, seq, status, position_mm, length_mm, model_id, defects, reason, "
              "captured_ns FROM frames ORDER BY id",
    "defects": "SELECT * FROM defects ORDER BY id",
    "class counts": "SELECT * FROM coil_class_counts ORDER BY coil, class, surface, severity",
    "grades": "SELECT coil, grade, source, trigger, reasons, rule_set, rule_version, coverage, defects_counted "
              "FROM grades ORDER BY id",
    "alarms": "SELECT coil, kind, surface, class, across_mm, message, details FROM alarms ORDER BY id",
    "links": "SELECT coil, camera, upper_id, lower_id, seam_mm, severity FROM defect_links ORDER BY id",
    "models": "SELECT DISTINCT m.id, m.version, m.sha256 FROM models m JOIN frames f ON f.model_id = m.id",
}


def test_a_shadow_model_records_its_disagreements_and_changes_nothing_the_line_decides(
        line: LineConfig, stream: list[Any], tmp_path: Path) -> None:
    (tmp_path / "alone").mkdir()
    (tmp_path / "shadow").mkdir()
    alone = _run(line, stream, tmp_path / "alone", shadow="off")
    beside = _run(line, stream, tmp_path / "shadow", shadow=SHADOW)
    db0, db1 = tmp_path / "alone" / "line.db", tmp_path / "shadow" / "line.db"

    # nothing the line decides changed: records, grades, alarms, and every PLC message
    for name, sql in RECORDS.items():
        assert _table(db0, sql) == _table(db1, sql), name
    assert _table(db1, "SELECT count(*) FROM defects")[0][0] > 10
    assert alone["plc"] == beside["plc"]
    assert {t: len(m) for t, m in beside["plc"].items()}.keys() >= {"defect", "coil"}
    assert {m["model_version"] for m in beside["plc"]["defect"]} == {ACTIVE}

    # the shadow saw every frame and disagreed, and what it disagreed on is recorded with crops
    w = beside["worker"]
    assert (w.shadow_frames, w.shadow_failed, w.shadow_models) == (20, 0, {"hot": SHADOW})
    assert w.shadow_s > 0 and alone["worker"].shadow_frames == 0
    frames = _table(db1, "SELECT count(*), sum(disagreements) FROM shadow_frames f JOIN models a ON "
                         f"a.id = f.active_model_id JOIN models s ON s.id = f.shadow_model_id "
                         f"WHERE a.version = '{ACTIVE}' AND s.version = '{SHADOW}'")[0]
    assert frames == (20, w.shadow_disagreements) and w.shadow_disagreements > 0
    kinds = dict(_table(db1, "SELECT kind, count(*) FROM shadow_disagreements GROUP BY kind"))
    assert kinds.get("active_only", 0) > 0  # the older model misses defects the active one finds
    crops = shadow_crop_store(tmp_path / "shadow" / "crops")
    assert crops is not None
    shas = [sha for (sha,) in _table(db1, "SELECT crop_sha256 FROM shadow_disagreements")]
    assert all(sha and (crops.get(sha) or b"").startswith(b"\x89PNG") for sha in shas)
    # every active_only / other_class row names a recorded defect of the active model
    named = _table(db1, "SELECT count(*) FROM shadow_disagreements s JOIN defects d ON d.coil = s.coil AND "
                        "d.camera = s.camera AND d.frame_index = s.frame_index AND d.defect_index = s.active_index "
                        "WHERE s.kind != 'shadow_only'")[0][0]
    assert named == kinds.get("active_only", 0) + kinds.get("other_class", 0)

    # the review queue: unknown and critical defects (bands 3 and 2) as before, wherever the budget went
    must = "SELECT defect_id, class, priority FROM review_queue WHERE priority >= 2 ORDER BY defect_id"
    assert _table(db0, must) == _table(db1, must)
    with Store(db1) as store:
        verdict = audit.verify(store.db)
    assert verdict.ok, verdict.problem
