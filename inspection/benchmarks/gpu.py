"""The GPU check: one command a person with an NVIDIA GPU runs for about ten minutes.

``steel-inspect bench gpu --json out/gpu.json`` measures, for each provider set that starts
(TensorRT fp16, fp16 with the peak test left to CUDA, fp32, and CUDA, on the fp32 source; and the
int8 copy as registered on CUDA and TensorRT): session creation with an empty engine cache
(TensorRT builds its engine there), creation again with the cache filled, the first run of each
shape bucket (warm-up), a steady batch, the first run of a shape outside the buckets, bare Mpx/s
at batch 8 / 16 / 32 on 512-px tiles, the node assignment, and parity with the CPU fp32 reference
on validation images and on the first stage's windows of simulated frames (same detections at
the operating thresholds, largest score and box differences). Then the whole pipeline through
`bench inference`, and the engine-cache collision of two versions with the same tensor names:
built into one shared folder (the old layout) and into per-sha256 folders.

Without a GPU it reports ``"status": "no GPU"`` with the reasons (`steel-inspect doctor`), plus
what needs none: which registered versions share TensorRT's cache name, and the CPU control
(bucket padding alone, fp32 on the CPU against the unpadded run).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from inspection.arguments import non_negative_int, positive_float, positive_int

HELP = "GPU check (~10 min on a GPU): providers, engine build, Mpx/s, parity with the CPU, engine cache; 'no GPU' here"
BATCHES = (8, 16, 32)
PEAK_TEST = ("MaxPool", "Equal")  # the graph's peak test, left to CUDA (fp32) in one TensorRT fp16 variant


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--model", default=None, help="model name or version (default: the config's)")
    parser.add_argument("--images", type=positive_int, default=64, help="validation images for parity (default 64)")
    parser.add_argument("--frames", type=non_negative_int, default=8,
                        help="simulated frames whose first-stage windows are compared too (default 8)")
    parser.add_argument("--seconds", type=positive_float, default=5.0, help="time per speed figure (default 5)")
    parser.add_argument("--cache", type=Path, help="engine cache root for this run (default: a new empty folder, "
                                                   "so build times are real)")
    parser.add_argument("--skip-pipeline", action="store_true", help="leave out `bench inference`")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection import doctor
    from inspection.benchmarks._gpu_checks import cache_key_check, validation_images
    from inspection.benchmarks._line import hardware
    from inspection.config import load_config
    from inspection.detector import Detector, fp32_source
    from inspection.registry import Registry
    from inspection.shapes import ShapeBuckets

    config = load_config(args.config)
    registry = Registry(config.model.registry)
    manifest = registry.resolve(args.model or config.model.name)
    source = fp32_source(manifest) or manifest
    found = doctor.report(source, config.worker.gpu_engine_cache)
    images, origin = validation_images(source, args.images)
    result: dict[str, Any] = {"command": "steel-inspect bench gpu", "model": manifest.version,
                              "fp32_source": source.version, "hardware": hardware(), "doctor": found,
                              "engine_cache_names": cache_key_check(registry, config.worker.gpu_engine_cache),
                              "images": origin}
    buckets = ShapeBuckets(config.worker.gpu_window_px, max(BATCHES))
    cpu = Detector(source, providers="cpu")
    reference = cpu.detect(images) if images else []
    windows = _windows(config, cpu, args.frames)
    window_reference = cpu.detect(windows) if windows else []
    result["line_windows"] = f"{len(windows)} first-stage windows of {args.frames} simulated frames"
    result["cpu_bucket_control"] = {"validation_images": _cpu_control(source, buckets, images, reference),
                                    "line_windows": _cpu_control(source, buckets, windows, window_reference)}
    if not found["gpu_ready"]:
        result["status"] = "no GPU"
        result["reason"] = "; ".join(f"{p}: {found['providers'][p]['why_not'] or found['providers'][p]['session']}"
                                     for p in found["providers"] if p != "CPUExecutionProvider")
        return result
    result["status"] = "measured on GPU"
    cache = args.cache or Path(tempfile.mkdtemp(prefix="steel-inspect-engines-"))
    tiles = _tiles(config, manifest)
    matrix = {}
    for name, provider, model, fp16, exclude in _variants(found["gpu_ready"], manifest, source):
        matrix[name] = _variant(Detector, model, provider, fp16, exclude, buckets, cache / name,
                                (images, reference), (windows, window_reference), tiles, args.seconds,
                                "CUDAExecutionProvider" in found["gpu_ready"])
    result["matrix"] = matrix
    from inspection.benchmarks._gpu_collision import collision_check

    result["engine_collision"] = collision_check(registry, buckets, cache / "collision")
    if not args.skip_pipeline:
        result["pipeline"] = _pipeline(args)
    return result


def _variants(ready: list[str], manifest: Any, source: Any) -> list[tuple[str, str, Any, bool, tuple[str, ...]]]:
    trt, cuda = "TensorrtExecutionProvider", "CUDAExecutionProvider"
    out = []
    if trt in ready:
        out += [("tensorrt_fp16", trt, source, True, ()), ("tensorrt_fp16_peak_test_on_cuda", trt, source, True,
                                                          PEAK_TEST), ("tensorrt_fp32", trt, source, False, ())]
    if cuda in ready:
        out.append(("cuda_fp32", cuda, source, False, ()))
    if source is not manifest:  # the int8 copy as registered, to see what the GPU makes of it
        out += [(f"{p.split('Execution')[0].lower()}_int8_as_registered", p, manifest, True, ()) for p in ready]
    return out


def _variant(detector_cls: Any, model: Any, provider: str, fp16: bool, exclude: tuple[str, ...], buckets: Any,
             cache: Path, images: tuple[list[np.ndarray], list[Any]], windows: tuple[list[np.ndarray], list[Any]],
             tiles: np.ndarray, seconds: float, with_cuda: bool) -> dict[str, Any]:
    # TensorRT sessions list CUDA after it, as the line does, so what TensorRT leaves goes to the GPU
    providers = [provider, "CUDAExecutionProvider"] if with_cuda and provider != "CUDAExecutionProvider" else [provider]

    def open_detector() -> tuple[Any, float]:
        started = time.perf_counter()
        det = detector_cls(model, providers=providers, fp16=fp16, buckets=buckets, use_fp32_source=False,
                           engine_cache=cache, trt_exclude_ops=exclude)
        return det, time.perf_counter() - started - sum(det.warm_up_s.values())

    try:
        det, created_s = open_detector()
    except Exception as exc:  # noqa: BLE001 - one variant failing is a finding, not the end of the run
        return {"error": f"{type(exc).__name__}: {exc}"[:500]}
    if det.providers[0] != provider:
        return {"error": f"started on {det.providers[0]} instead of {provider}"}
    first_runs = dict(det.warm_up_s)
    _, cached_s = open_detector()
    size = buckets.largest
    steady = _timed(lambda: det._run(np.zeros((buckets.batch, 1, size, size), np.uint8)), seconds)
    # a side inside the TensorRT profile but no bucket: what a new window shape would cost
    odd = next((s for s in range(size - 32, buckets.sides[0], -32) if s not in buckets.sides), size)
    started = time.perf_counter()
    det._run(np.zeros((buckets.batch, 1, odd, odd), np.uint8))
    new_shape_s = time.perf_counter() - started
    bare = {}
    for batch in BATCHES:
        chunk = tiles[:batch]
        per_run = _timed(lambda chunk=chunk: det.session.run(det.outputs, {det.manifest.input_name: chunk}), seconds)
        bare[str(batch)] = round(chunk.size / 1e6 / per_run, 1)
    from inspection.benchmarks._gpu_checks import compare

    return {
        "model": model.version, "provider": provider, "fp16": fp16, "left_to_cuda": list(exclude),
        "providers": det.providers,
        "node_assignment": det.nodes,
        "session_creation_empty_cache_s": round(created_s, 2), "session_creation_cached_s": round(cached_s, 2),
        "first_run_per_shape_s": first_runs, "steady_batch_ms": round(steady * 1000, 2),
        "steady_shape": [buckets.batch, size, size], "new_shape": [buckets.batch, odd, odd],
        "new_shape_first_run_s": round(new_shape_s, 3), "bare_mpx_per_s_by_batch": bare,
        "parity_vs_cpu_fp32": {"validation_images": compare(images[1], det.detect(images[0])) if images[0] else None,
                               "line_windows": compare(windows[1], det.detect(windows[0])) if windows[0] else None},
    }


def _timed(step: Any, seconds: float) -> float:
    """Median seconds per call of `step` over about `seconds`."""
    step()
    times, deadline = [], time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 3:
        started = time.perf_counter()
        step()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def _tiles(config: Any, manifest: Any) -> np.ndarray:
    """Real strip pixels for the bare figures: 512-px tiles of simulated frames, [32, 1, 512, 512]."""
    from inspection.benchmarks._line import simulated_frames

    frames, _ = simulated_frames(config, 4, seed=99)
    tiles = [f.pixels[y:y + 512, x:x + 512] for f in frames for y in range(0, f.height - 511, 512)
             for x in range(0, f.width - 511, 512)]
    while len(tiles) < max(BATCHES):
        tiles += tiles
    return np.stack(tiles[:max(BATCHES)])[:, None].astype(np.uint8)


def _windows(config: Any, detector: Any, frames: int) -> list[np.ndarray]:
    """The windows the worker's first stage cuts from simulated frames: what the model sees on the line."""
    if frames < 1:
        return []
    from inspection.benchmarks._line import simulated_frames
    from inspection.frame_inspector import FrameInspector, to_uint8
    from inspection.worker import inspector_settings

    planner = FrameInspector(detector, inspector_settings(config))
    out = []
    for frame in simulated_frames(config, frames, seed=99)[0]:
        image = to_uint8(frame.pixels, config.worker.uint16_shift)
        out += [image[t.y:t.y + t.height, t.x:t.x + t.width] for t in planner.plan(image)[0]]
    return out


def _cpu_control(source: Any, buckets: Any, images: list[np.ndarray], reference: list[Any]) -> dict[str, Any] | None:
    """Bucket padding alone: the fp32 source on the CPU with and without padding to the buckets."""
    if not images:
        return None
    from dataclasses import replace

    from inspection.benchmarks._gpu_checks import compare
    from inspection.detector import Detector

    padded = Detector(source, providers="cpu", buckets=replace(buckets, batch=8, always=True))
    return compare(reference, padded.detect(images))


def _pipeline(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.benchmarks import inference

    figures = argparse.Namespace(config=args.config, model=args.model, frames=12, seconds=args.seconds,
                                 offered_mpx_per_s=[40.0, 590.0], pipeline_seconds=30.0, workers=1, threads=None,
                                 skip_pipeline=False)
    return inference.run(figures)
