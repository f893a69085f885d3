"""The line pipeline: camera, worker and recorder processes, supervised.

Topology (roles from the config): each camera binds its PUSH endpoint; every worker connects
a PULL socket to all cameras (ZeroMQ shares the frames among workers) and PUSHes results to
the recorder, which binds `endpoints.results` and publishes to PLCs on `endpoints.plc`.

Children are started with plain arguments and read the config themselves. Each writes a JSON
summary of what it did when it ends, which `run_pipeline` adds up. A worker that dies while
the line runs is restarted at once; the restart is logged and counted, and the frames it
held are visible as missing coverage in the recorder (the coil is held, not graded prime).

Shutdown order: cameras end (after `max_frames`, or on SIGTERM) with a coil_end each; then
workers drain until their sockets stay quiet for `drain_s` and exit; then the recorder
drains, flushes, grades what is complete and exits.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from inspection.config import LineConfig
from inspection.process import StopFlag
from inspection.supervisor import Supervisor

log = logging.getLogger(__name__)


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        Path(path).write_text(json.dumps(data, default=str), encoding="utf-8")


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def camera_child(config_path: str, config_overrides: dict[str, Any], camera_id: str, summary_path: str,
                 **overrides: Any) -> int:
    from inspection.commands.camera import run_camera

    _write_json(summary_path, run_camera(config_path, camera_id, config_overrides=config_overrides, **overrides))
    return 0


def worker_child(config_path: str, config_overrides: dict[str, Any], name: str, summary_path: str,
                 ready_path: str | None = None, drain_s: float = 1.0) -> int:
    """One inference worker process: cameras -> model -> recorder, until stopped and drained.

    It connects to the cameras only once its model is loaded, so it takes frames only when it can
    inspect them, then touches `ready_path` so the supervisor knows.
    """
    import dataclasses

    import zmq

    from inspection.config import load_config, log_config
    from inspection.records.grading import load_rules
    from inspection.records.messages import WorkerStatus, encode
    from inspection.registry import Registry
    from inspection.transport import FrameReceiver, parse_endpoint
    from inspection.worker import InferenceWorker

    stop = StopFlag()
    config = load_config(config_path, config_overrides)
    log_config(config, log)
    registry = Registry(config.model.registry)
    rules = load_rules(config.records.rules)
    context = zmq.Context()
    results = context.socket(zmq.PUSH)
    results.setsockopt(zmq.SNDHWM, 1000)
    results.setsockopt(zmq.LINGER, 10_000)  # results still queued at exit get 10 s to reach the recorder
    endpoint = parse_endpoint(config.endpoints.results, "connect")
    (results.bind if endpoint.role == "bind" else results.connect)(endpoint.address)
    receiver: FrameReceiver | None = None
    last_message = last_report = time.monotonic()
    host, pid = socket.gethostname(), os.getpid()

    def receive(timeout: float) -> Any:
        nonlocal last_message, last_report
        message = receiver.recv(timeout_ms=max(1, int(timeout * 1000))) if receiver is not None else None
        now = time.monotonic()
        if message is not None:
            last_message = now
        if now - last_report >= config.worker.heartbeat_s:  # health for the console, through the recorder
            last_report = now
            stats = {**dataclasses.asdict(worker.stats), "malformed": receiver.malformed if receiver else 0,
                     "status": "ok"}
            results.send_multipart(encode(WorkerStatus(name, host, pid, time.time_ns(), stats)))
        return message

    def send(message: Any) -> None:
        # Blocking: if the recorder is behind, this worker waits, its queue fills and live cameras
        # count drops; nothing is lost silently.
        nonlocal last_message
        results.send_multipart(encode(message))
        last_message = time.monotonic()  # drain time counts from the end of work, not from the last receive

    worker = InferenceWorker(config, registry, receive, send, rules.severity)
    try:
        slot = worker.load(config.type)  # a bad model fails here, at start, not on the first frame
        receiver = FrameReceiver([c.endpoint for c in config.cameras], hwm=max(c.send_hwm for c in config.cameras))
        log.info("%s ready: model %s on %s", name, slot.manifest.version, slot.detector.providers)
        if ready_path:
            Path(ready_path).touch()
        last_message = time.monotonic()
        worker.run(lambda: stop.is_set() and time.monotonic() - last_message > drain_s)
    finally:
        malformed = receiver.malformed if receiver is not None else 0
        if receiver is not None:
            receiver.close()
        results.close()
        context.term()
        summary = {**dataclasses.asdict(worker.stats), "malformed": malformed}
        log.info("%s done: %s", name, json.dumps(summary, sort_keys=True))
        _write_json(summary_path, summary)
    return 0


def recorder_child(config_path: str, config_overrides: dict[str, Any], db: str | None, summary_path: str) -> int:
    """The recorder process with the PLC publisher attached to its events and loop."""
    import dataclasses

    from inspection.config import load_config, log_config
    from inspection.plc import PlcPublisher, RecorderBridge
    from inspection.records.recorder import RecorderStats, run_recorder

    config = load_config(config_path, config_overrides)
    log_config(config, log)
    # A database given on the command line keeps its crops beside it, not in the config's folder.
    crops = str(Path(db).parent / "crops") if db and Path(db) != config.database else None
    bridge: RecorderBridge | None = None

    def attach(store: Any) -> None:
        nonlocal bridge
        bridge = RecorderBridge(publisher, store.db, coverage_min=config.records.coverage_min)

    def on_event(kind: str, payload: dict[str, Any]) -> None:
        if bridge is not None:
            bridge(kind, payload)

    def on_tick(stats: RecorderStats) -> None:
        if bridge is not None:
            bridge.tick(frames=stats.new_frames, defects=stats.new_defects, drops=stats.rejected)

    with PlcPublisher.from_config(config, process="recorder") as publisher:
        stats = run_recorder(config, db=db, crops=crops, on_event=on_event, on_store=attach, on_tick=on_tick,
                             finalise_on_stop=True)
    _write_json(summary_path, dataclasses.asdict(stats))
    return 0


def run_pipeline(
    config: LineConfig,
    *,
    db: Path | None = None,
    workers: int = 1,
    max_frames: int | None = None,
    camera_overrides: dict[str, Any] | None = None,
    stop: StopFlag | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the line until the cameras end (`max_frames`) or `stop`; return the JSON summary."""
    stop = stop or StopFlag()
    db = Path(db or config.database)
    db.parent.mkdir(parents=True, exist_ok=True)
    config_path, overrides = str(config.path), config.overrides
    restarts = 0
    started, started_ns = time.monotonic(), time.time_ns()
    with tempfile.TemporaryDirectory(prefix="steel-run-") as tmp, Supervisor(verbose=verbose) as sup:
        out = Path(tmp)
        sup.start("recorder", recorder_child, config_path, overrides, str(db), str(out / "recorder.json"))
        incarnation = {f"worker-{i + 1}": 0 for i in range(workers)}

        def start_worker(name: str) -> None:
            sup.start(name, worker_child, config_path, overrides, name, str(out / f"{name}.{incarnation[name]}.json"),
                      str(out / f"{name}.ready"))

        for name in incarnation:
            start_worker(name)
        if not _wait_ready(sup, [out / f"{name}.ready" for name in incarnation], list(incarnation), stop):
            codes = sup.stop()
            log.error("the line did not start: a worker failed or was stopped before its model was loaded")
            return {"exit_codes": codes, "worker_restarts": 0, "started": False}
        cameras = []
        for cam in config.cameras:
            name = f"camera-{cam.id}"
            sup.start(name, camera_child, config_path, overrides, cam.id, str(out / f"{name}.json"),
                      max_frames=max_frames, **(camera_overrides or {}))
            cameras.append(name)
        log.info("line %s running: %s", config.id, ", ".join(sup.names))
        while not stop.is_set() and any(sup.alive(c) for c in cameras):
            for name in incarnation:
                if not sup.alive(name):
                    restarts += 1
                    log.error("%s exited with status %s while the line runs: restart #%d", name,
                              sup.exit_codes()[name], restarts)
                    incarnation[name] += 1
                    start_worker(name)
            time.sleep(0.2)
        codes = sup.stop(cameras)
        codes |= sup.stop(list(incarnation), grace_s=60.0)
        codes |= sup.stop(["recorder"], grace_s=60.0)
        elapsed = time.monotonic() - started
        camera_stats = {c: _read_json(out / f"{c}.json") or {} for c in cameras}
        worker_stats = [s for p in sorted(out.glob("worker-*.json")) if (s := _read_json(p))]
        recorder_stats = _read_json(out / "recorder.json") or {}
    return summarize(db, started_ns, codes, camera_stats, worker_stats, recorder_stats, restarts, elapsed)


def _wait_ready(sup: Supervisor, files: list[Path], workers: list[str], stop: StopFlag,
                timeout_s: float = 300.0) -> bool:
    """Wait until every worker has loaded its model (so live cameras do not drop frames at start)."""
    deadline = time.monotonic() + timeout_s
    while not all(f.exists() for f in files):
        if stop.is_set() or time.monotonic() > deadline or any(not sup.alive(w) for w in workers):
            return False
        time.sleep(0.1)
    return True


def summarize(db: Path, started_ns: int, codes: dict[str, int | None], cameras: dict[str, dict[str, Any]],
              workers: list[dict[str, Any]], recorder: dict[str, Any], restarts: int,
              elapsed: float) -> dict[str, Any]:
    """The run's figures: what was sent, received, inspected and dropped, and how fast.

    Counts of what was recorded come from the database (frames captured since the run started),
    so they stay true when a worker died without reporting; the workers' own counts are kept
    beside them.
    """
    import sqlite3

    from inspection.records.seams import merged_away

    megapixels = sum(float(c.get("megapixels", 0.0)) for c in cameras.values())
    summary: dict[str, Any] = {
        "exit_codes": codes,
        "worker_restarts": restarts,
        "frames_sent": sum(int(c.get("sent", 0)) for c in cameras.values()),
        "frames_dropped_by_cameras": sum(int(c.get("dropped", 0)) for c in cameras.values()),
        "workers_reported": {
            "frames_received": sum(int(w.get("frames_received", 0)) for w in workers),
            "frames_inspected": sum(int(w.get("frames_inspected", 0)) for w in workers),
            "frames_failed": sum(int(w.get("frames_failed", 0)) for w in workers),
            "malformed": sum(int(w.get("malformed", 0)) for w in workers),
            "tiles_inspected_share": _share(workers),
            "model_px_share": _share(workers, "model_px", "frame_px"),
        },
        "seconds": round(elapsed, 2),
        "megapixels_sent": round(megapixels, 2),
        "throughput_mpx_per_s": round(megapixels / elapsed, 2) if elapsed > 0 else None,
        "recorder": {k: recorder.get(k) for k in ("messages", "rejected", "new_defects", "coils_graded", "alarms")},
        "database": str(db),
    }
    if not db.is_file():
        return summary
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        run = (started_ns,)
        summary["frames_inspected"], summary["frames_dropped_by_workers"] = con.execute(
            "SELECT coalesce(sum(status = 'inspected'), 0), coalesce(sum(status = 'dropped'), 0) FROM frames "
            "WHERE captured_ns >= ?", run).fetchone()
        fragments = con.execute("SELECT count(*) FROM defects WHERE captured_ns >= ?", run).fetchone()[0]
        # a defect cut by frame seams is recorded as linked fragments and counts once
        summary["defects"] = fragments - merged_away(con, started_ns)
        summary["defect_fragments"] = fragments
        coils = [r[0] for r in con.execute(
            "SELECT coil FROM frames WHERE captured_ns >= ? UNION SELECT coil FROM coil_events WHERE time_ns >= ? "
            "ORDER BY coil", run * 2)]
        summary["coils"] = len(coils)
        summary["grades"] = {coil: row[0] for coil in coils if (row := con.execute(
            "SELECT grade FROM grades WHERE coil = ? ORDER BY id DESC LIMIT 1", (coil,)).fetchone())}
        latencies = sorted(r[0] / 1e6 for r in con.execute(
            "SELECT recorded_ns - captured_ns FROM frames WHERE captured_ns >= ?", run))
        # Without start-up (models loading) and shutdown: from the first capture to the last record.
        first, last = con.execute("SELECT min(captured_ns), max(recorded_ns) FROM frames WHERE captured_ns >= ? "
                                  "AND status = 'inspected'", run).fetchone()
        summary["inspecting_s"] = round((last - first) / 1e9, 3) if first is not None else None
    finally:
        con.close()
    summary["latency_ms_capture_to_record"] = _percentiles(latencies)
    return summary


def _share(workers: list[dict[str, Any]], part: str = "tiles_inspected", whole: str = "tiles_total") -> float | None:
    """Summed `part` / summed `whole` of the workers' stats: tiles (or windows) the model saw per grid
    tile, or pixels the model saw per frame pixel (above 1 when overlapping tiles see pixels twice)."""
    total = sum(int(w.get(whole, 0)) for w in workers)
    return round(sum(int(w.get(part, 0)) for w in workers) / total, 4) if total else None


def _percentiles(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    def pick(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2)

    return {"p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "max": round(values[-1], 2),
            "n": len(values)}
