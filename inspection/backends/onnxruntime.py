"""ONNX Runtime sessions: TensorRT, then CUDA, then CPU, and the backend that runs one.

A GPU provider is used only if ONNX Runtime lists it *and* a session actually starts on it
(onnxruntime-gpu lists CUDA even on machines without a GPU or without the CUDA libraries, and then
silently runs on CPU). A provider whose libraries are missing is reported in one INFO line naming
them (`inspection.gpu`); one that has its libraries and still fails is a warning. Each provider is
probed once per process. Session settings and provider options: `inspection.providers`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidProtobuf, NoSuchFile

from inspection import gpu as gpu_libs
from inspection.backends import check_setting
from inspection.errors import ManifestError
from inspection.providers import GpuSettings, provider_list, session_options

log = logging.getLogger(__name__)

CPU_PROVIDER = gpu_libs.CPU
_failed_providers: dict[str, str] = {}  # provider -> why; probed once per process
# How ONNX Runtime says a provider's libraries could not be loaded (then the missing names are ours to tell).
_LIBRARY_ERROR = re.compile(r"cannot open shared object|Failed to load library|install TensorRT libraries|\.so\b")


class OnnxRuntimeBackend:
    """One ONNX Runtime session behind the backends' interface (`inspection.backends`)."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session = session
        self.providers: list[str] = list(session.get_providers())
        # "tensor(uint8)" -> "uint8": the numpy name both backends report
        self.inputs = {i.name: i.type.removeprefix("tensor(").removesuffix(")") for i in session.get_inputs()}
        self.outputs = [o.name for o in session.get_outputs()]

    def run(self, feed: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]:
        return self.session.run(list(names), feed)


def wanted(providers: str | Sequence[str]) -> list[str]:
    """The ONNX Runtime providers a setting asks for, in order (OpenVINO is not one: see `inspection.backends`)."""
    check_setting(providers)
    if providers in ("cpu", "openvino"):
        return [CPU_PROVIDER]
    if providers == "auto":
        return [*gpu_libs.GPU_PROVIDERS, CPU_PROVIDER]
    return [*providers, CPU_PROVIDER] if CPU_PROVIDER not in providers else list(providers)


def gpu_candidates(providers: str | Sequence[str] = "auto") -> list[str]:
    """The GPU providers of `providers` worth trying: listed by ONNX Runtime, not failed before in this process."""
    available = set(ort.get_available_providers())
    return [p for p in wanted(providers) if p != CPU_PROVIDER and p in available and p not in _failed_providers]


def _give_up(provider: str, why: str, silent: bool) -> None:
    """Remember that `provider` cannot start in this process, and say so once: INFO naming the
    missing libraries when that is the cause, a warning when the provider had what it needs."""
    _failed_providers[provider] = why[:300]
    check = gpu_libs.check(provider)
    if check.no_device or (check.missing and (silent or _LIBRARY_ERROR.search(why))):
        log.info("execution provider %s cannot start here: %s", provider, check.why_not())
    else:
        log.warning("execution provider %s failed to start, trying the next one: %s", provider,
                    _failed_providers[provider])


def _blame(candidates: list[str], message: str) -> str:
    """Which provider of a failed session raised: the one the message names, else the first."""
    words = {gpu_libs.TENSORRT: ("TensorRT", "nvinfer", "trt"), gpu_libs.CUDA: ("CUDA", "cudnn", "cublas")}
    for provider, names in words.items():
        if provider in candidates and any(w in message for w in names):
            return provider
    return candidates[0]


def gpu_session(model_path: Path, providers: str | Sequence[str] = "auto", intra_op_threads: int = 0,
                fp16: bool = True, gpu: GpuSettings | None = None) -> ort.InferenceSession | None:
    """One session with TensorRT, CUDA, then CPU (those of `providers` that can start), or None when
    no GPU provider starts."""
    settings = gpu or GpuSettings(fp16=fp16)
    candidates = gpu_candidates(providers)
    if candidates:
        gpu_libs.preload()  # before any session: CUDA, cuDNN, cuBLAS and TensorRT from the pip wheels
    while candidates:
        expected_to_fail = any(not gpu_libs.check(p).can_try for p in candidates)
        try:
            # enable_fallback=0: ONNX Runtime would otherwise retry on CPU by itself (printing to
            # stdout) and we could not tell that the GPU provider failed.
            with gpu_libs.quiet_onnxruntime(expected_to_fail):
                session = ort.InferenceSession(str(model_path),
                                               sess_options=session_options(intra_op_threads, gpu=True),
                                               providers=provider_list(candidates, settings), enable_fallback=0)
        except (InvalidProtobuf, NoSuchFile) as exc:  # the model file, not the provider
            raise ManifestError(f"{model_path}: ONNX Runtime cannot load the model: {exc}"[:500]) from None
        except Exception as exc:  # noqa: BLE001 - any other failure: that provider cannot start
            message = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            blamed = _blame(candidates, message)
            _give_up(blamed, message, silent=False)
            candidates.remove(blamed)
            continue
        used = list(session.get_providers())
        for provider in [p for p in candidates if p not in used]:
            _give_up(provider, f"session started on {used} instead", silent=True)
        if any(p in used for p in candidates):
            return session
        return None
    return None


def cpu_session(model_path: Path, intra_op_threads: int = 0) -> ort.InferenceSession:
    """A session on ONNX Runtime's CPU provider with the CPU's threading (`session_options`)."""
    try:
        return ort.InferenceSession(str(model_path), sess_options=session_options(intra_op_threads),
                                    providers=[(CPU_PROVIDER, {})], enable_fallback=0)
    except Exception as exc:  # noqa: BLE001 - any load failure on CPU is the model's
        raise ManifestError(f"{model_path}: ONNX Runtime cannot load the model: {exc}"[:500]) from None

