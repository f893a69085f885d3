"""Frame transport throughput: camera process -> worker process, against raw pyzmq on the same machine.

For each transport (tcp loopback, ipc) and in the same run:

- ``frames``: a sender process pushes `Frame`s (4096x1024 uint8 by default) through
  `FrameSender` (replay mode: backpressure, nothing dropped); this process receives them with
  `FrameReceiver` (decode included);
- ``curve``: the same as ``frames`` with the line's CURVE on (camera and worker keys made in a
  scratch key folder, the ZAP handler in the sender): what encryption and authentication cost;
- ``raw``: a sender process pushes plain single-part messages of the same total size with
  pyzmq (``copy=False`` both ends): the ceiling of this machine for that message size.

All are timed at the receiver from the first to the last message of a trial; trials
rotate the modes (and which goes first) so all see the same machine load; the median of the
trials is reported, with every trial's figures beside it. ``curve.ratio_to_frames`` = CURVE MB/s /
plain frames MB/s from the medians (``--no-curve`` leaves the CURVE trials out).

The sender binds (as a camera does): on tcp a port of the system's choosing (``tcp://127.0.0.1:*``),
which it sends back to this process before the first message, so no port is guessed.
``ratio_to_raw`` = frames MB/s / raw MB/s (goal >= 0.8), from the medians; the best trials'
ratio and the CPU time per message of both ends (sender loop + receiver loop, which is robust
when other jobs share the cores) are reported beside it.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from inspection.arguments import positive_int
from inspection.errors import SteelInspectError
from inspection.transport import tune_malloc_for_frames

log = logging.getLogger(__name__)

HELP = "frames/s and MB/s of the ZeroMQ frame transport (tcp, ipc) against raw pyzmq"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=positive_int, default=100, help="messages per trial (default 100)")
    parser.add_argument("--trials", type=positive_int, default=9, help="trials per transport and mode (default 9)")
    parser.add_argument("--width", type=positive_int, default=4096)
    parser.add_argument("--height", type=positive_int, default=1024)
    parser.add_argument("--transports", default="tcp,ipc", help="comma-separated: tcp, ipc")
    parser.add_argument("--no-curve", action="store_true", help="leave out the trials with CURVE keys")


def _frames_sender(endpoint: str, count: int, width: int, height: int, cpu_file: str, keys_dir: str | None,
                   bound: Connection) -> None:
    from inspection.frame import CoilEvent, Frame, StreamKey
    from inspection.security import side_curve
    from inspection.transport import Endpoint, FrameSender

    key = StreamKey("bench", "hot", "cam-1", "top")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(4)]  # never written again
    spec = Endpoint("bind", endpoint)
    curve = side_curve(Path(keys_dir), "frames", "camera", [spec], name="cam-1") if keys_dir else None
    with FrameSender(spec, live=False, hwm=8, linger_ms=10000, curve=curve) as sender:
        bound.send(sender.address)
        cpu = time.process_time()
        for i in range(count):
            sender.send(Frame(key, "C1", i, i, time.time_ns(), float(i * height), 0.0, 1.0, 1.0, images[i % 4]))
        sender.send(CoilEvent("coil_end", key, "C1", count, time.time_ns(), float(count * height), count, 0))
        Path(cpu_file).write_text(json.dumps({"cpu_s": time.process_time() - cpu}))


def _raw_sender(endpoint: str, count: int, size: int, cpu_file: str, bound: Connection) -> None:
    tune_malloc_for_frames()  # the same allocator settings as the frame transport: a like-for-like limit
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.SNDHWM, 8)
    push.setsockopt(zmq.LINGER, 10000)
    push.bind(endpoint)
    bound.send(push.getsockopt_string(zmq.LAST_ENDPOINT))
    payloads = [np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8) for i in range(4)]
    cpu = time.process_time()
    for i in range(count):
        push.send(payloads[i % 4], copy=False)
    push.send(b"end")
    Path(cpu_file).write_text(json.dumps({"cpu_s": time.process_time() - cpu}))
    push.close()
    context.term()


@dataclass
class Trial:
    """One timed run: messages per second at the receiver and CPU seconds per message (both ends)."""

    rate: float
    cpu_per_msg_s: float


def _start_sender(target: Callable[..., None], endpoint: str, *args: Any) -> tuple[BaseProcess, str]:
    """Start a sender process that binds `endpoint`; the process and the address it really bound."""
    context = multiprocessing.get_context("spawn")
    reader, writer = context.Pipe(duplex=False)
    proc = context.Process(target=target, args=(endpoint, *args, writer))
    proc.start()
    writer.close()  # the child holds its own end: if it dies before binding, the read below sees EOF
    try:
        if reader.poll(120):
            return proc, reader.recv()
    except EOFError:
        pass
    finally:
        reader.close()
    proc.kill()
    proc.join(10)
    raise SteelInspectError(f"benchmark: the sender process did not bind {endpoint} (exit status {proc.exitcode})")


def _finish(proc: BaseProcess, cpu_file: Path, received: int, first: float, last: float, cpu_recv: float) -> Trial:
    proc.join(30)
    sender_cpu = json.loads(cpu_file.read_text())["cpu_s"]
    return Trial((received - 1) / (last - first), (sender_cpu + cpu_recv) / received)


def _time_frames(endpoint: str, count: int, width: int, height: int, folder: str, keys_dir: str | None) -> Trial:
    from inspection.frame import Frame
    from inspection.security import side_curve
    from inspection.transport import Endpoint, FrameReceiver

    cpu_file = Path(folder) / "cpu-frames.json"
    proc, address = _start_sender(_frames_sender, endpoint, count, width, height, str(cpu_file), keys_dir)
    received, first, last, cpu = 0, 0.0, 0.0, 0.0
    peer = Endpoint("connect", address)
    curve = side_curve(Path(keys_dir), "frames", "worker", [peer], cameras={address: "cam-1"}) if keys_dir else None
    with FrameReceiver(peer, hwm=8, curve=curve) as receiver:
        while True:
            message = receiver.recv(timeout_ms=60000)
            if message is None:
                raise SteelInspectError(f"benchmark: frames stopped arriving on {address} after {received}")
            if not isinstance(message, Frame):
                break
            received += 1
            last = time.perf_counter()
            if received == 1:
                first, cpu = last, time.process_time()
        cpu = time.process_time() - cpu
    return _finish(proc, cpu_file, received, first, last, cpu)


def _time_raw(endpoint: str, count: int, size: int, folder: str) -> Trial:
    tune_malloc_for_frames()
    cpu_file = Path(folder) / "cpu-raw.json"
    proc, address = _start_sender(_raw_sender, endpoint, count, size, str(cpu_file))
    context = zmq.Context()
    pull = context.socket(zmq.PULL)
    pull.setsockopt(zmq.RCVHWM, 8)
    pull.connect(address)
    received, first, last, cpu = 0, 0.0, 0.0, 0.0
    try:
        while True:
            if not pull.poll(60000):
                raise SteelInspectError(f"benchmark: raw messages stopped arriving on {address} after {received}")
            message = pull.recv(copy=False)
            if len(message) < size:
                break
            received += 1
            last = time.perf_counter()
            if received == 1:
                first, cpu = last, time.process_time()
        cpu = time.process_time() - cpu
    finally:
        pull.close(linger=0)
        context.term()
    return _finish(proc, cpu_file, received, first, last, cpu)


def _endpoint(kind: str, folder: str, name: str) -> str:
    """What the sender binds: a free loopback port it picks itself, or a socket file in `folder`."""
    return "tcp://127.0.0.1:*" if kind == "tcp" else f"ipc://{folder}/{name}.sock"


def run(args: argparse.Namespace) -> dict[str, Any]:
    frame_bytes = args.width * args.height
    figures: dict[str, Any] = {
        "frame": {"width": args.width, "height": args.height, "dtype": "uint8", "bytes": frame_bytes},
        "frames_per_trial": args.frames,
        "trials": args.trials,
        "hardware": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            "zmq": zmq.zmq_version(),
            "pyzmq": zmq.__version__,
        },
        "goal_ratio_to_raw": 0.8,
        "malloc_tuned": tune_malloc_for_frames(),
    }
    with tempfile.TemporaryDirectory(prefix="steel-bench-", dir="/tmp") as folder:
        from inspection.keys import generate

        keys_dir = None if args.no_curve else str(Path(folder) / "keys")
        if keys_dir:
            generate(Path(keys_dir), ["cam-1"])
        modes = ["frames", "raw"] if keys_dir is None else ["frames", "curve", "raw"]
        for kind in [t.strip() for t in args.transports.split(",") if t.strip()]:
            if kind not in ("tcp", "ipc"):
                raise SteelInspectError(f"--transports: expected tcp and/or ipc, got {kind!r}")
            trials: dict[str, list[Trial]] = {mode: [] for mode in modes}
            for trial in range(args.trials):
                # rotate which mode goes first: the machine's load drifts (other jobs share it)
                order = modes[trial % len(modes):] + modes[:trial % len(modes)]
                for mode in order:
                    endpoint = _endpoint(kind, folder, f"{mode}{trial}")
                    if mode == "raw":
                        trials[mode].append(_time_raw(endpoint, args.frames, frame_bytes, folder))
                    else:
                        trials[mode].append(_time_frames(endpoint, args.frames, args.width, args.height, folder,
                                                         keys_dir if mode == "curve" else None))
                log.info("%s trial %d: %s", kind, trial + 1,
                         ", ".join(f"{mode} {trials[mode][-1].rate:.1f}/s" for mode in modes))
            figures[kind] = _figures(trials["frames"], trials["raw"], frame_bytes)
            if "curve" in trials:
                curve = _figures(trials["curve"], trials["raw"], frame_bytes)
                plain = figures[kind]["frames_per_s"]
                curve["ratio_to_frames"] = round(curve["frames_per_s"] / plain, 3) if plain else None
                curve["cpu_ratio_frames_to_curve"] = round(figures[kind]["cpu_ms_per_frame"]
                                                           / curve["cpu_ms_per_frame"], 3)
                figures[kind]["curve"] = curve
    return figures


def _figures(frames: list[Trial], raws: list[Trial], frame_bytes: int) -> dict[str, Any]:
    """Medians of one mode's trials against the raw trials of the same run."""
    fps = statistics.median(t.rate for t in frames)
    raw = statistics.median(t.rate for t in raws)
    cpu_frames = statistics.median(t.cpu_per_msg_s for t in frames)
    cpu_raw = statistics.median(t.cpu_per_msg_s for t in raws)
    return {
        "frames_per_s": round(fps, 2),
        "mb_per_s": round(fps * frame_bytes / 1e6, 1),
        "raw_mb_per_s": round(raw * frame_bytes / 1e6, 1),
        "ratio_to_raw": round(fps / raw, 3),
        "best_trial_ratio_to_raw": round(max(t.rate for t in frames) / max(t.rate for t in raws), 3),
        "cpu_ms_per_frame": round(cpu_frames * 1000, 3),
        "raw_cpu_ms_per_msg": round(cpu_raw * 1000, 3),
        "cpu_ratio_raw_to_frames": round(cpu_raw / cpu_frames, 3),
        "trials_frames_per_s": [round(t.rate, 2) for t in frames],
        "trials_raw_msgs_per_s": [round(t.rate, 2) for t in raws],
    }
