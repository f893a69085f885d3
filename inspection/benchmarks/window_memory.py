"""A worker's memory on the first stage's windows, per way of running the model on a CPU.

Each setting runs in a fresh process: the line's model on the worker's CPU runtime, fed the line's
simulated frames two at a time (the demo worker's batch) through the worker's own path (first stage,
windows, model, merge, crops: `FrameInspector`). Reported per setting: the resident set after
``--warmup-frames`` frames and at the end (``growth`` = end / after warm-up - 1, the figure `bench soak`
calls ``rss_growth_ratio``), the peak, and CPU seconds per model megapixel (rough on a shared machine;
`bench inference` compares throughput side by side: ``inspector_by_cpu_batch``).

Settings (``[worker] cpu_batch`` / ``cpu_warm_up``, see `inspection.cpu_runs`): ``batched`` (16
windows of one shape per run, no warm-up: how the worker ran before), ``one_window`` (one per run, no
warm-up), ``one_window_warm`` (one per run, every window shape run twice before the first frame: the
default).
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from inspection.arguments import positive_int

HELP = "worker memory growth on the first stage's windows, one fresh process per way of running the CPU model"
SETTINGS = {"batched": (16, False), "one_window": (1, False), "one_window_warm": (1, True)}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--frames", type=positive_int, default=240, help="simulated frames per setting (default 240)")
    parser.add_argument("--warmup-frames", type=positive_int, default=20,
                        help="frames before the growth counts, as `bench soak` (default 20)")
    parser.add_argument("--settings", nargs="+", choices=tuple(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seed", type=positive_int, default=7, help="simulator seed (default 7)")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.benchmarks._line import hardware

    context = multiprocessing.get_context("spawn")  # a process of its own: its resident set is the setting's
    out: dict[str, Any] = {"frames": args.frames, "warmup_frames": args.warmup_frames, "hardware": hardware()}
    with context.Pool(1, maxtasksperchild=1) as pool:
        for name in args.settings:
            out[name] = pool.apply(measure, (str(args.config) if args.config else None, name, args.frames,
                                             args.warmup_frames, args.seed))
    return out


def measure(config_path: str | None, setting: str, frames: int, warmup_frames: int, seed: int) -> dict[str, Any]:
    """One setting, in this (fresh) process."""
    from cameras import open_source
    from inspection.config import load_config
    from inspection.cpu_runs import model_shapes
    from inspection.detector import Detector
    from inspection.frame import Frame
    from inspection.frame_inspector import FrameInspector
    from inspection.registry import Registry
    from inspection.transport import tune_malloc_for_frames
    from inspection.worker import inspector_settings

    tune_malloc_for_frames()  # the worker's allocator settings (its frame receiver sets them)
    config = load_config(config_path)
    batch, warm = SETTINGS[setting]
    settings = inspector_settings(config)
    w = config.worker
    detector = Detector(Registry(config.model.registry).resolve(config.model.name), providers=w.providers,
                        intra_op_threads=w.intra_op_threads, max_batch=batch)
    warm_up_s = None
    if warm:
        shapes = model_shapes(set().union(*(c.frame_shapes for c in config.cameras)), first_stage=w.first_stage,
                              tile_px=w.tile_px, window_min_px=settings.window_min_px)
        warm_up_s = round(detector.warm_up_cpu(shapes), 1)
    inspector = FrameInspector(detector, settings)
    rss_after_warmup, seen, cpu_s, model_px, pending = None, 0, 0.0, 0, []
    with tempfile.TemporaryDirectory() as tmp, open_source(config, config.cameras[0], realtime=False, seed=seed,
                                                           ground_truth=Path(tmp) / "truth.jsonl") as source:
        for message in source:
            if not isinstance(message, Frame):
                continue
            pending.append(message)
            if len(pending) < 2:
                continue
            started = time.process_time()
            results = inspector.inspect(pending)
            cpu_s += time.process_time() - started
            model_px += sum(r.model_px for r in results)
            seen, pending = seen + len(pending), []
            if rss_after_warmup is None and seen >= warmup_frames:
                rss_after_warmup = _rss_mb()
            if seen >= frames:
                break
    end = _rss_mb()
    return {"cpu_batch": batch, "cpu_warm_up": warm, "warm_up_s": warm_up_s, "providers": detector.providers,
            "rss_mb_after_warmup": round(rss_after_warmup or end), "rss_mb_end": round(end),
            "growth": round(end / rss_after_warmup - 1, 3) if rss_after_warmup else None,
            "peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "frames": seen, "model_mpx": round(model_px / 1e6, 1), "cpu_s": round(cpu_s, 1),
            "model_mpx_per_cpu_s": round(model_px / 1e6 / cpu_s, 2) if cpu_s else None}


def _rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0
