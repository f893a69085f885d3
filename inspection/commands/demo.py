"""`steel-inspect demo`: the demo line's simulated cameras and a worker that counts what arrives.

At this stage of the project the worker only counts and logs frames and coil events (per
camera: frames, megapixels, coils started and ended, drops the cameras reported, sequence
gaps, malformed messages); the inference pipeline replaces it. Each camera and the worker
run as separate processes under `inspection.supervisor.Supervisor`; Ctrl-C or SIGTERM stops
them all cleanly, and a JSON summary is printed at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("inspection.demo")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the demo line: simulated cameras and a frame-counting worker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", type=Path, help="line config TOML (default: the demo line)")
    parser.add_argument("--frames", type=int, metavar="N", help="each camera stops after N frames")
    parser.add_argument("--fast", action="store_true", help="cameras run as fast as possible (backpressure)")
    parser.add_argument("--ground-truth-dir", type=Path, metavar="DIR", help="where the simulators write ground truth")
    parser.add_argument(
        "--mes-coils",
        type=int,
        default=50,
        metavar="N",
        help="write a matching MES extract for the first N simulated coils (default 50; 0: none) to "
        "mes_extract.json beside the line database",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from inspection.config import load_config, log_config
    from inspection.process import StopFlag
    from inspection.supervisor import Supervisor
    from inspection.transport import peer_endpoint

    line = load_config(args.config)
    log_config(line, log)
    stop = StopFlag()
    if args.mes_coils > 0:
        from cameras.mes import write_mes_extract

        write_mes_extract(line, line.database.parent / "mes_extract.json", args.mes_coils)
    with tempfile.TemporaryDirectory(prefix="steel-demo-") as tmp, Supervisor(verbose=args.verbose) as sup:
        summary_path = Path(tmp) / "worker.json"
        endpoints = [str(peer_endpoint(cam.endpoint)) for cam in line.cameras]  # the worker's side of each
        sup.start("worker", counting_worker, endpoints, str(summary_path))
        cameras = []
        for cam in line.cameras:
            name = f"camera-{cam.id}"
            overrides: dict[str, Any] = {"source": "simulator", "max_frames": args.frames}
            if args.fast:
                overrides["realtime"] = False
            if args.ground_truth_dir:
                overrides["ground_truth"] = str(args.ground_truth_dir / f"{cam.id}.jsonl")
            from inspection.commands.camera import run_camera

            sup.start(name, run_camera, str(line.path), cam.id, **overrides)
            cameras.append(name)
        log.info("demo running: %s; Ctrl-C stops", ", ".join(sup.names))
        # cameras end by themselves only with --frames; a camera or the worker failing is reported
        while not sup.wait(cameras, timeout=0.5, stopping=stop.is_set) and not stop.is_set():
            for name, code in sup.ended().items():
                if code != 0:
                    log.error("%s exited with status %s while the demo runs", name, code)
        camera_codes = sup.stop(cameras)
        worker_code = sup.stop(["worker"])["worker"]
        counts = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    summary = {"exit_codes": {**camera_codes, "worker": worker_code}, "worker": counts}
    print(json.dumps(summary, indent=2, sort_keys=True))
    return 0 if all(code == 0 for code in summary["exit_codes"].values()) else 1


def counting_worker(endpoints: list[str], summary_path: str | None = None, idle_drain_s: float = 1.0) -> int:
    """Receive from the cameras, count per camera, log every 5 s; on SIGTERM drain, then write the summary."""
    from inspection.frame import Frame
    from inspection.process import StopFlag
    from inspection.transport import FrameReceiver

    stop = StopFlag()
    counts: dict[str, dict[str, Any]] = {}
    receiver = FrameReceiver(endpoints)
    start = last_log = time.monotonic()
    try:
        while True:
            message = receiver.recv(timeout_ms=int(idle_drain_s * 1000) if stop.is_set() else 200)
            if message is None:
                if stop.is_set():
                    break  # stopped and nothing more arrived: everything sent has been counted
                continue
            cam = counts.setdefault(message.source.camera, _empty_counts())
            if message.seq != cam["next_seq"] and cam["next_seq"] is not None:
                cam["seq_gaps"] += 1
            cam["next_seq"] = message.seq + 1
            if isinstance(message, Frame):
                cam["frames"] += 1
                cam["megapixels"] += message.pixels.size / 1e6
            elif message.kind == "coil_start":
                cam["coils_started"].append(message.coil)
            else:
                cam["coils_ended"] += 1
                cam["frames_reported"] += message.frames
                cam["dropped_reported"] += message.dropped
                log.info(
                    "%s: coil %s ended: %d frames, %d dropped, %.0f mm",
                    message.source.camera,
                    message.coil,
                    message.frames,
                    message.dropped,
                    message.length_mm,
                )
            if time.monotonic() - last_log >= 5.0:
                last_log = time.monotonic()
                log.info("worker: %s", json.dumps({k: v["frames"] for k, v in counts.items()}))
    finally:
        receiver.close()
    summary = {
        "cameras": {k: {**v, "megapixels": round(v["megapixels"], 3)} for k, v in counts.items()},
        "malformed": receiver.malformed,
        "seconds": round(time.monotonic() - start, 3),
    }
    log.info("worker summary: %s", json.dumps(summary, sort_keys=True))
    if summary_path:
        Path(summary_path).write_text(json.dumps(summary), encoding="utf-8")
    return 0


def _empty_counts() -> dict[str, Any]:
    return {
        "frames": 0,
        "megapixels": 0.0,
        "coils_started": [],
        "coils_ended": 0,
        "frames_reported": 0,
        "dropped_reported": 0,
        "seq_gaps": 0,
        "next_seq": None,
    }
