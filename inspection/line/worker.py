"""The inference worker process: cameras' frames in (PULL), results to the recorder (PUSH).

The compute is `inspection.worker.InferenceWorker` (batching, model slots, hot reload); this module
is the process around it: config, signals, sockets, health reports, drain, close. It connects to
the cameras only once its model is loaded (on a GPU: warmed up on every input shape, its engines
built), so it takes frames only when it can inspect them, then touches `ready_path` so the
supervisor knows. On a GPU, worker-N uses GPU N-1 unless `worker.gpu_device` names one.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any

from inspection.line.process import StopFlag

log = logging.getLogger(__name__)


def main(config_path: str | None, config_overrides: dict[str, Any] | None, name: str, summary_path: str | None = None,
         ready_path: str | None = None, drain_s: float = 1.0) -> int:
    """Run one worker until stopped and drained (its sockets quiet for `drain_s`)."""
    from inspection import curve as curves
    from inspection.config import load_config, log_config
    from inspection.records.grading import load_rules
    from inspection.registry import Registry
    from inspection.results import WorkerStatus
    from inspection.security import curve_for
    from inspection.transport import FrameReceiver, ResultSender, peer_endpoint
    from inspection.worker import InferenceWorker

    stop = StopFlag()
    config = _on_device(load_config(config_path, config_overrides), name)
    log_config(config, log)
    w = config.worker
    # Keys are read at start, before the model loads: a missing file stops the worker at once.
    cameras = [peer_endpoint(c.endpoint) for c in config.cameras]
    frames_curve = curve_for(config, "frames", "worker", cameras)
    results_curve = curve_for(config, "results", "worker", [peer_endpoint(config.endpoints.results)])
    results = ResultSender(config.endpoints.results, hwm=w.results_hwm, linger_ms=w.results_linger_ms,
                           curve=results_curve)
    receiver: FrameReceiver | None = None
    last_message = last_report = time.monotonic()
    host, pid = socket.gethostname(), os.getpid()

    def refused() -> dict[str, int]:
        # Clients refused for unknown keys: only a worker that binds (endpoints turned round) has any.
        return {"curve_refused": curves.refused_total()} if frames_curve or results_curve else {}

    def receive(timeout: float) -> Any:
        nonlocal last_message, last_report
        message = receiver.recv(timeout_ms=max(1, int(timeout * 1000))) if receiver is not None else None
        now = time.monotonic()
        if message is not None:
            last_message = now
        if now - last_report >= w.heartbeat_s:  # health for the console, through the recorder
            last_report = now
            stats = {**dataclasses.asdict(worker.stats), "malformed": receiver.malformed if receiver else 0,
                     "status": "ok", **refused()}
            results.send(WorkerStatus(name, host, pid, time.time_ns(), stats))
        return message

    def send(message: Any) -> None:
        # Blocking (`ResultSender`): if the recorder is behind, this worker waits, its queue fills
        # and live cameras count drops; nothing is lost silently.
        nonlocal last_message
        results.send(message)
        last_message = time.monotonic()  # drain time counts from the end of work, not from the last receive

    worker = InferenceWorker(config, Registry(config.model.registry), receive, send,
                             load_rules(config.records.rules).severity)
    try:
        slot = worker.load(config.type)  # a bad model fails here, at start, not on the first frame
        receiver = FrameReceiver(cameras, hwm=max(c.send_hwm for c in config.cameras), curve=frames_curve,
                                 report_broken=True)
        warm = slot.detector.warm_up_s
        log.info("%s ready: model %s on %s%s", name, slot.manifest.version, slot.detector.providers,
                 f", warmed up on {len(warm)} shapes in {sum(warm.values()):.1f} s" if warm else "")
        if ready_path:
            Path(ready_path).touch()
        last_message = time.monotonic()
        worker.run(lambda: stop.is_set() and time.monotonic() - last_message > drain_s)
    finally:
        malformed = receiver.malformed if receiver is not None else 0
        if receiver is not None:
            receiver.close()
        results.close()
        summary = {**dataclasses.asdict(worker.stats), "malformed": malformed, **refused()}
        log.info("%s done: %s", name, json.dumps(summary, sort_keys=True))
        if summary_path:
            Path(summary_path).write_text(json.dumps(summary, default=str), encoding="utf-8")
    return 0


def _on_device(config: Any, name: str) -> Any:
    """The config with `worker.gpu_device` resolved for this worker: -1 means worker-N on GPU N-1."""
    from inspection import gpu

    w = config.worker
    if w.gpu_device >= 0 or w.providers == "cpu":
        return config
    devices = gpu.cuda_devices().devices  # a ctypes query of the driver: instant, and quiet without one
    device = gpu.device_for_worker(name, -1, len(devices))
    if devices and device != gpu.device_for_worker(name, -1, 1 << 30):
        log.warning("%s shares GPU %d with another worker: %d GPU(s) here; one worker per GPU is the default",
                    name, device, len(devices))
    return dataclasses.replace(config, worker=dataclasses.replace(w, gpu_device=device))
