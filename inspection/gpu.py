"""What a GPU execution provider needs before ONNX Runtime can start it, checked quietly.

onnxruntime-gpu lists TensorRT and CUDA on every machine, GPU or not; whether a provider can
really start depends on shared libraries ONNX Runtime loads at session creation, and a failed load
prints red error lines (or, for CUDA, falls back to the CPU without saying so in the API). So the
runtime first loads what the pip wheels ship (`preload`: ONNX Runtime's own `preload_dlls()` for
CUDA, cuBLAS and cuDNN, and the TensorRT 10 libraries of the `tensorrt-cu13-libs` wheel), then asks
the dynamic loader, without ONNX Runtime, which of a provider's libraries are still missing
(`check`). `steel-inspect doctor` prints the same findings.

Library names are those ONNX Runtime 1.31 (built for CUDA 13, TensorRT 10) links
(`readelf -d libonnxruntime_providers_{cuda,tensorrt}.so`); cuDNN is loaded by the CUDA provider at
run time. The CUDA driver query (`cuda_devices`) uses the driver API through ctypes. Everything in
this module that needs a GPU has only been run on a machine without one: it reports "no driver".
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib.util
import io
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
GPU_PROVIDERS = (TENSORRT, CUDA)

DRIVER = "libcuda.so.1"
TENSORRT_MAJOR = 10  # what libonnxruntime_providers_tensorrt.so of ONNX Runtime 1.31 links (libnvinfer.so.10)
TENSORRT_LIBRARIES = (f"libnvinfer.so.{TENSORRT_MAJOR}", f"libnvinfer_plugin.so.{TENSORRT_MAJOR}",
                      f"libnvonnxparser.so.{TENSORRT_MAJOR}")
TENSORRT_WHEEL = "tensorrt-cu13-libs>=10.13,<11"  # TensorRT 10 for CUDA 13 on PyPI; 11.x ships libnvinfer.so.11
CUDA_NO_DEVICE = 100  # CUDA_ERROR_NO_DEVICE from cuInit

_preloaded = False


def cuda_major() -> int:
    """The CUDA major version this onnxruntime-gpu was built for (13 for 1.31), or 0 for a CPU build."""
    match = re.match(r"(\d+)", str(getattr(ort, "cuda_version", "") or ""))
    return int(match.group(1)) if match else 0


def required_libraries(provider: str) -> tuple[str, ...]:
    """The shared libraries `provider` needs to start (the driver first)."""
    major = cuda_major() or 13
    if provider == CUDA:
        return (DRIVER, f"libcudart.so.{major}", f"libcublasLt.so.{major}", f"libcublas.so.{major}",
                "libcurand.so.10", "libcudnn.so.9")
    if provider == TENSORRT:
        return (DRIVER, f"libcudart.so.{major}", f"libcublas.so.{major}", "libcudnn.so.9",
                f"libnvinfer.so.{TENSORRT_MAJOR}", f"libnvonnxparser.so.{TENSORRT_MAJOR}")
    return ()


def where_from(library: str) -> str:
    """Where a missing library comes from, for one-line messages."""
    if library == DRIVER:
        return "the NVIDIA driver, installed on the host"
    if library.startswith("libnv"):
        return f"TensorRT {TENSORRT_MAJOR}: pip install '{TENSORRT_WHEEL}', or its tar file's lib/ on LD_LIBRARY_PATH"
    return "pip install -e '.[gpu]' (onnxruntime-gpu[cuda,cudnn])"


def tensorrt_wheel_dir() -> Path | None:
    """The folder of the `tensorrt-cu13-libs` wheel's libraries (`site-packages/tensorrt_libs`), if installed."""
    try:
        spec = importlib.util.find_spec("tensorrt_libs")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) if locations else None


def preload(force: bool = False) -> None:
    """Load the GPU libraries the pip wheels ship, once per process, before any session.

    ONNX Runtime's `preload_dlls()` finds CUDA, cuBLAS and cuDNN in the nvidia-* wheels (it prints
    what it cannot load: that goes nowhere here, `check` reports it). The TensorRT wheel's libraries
    are loaded by path with RTLD_GLOBAL, so the provider's later `dlopen("libnvinfer.so.10")` finds
    them by name without LD_LIBRARY_PATH. Without an NVIDIA driver nothing is loaded unless `force`
    (`doctor`): no GPU could start, and the libraries cost a process about 190 MB of memory.
    """
    global _preloaded
    if _preloaded or not cuda_major() or not (force or loadable(DRIVER)):
        return
    _preloaded = True
    _missing.cache_clear()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ort.preload_dlls()
        except Exception as exc:  # noqa: BLE001 - a preload failure is reported by `check`, per library
            log.debug("onnxruntime.preload_dlls: %s", exc)
    folder = tensorrt_wheel_dir()
    for name in TENSORRT_LIBRARIES if folder else ():
        path = folder / name
        if path.is_file():
            try:
                ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
            except OSError as exc:
                log.debug("cannot load %s: %s", path, exc)


def loadable(library: str) -> bool:
    """Whether the dynamic loader finds `library` by name (already loaded, LD_LIBRARY_PATH, ldconfig)."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


@dataclass(frozen=True)
class ProviderCheck:
    """Whether a provider can be tried, and if not why: not built in, or libraries missing."""

    provider: str
    listed: bool  # onnxruntime was built with it (`get_available_providers`)
    missing: tuple[str, ...] = ()
    no_device: str = ""  # the driver loads but reports no GPU: why

    @property
    def can_try(self) -> bool:
        return self.listed and not self.missing and not self.no_device

    def why_not(self) -> str:
        if not self.listed:
            return "not in this onnxruntime build"
        if self.no_device and not self.missing:
            return f"the NVIDIA driver reports no GPU: {self.no_device}"
        if not self.missing:
            return ""
        by_origin: dict[str, list[str]] = {}
        for name in self.missing:
            by_origin.setdefault(where_from(name), []).append(name)
        return "missing " + "; ".join(f"{', '.join(names)} ({origin})" for origin, names in by_origin.items())


def check(provider: str) -> ProviderCheck:
    """What stands between `provider` and a session on it, without asking ONNX Runtime to try."""
    listed = provider in ort.get_available_providers()
    if provider == CPU:
        return ProviderCheck(provider, listed)
    return ProviderCheck(provider, listed, _missing(provider), _no_device())


@functools.cache
def _missing(provider: str) -> tuple[str, ...]:
    """Cached: what the loader can find does not change within a process once the wheels are preloaded."""
    preload()
    if not _preloaded and not loadable(DRIVER):
        return (DRIVER,)  # nothing else matters without a driver, and the other libraries were not loaded
    return tuple(name for name in required_libraries(provider) if not loadable(name))


@functools.cache
def _no_device() -> str:
    """Why a loadable driver has no GPU to offer (a container without one passed in), else ''."""
    if not loadable(DRIVER):
        return ""  # reported as a missing library
    report = cuda_devices()
    return "" if report.devices else report.error


@dataclass(frozen=True)
class Device:
    index: int
    name: str
    compute_capability: str  # "8.9"
    memory_mb: int


@dataclass(frozen=True)
class DeviceReport:
    """The CUDA driver and its devices, or why there are none."""

    driver_version: str | None  # "13.0", or None without a driver
    devices: tuple[Device, ...] = field(default=())
    error: str = ""


def cuda_devices() -> DeviceReport:
    """Ask the CUDA driver (libcuda.so.1, through ctypes) for its version and devices."""
    try:
        lib = ctypes.CDLL(DRIVER)
    except OSError:
        return DeviceReport(None, (), f"no NVIDIA driver ({DRIVER} not found)")
    version = ctypes.c_int()
    lib.cuDriverGetVersion(ctypes.byref(version))
    driver = f"{version.value // 1000}.{version.value % 1000 // 10}"
    rc = lib.cuInit(0)
    if rc:
        why = " (no CUDA-capable device)" if rc == CUDA_NO_DEVICE else ""
        return DeviceReport(driver, (), f"cuInit failed with CUDA error {rc}{why}")
    count = ctypes.c_int()
    lib.cuDeviceGetCount(ctypes.byref(count))
    devices = []
    for index in range(count.value):
        handle, major, minor, memory = ctypes.c_int(), ctypes.c_int(), ctypes.c_int(), ctypes.c_size_t()
        name = ctypes.create_string_buffer(128)
        lib.cuDeviceGet(ctypes.byref(handle), index)
        lib.cuDeviceGetName(name, len(name), handle)
        lib.cuDeviceGetAttribute(ctypes.byref(major), 75, handle)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
        lib.cuDeviceGetAttribute(ctypes.byref(minor), 76, handle)  # ... _MINOR
        lib.cuDeviceTotalMem_v2(ctypes.byref(memory), handle)
        devices.append(Device(index, name.value.decode(errors="replace"), f"{major.value}.{minor.value}",
                              memory.value // (1 << 20)))
    return DeviceReport(driver, tuple(devices), "" if devices else "the driver reports no device")


def device_for_worker(worker_name: str, configured: int, device_count: int) -> int:
    """The GPU a worker uses: `configured` when >= 0; else worker-N takes device N-1, wrapping around
    when there are more workers than devices (they then share one)."""
    if configured >= 0:
        return configured
    match = re.search(r"(\d+)$", worker_name)
    number = int(match.group(1)) if match else 1
    return (number - 1) % device_count if device_count > 0 else 0


@contextlib.contextmanager
def quiet_onnxruntime(quiet: bool = True) -> Iterator[None]:
    """Silence ONNX Runtime's process-wide logger while it tries a provider expected to fail (its
    library loads print red errors); ONNX Runtime's default severity (warning) is restored after."""
    if not quiet:
        yield
        return
    ort.set_default_logger_severity(4)
    try:
        yield
    finally:
        ort.set_default_logger_severity(2)
