"""The line's processes where they meet: the standalone recorder publishes to the PLC and honours the
config, a line whose endpoint is taken does not start at all, and nothing outside `records` runs SQL."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zmq

from inspection.commands.plc_listen import PlcListener
from inspection.config import load_config
from inspection.errors import TransportError
from tests.line_configs import write_line_config

REPO = Path(__file__).parents[1]


def test_standalone_recorder_publishes_heartbeats_to_a_plc_listener(tmp_path: Path, ipc_dir: Path) -> None:
    """`steel-inspect recorder` alone is the recorder `run` starts: its PLC publisher is attached
    from the config (the old standalone command never published anything)."""
    config_path = write_line_config(tmp_path, ipc_dir=ipc_dir, extra={"flush_ms = 5.0 ": "flush_ms = 75.0 "},
                                    keys=True)  # a recorder alone never makes keys: only run and demo do
    config = load_config(config_path)
    child = subprocess.Popen([sys.executable, "-m", "inspection", "recorder", "--config", str(config_path)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        with PlcListener.from_config(config, ["heartbeat"]) as listener:
            parts = listener.receive(60.0)  # the first beat goes out when the recorder's loop starts
        assert parts is not None, "no heartbeat from the standalone recorder within 60 s"
        beat = json.loads(parts[1])
        assert (beat["topic"], beat["process"], beat["line"]) == ("heartbeat", "recorder", config.id)
    finally:
        child.terminate()
        out, _ = child.communicate(timeout=60)
    assert child.returncode == 0, out
    assert "batch 500 msgs / 75 ms" in out  # [records] flush_ms of the config, not a command-line default


def test_a_line_whose_endpoint_is_taken_does_not_start(tmp_path: Path, ipc_dir: Path) -> None:
    """Another line (here a plain socket) holds a camera's port: nothing of this line starts, and one
    error names the endpoint; before, its worker attached to the other line's camera.

    A TCP port is the point here (an ipc bind takes the path over instead of failing): the other
    line binds a free port first and this line's config names it."""
    from inspection.line.pipeline import run_pipeline

    context = zmq.Context()
    other_line = context.socket(zmq.PUSH)
    other_line.bind("tcp://127.0.0.1:*")
    taken = other_line.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, endpoints={"bottom-1": taken}))
        camera_endpoint = config.cameras[1].endpoint
        assert camera_endpoint == taken
        with pytest.raises(TransportError, match=re.escape(camera_endpoint)):
            run_pipeline(config, max_frames=1)
    finally:
        other_line.close(0)
        context.term()
    assert not (tmp_path / "line.db").exists()  # not even the recorder started


def test_the_line_command_says_so_in_one_line(tmp_path: Path, ipc_dir: Path) -> None:
    context = zmq.Context()
    holder = context.socket(zmq.PULL)
    holder.bind("tcp://127.0.0.1:*")  # a TCP port another process holds (an ipc bind would take the path over)
    endpoint = holder.getsockopt_string(zmq.LAST_ENDPOINT)
    try:
        config_path = write_line_config(tmp_path, ipc_dir=ipc_dir, endpoints={"results": endpoint})
        assert load_config(config_path).endpoints.results == endpoint
        done = subprocess.run([sys.executable, "-m", "inspection", "run", "--config", str(config_path),
                               "--max-frames", "1"], cwd=REPO, capture_output=True, text=True, timeout=120)
    finally:
        holder.close(0)
        context.term()
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and endpoint.removeprefix("tcp://") in errors[0] and "Traceback" not in done.stderr


def test_an_ipc_endpoint_in_use_counts_as_taken(ipc_dir: Path) -> None:
    """ZeroMQ would unlink a listening ipc socket's file and take the address over; a file left by a
    process that died is free to replace."""
    from inspection.transport import Endpoint, check_bindable

    address = f"ipc://{ipc_dir}/held.sock"
    context = zmq.Context()
    holder = context.socket(zmq.PULL)
    holder.bind(address)
    try:
        with pytest.raises(TransportError, match="another process is listening"):
            check_bindable([Endpoint("bind", address)])
    finally:
        holder.close(0)
        context.term()
    stale = ipc_dir / "stale.sock"
    import socket as sockets

    leftover = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    leftover.bind(str(stale))  # a socket file nobody listens on, as a killed process leaves it
    leftover.close()
    check_bindable([Endpoint("bind", f"ipc://{stale}")])


def test_two_runs_on_one_database_both_record_their_coils(tmp_path: Path, ipc_dir: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A second run used to send the first run's coil ids again (same seed): the recorder ignored
    every frame as re-sent and the run recorded nothing. Now the cameras continue after the
    database's coils."""
    from inspection.line.pipeline import run_pipeline
    from inspection.records import line_reads
    from inspection.records.db import open_db
    from inspection.registry import Registry
    from tests.test_pipeline import NEU
    from tests.tiny_models import add_tiny_model

    models = tmp_path / "models"
    add_tiny_model(Registry(models), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(models))
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir))
    runs = [run_pipeline(config, max_frames=6, camera_overrides={"realtime": False}) for _ in range(2)]
    reader = open_db(config.database, readonly=True)
    try:
        coils = line_reads.coil_ids(reader)
        frames = reader.execute("SELECT count(*) FROM frames").fetchone()[0]
    finally:
        reader.close()
    assert [r["frames_inspected"] for r in runs] == [12, 12]  # 6 frames from each of 2 cameras, each run
    assert frames == 24 and len(set(coils)) == len(coils) >= 2
    assert set(runs[0]["grades"]).isdisjoint(runs[1]["grades"])


def test_a_run_stopped_part_way_through_a_coil_holds_that_coil(tmp_path: Path, ipc_dir: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`run --max-frames` used to send a coil_end for the coil it stopped in: a 16 m stub of a 120 m demo coil
    was graded prime at coverage 100 %. The simulator knows its coils, so the cut coil gets no coil_end
    and the recorder holds it; the whole coil before it is graded as usual."""
    from inspection.line.pipeline import run_pipeline
    from inspection.records import queries
    from inspection.records.db import open_db
    from inspection.registry import Registry
    from tests.test_pipeline import NEU
    from tests.tiny_models import add_tiny_model

    models = tmp_path / "models"
    add_tiny_model(Registry(models), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(models))
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir))  # 3 m coils of 256 mm frames: 12 frames
    summary = run_pipeline(config, max_frames=15, camera_overrides={"realtime": False})
    whole, cut = list(summary["grades"])
    assert summary["grades"][cut] == "hold" and summary["grades"][whole] != "hold"
    reader = open_db(config.database, readonly=True)
    try:
        ends = reader.execute("SELECT coil, count(*) FROM coil_events WHERE kind='coil_end' GROUP BY coil").fetchall()
        assert ends == [(whole, 2)]  # both cameras ended the whole coil, neither the cut one
        assert queries.coverage(reader, cut)["complete"] is False
        [reason] = json.loads(reader.execute("SELECT reasons FROM grades WHERE coil=? ORDER BY id DESC",
                                             (cut,)).fetchone()[0])
        assert "length is unknown" in reason and "coverage cannot be proven" in reason  # no plant data here
        assert queries.coverage(reader, whole)["complete"] is True
    finally:
        reader.close()


SQL = re.compile(r"\.execute(many)?\(|sqlite3\.connect|executescript\(")


def test_no_module_outside_records_runs_sql() -> None:
    """Queries live in `inspection.records` (and the test-data builders of `inspection.testing`)."""
    offenders = []
    for folder in ("inspection", "cameras", "training"):
        for path in sorted((REPO / folder).rglob("*.py")):
            relative = path.relative_to(REPO).as_posix()
            if relative.startswith(("inspection/records/", "inspection/testing/")):
                continue
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if SQL.search(line) and "session.run" not in line:
                    offenders.append(f"{relative}:{number}: {line.strip()}")
    assert offenders == []
