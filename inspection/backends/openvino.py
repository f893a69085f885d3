"""OpenVINO on the CPU: the registered model.onnx, read as it is (pre- and post-processing are in
the graph; no conversion step), behind the backends' interface (`inspection.backends`).

- Shapes: one compiled model with the graph's dynamic input [N, 1, H, W]. The first stage hands
  over windows of 256 px up to the whole frame in 128-px steps, in batches of 1..64: a compiled
  model per shape would compile again on most batches, and fixed size classes (the GPU path's
  buckets) make the model see padding and overlapping views. A new shape costs one slower first
  run (the plugin prepares its kernels for it and keeps them), never a compile
  (`tests/test_openvino.py::test_new_window_sizes_and_batches_do_not_recompile`). Not measured
  here: whether static shapes per size class would run faster on OpenVINO.
- Disk cache: OpenVINO's CACHE_DIR, one folder per model sha256 beside the TensorRT engines
  (`inspection.providers.cache_root`): a worker that starts again imports the compiled model
  instead of compiling it. Compiling holds the folder's lock, so workers starting together
  compile once and the others import.
- Threads: `threads` is INFERENCE_NUM_THREADS (0: OpenVINO's default, one per core); one stream
  (the LATENCY hint), since a worker runs one batch at a time and scales by process.
- No CPU pinning: OpenVINO pins its threads by default, and it cannot see the other workers of the
  machine, so two single-threaded workers could be pinned to the same core.
- fp32 arithmetic where the model is fp32 (INFERENCE_PRECISION_HINT f32): on CPUs with bf16 or
  AMX units OpenVINO would otherwise run in bf16 and results would differ from ONNX Runtime's.
- int8 copies (`steel-inspect quantize`, QDQ) are read, but OpenVINO's results for them differ from
  the file's own arithmetic (`inspection.backends.INT8_ON_OPENVINO`), so "auto" leaves them to
  ONNX Runtime, unless the copy carries its own OpenVINO quantization (an IR under ``openvino/``,
  `inspection.manifest.OpenVinoCopy`): then this backend compiles that IR instead of model.onnx, and
  its disk cache is keyed by the IR's sha256.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from inspection.errors import SteelInspectError
from inspection.providers import locked, prepare_engine_cache

log = logging.getLogger(__name__)

OPENVINO = "OpenVINO CPU"  # what `Detector.providers` names when this backend runs
DEVICE = "CPU"
_core: ov.Core | None = None


class OpenVinoError(SteelInspectError):
    """OpenVINO cannot read or compile a model file."""


def core() -> ov.Core:
    """One OpenVINO Core per process (it holds the loaded plugins)."""
    global _core
    if _core is None:
        _core = ov.Core()
    return _core


def settings(threads: int, cache: Path | None) -> dict[str, Any]:
    """The CPU plugin's properties for one compiled model (see the module docstring)."""
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": False,
                              "INFERENCE_PRECISION_HINT": "f32"}
    if threads > 0:
        config["INFERENCE_NUM_THREADS"] = int(threads)
    if cache is not None:
        config["CACHE_DIR"] = str(cache)
    return config


class OpenVinoBackend:
    """One model compiled by OpenVINO's CPU plugin; `compiles` counts compilations (one per backend)."""

    def __init__(self, model_path: Path, sha256: str, threads: int = 0, cache_root: Path | None = None) -> None:
        self.model_path = Path(model_path)
        self.sha256 = sha256  # the file compiled: records name it (`Detector.file_sha256`)
        self.cache: Path | None = None
        if cache_root is not None:
            try:
                self.cache = prepare_engine_cache(cache_root, sha256, "openvino")
            except SteelInspectError as exc:  # a cache only saves start time: run without one
                log.warning("OpenVINO compiles %s without a disk cache: %s", self.model_path, exc)
        started = time.perf_counter()
        with locked(self.cache):
            try:
                self.compiled = core().compile_model(str(self.model_path), DEVICE, settings(threads, self.cache))
            except RuntimeError as exc:
                raise OpenVinoError(f"{self.model_path}: OpenVINO cannot compile the model: {_reason(exc)}"[:500]) \
                    from None
        self.compile_s = round(time.perf_counter() - started, 3)
        self.compiles = 1
        self.from_cache = bool(self.compiled.get_property("LOADED_FROM_CACHE"))
        self.request = self.compiled.create_infer_request()
        self.providers = [OPENVINO]
        self.inputs = {port.get_any_name(): port.get_element_type().to_dtype().name for port in self.compiled.inputs}
        self.outputs = [port.get_any_name() for port in self.compiled.outputs]
        cached = "from its disk cache" if self.from_cache else f"cached in {self.cache}" if self.cache else "no cache"
        log.info("OpenVINO %s compiled %s in %.2f s (%s; %s threads)", ov.__version__.split("-")[0], self.model_path,
                 self.compile_s, cached, self.compiled.get_property("INFERENCE_NUM_THREADS"))

    def run(self, feed: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        # share_inputs: the batch is read in place; outputs are copies, since the request reuses its buffers
        result = self.request.infer(feed, share_inputs=True)
        return [result[name] for name in names]


def _reason(exc: Exception) -> str:
    """OpenVINO's message without its "Exception from src/...:NN:" call-stack lines."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("Exception from ")]
    return " ".join(said) or (lines[-1] if lines else type(exc).__name__)
