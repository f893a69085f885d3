"""Faults on a real line: processes killed with SIGKILL, a camera that drops out and comes back,
frames broken on the wire, a crop folder that cannot be written, more frames than the worker can take.

Every test runs real processes (cameras, worker, recorder) on ipc sockets under the test's folder, a
real SQLite file and a tiny real ONNX model, each bounded in time. Afterwards the books must balance
(`tests.line_runs.check_books`): every frame a camera captured is inspected, dropped or counted as
lost; nothing is recorded twice; the database passes `PRAGMA integrity_check` and `steel-inspect
audit verify`; a coil with short coverage is held.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cameras.base import coil_prefix
from inspection.commands.plc_listen import SequenceTracker
from inspection.config import LineConfig, load_config
from inspection.frame import CoilEvent, Frame, StreamKey
from inspection.line.pipeline import camera_child, recorder_child, run_pipeline, worker_child
from inspection.line.supervisor import Supervisor
from inspection.plc_tap import PlcTap
from inspection.registry import Registry
from inspection.schemas import TOPICS
from inspection.security import curve_for, ensure_keys, signer_for
from inspection.signing import Signer
from inspection.transport import FrameSender, parse_endpoint
from inspection.wire import encode
from tests.line_configs import write_line_config
from tests.line_runs import audit_verify, cameras_running, check_books, child, in_background, latest_grades, recorded
from tests.tiny_models import add_tiny_model
from tests.waits import wait_for

pytestmark = [pytest.mark.faults, pytest.mark.slow, pytest.mark.timeout(150)]

NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models"
    add_tiny_model(Registry(folder), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(folder))  # children inherit it


def _line(tmp_path: Path, ipc_dir: Path, **options: Any) -> LineConfig:
    return load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, **options))


# -- a worker killed mid-coil ------------------------------------------------------------------------

def _kill_worker_once(db: Path) -> None:
    """SIGKILL the worker once, while the cameras are sending and the worker is at work: it has
    inspected frames that the recorder has written (so it is past its start, in the middle of the
    stream)."""
    worker = wait_for(lambda: cameras_running() and recorded(db) > 0 and child("worker-1"), 60,
                      "worker-1 to have frames recorded while the cameras still send")
    os.kill(worker.pid, signal.SIGKILL)


@pytest.mark.usefixtures("models")
def test_a_worker_killed_mid_coil_is_restarted_and_what_it_held_is_counted(tmp_path: Path, ipc_dir: Path) -> None:
    line = _line(tmp_path, ipc_dir)
    killer = in_background(_kill_worker_once, line.database)
    # Paced cameras (100 frames of 256 mm at 5 m/s: about 5 s) so the kill lands while the line runs.
    summary = run_pipeline(line, max_frames=100, camera_overrides={"realtime": True})
    assert "failed" not in killer, killer.get("failed")
    assert summary["worker_restarts"] == 1 and summary["restarts"] == {"worker-1": 1}, summary
    [crash] = summary["crashes"]
    assert (crash["process"], crash["status"], crash["restart_in_s"]) == ("worker-1", -signal.SIGKILL, 0.0)
    covers = check_books(line.database, summary, line.records.coverage_min)
    # Frames or coil ends the killed worker held are lost to the line: such a coil is held, never
    # graded; complete coils (both cameras ended, every frame inspected) are graded normally.
    for coil, cover in covers.items():
        assert (summary["grades"][coil] == "hold") == (not cover["complete"] or cover["share"] < 0.995), (coil, cover)


# -- the recorder killed mid-batch -------------------------------------------------------------------

def _kill_recorder_holding_results(db: Path, line_id: str) -> None:
    """SIGKILL the recorder while it holds results it has not committed: a worker's status (which the
    recorder takes at once, and which follows that worker's results on the same socket) says more
    frames were inspected than the database holds, so the rest are in the recorder's batch."""

    def holding() -> Any:
        inspected = recorded(db, "SELECT json_extract(value, '$.frames_inspected') FROM status WHERE key = ?",
                             (f"worker:{line_id}:worker-1",))
        recorder = child("recorder")
        return cameras_running() and inspected > recorded(db) and recorder

    recorder = wait_for(holding, 60, "the recorder to hold inspected frames it has not committed")
    os.kill(recorder.pid, signal.SIGKILL)


@pytest.mark.usefixtures("models")
def test_the_recorder_killed_mid_batch_is_restarted_and_the_coil_is_recorded_and_held(
        tmp_path: Path, ipc_dir: Path) -> None:
    # One long coil (25.6 m: the 100 frames of 256 mm per camera, so the coil is whole and each camera's
    # coil_end counts them), so the kill lands inside it; the recorder commits every 5 s, so when it dies
    # it holds every result of the last seconds.
    line = _line(tmp_path, ipc_dir, coil_length_m=25.6, extra={"flush_ms = 5.0 ": "flush_ms = 5000.0 "})
    killer = in_background(_kill_recorder_holding_results, line.database, line.id)
    summary = run_pipeline(line, max_frames=100, camera_overrides={"realtime": True})
    assert "failed" not in killer, killer.get("failed")
    assert "failed" not in summary and all(code == 0 for code in summary["exit_codes"].values()), summary
    assert summary["recorder_restarts"] == 1 and summary["worker_restarts"] == 0, summary
    [crash] = summary["crashes"]
    assert (crash["process"], crash["status"]) == ("recorder", -signal.SIGKILL)
    covers = check_books(line.database, summary, line.records.coverage_min)
    [(coil, grade)] = summary["grades"].items()
    # The results the dead recorder held are gone, and counted: the coil lost them (its cameras' coil_ends
    # say how many frames there were) and is held; what the workers sent while it was down was kept.
    assert summary["frames_lost"] > 0 and summary["frames_lost_by_coil"] == {coil: summary["frames_lost"]}, summary
    assert grade == "hold" and covers[coil]["lost"] == summary["frames_lost"]
    assert summary["frames_inspected"] > summary["frames_sent"] // 2, summary  # the rest was recorded
    _assert_crops_in_place(tmp_path / "crops", line.database)


def _kill_recorder_once_it_published(tap: PlcTap) -> None:
    """SIGKILL the recorder while the cameras send, once the PLC subscriber has had two heartbeats."""
    def published() -> Any:
        beats = sum(1 for _, m in list(tap.messages) if m["topic"] == "heartbeat")
        return cameras_running() and beats >= 2 and child("recorder")

    recorder = wait_for(published, 60, "two PLC heartbeats while the cameras send")
    os.kill(recorder.pid, signal.SIGKILL)


@pytest.mark.usefixtures("models")
def test_the_plc_seq_rises_across_a_recorder_restart_under_a_new_epoch(tmp_path: Path, ipc_dir: Path) -> None:
    """A PLC subscribed throughout sees every topic's seq rise, never a number twice, across the kill -9
    and restart of the recorder; the restarted publisher's messages carry the next epoch."""
    line = _line(tmp_path, ipc_dir, keys=True)
    tap = PlcTap.from_config(line)
    killer = in_background(_kill_recorder_once_it_published, tap)
    try:
        summary = run_pipeline(line, max_frames=100, camera_overrides={"realtime": True})
    finally:
        messages = tap.close()
    assert "failed" not in killer, killer.get("failed")
    assert summary["recorder_restarts"] == 1 and "failed" not in summary, summary
    tracker = SequenceTracker()
    for message in messages:
        tracker.observe(message["topic"], message["seq"], message.get("epoch"))
    for topic in TOPICS:
        seqs = [m["seq"] for m in messages if m["topic"] == topic]
        assert seqs == sorted(set(seqs)), f"{topic}: seq reused or going back: {seqs}"
    beats = [(m["epoch"], m["seq"]) for m in messages if m["topic"] == "heartbeat"]
    assert sorted({epoch for epoch, _ in beats}) == [1, 2], beats
    assert dict(tracker.replays) == {} and tracker.restarts["heartbeat"] == 1, tracker
    con = sqlite3.connect(line.database)
    starts = con.execute("SELECT epoch, process FROM plc_publishers ORDER BY epoch").fetchall()
    con.close()
    assert starts == [(1, "recorder"), (2, "recorder")]


def _assert_crops_in_place(crops: Path, db: Path) -> None:
    """No crop is left in staging, and every crop file belongs to a recorded defect and back."""
    assert not list((crops / ".staging").glob("*")), "crops left in staging"
    files = {p.stem for p in crops.glob("??/*.png")}
    con = sqlite3.connect(db)
    named = {sha for (sha,) in con.execute("SELECT DISTINCT crop_sha256 FROM defects WHERE crop_sha256 IS NOT NULL")}
    con.close()
    assert files == named


# -- a camera that drops out mid-coil and comes back ----------------------------------------------------

@pytest.mark.usefixtures("models")
def test_a_camera_that_drops_out_mid_coil_and_comes_back(tmp_path: Path, ipc_dir: Path) -> None:
    """The top camera's process is killed (SIGKILL) in the middle of a coil, as when a camera PC loses
    power: its link drops, the frames it had queued and its coil_end are gone. It comes back (a new
    process on the same endpoint) with the next coil. The worker, never restarted, reconnects by
    itself; the interrupted coil is held; the coils after it are whole and graded."""
    # 1 m/s: 4 frames of 256 mm per second, 12 frames (3 s) per coil
    line = _line(tmp_path, ipc_dir, speed_m_per_s=1.0)
    ensure_keys(line)
    out, db = tmp_path / "run", line.database
    out.mkdir()
    config = str(line.path)
    with Supervisor(grace_s=30.0) as sup:
        sup.start("recorder", recorder_child, config, {}, str(db), str(out / "recorder.json"))
        sup.start("worker-1", worker_child, config, {}, "worker-1", str(out / "worker.json"), str(out / "ready"))
        wait_for(lambda: (out / "ready").exists(), 120, "the worker to load its model")
        sup.start("camera-bottom-1", camera_child, config, {}, "bottom-1", str(out / "bottom.json"), coils=3,
                  realtime=True)
        sup.start("camera-top-1", camera_child, config, {}, "top-1", str(out / "top.0.json"), realtime=True)
        wait_for(lambda: recorded(db, "SELECT count(*) FROM frames WHERE camera = 'top-1'") > 0, 60,
                 "frames of the top camera in the database")
        os.kill(child("camera-top-1").pid, signal.SIGKILL)
        assert sup.wait(["camera-top-1"], timeout=30)
        interrupted = _coils(db, "top-1")[-1]
        # the coil after the interrupted one (the bottom camera, started first, may be further on already)
        first = int(interrupted.removeprefix(coil_prefix(line.type))) + 1
        sup.start("camera-top-1", camera_child, config, {}, "top-1", str(out / "top.1.json"), coils=2,
                  first_coil=first, realtime=True)
        assert sup.wait(["camera-top-1", "camera-bottom-1"], timeout=90), "the cameras did not end"
        codes = sup.stop(["worker-1"], grace_s=60.0) | sup.stop(["recorder"], grace_s=60.0)
    assert codes == {"worker-1": 0, "recorder": 0}
    top, bottom = (json.loads((out / name).read_text()) for name in ("top.1.json", "bottom.json"))
    covers = check_books(db, coverage_min=line.records.coverage_min)
    grades = latest_grades(db)
    assert grades[interrupted] == "hold"
    assert [c["camera"] for c in covers[interrupted]["cameras"] if not c["ended"]] == ["top-1"]
    after = [coil for coil in covers if coil > interrupted]
    assert after == top["coils"] and set(after) <= set(bottom["coils"])
    for coil in after:  # the camera that came back: every frame of its coils inspected, graded
        assert covers[coil]["complete"] and covers[coil]["lost"] == 0 and grades[coil] != "hold", covers[coil]
    assert top["sent"] == sum(c["inspected"] for coil in after for c in covers[coil]["cameras"]
                              if c["camera"] == "top-1")
    worker = json.loads((out / "worker.json").read_text())
    assert worker["frames_failed"] == 0 and worker["malformed"] == 0


def _coils(db: Path, camera: str) -> list[str]:
    con = sqlite3.connect(db)
    try:
        return [c for (c,) in con.execute("SELECT DISTINCT coil FROM frames WHERE camera = ? ORDER BY coil",
                                          (camera,))]
    finally:
        con.close()


# -- a camera process killed under `run` -----------------------------------------------------------------

def _kill_camera_once(db: Path) -> None:
    """SIGKILL the top camera's process once frames of it are recorded (it is in the middle of its coils)."""
    camera = wait_for(lambda: recorded(db, "SELECT count(*) FROM frames WHERE camera = 'top-1'") > 0
                      and child("camera-top-1"), 120, "frames of the top camera recorded while it runs")
    os.kill(camera.pid, signal.SIGKILL)


@pytest.mark.usefixtures("models")
def test_a_camera_killed_under_run_is_restarted_and_frames_flow_again(tmp_path: Path, ipc_dir: Path) -> None:
    """`run` restarts a killed camera as it restarts a worker: at once, counted in the summary. The
    restarted camera starts with the coil after the one it was cutting (held: its coil_end died with the
    process) and sends the frames left of --max-frames; what the killed one sent comes from its tally."""
    line = _line(tmp_path, ipc_dir, speed_m_per_s=2.0)  # 8 frames of 256 mm per second, 12 per coil
    killer = in_background(_kill_camera_once, line.database)
    summary = run_pipeline(line, max_frames=60, camera_overrides={"realtime": True})
    assert "failed" not in killer, killer.get("failed")
    assert "failed" not in summary and summary["exit_codes"]["camera-top-1"] == 0, summary
    assert summary["restarts"] == {"camera-top-1": 1} and summary["camera_restarts"] == 1, summary
    assert summary["worker_restarts"] == summary["recorder_restarts"] == 0, summary
    [crash] = summary["crashes"]
    assert (crash["process"], crash["status"], crash["restart_in_s"]) == ("camera-top-1", -signal.SIGKILL, 0.0)
    # each camera took its 60 frames in all: the restart sent only what its predecessor had not
    assert summary["frames_sent"] + summary["frames_dropped_by_cameras"] == 120, summary
    covers = check_books(line.database, summary, line.records.coverage_min)
    cut = [coil for coil, cover in covers.items()
           if any(c["camera"] == "top-1" and not c["ended"] for c in cover["cameras"])]
    # the coil the kill cut, and (the restarted camera counts on from its predecessor's frames, so its 60th
    # frame falls inside a coil) the last coil, cut by --max-frames: both without coil_end, both held
    assert len(cut) in (1, 2) and all(summary["grades"][coil] == "hold" for coil in cut), (cut, summary["grades"])
    assert len(cut) == 1 or cut[1] == max(covers), cut
    after = [coil for coil in covers if coil > cut[0]
             and any(c["camera"] == "top-1" and c["inspected"] for c in covers[coil]["cameras"])]
    assert after, "no frame of the restarted camera was recorded"
    top = [next(c for c in covers[coil]["cameras"] if c["camera"] == "top-1") for coil in after]
    assert top[0]["frames"] == top[0]["inspected"] > 0 and top[0]["lost"] == 0, top[0]  # a whole coil
    assert all(t["inspected"] > 0 for t in top)


# -- frames broken on the wire ---------------------------------------------------------------------------

BROKEN = {  # frame index in the coil -> what a broken camera sends instead of the frame
    3: "pixels cut short",
    5: "pixels part missing",
    7: "header cut short",
    9: "pixels too long",
}


def _broken_parts(frame: Frame, how: str, signer: Signer | None) -> list[bytes]:
    header, pixels = (bytes(p) for p in encode(frame, signer))  # a camera's own frame, signed, then broken
    return {"pixels cut short": [header, pixels[: len(pixels) // 2]],
            "pixels part missing": [header],
            "header cut short": [header[: len(header) // 2], pixels],
            "pixels too long": [header, pixels + b"\0" * 64]}[how]


def _play_cameras(line: LineConfig, coil: str, frames: int) -> None:
    """Both cameras of the line, played by this test: one coil each, the top camera's frames in
    `BROKEN` sent broken. Replay mode: every message waits for the worker, nothing is dropped."""
    rng = np.random.default_rng(0)
    for camera in line.cameras:
        spec = parse_endpoint(camera.endpoint, "bind")
        key = StreamKey(line.id, line.type, camera.id, camera.surface)
        signer = signer_for(line, camera.id)  # the test plays the camera process, which signs what it sends
        with FrameSender(spec, live=False, linger_ms=30_000, signer=signer,
                         curve=curve_for(line, "frames", "camera", [spec], camera=camera.id)) as sender:
            seq = 0
            sender.send(CoilEvent("coil_start", key, coil, seq, 1))
            for index in range(frames):
                seq += 1
                pixels = rng.integers(90, 110, (camera.frame_height_px, camera.width_px), dtype=np.uint8)
                frame = Frame(key, coil, seq, index, 10 + index, index * 256.0, 0.0, 1.0, 1.0, pixels)
                if camera.id == "top-1" and index in BROKEN:
                    sender.socket.send_multipart(_broken_parts(frame, BROKEN[index], signer))
                else:
                    assert sender.send(frame)
            sender.send(CoilEvent("coil_end", key, coil, seq + 1, 2, length_mm=frames * 256.0, frames=frames,
                                  dropped=0))


@pytest.mark.usefixtures("models")
def test_frames_broken_on_the_wire_are_recorded_as_dropped_or_counted_as_lost(tmp_path: Path, ipc_dir: Path) -> None:
    """A broken camera sends frames cut short, without their pixels, with a header cut short or with
    too many bytes. A frame whose header still says which it was is recorded as dropped with the
    reason; one whose header cannot be read is counted as lost by its coil; the coil is held."""
    line = _line(tmp_path, ipc_dir)
    ensure_keys(line)
    out, db, coil = tmp_path / "run", line.database, "H26-900001"
    out.mkdir()
    config = str(line.path)
    with Supervisor(grace_s=30.0) as sup:
        sup.start("recorder", recorder_child, config, {}, str(db), str(out / "recorder.json"))
        sup.start("worker-1", worker_child, config, {}, "worker-1", str(out / "worker.json"), str(out / "ready"))
        wait_for(lambda: (out / "ready").exists(), 120, "the worker to load its model")
        _play_cameras(line, coil, frames=12)
        wait_for(lambda: recorded(db, "SELECT count(*) FROM coil_events WHERE kind = 'coil_end'") == 2, 60,
                 "both coil ends in the database")
        codes = sup.stop(["worker-1"], grace_s=60.0) | sup.stop(["recorder"], grace_s=60.0)
    assert codes == {"worker-1": 0, "recorder": 0}
    covers = check_books(db, coverage_min=line.records.coverage_min)
    top = next(c for c in covers[coil]["cameras"] if c["camera"] == "top-1")
    bottom = next(c for c in covers[coil]["cameras"] if c["camera"] == "bottom-1")
    assert (top["frames"], top["inspected"], top["dropped_worker"], top["lost"]) == (12, 8, 3, 1), top
    assert (bottom["inspected"], bottom["lost"]) == (12, 0)
    assert latest_grades(db)[coil] == "hold"
    con = sqlite3.connect(db)
    reasons = dict(con.execute("SELECT frame_index, reason FROM frames WHERE status = 'dropped'").fetchall())
    con.close()
    assert sorted(reasons) == [3, 5, 9] and all(r.startswith("malformed on the wire: ") for r in reasons.values())
    assert "pixels: expected" in reasons[3] and "2 parts" in reasons[5]
    worker = json.loads((out / "worker.json").read_text())
    assert (worker["malformed"], worker["frames_failed"]) == (4, 3)


# -- the crop folder cannot be written ----------------------------------------------------------------------

def _break_crop_folder(crops: Path) -> None:
    """Once crops are being written and the cameras still send, make every further crop write fail:
    the folder is moved away and a plain file takes its name, so creating a file under it fails with
    an OSError (ENOTDIR), as ENOSPC would on a full disk. (A read-only folder would not do: the suite
    may run as root, which writes anyway; a tiny filesystem needs a mount.)"""
    # The first crop in place is the moment: the cameras send in real time and the worker lags them, so
    # most frames are still to come. (Also waiting for the cameras to be running failed once under load:
    # they had sent everything before the worker's first crop landed.)
    wait_for(lambda: any(crops.glob("??/*.png")), 60, "crops written while the line runs")
    crops.rename(crops.with_name("crops-before"))
    crops.write_text("not a folder: every crop write under it fails\n")


@pytest.mark.usefixtures("models")
def test_a_crop_folder_that_cannot_be_written_raises_an_alarm_and_records_keep_flowing(
        tmp_path: Path, ipc_dir: Path) -> None:
    line = _line(tmp_path, ipc_dir, extra={"coil_mix = [": "coil_mix = [[1.0, 100.0]] # ["})
    breaker = in_background(_break_crop_folder, tmp_path / "crops")
    summary = run_pipeline(line, max_frames=100, camera_overrides={"realtime": True})
    assert "failed" not in breaker, breaker.get("failed")
    assert "failed" not in summary and summary["recorder_restarts"] == 0, summary
    crops = tmp_path / "crops"
    verdict = audit_verify(line.database)  # the crops written before the fault are not where they belong
    assert verdict.returncode == 1 and f"crops folder {crops}: is not a folder" in verdict.stdout + verdict.stderr
    crops.unlink()  # the operator mends the disk: the crops written before the fault are back
    crops.with_name("crops-before").rename(crops)
    check_books(line.database, summary, line.records.coverage_min)
    # nothing was lost: every frame was recorded, before and after the crops stopped
    assert summary["frames_inspected"] == summary["frames_sent"] and summary["frames_lost"] == 0, summary
    con = sqlite3.connect(line.database)
    with_crop, without = con.execute("SELECT count(crop_sha256), sum(crop_sha256 IS NULL) FROM defects").fetchone()
    alarms = [json.loads(d) for (d,) in con.execute("SELECT details FROM alarms WHERE kind = 'worker'")]
    con.close()
    assert with_crop > 0 and without > 0, (with_crop, without)
    assert summary["recorder"]["crops_failed"] == without
    crop_alarms = [a for a in alarms if a.get("reason") == "crops not written"]
    assert len(crop_alarms) == 1 and crop_alarms[0]["crops_failed"] >= 1  # one alarm, not one per defect


# -- overload -------------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("models")
def test_overload_drops_frames_at_the_cameras_and_counts_every_one(tmp_path: Path, ipc_dir: Path) -> None:
    """Live cameras at 200 m/s (780 frames of 256 mm per second each) against one worker that runs
    the model on every 128-px tile with one thread (measured here: about 14 times the CPU time of a
    camera per frame; slower still would risk the cameras' 10 s linger running out before the worker
    has taken their last queued frames): the cameras cannot wait, so they drop frames and count them
    into each coil_end; none is lost, and the coils that lost frames are held."""
    line = _line(tmp_path, ipc_dir, speed_m_per_s=200.0, coil_length_m=30.0,
                 extra={'first_stage = "windows"': 'first_stage = "none"',
                        "intra_op_threads = 0": "intra_op_threads = 1",
                        "tile_px = 512": "tile_px = 128", "tile_overlap_px = 128": "tile_overlap_px = 64"})
    summary = run_pipeline(line, max_frames=300, camera_overrides={"realtime": True})
    assert "failed" not in summary and summary["worker_restarts"] == 0, summary
    assert summary["frames_dropped_by_cameras"] > 0, summary
    assert summary["frames_lost"] == 0, summary
    covers = check_books(line.database, summary, line.records.coverage_min)
    dropped = {coil for coil, cover in covers.items() if any(c["dropped_camera"] for c in cover["cameras"])}
    assert dropped and all(summary["grades"][coil] == "hold" for coil in dropped), summary["grades"]
