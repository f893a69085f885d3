"""The line pipeline end to end: simulated cameras, worker processes, recorder, PLC output.
(Processes killed, links broken, disks full and overload: tests/test_faults.py.)

Real processes, real ZeroMQ sockets on loopback, a real SQLite file, a tiny real ONNX model
(tests/tiny_models.py) registered in a registry under tmp_path.
"""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from inspection.config import load_config
from inspection.line.pipeline import run_pipeline
from inspection.line.process import StopFlag
from inspection.plc_tap import PlcTap
from inspection.records import audit, queries
from inspection.records.db import open_db
from inspection.registry import Registry
from inspection.security import ensure_keys
from tests.line_configs import write_line_config
from tests.line_runs import in_background, recorded
from tests.tiny_models import add_tiny_model
from tests.waits import wait_for

NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


@pytest.fixture
def line(tmp_path: Path, ipc_dir: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201
    models = tmp_path / "models"
    add_tiny_model(Registry(models), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(models))  # children inherit it
    return load_config(write_line_config(tmp_path, ipc_dir=ipc_dir))


def test_one_short_coil_end_to_end(line) -> None:  # noqa: ANN001
    ensure_keys(line)  # the tap is a PLC client: its keys must exist before the line's first start
    tap = PlcTap.from_config(line)
    summary = run_pipeline(line, max_frames=12, camera_overrides={"realtime": False})
    messages = tap.close()
    assert all(code == 0 for code in summary["exit_codes"].values()), summary
    assert summary["frames_sent"] == summary["frames_inspected"] == 24
    assert summary["workers_reported"]["frames_received"] == 24
    assert 0 < summary["workers_reported"]["model_px_share"] <= 2  # the workers' pixel counts reach the summary
    assert summary["inspecting_s"] > 0
    assert summary["worker_restarts"] == summary["recorder_restarts"] == 0 and summary["crashes"] == []
    assert summary["frames_lost"] == 0 and summary["frames_lost_by_coil"] == {} == summary["coil_ends_missing"]
    assert summary["curve"] is True and set(summary["curve_refused"].values()) == {0}  # every link ran CURVE
    [(coil, grade)] = summary["grades"].items()
    assert grade != "hold"  # every frame was inspected: the coverage gate lets it through
    con = sqlite3.connect(line.database)
    assert con.execute("SELECT count(*), sum(status = 'inspected') FROM frames").fetchone() == (24, 24)
    assert con.execute("SELECT count(*) FROM coil_events WHERE kind = 'coil_end'").fetchone()[0] == 2
    defects = con.execute("SELECT count(*) FROM defects").fetchone()[0]
    assert summary["defect_fragments"] == defects  # one row per fragment; a defect cut by seams counts once
    assert summary["defects"] == len(queries.coil_defects(open_db(line.database), coil))
    model = con.execute("SELECT version FROM models").fetchall()
    assert model == [("hot-tiny",)]
    con.close()
    verdict = audit.verify(open_db(line.database))
    assert verdict.ok, verdict
    coil_messages = [m for m in messages if m["topic"] == "coil"]
    assert coil_messages[-1]["coil"] == coil and coil_messages[-1]["grade"] == grade
    # One PLC message per recorded defect: the last sequence number counts them all, even any sent
    # before this subscriber had joined.
    assert max(m["seq"] for m in messages if m["topic"] == "defect") == defects


def _stop_once_every_camera_is_recorded(stop: StopFlag, db: Path, cameras: int) -> None:
    """Stop the line (as SIGTERM would) once frames of every camera are in the database: the whole
    line is running, so the stop has frames in flight everywhere to finish."""
    try:
        wait_for(lambda: recorded(db, "SELECT count(DISTINCT camera) FROM frames") >= cameras, 120,
                 f"frames of all {cameras} cameras in the line's database")
    finally:
        stop.set()  # also when that never happened: the line must end for the test to report it


def test_stop_flag_ends_the_line_cleanly(line) -> None:  # noqa: ANN001
    stop = StopFlag(install=False)
    stopper = in_background(_stop_once_every_camera_is_recorded, stop, line.database, len(line.cameras))
    summary = run_pipeline(line, camera_overrides={"realtime": True}, stop=stop)
    assert "failed" not in stopper, stopper.get("failed")
    assert all(code == 0 for code in summary["exit_codes"].values()), summary
    assert summary["frames_sent"] == summary["frames_inspected"] > 0


def _stop_while_starting(stop: StopFlag) -> None:
    """Stop the line as soon as its worker process exists: it is still importing and loading its
    model (the line starts its cameras only once every worker is ready)."""
    try:
        wait_for(lambda: any(c.name == "worker-1" for c in multiprocessing.active_children()), 60,
                 "the line to start its worker process")
    finally:
        stop.set()


def test_a_line_stopped_while_starting_stops_cleanly(line) -> None:  # noqa: ANN001
    stop = StopFlag(install=False)
    stopper = in_background(_stop_while_starting, stop)
    summary = run_pipeline(line, camera_overrides={"realtime": True}, stop=stop)
    assert "failed" not in stopper, stopper.get("failed")
    assert summary.get("started") is False, summary  # stopped before its cameras were started
    assert summary["exit_codes"] and all(code == 0 for code in summary["exit_codes"].values()), summary


def test_two_workers_share_the_line_and_report_health(line) -> None:  # noqa: ANN001
    # Paced cameras, as on a line: ZeroMQ deals frames to the workers connected at the time, and a
    # replay burst could be over before the second worker's connection completes.
    summary = run_pipeline(line, workers=2, max_frames=40, camera_overrides={"realtime": True})
    assert all(code == 0 for code in summary["exit_codes"].values()), summary
    assert summary["frames_sent"] == summary["frames_inspected"] == 80
    con = sqlite3.connect(line.database)
    rows = dict(con.execute("SELECT key, value FROM status WHERE key LIKE 'worker:%'").fetchall())
    con.close()
    assert set(rows) == {f"worker:{line.id}:worker-1", f"worker:{line.id}:worker-2"}
    received = [json.loads(v)["frames_received"] for v in rows.values()]
    assert all(n > 0 for n in received), received  # ZeroMQ shared the frames between both workers
