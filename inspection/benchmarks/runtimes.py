"""ONNX Runtime against OpenVINO on the CPU, model by model and shape by shape, side by side.

For an int8 model and its fp32 source (default: the config's model and `quantization.source_version`),
each runtime (`Detector(providers="cpu")` and `"openvino"`) runs the same inputs: 512-px tiles of
simulator frames at batch 1 and 4, and whole frames at batch 1. Every case alternates the four
(runtime, model) pairs in `--rounds` rounds and keeps each pair's best round: load on this machine
changes from minute to minute, so only figures measured side by side compare. Figures in Mpx/s;
ratios OpenVINO / ONNX Runtime per model, and OpenVINO fp32 / ONNX Runtime int8 (what "auto" runs
for each). `--threads` as the worker's `intra_op_threads` (0: each runtime's default).

(OpenVINO runs the int8 copy here only because it is asked to by name: its results differ from
the file's, so "auto" leaves int8 copies to ONNX Runtime; `inspection.backends`.)

``start_s``: seconds until each detector is ready, OpenVINO with an empty compiled-model cache and
then from it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from inspection.benchmarks._line import hardware, simulated_frames
from inspection.benchmarks._runtimes import measure
from inspection.errors import SteelInspectError

HELP = "ONNX Runtime vs OpenVINO on the CPU: int8 and fp32, 512-px tiles at batch 1 and 4, whole frames"
RUNTIMES = {"onnxruntime": "cpu", "openvino": "openvino"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--model", default=None, help="an int8 model (default: the config's)")
    parser.add_argument("--frames", type=int, default=2, help="simulator frames cut into tiles (default 2)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: the config's)")
    parser.add_argument("--seconds", type=float, default=1.0, help="time per pair and round (default 1)")
    parser.add_argument("--rounds", type=int, default=3)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.config import load_config
    from inspection.detector import Detector
    from inspection.extras import require_extra
    from inspection.registry import Registry

    require_extra("openvino", "bench runtimes", "openvino")
    if args.frames < 1 or args.rounds < 1 or args.seconds <= 0:
        raise SteelInspectError("bench runtimes: expected --frames >= 1, --rounds >= 1 and --seconds > 0")
    config = load_config(args.config)
    threads = config.worker.intra_op_threads if args.threads is None else args.threads
    registry = Registry(config.model.registry)
    int8 = registry.resolve(args.model or config.model.name)
    source = (int8.data.get("quantization") or {}).get("source_version")
    if not source:
        raise SteelInspectError(f"bench runtimes: {int8.version} is no int8 copy (no quantization.source_version)")
    models = {"int8": int8, "fp32": registry.resolve(source)}
    logging.getLogger("inspection.backends").setLevel(logging.ERROR)  # the int8-on-OpenVINO warning, 2 x rounds
    pairs = {f"{runtime}_{precision}": Detector(manifest, providers=setting, intra_op_threads=threads,
                                                engine_cache=config.worker.gpu_engine_cache)
             for precision, manifest in models.items() for runtime, setting in RUNTIMES.items()}
    frames = [f.pixels for f in simulated_frames(config, args.frames, seed=99)[0]]
    tile = 512
    tiles = [f[y:y + tile, x:x + tile] for f in frames for y in range(0, f.shape[0] - tile + 1, tile)
             for x in range(0, f.shape[1] - tile + 1, tile)]  # whole tiles only: one shape
    cases = {"tiles_512_batch_1": (tiles, 1), "tiles_512_batch_4": (tiles, 4), "frame_batch_1": (frames, 1)}
    figures: dict[str, Any] = {"start_s": _start_times(models, threads)}
    for case, (images, batch) in cases.items():
        mpx = sum(i.size for i in images) / 1e6
        best = dict.fromkeys(pairs, 0.0)
        for _ in range(args.rounds):
            for name, detector in pairs.items():
                detector.max_batch = batch
                rate = measure(lambda d=detector, i=images: d.detect(i, min_score=1.0), mpx, args.seconds)
                best[name] = max(best[name], rate)
        figures[case] = {**{k: round(v, 2) for k, v in best.items()},
                         "openvino_to_onnxruntime_int8": round(best["openvino_int8"] / best["onnxruntime_int8"], 3),
                         "openvino_to_onnxruntime_fp32": round(best["openvino_fp32"] / best["onnxruntime_fp32"], 3),
                         "openvino_fp32_to_onnxruntime_int8":
                             round(best["openvino_fp32"] / best["onnxruntime_int8"], 3)}
    return {"models": {k: m.version for k, m in models.items()}, "threads": threads or "runtime default",
            "frame": list(frames[0].shape), "tiles": len(tiles), "rounds": args.rounds, "seconds": args.seconds,
            "mpx_per_s": figures, "hardware": hardware(), "command": "steel-inspect bench runtimes"}


def _start_times(models: dict[str, Any], threads: int) -> dict[str, Any]:
    """Seconds to a ready detector: ONNX Runtime's session; OpenVINO compiling into an empty cache
    folder, then importing from it (a worker's restart)."""
    import tempfile
    import time

    from inspection.detector import Detector

    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="ov-start-") as cache:
        for precision, manifest in models.items():
            timings = {}
            for name, setting in (("onnxruntime", "cpu"), ("openvino_compile", "openvino"),
                                  ("openvino_from_cache", "openvino")):
                started = time.perf_counter()
                Detector(manifest, providers=setting, intra_op_threads=threads, engine_cache=Path(cache))
                timings[name] = round(time.perf_counter() - started, 3)
            out[precision] = timings
    return out
