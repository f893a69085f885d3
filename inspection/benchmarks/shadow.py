"""What shadow mode costs a worker: the same frames with the shadow off and at each share, side by side.

The worker's compute path (`worker.InferenceWorker`: batching, first stage, the active model, merge,
crops, then the shadow model on the chosen frames, comparison and disagreement crops) runs in-process
on simulated frames of the line (real defects of the dataset's split pasted in), once per setting
and round, the settings alternating within each round so that the machine's load falls on all of
them alike; the best round of each counts. Sockets and the recorder are left out: they carry a
``shadow_result`` message per chosen frame, a few hundred bytes plus the disagreements' crops.

Per setting: ``cpu_ms_per_frame`` (the process's CPU time over all frames, best round) and its
``cpu_ratio_to_off``, the headline on a shared machine, where wall time mostly measures the other
jobs (run it with ``--threads 1``: ONNX Runtime's idle threads spin, which CPU time would count);
``ms_per_frame`` and ``ratio_to_off`` (wall time, what the line pays on a machine of its own),
``shadow_share_of_time`` (the worker's own ``shadow_s`` / (``inspect_s`` + ``shadow_s``)),
``shadow_ms_per_shadowed_frame`` and what it found (``shadow_frames``, ``disagreements``). The
active model's results of a batch are sent before its shadow runs, so the cost shows as less
throughput, not as later PLC messages for the frames already inspected.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path
from typing import Any

from inspection.arguments import non_negative_float, non_negative_int, positive_int, unit_float
from inspection.benchmarks._line import BENCH_SIMULATOR, hardware, simulated_frames
from inspection.errors import SteelInspectError

HELP = "shadow mode's cost: worker ms per frame with the shadow model off and at each share, side by side"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--shadow", default=None,
                        help="the shadow model (default: the registry's shadow for the line type)")
    parser.add_argument("--shares", type=unit_float, nargs="+", default=[0.25, 1.0],
                        help="shadow shares measured beside the shadow off (default 0.25 1.0)")
    parser.add_argument("--frames", type=positive_int, default=12, help="simulated frames of the first camera")
    parser.add_argument("--rounds", type=positive_int, default=3, help="alternating rounds, best of each (default 3)")
    parser.add_argument("--defects-per-100m", type=non_negative_float, default=40.0)
    parser.add_argument("--seed", type=non_negative_int, default=11)
    parser.add_argument("--threads", type=non_negative_int, default=None,
                        help="intra-op threads per model (default: the config's)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.config import load_config
    from inspection.registry import Registry

    overrides: dict[str, Any] = {"simulator.defects_per_100m": args.defects_per_100m, **BENCH_SIMULATOR}
    if args.threads is not None:
        overrides["worker.intra_op_threads"] = args.threads
    config = load_config(args.config, overrides)
    registry = Registry(config.model.registry)
    shadow = args.shadow or registry.shadow(config.type)
    if not shadow:
        raise SteelInspectError(f"no shadow model: give --shadow VERSION or set one with `steel-inspect models "
                                f"shadow VERSION` ({config.type})")
    shadow_version = registry.resolve(shadow).version
    frames, _ = simulated_frames(config, args.frames, seed=args.seed)
    settings = {"off": dataclasses.replace(config.model, shadow="off")}
    for share in args.shares:
        settings[f"share {share:g}"] = dataclasses.replace(config.model, shadow=shadow, shadow_share=share)
    workers = {name: _worker(dataclasses.replace(config, model=model), registry) for name, model in settings.items()}
    best: dict[str, float] = dict.fromkeys(workers, float("inf"))
    cpu: dict[str, float] = dict.fromkeys(workers, float("inf"))
    for _ in range(args.rounds):
        for name, worker in workers.items():
            wall, used = _one_pass(worker, frames, config.worker.batch_size)
            best[name], cpu[name] = min(best[name], wall), min(cpu[name], used)
    passes = args.rounds
    figures: dict[str, Any] = {}
    for name, worker in workers.items():
        s = worker.stats
        figures[name] = {
            "cpu_ms_per_frame": round(cpu[name] * 1000 / len(frames), 1),
            "cpu_ratio_to_off": round(cpu[name] / cpu["off"], 3),
            "ms_per_frame": round(best[name] * 1000 / len(frames), 1),
            "ratio_to_off": round(best[name] / best["off"], 3),
            "shadow_frames": s.shadow_frames // passes,
            "shadow_share_of_time": round(s.shadow_s / max(s.inspect_s + s.shadow_s, 1e-9), 3),
            "shadow_ms_per_shadowed_frame": round(s.shadow_s * 1000 / s.shadow_frames, 1) if s.shadow_frames else None,
            "disagreements": s.shadow_disagreements // passes,
            "shadow_failed": s.shadow_failed,
        }
    frame_px = frames[0].pixels.size
    return {"active": workers["off"].stats.models.get(config.type), "shadow": shadow_version,
            "frames": len(frames), "frame": list(frames[0].pixels.shape), "rounds": args.rounds,
            "batch_size": config.worker.batch_size, "providers": config.worker.providers,
            "intra_op_threads": config.worker.intra_op_threads or "runtime default",
            "off_mpx_per_s": round(frame_px * len(frames) / best["off"] / 1e6, 2), "settings": figures,
            "basis": "best of the alternating rounds (wall and process CPU time separately); worker compute path "
                     "in-process, no sockets",
            "hardware": hardware(), "command": "steel-inspect bench shadow"}


def _worker(config: Any, registry: Any) -> Any:
    from inspection.worker import InferenceWorker

    worker = InferenceWorker(config, registry, lambda timeout: None, lambda message: None)
    worker.load(config.type)  # models loaded (and the shadow's) before anything is timed
    return worker


def _one_pass(worker: Any, frames: list[Any], batch_size: int) -> tuple[float, float]:
    """Wall and CPU seconds for the worker to inspect `frames` in batches of `batch_size` (results discarded)."""
    started, cpu = time.perf_counter(), time.process_time()
    for start in range(0, len(frames), batch_size):
        for frame in frames[start:start + batch_size]:
            worker.handle(frame)
        worker.flush()
    return time.perf_counter() - started, time.process_time() - cpu
