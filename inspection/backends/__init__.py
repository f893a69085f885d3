"""Inference backends behind one small interface, and which one runs a model on the CPU.

A backend holds one compiled model and runs batches: `run({input: uint8 [N, 1, H, W]}, names) ->
[array per name]`; it says what it is (`providers`, first entry what runs) and what the model
takes and gives (`inputs`: name -> numpy dtype name, `outputs`: names). `inspection.detector`
does everything else (padding, thresholds, the unknown rule), the same for every backend.

- `onnxruntime`: ONNX Runtime sessions; on a GPU TensorRT / CUDA (`inspection.providers`), else CPU.
- `openvino`: OpenVINO's CPU plugin, reading the same model.onnx (optional extra `openvino`).

`providers` settings: "auto" probes the GPU providers (in `inspection.detector`), then OpenVINO on
the CPU when it is installed and compiles the model (an int8 copy only with its own OpenVINO
quantization: `INT8_ON_OPENVINO`), then ONNX Runtime's CPU provider; "openvino" and "cpu" (ONNX
Runtime) name one CPU backend; a list names ONNX Runtime providers. Without openvino installed,
"auto" says so in one INFO line per process and runs ONNX Runtime; "openvino" stops with a
`MissingExtraError` naming the extra.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from inspection.errors import ManifestError, SteelInspectError
from inspection.manifest import OpenVinoCopy

log = logging.getLogger(__name__)

SETTINGS = ("auto", "cpu", "openvino")
# Why "auto" leaves int8 copies to ONNX Runtime: measured on this project's AVX2 machine (AMD EPYC, OpenVINO
# 2026.4.1, `steel-inspect evaluate --split val --providers cpu|openvino`): OpenVINO's outputs for the QDQ files
# stray from the file's own arithmetic (ONNX Runtime with graph optimisations off) 2x to 20x more than ONNX
# Runtime's int8 kernels do, and val mAP@0.5 of hot-20261123-3 fell from 0.742 to 0.686 (cold-20261123-4: 0.639
# -> 0.638). A runtime that may lose 0.06 mAP on one model is no drop-in. The fp32 models give the same results
# on both (tests/test_openvino.py). An int8 copy made since 2026-12-04 carries its own OpenVINO quantization
# (`manifest.OpenVinoCopy`, NNCF on OpenVINO's own graph: `training.quantize_openvino`), which "auto" and
# "openvino" run instead: hot-20261204-2's gave val mAP@0.5 0.771 on OpenVINO (its ONNX Runtime copy 0.774).
INT8_ON_OPENVINO = ("OpenVINO's results for int8 (QDQ) copies differ from ONNX Runtime's: val mAP@0.5 0.742 -> "
                    "0.686 measured for hot-20261123-3")
_said: set[str] = set()  # one-time INFO lines already logged in this process


class ProviderError(SteelInspectError, ValueError):
    """A `providers` setting names no backend this runtime knows."""


class Backend(Protocol):
    providers: list[str]
    inputs: dict[str, str]
    outputs: list[str]

    def run(self, feed: dict[str, np.ndarray], names: Sequence[str]) -> list[np.ndarray]: ...


def check_setting(providers: str | Sequence[str]) -> None:
    """Refuse a `providers` value that names nothing (one line naming what is accepted)."""
    if isinstance(providers, str) and providers not in SETTINGS:
        raise ProviderError(f"providers: expected 'auto', 'cpu', 'openvino' or a list of ONNX Runtime provider "
                            f"names, got {providers!r}")


def openvino_installed() -> bool:
    """Whether the `openvino` package can be imported (looked up, not imported)."""
    try:
        return importlib.util.find_spec("openvino") is not None
    except (ImportError, ValueError):  # ValueError: blocked with sys.modules["openvino"] = None
        return False


def cpu_backend(model_path: Path, sha256: str, providers: str | Sequence[str], threads: int,
                cache: Path | None, int8: bool = False, openvino_copy: OpenVinoCopy | None = None) -> Backend:
    """The CPU backend `providers` asks for: "openvino" must start (else an error); "auto" tries
    OpenVINO first and falls back to ONNX Runtime (an INFO line when openvino is not installed, a
    warning when it is and cannot compile the model); anything else is ONNX Runtime's CPU provider.

    An `int8` model (a quantized copy) with an `openvino_copy` (its own OpenVINO quantization) runs
    that copy on OpenVINO; without one it stays on ONNX Runtime under "auto" (`INT8_ON_OPENVINO`), and
    "openvino" runs the QDQ file on OpenVINO all the same, with a warning."""
    from inspection.backends.onnxruntime import OnnxRuntimeBackend, cpu_session

    if providers == "openvino" and not openvino_installed():
        from inspection.extras import MissingExtraError

        raise MissingExtraError("providers = \"openvino\" needs the `openvino` extra (openvino not installed): "
                                "pip install -e '.[openvino]'")
    if providers in ("auto", "openvino") and openvino_installed():
        from inspection.backends.openvino import OpenVinoBackend, OpenVinoError

        if int8 and openvino_copy is not None:
            try:
                openvino_copy.verify()
                return OpenVinoBackend(openvino_copy.model_path, openvino_copy.sha256, threads, cache)
            except (ManifestError, OpenVinoError) as exc:
                if providers == "openvino":
                    raise
                log.warning("OpenVINO cannot run the OpenVINO copy of %s, ONNX Runtime runs its int8 model: %s",
                            model_path, exc)
                return OnnxRuntimeBackend(cpu_session(model_path, threads))
        if int8 and providers == "auto":
            log.info("%s is an int8 copy: ONNX Runtime runs it (%s)", model_path, INT8_ON_OPENVINO)
            return OnnxRuntimeBackend(cpu_session(model_path, threads))
        if int8:
            log.warning("%s is an int8 copy, run by OpenVINO as asked: %s", model_path, INT8_ON_OPENVINO)
        try:
            return OpenVinoBackend(model_path, sha256, threads, cache)
        except OpenVinoError as exc:
            if providers == "openvino":
                raise
            log.warning("OpenVINO cannot run %s, ONNX Runtime runs it on the CPU: %s", model_path, exc)
    elif providers == "auto":
        _say_once("no openvino", "OpenVINO is not installed (pip install -e '.[openvino]'): ONNX Runtime runs models "
                  "on the CPU")
    return OnnxRuntimeBackend(cpu_session(model_path, threads))


def _say_once(key: str, message: str, *args: object) -> None:
    """One INFO line per process for a choice every model load would repeat."""
    if key not in _said:
        _said.add(key)
        log.info(message, *args)
