"""Soak: the whole line at a steady load for minutes; what it lost, dropped, how late, how its memory grew.

The line is the one `steel-inspect run` starts (simulated live cameras, worker(s), the recorder with
its PLC output) in a scratch folder (`_line.scratch_line`), plus a PLC subscriber in its own process
(`plc-listen`'s `PlcListener`: validates every message, counts sequence gaps). The load:

- ``--fps F``: frames per second per camera; or
- measured (the default): one worker's inspection rate on the line's own simulated frames and model,
  in this process before the line starts, times ``--load`` (0.5), shared among the cameras. A soak
  must run at a rate the line sustains: above it, live cameras drop frames by design (counted), and
  the soak would measure overload instead of leaks.

Memory: each process's resident set (``VmRSS`` from ``/proc``, Linux) is sampled every ``--sample-s``;
``rss_start_mb`` is the first sample after the warm-up, ``rss_end_mb`` the last sample before the line
is stopped. The warm-up ends when both ``--warmup-s`` seconds have passed since the cameras started
(default a fifth of the run, 10 to 60 s) and ``--warmup-frames`` frames per camera (default 20) are
recorded: a worker's memory grows with its first frames, not with time (freed frame buffers stay in
the heap, up to the 256 MB that `transport.tune_malloc_for_frames` allows). It used to grow later
too, in steps (0.30 in 10 minutes): ONNX Runtime's CPU arena keeps what it grew to, and batches of
windows of many shapes kept touching new arena pages; a CPU worker now runs one window per model run
and every window shape before it is ready (`inspection.cpu_runs`; `bench window_memory` compares the
ways). A run too short to finish its warm-up reports no growth (``rss_growth_ratio`` null,
``warmup_ended_s`` null).
``rss_growth_ratio`` = the largest end / start - 1 over all processes (a process restarted during the
soak is reported with ``restarted``, its figures from its last incarnation); ``series_s_mb`` shows
each process's samples, a plateau or a slope. Latency: capture -> record of the frames captured after
the warm-up.

Figures of the whole run: ``frames_sent``, ``frames_inspected``, ``frames_dropped`` (by the cameras,
workers behind, and by the workers, recorded), ``frames_lost`` (sent, in no record: 0 in a healthy
line), coils and their grades, restarts and crashes, the PLC subscriber's counts. The command line,
the host and its load average (start and end: the machine may be shared) are in the JSON.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspection.arguments import non_negative_int, positive_float, positive_int
from inspection.benchmarks._line import hardware, scratch_line, simulated_frames
from inspection.config import LineConfig

HELP = "run the line at a steady load for M minutes: frames lost and dropped, latency, memory growth per process"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--minutes", type=positive_float, default=10.0, metavar="M",
                        help="how long the line runs (default 10)")
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--fps", type=positive_float, metavar="F",
                        help="frames per second per camera (default: measured, see --load)")
    parser.add_argument("--load", type=positive_float, default=0.5,
                        help="without --fps: this share of one worker's measured rate, over all cameras (default 0.5)")
    parser.add_argument("--workers", type=positive_int, default=1, metavar="K",
                        help="inference worker processes (default 1)")
    parser.add_argument("--warmup-s", type=positive_float, metavar="S",
                        help="seconds before memory and latency count (default: a fifth of the run, 10 to 60)")
    parser.add_argument("--warmup-frames", type=non_negative_int, default=20, metavar="N",
                        help="frames per camera recorded before memory and latency count (default 20)")
    parser.add_argument("--sample-s", type=positive_float, metavar="S",
                        help="memory sampling interval (default: a fiftieth of the run, 1 to 10 s)")
    parser.add_argument("--seed", type=non_negative_int, default=7, help="simulator seed (default 7)")
    parser.add_argument("--dir", type=Path, help="keep the line's database here (default: a temporary folder)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    seconds = args.minutes * 60.0
    warmup = args.warmup_s if args.warmup_s is not None else min(60.0, max(10.0, seconds / 5), seconds / 2)
    sample = args.sample_s if args.sample_s is not None else min(10.0, max(1.0, seconds / 50))
    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="steel-soak-") as tmp:
        folder = args.dir or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        base = scratch_line(args.config, folder, **{"simulator.seed": args.seed})
        calibration = None if args.fps else sustainable_rate(base, args.seed)
        fps = args.fps or round(args.load * calibration["worker_fps"] / len(base.cameras), 3)
        camera = base.cameras[0]
        speed = fps * camera.frame_height_px * camera.mm_per_px_along / 1000.0
        config = scratch_line(args.config, folder, **{"simulator.seed": args.seed, "line.speed_m_per_s": speed})
        log.info("soak: %.1f min at %.2f frames/s per camera (%.2f m/s), warm-up %.0f s, samples every %.1f s",
                 args.minutes, fps, speed, warmup, sample)
        figures = soak(config, seconds, Warmup(warmup, args.warmup_frames * len(config.cameras)), sample,
                       args.workers, folder)
    px = sum(c.width_px * c.frame_height_px for c in config.cameras)
    return {**figures, "minutes": args.minutes, "fps_per_camera": fps,
            "fps_source": "--fps" if args.fps else "measured",
            "calibration": calibration, "megapixels_per_s": round(fps * px / 1e6, 3), "speed_m_per_s": round(speed, 4),
            "cameras": len(config.cameras), "frame_px": [camera.width_px, camera.frame_height_px],
            "workers": args.workers, "warmup_s": warmup, "warmup_frames": args.warmup_frames, "sample_s": sample,
            "load_average": {"start": [round(v, 2) for v in load_start],
                             "end": [round(v, 2) for v in os.getloadavg()]},
            "hardware": hardware(), "command": "steel-inspect bench soak " + " ".join(_argv(args))}


def _argv(args: argparse.Namespace) -> list[str]:
    items = [f"--minutes {args.minutes:g}", f"--workers {args.workers}", f"--seed {args.seed}",
             f"--warmup-frames {args.warmup_frames}"]
    items += [f"--fps {args.fps:g}"] if args.fps else [f"--load {args.load:g}"]
    items += [f"--{k.replace('_', '-')} {getattr(args, k):g}" for k in ("warmup_s", "sample_s")
              if getattr(args, k) is not None]
    return items + ([f"--config {args.config}"] if args.config else [])


def sustainable_rate(config: LineConfig, seed: int, frames: int = 12) -> dict[str, Any]:
    """One worker's inspection rate (frames/s, wall clock) on `frames` of the line's simulated frames
    with the line's model and worker settings, after one warm-up batch; as the line's worker runs it
    (first stage, tiles, crops), but without its sockets."""
    from inspection.frame_inspector import FrameInspector
    from inspection.records.grading import load_rules
    from inspection.registry import Registry
    from inspection.worker import InferenceWorker, inspector_settings

    sample, _ = simulated_frames(config, frames, seed)
    severity = load_rules(config.records.rules).severity
    slot = InferenceWorker(config, Registry(config.model.registry), lambda _t: None, lambda _m: None,
                           severity).load(config.type)
    inspector = FrameInspector(slot.detector, inspector_settings(config), severity)
    batch = max(1, config.worker.batch_size)
    inspector.inspect(sample[:batch])
    started = time.perf_counter()
    for i in range(0, len(sample), batch):
        inspector.inspect(sample[i:i + batch])
    elapsed = time.perf_counter() - started
    return {"worker_fps": round(len(sample) / elapsed, 3), "frames": len(sample), "model": slot.manifest.version}


@dataclass(frozen=True)
class Warmup:
    """The warm-up ends once `seconds` have passed since the cameras started and `frames` are recorded."""

    seconds: float
    frames: int


def soak(config: LineConfig, seconds: float, warmup: Warmup, sample_s: float, workers: int,
         folder: Path) -> dict[str, Any]:
    """Run the line (and a PLC subscriber) for `seconds` after its cameras started; the figures."""
    from inspection.line.pipeline import run_pipeline
    from inspection.line.process import StopFlag
    from inspection.line.supervisor import Supervisor
    from inspection.security import ensure_keys

    ensure_keys(config)  # the subscriber's keys must exist before the line's first start
    stop = StopFlag(install=False)
    clock = _Clock()
    with Supervisor(grace_s=30.0) as listeners:
        listeners.start("plc-listener", plc_listener_child, str(config.path), config.overrides,
                        str(folder / "plc.json"))
        sampler = RssSampler(sample_s, warmup, seconds, clock, stop.set, lambda: _frames(config.database))
        sampler.start()
        try:
            summary = run_pipeline(config, workers=workers, stop=stop)
        finally:
            stop.set()
            sampler.join()
            listeners.stop()
    plc = json.loads((folder / "plc.json").read_text()) if (folder / "plc.json").is_file() else {}
    latencies = _latencies(config.database, clock.warm_ns) if clock.warm_ns else {}
    rss = sampler.report()
    worst = max(rss.items(), key=lambda kv: kv[1]["growth_ratio"], default=(None, {"growth_ratio": None}))
    grades: dict[str, int] = {}
    for grade in summary.get("grades", {}).values():
        grades[grade] = grades.get(grade, 0) + 1
    return {
        "frames_sent": summary.get("frames_sent"), "frames_inspected": summary.get("frames_inspected"),
        "frames_dropped": (summary.get("frames_dropped_by_cameras", 0) + summary.get("frames_dropped_by_workers", 0)),
        "frames_dropped_by_cameras": summary.get("frames_dropped_by_cameras"),
        "frames_dropped_by_workers": summary.get("frames_dropped_by_workers"),
        "frames_lost": summary.get("frames_lost"), "frames_lost_by_coil": summary.get("frames_lost_by_coil"),
        **latencies, "latency_ms_run": summary.get("latency_ms_capture_to_record"),
        "rss": rss, "rss_growth_ratio": worst[1]["growth_ratio"], "rss_growth_process": worst[0],
        "seconds_line": clock.line_seconds(), "warmup_ended_s": clock.warm_at, "coils": summary.get("coils"),
        "grades": grades,
        "restarts": summary.get("restarts"), "crashes": summary.get("crashes"), "failed": summary.get("failed"),
        "exit_codes": summary.get("exit_codes"), "recorder": summary.get("recorder"),
        "plc": {k: plc.get(k) for k in ("messages", "received", "invalid", "gaps", "missing", "restarts")},
    }


class _Clock:
    """When the cameras started (the soak's time zero) and when the warm-up ended."""

    def __init__(self) -> None:
        self.started: float | None = None
        self.stopped: float | None = None
        self.warm_at: float | None = None  # seconds after the start
        self.warm_ns: int = 0  # wall clock, for the capture times of the records

    def line_seconds(self) -> float | None:
        if self.started is None or self.stopped is None:
            return None
        return round(self.stopped - self.started, 1)


class RssSampler(threading.Thread):
    """Samples the resident set of this process's children (the line's and the PLC subscriber's
    processes); sets the stop flag `seconds` after the cameras started."""

    def __init__(self, every_s: float, warmup: Warmup, seconds: float, clock: _Clock,
                 stop_line: Callable[[], None], frames: Callable[[], int]) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.every_s, self.warmup, self.seconds = every_s, warmup, seconds
        self.clock, self.stop_line, self.frames = clock, stop_line, frames
        self.samples: dict[str, list[tuple[float, int, float]]] = {}  # name -> (t after warm-up, pid, MB)
        self.done = threading.Event()

    def run(self) -> None:
        import multiprocessing

        clock = self.clock
        while not self.done.is_set():
            children = {c.name: c.pid for c in multiprocessing.active_children() if c.pid}
            now = time.monotonic()
            if clock.started is None and any(n.startswith("camera-") for n in children):
                clock.started = now
            if clock.started is not None:
                t = now - clock.started
                if clock.warm_at is None and t >= self.warmup.seconds and self.frames() >= self.warmup.frames:
                    clock.warm_at, clock.warm_ns = round(t, 1), time.time_ns()
                if clock.warm_at is not None:
                    for name, pid in children.items():
                        rss = _rss_mb(pid)
                        if rss is not None:
                            self.samples.setdefault(name, []).append((round(t, 1), pid, rss))
                if t >= self.seconds:
                    clock.stopped = now
                    self.stop_line()
                    return
            self.done.wait(self.every_s if clock.started is not None else 0.2)

    def join(self, timeout: float | None = None) -> None:
        self.done.set()
        super().join(timeout)

    def report(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, samples in sorted(self.samples.items()):
            last_pid = samples[-1][1]
            mine = [s for s in samples if s[1] == last_pid]  # the last incarnation of a restarted process
            start, end = mine[0][2], mine[-1][2]
            step = max(1, len(mine) // 20)  # at most ~20 points: enough to tell a plateau from a slope
            out[name] = {"rss_start_mb": start, "rss_end_mb": end, "rss_max_mb": max(s[2] for s in mine),
                         "growth_ratio": round(end / start - 1, 4) if start else None, "samples": len(mine),
                         "restarted": len({s[1] for s in samples}) > 1,
                         "series_s_mb": [[t, mb] for t, _, mb in mine[::step]] + ([[mine[-1][0], end]]
                                                                                  if (len(mine) - 1) % step else [])}
        return out


def _rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    except (OSError, ValueError, IndexError):
        return None
    return None


def _frames(db: Path) -> int:
    from inspection.records import line_reads
    from inspection.records.db import open_db

    if not db.is_file():
        return 0
    reader = open_db(db, readonly=True)
    try:
        return line_reads.frame_count(reader)
    except sqlite3.Error:  # the recorder has not made its tables yet
        return 0
    finally:
        reader.close()


def _latencies(db: Path, after_ns: int) -> dict[str, float | None]:
    """Capture -> record latency percentiles (ms) of the frames captured after the warm-up."""
    from inspection.records import line_reads
    from inspection.records.db import open_db

    if not db.is_file():
        return {"latency_ms_p50": None, "latency_ms_p99": None, "latency_ms_max": None, "latency_frames": 0}
    reader = open_db(db, readonly=True)
    try:
        values = line_reads.run_summary(reader, after_ns)["latencies_ms"]
    finally:
        reader.close()

    def pick(q: float) -> float | None:
        return round(values[min(len(values) - 1, int(q * len(values)))], 2) if values else None

    return {"latency_ms_p50": pick(0.50), "latency_ms_p99": pick(0.99), "latency_ms_max": pick(1.0),
            "latency_frames": len(values)}


def plc_listener_child(config_path: str, overrides: dict[str, Any], summary_path: str) -> int:
    """The PLC subscriber of `steel-inspect plc-listen --config`, in its own process: every message
    validated, sequence gaps counted, the messages themselves not printed; its summary written at stop."""
    from inspection.commands.plc_listen import PlcListener
    from inspection.config import load_config
    from inspection.line.process import StopFlag

    stop = StopFlag()
    with open(os.devnull, "w", encoding="utf-8") as quiet, \
            PlcListener.from_config(load_config(config_path, overrides)) as listener:
        summary = listener.run(out=quiet, err=quiet, stop=stop.is_set)
    Path(summary_path).write_text(json.dumps(summary), encoding="utf-8")
    return 0
