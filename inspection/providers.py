"""Session and provider settings for ONNX Runtime: threads, TensorRT and CUDA options, the engine cache.

- One session lists TensorRT, then CUDA, then CPU: nodes TensorRT cannot take go to CUDA, not to the
  CPU (ONNX Runtime's documented order for TensorRT). Which provider got which nodes is read back
  from the session (`assignment`) and logged at start.
- GPU sessions get one intra-op thread that does not spin: the GPU does the work, and a spinning
  pool of one thread per core would take the CPU from the first stage and the other processes.
- TensorRT engines take minutes to build, so they are cached on disk. TensorRT's cache key hashes
  tensor names and versions, not weights, and every registered version is `model.onnx` with the same
  tensor names: one shared folder would let a promoted version run the previous version's engine.
  So each model sha256 and precision gets its own folder (`engine_cache_dir`), created with its
  parents (the provider creates only the last level), and one process at a time builds into it
  (`locked`: other workers wait, then load the finished engine).
- Precision: TensorRT runs the fp32 graph with fp16 kernels where it chooses (`trt_fp16_enable`,
  the documented switch). int8 on TensorRT needs symmetric signed int8 QDQ (zero points 0); the
  registered int8 copies are asymmetric uint8, so on a GPU the detector runs their fp32 source
  instead (`inspection.detector`), with `trt_int8_enable` off.
- The graph's peak test, Equal(MaxPool(heat), heat), is exact only if both sides have one
  precision; should TensorRT give them different ones in fp16, peaks (detections) are lost.
  `trt_exclude` hands such op types to CUDA, which runs them in fp32 (`worker.gpu_trt_exclude_ops`,
  e.g. ["MaxPool", "Equal"]); `bench gpu` measures fp16 against fp32 and against that variant.

Everything GPU-specific here is prepared from ONNX Runtime's documentation and code, and has not
run on a GPU yet (`steel-inspect bench gpu` is the check).
"""

from __future__ import annotations

import collections
import fcntl
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from inspection.errors import SteelInspectError
from inspection.gpu import CPU, CUDA, TENSORRT
from inspection.shapes import ShapeBuckets

log = logging.getLogger(__name__)

CONV_OPS = ("Conv", "ConvTranspose", "QLinearConv", "ConvInteger")
TRT_EXCLUDED_BY_DEFAULT = ("NonMaxSuppression", "NonZero", "RoiAlign")  # ONNX Runtime's default for the option
_SHA256 = re.compile(r"[0-9a-f]{64}")
CACHE_KINDS = ("fp16", "fp32", "openvino")  # TensorRT engines by precision; OpenVINO's compiled CPU models


@dataclass(frozen=True)
class GpuSettings:
    """How a session on TensorRT or CUDA is set up."""

    fp16: bool = True
    device_id: int = 0
    buckets: ShapeBuckets = field(default_factory=ShapeBuckets)
    input_name: str = "image"
    cache_dir: Path | None = None  # the prepared engine cache folder; None: TensorRT caches nothing
    profiles: bool = True  # explicit TensorRT profiles (engines built at session creation)
    trt_exclude: tuple[str, ...] = ()  # op types TensorRT leaves to CUDA, beside its defaults


def session_options(intra_op_threads: int, gpu: bool = False) -> ort.SessionOptions:
    """CPU: `intra_op_threads` (0 = one per core), quiet. GPU: one non-spinning thread, and the
    provider's warnings (graph partitions) shown."""
    options = ort.SessionOptions()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if gpu:
        options.intra_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        options.add_session_config_entry("session.record_ep_graph_assignment_info", "1")
        options.log_severity_level = 2
    else:
        options.intra_op_num_threads = max(0, int(intra_op_threads))
        options.log_severity_level = 3
    return options


def provider_options(provider: str, gpu: GpuSettings) -> dict[str, Any]:
    """The options one provider gets in the session's provider list."""
    if provider == TENSORRT:
        options: dict[str, Any] = {"device_id": gpu.device_id, "trt_fp16_enable": gpu.fp16, "trt_int8_enable": False}
        if gpu.cache_dir is not None:
            options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(gpu.cache_dir),
                           trt_timing_cache_enable=True, trt_timing_cache_path=str(gpu.cache_dir))
        if gpu.profiles:
            options.update(gpu.buckets.trt_profile(gpu.input_name))
        if gpu.trt_exclude:
            options["trt_op_types_to_exclude"] = ",".join(dict.fromkeys((*TRT_EXCLUDED_BY_DEFAULT, *gpu.trt_exclude)))
        return options
    if provider == CUDA:
        # Exhaustive search tunes each convolution once per input shape: the buckets keep the shapes
        # few, and the warm-up runs every one of them before the worker reports ready.
        return {"device_id": gpu.device_id, "cudnn_conv_algo_search": "EXHAUSTIVE",
                "do_copy_in_default_stream": True}
    return {}


def provider_list(providers: list[str], gpu: GpuSettings) -> list[tuple[str, dict[str, Any]]]:
    """`providers` in order, each with its options, CPU last."""
    listed = [(p, provider_options(p, gpu)) for p in providers if p != CPU]
    return [*listed, (CPU, {})]


def cache_root(configured: Path | None = None) -> Path:
    """Where engine caches (TensorRT's, and OpenVINO's compiled models) live: the config's folder,
    else $STEEL_INSPECT_TRT_CACHE, else ~/.cache/steel-inspect/trt."""
    if configured is not None:
        return Path(configured).expanduser()
    return Path(os.environ.get("STEEL_INSPECT_TRT_CACHE") or Path.home() / ".cache" / "steel-inspect" / "trt")


def engine_cache_dir(root: Path, sha256: str, precision: str) -> Path:
    """The cache folder of one model file and precision: `<root>/<sha256>/<precision>`; OpenVINO's
    compiled models go to `<root>/<sha256>/openvino`."""
    if not _SHA256.fullmatch(sha256) or precision not in CACHE_KINDS:
        raise SteelInspectError(f"engine cache: expected a sha256 and one of {', '.join(CACHE_KINDS)}, "
                                f"got {sha256!r}, {precision!r}")
    return Path(root) / sha256 / precision


def prepare_engine_cache(root: Path, sha256: str, precision: str) -> Path:
    """`engine_cache_dir`, created with its parents."""
    folder = engine_cache_dir(root, sha256, precision)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SteelInspectError(f"engine cache {folder}: cannot create it: {exc}") from None
    return folder


@contextmanager
def locked(folder: Path | None) -> Iterator[None]:
    """Hold `folder`'s build lock (an flock on `folder/.lock`); None holds nothing. The lock is released
    when the process ends, however it ends."""
    if folder is None:
        yield
        return
    with open(folder / ".lock", "a+b") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("engine cache %s is being built by another process; waiting for it", folder)
            started = time.monotonic()
            fcntl.flock(handle, fcntl.LOCK_EX)
            log.info("engine cache %s free after %.1f s", folder, time.monotonic() - started)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def assignment(session: Any) -> dict[str, dict[str, int]]:
    """Which provider runs how many nodes of each op type: {provider: {op_type: count}}; {} when the
    session did not record it."""
    try:
        subgraphs = session.get_provider_graph_assignment_info()
    except Exception:  # noqa: BLE001 - older builds, or a session created without recording
        return {}
    counts: dict[str, collections.Counter[str]] = {}
    for subgraph in subgraphs:
        counts.setdefault(subgraph.ep_name, collections.Counter()).update(n.op_type for n in subgraph.get_nodes())
    return {ep: dict(c.most_common()) for ep, c in counts.items()}


def describe_assignment(nodes: dict[str, dict[str, int]]) -> str:
    """'TensorrtExecutionProvider 182 nodes; CPUExecutionProvider 3 nodes (Shape 2, Gather 1)'."""
    parts = []
    for ep, ops in nodes.items():
        text = f"{ep} {sum(ops.values())} nodes"
        if ep != TENSORRT:
            text += " (" + ", ".join(f"{op} {n}" for op, n in list(ops.items())[:6]) + ")"
        parts.append(text)
    return "; ".join(parts) or "not recorded"


def convolutions_on_cpu(nodes: dict[str, dict[str, int]]) -> int:
    return sum(n for op, n in nodes.get(CPU, {}).items() if op in CONV_OPS)
