"""Frame transport throughput: camera process -> worker process, against raw pyzmq on the same machine.

For each transport (tcp loopback, ipc) and in the same run:

- ``frames``: a sender process pushes `Frame`s (4096x1024 uint8 by default) through
  `FrameSender` (replay mode: backpressure, nothing dropped); this process receives them with
  `FrameReceiver` (decode included);
- ``raw``: a sender process pushes plain single-part messages of the same total size with
  pyzmq (``copy=False`` both ends): the ceiling of this machine for that message size.

Both are timed at the receiver from the first to the last message of a trial; trials
alternate frames / raw (and which goes first) so both see the same machine load; the
median of the trials is reported, with every trial's figures beside it.
``ratio_to_raw`` = frames MB/s / raw MB/s (goal >= 0.8).
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import platform
import socket
import statistics
import tempfile
import time
from typing import Any

import numpy as np
import zmq

from inspection.errors import SteelInspectError

log = logging.getLogger(__name__)

HELP = "frames/s and MB/s of the ZeroMQ frame transport (tcp, ipc) against raw pyzmq"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=100, help="messages per trial (default 100)")
    parser.add_argument("--trials", type=int, default=9, help="trials per transport and mode (default 9)")
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--height", type=int, default=1024)
    parser.add_argument("--transports", default="tcp,ipc", help="comma-separated: tcp, ipc")


def _frames_sender(endpoint: str, count: int, width: int, height: int) -> None:
    from inspection.frame import CoilEvent, Frame, StreamKey
    from inspection.transport import FrameSender

    key = StreamKey("bench", "hot", "cam-1", "top")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(4)]  # never written again
    with FrameSender(f"bind:{endpoint}", live=False, hwm=8, linger_ms=10000) as sender:
        for i in range(count):
            sender.send(
                Frame(key, "C1", i, i, time.time_ns(), float(i * height), 0.0, 1.0, 1.0, images[i % 4])
            )
        sender.send(CoilEvent("coil_end", key, "C1", count, time.time_ns(), float(count * height), count, 0))


def _raw_sender(endpoint: str, count: int, size: int) -> None:
    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 8)
    socket.setsockopt(zmq.LINGER, 10000)
    socket.bind(endpoint)
    payloads = [np.random.default_rng(i).integers(0, 256, size, dtype=np.uint8) for i in range(4)]
    for i in range(count):
        socket.send(payloads[i % 4], copy=False)
    socket.send(b"end")
    socket.close()
    context.term()


def _time_frames(endpoint: str, count: int, width: int, height: int) -> tuple[float, int]:
    from inspection.frame import Frame
    from inspection.transport import FrameReceiver

    proc = multiprocessing.get_context("spawn").Process(
        target=_frames_sender, args=(endpoint, count, width, height)
    )
    proc.start()
    received, first, last = 0, 0.0, 0.0
    with FrameReceiver(f"connect:{endpoint}", hwm=8) as receiver:
        while True:
            message = receiver.recv(timeout_ms=60000)
            if message is None:
                raise RuntimeError(f"benchmark: frames stopped arriving on {endpoint} after {received}")
            if not isinstance(message, Frame):
                break
            received += 1
            last = time.perf_counter()
            if received == 1:
                first = last
    proc.join(30)
    return (received - 1) / (last - first), received


def _time_raw(endpoint: str, count: int, size: int) -> float:
    proc = multiprocessing.get_context("spawn").Process(target=_raw_sender, args=(endpoint, count, size))
    proc.start()
    context = zmq.Context()
    socket = context.socket(zmq.PULL)
    socket.setsockopt(zmq.RCVHWM, 8)
    socket.connect(endpoint)
    received, first, last = 0, 0.0, 0.0
    try:
        while True:
            if not socket.poll(60000):
                raise RuntimeError(f"benchmark: raw messages stopped arriving on {endpoint} after {received}")
            message = socket.recv(copy=False)
            if len(message) < size:
                break
            received += 1
            last = time.perf_counter()
            if received == 1:
                first = last
    finally:
        socket.close(linger=0)
        context.term()
    proc.join(30)
    return (received - 1) / (last - first)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _endpoint(kind: str, folder: str, name: str) -> str:
    return f"tcp://127.0.0.1:{_free_port()}" if kind == "tcp" else f"ipc://{folder}/{name}.sock"


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
    }
    with tempfile.TemporaryDirectory(prefix="steel-bench-", dir="/tmp") as folder:
        for kind in [t.strip() for t in args.transports.split(",") if t.strip()]:
            if kind not in ("tcp", "ipc"):
                raise SteelInspectError(f"--transports: expected tcp and/or ipc, got {kind!r}")
            frame_rates, raw_rates = [], []
            for trial in range(args.trials):
                # alternate which mode goes first: the machine's load drifts (other jobs share it)
                order = ("frames", "raw") if trial % 2 == 0 else ("raw", "frames")
                for mode in order:
                    endpoint = _endpoint(kind, folder, f"{mode}{trial}")
                    if mode == "frames":
                        frame_rates.append(_time_frames(endpoint, args.frames, args.width, args.height)[0])
                    else:
                        raw_rates.append(_time_raw(endpoint, args.frames, frame_bytes))
                log.info(
                    "%s trial %d: frames %.1f/s, raw %.1f/s", kind, trial + 1, frame_rates[-1], raw_rates[-1]
                )
            fps, raw = statistics.median(frame_rates), statistics.median(raw_rates)
            figures[kind] = {
                "frames_per_s": round(fps, 2),
                "mb_per_s": round(fps * frame_bytes / 1e6, 1),
                "raw_mb_per_s": round(raw * frame_bytes / 1e6, 1),
                "ratio_to_raw": round(fps / raw, 3),
                "trials_frames_per_s": [round(r, 2) for r in frame_rates],
                "trials_raw_msgs_per_s": [round(r, 2) for r in raw_rates],
                "trials_ratio": [round(f / r, 3) for f, r in zip(frame_rates, raw_rates, strict=True)],
            }
    return figures
