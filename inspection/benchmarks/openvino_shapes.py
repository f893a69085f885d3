"""OpenVINO: how to handle the first stage's many window shapes, measured on the worker's own batches.

The worker hands the model windows of 256 px up to the whole frame in 128-px steps, grouped by
shape, in batches of 1..64 (`FrameInspector`). Four ways for OpenVINO's CPU plugin, each run over
the same batches three times (``cold_pass_s`` includes every first-time cost, ``warm_pass_s`` the
second pass, ``third_pass_s`` the third, by when (d) has compiled what it promotes) after ONNX
Runtime on the same batches as the reference:

- ``a_dynamic``: one compiled model with the graph's dynamic input (what the runtime does);
- ``b_static_lru``: a compiled model per (batch, H, W), the last `--lru` of them kept;
- ``c_buckets``: fixed size classes (`inspection.shapes`: windows padded to 256/384/512 px, larger
  ones cut into overlapping views, batches padded to 16), one compiled model per class, compiled
  up front (``compile_s``); its pixels include the padding and the views' overlap;
- ``d_dynamic_then_static``: (a), plus a static model for a shape once it has run `--promote-after`
  times (at most `--lru` kept).

``model_mpx_per_s`` = window pixels (unpadded) / warm pass time. Compile times are with an empty
disk cache; ``a_dynamic.compile_from_disk_cache_s`` is a restart's.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from inspection.benchmarks._line import hardware, simulated_frames
from inspection.errors import SteelInspectError

HELP = "OpenVINO: dynamic shapes vs a compiled model per shape vs fixed size classes, on the worker's windows"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="line config (default: the demo line)")
    parser.add_argument("--model", default=None, help="model name or version (default: the config's)")
    parser.add_argument("--frames", type=int, default=16, help="simulated frames (default 16)")
    parser.add_argument("--batch-frames", type=int, default=None,
                        help="frames per worker batch (default: the config's)")
    parser.add_argument("--threads", type=int, default=None, help="threads (default: the config's)")
    parser.add_argument("--lru", type=int, default=8, help="static compiled models kept (b and d)")
    parser.add_argument("--promote-after", type=int, default=3, help="runs of a shape before d compiles it")


def run(args: argparse.Namespace) -> dict[str, Any]:
    from inspection.backends.openvino import core, settings
    from inspection.config import load_config
    from inspection.detector import Detector
    from inspection.extras import require_extra
    from inspection.registry import Registry

    require_extra("openvino", "bench openvino_shapes", "openvino")
    if args.frames < 1 or args.lru < 1 or args.promote_after < 1:
        raise SteelInspectError("bench openvino_shapes: expected --frames, --lru and --promote-after >= 1")
    config = load_config(args.config)
    threads = config.worker.intra_op_threads if args.threads is None else args.threads
    manifest = Registry(config.model.registry).resolve(args.model or config.model.name)
    reference = Detector(manifest, providers="cpu", intra_op_threads=threads)
    batches = _worker_batches(config, reference, args.frames, args.batch_frames or config.worker.batch_size)
    mpx = sum(b.size for b in batches) / 1e6
    result: dict[str, Any] = {
        "model": manifest.version, "frames": args.frames, "threads": threads or "default", "batches": len(batches),
        "distinct_shapes": len({b.shape for b in batches}), "window_mpx": round(mpx, 2), "hardware": hardware(),
        "command": "steel-inspect bench openvino_shapes"}
    name = manifest.input_name
    result["onnxruntime"] = _passes(batches, lambda b: reference.session.run(None, {name: b}), mpx)
    ov = core()
    with tempfile.TemporaryDirectory(prefix="ov-shapes-") as tmp:
        def compiled(model: Any, folder: str) -> Any:
            return ov.compile_model(model, "CPU", settings(threads, Path(tmp) / folder)).create_infer_request()

        started = time.perf_counter()
        dynamic = compiled(str(manifest.model_path), "a")
        compile_s = time.perf_counter() - started
        started = time.perf_counter()
        compiled(str(manifest.model_path), "a")
        restart_s = time.perf_counter() - started
        result["a_dynamic"] = {**_passes(batches, lambda b: dynamic.infer({0: b}), mpx),
                               "compile_s": round(compile_s, 2), "compile_from_disk_cache_s": round(restart_s, 2)}
        graph = ov.read_model(str(manifest.model_path))
        static = _StaticModels(lambda shape: compiled(_reshaped(graph, name, shape), "b"), args.lru)
        result["b_static_lru"] = {**_passes(batches, static.run, mpx), **static.figures()}
        result["c_buckets"] = _buckets(batches, lambda shape: compiled(_reshaped(graph, name, shape), "c"), mpx)
        hybrid = _StaticModels(lambda shape: compiled(_reshaped(graph, name, shape), "d"), args.lru,
                               fallback=dynamic, promote_after=args.promote_after)
        result["d_dynamic_then_static"] = {**_passes(batches, hybrid.run, mpx), **hybrid.figures()}
    return result


def _worker_batches(config: Any, detector: Any, frames: int, per_batch: int) -> list[np.ndarray]:
    """The model inputs a worker builds: windows of `per_batch` frames, padded to the size multiple,
    grouped by shape, at most 64 a batch (as `Detector.detect` does with the worker's max_batch)."""
    from inspection.frame_inspector import FrameInspector
    from inspection.worker import inspector_settings

    images = [f.pixels for f in simulated_frames(config, frames, seed=99)[0]]
    inspector = FrameInspector(detector, inspector_settings(config))
    batches = []
    for start in range(0, len(images), per_batch):
        by_shape: dict[tuple[int, ...], list[np.ndarray]] = collections.defaultdict(list)
        for image in images[start:start + per_batch]:
            for t in inspector.plan(image)[0]:
                window = detector._pad(image[t.y:t.y + t.height, t.x:t.x + t.width])
                by_shape[window.shape].append(window)
        batches += [np.stack(group[i:i + 64])[:, None] for group in by_shape.values() for i in range(0, len(group), 64)]
    return batches


def _passes(batches: list[np.ndarray], run: Callable[[np.ndarray], Any], mpx: float) -> dict[str, float]:
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        for batch in batches:
            run(batch)
        timings.append(time.perf_counter() - started)
    return {"cold_pass_s": round(timings[0], 2), "warm_pass_s": round(timings[1], 2),
            "third_pass_s": round(timings[2], 2), "model_mpx_per_s": round(mpx / timings[1], 2),
            "third_pass_mpx_per_s": round(mpx / timings[2], 2)}


def _reshaped(graph: Any, name: str, shape: tuple[int, ...]) -> Any:
    model = graph.clone()
    model.reshape({name: list(shape)})
    return model


class _StaticModels:
    """Compiled models per input shape, least recently used dropped; with a `fallback`, a shape runs
    there until it has run `promote_after` times."""

    def __init__(self, compile_for: Callable[[tuple[int, ...]], Any], keep: int, fallback: Any = None,
                 promote_after: int = 1) -> None:
        self.compile_for, self.keep, self.fallback, self.promote_after = compile_for, keep, fallback, promote_after
        self.models: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        self.seen: collections.Counter[tuple[int, ...]] = collections.Counter()
        self.compiles, self.compile_s = 0, 0.0

    def run(self, batch: np.ndarray) -> Any:
        shape = batch.shape
        self.seen[shape] += 1
        if shape not in self.models:
            if self.fallback is not None and self.seen[shape] < self.promote_after:
                return self.fallback.infer({0: batch})
            started = time.perf_counter()
            self.models[shape] = self.compile_for(shape)
            self.compiles += 1
            self.compile_s += time.perf_counter() - started
            if len(self.models) > self.keep:
                self.models.popitem(last=False)
        self.models.move_to_end(shape)
        return self.models[shape].infer({0: batch})

    def figures(self) -> dict[str, Any]:
        return {"compiles": self.compiles, "compile_s_total": round(self.compile_s, 2)}


def _buckets(batches: list[np.ndarray], compile_for: Callable[[tuple[int, ...]], Any], mpx: float) -> dict[str, Any]:
    """Fixed size classes: every window padded to a class (or cut into views of the largest), full batches."""
    from inspection.shapes import ShapeBuckets, pad_to

    buckets = ShapeBuckets()
    started = time.perf_counter()
    models = {shape: compile_for((buckets.batch, 1, *shape)) for shape in buckets.shapes}
    compile_s = time.perf_counter() - started
    views: dict[tuple[int, int], list[np.ndarray]] = collections.defaultdict(list)
    for batch in batches:
        for image in batch[:, 0]:
            tiles = [None] if buckets.shape_for(*image.shape) else buckets.split(*image.shape)
            for t in tiles:
                view = image if t is None else image[t.y:t.y + t.height, t.x:t.x + t.width]
                views[buckets.shape_for(*view.shape)].append(view)  # type: ignore[index]
    padded = []
    for (height, width), members in views.items():
        for i in range(0, len(members), buckets.batch):
            batch = np.zeros((buckets.batch, 1, height, width), np.uint8)
            for row, view in enumerate(members[i:i + buckets.batch]):
                batch[row, 0] = pad_to(view, height, width)
            padded.append(batch)
    figures = _passes(padded, lambda b: models[b.shape[2:]].infer({0: b}), mpx)
    return {**figures, "compile_s": round(compile_s, 2), "classes": len(models),
            "model_mpx_with_padding": round(sum(b.size for b in padded) / 1e6, 2)}
