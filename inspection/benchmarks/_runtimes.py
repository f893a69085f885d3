"""The runtimes `bench inference` measures side by side: which, how each is built, bare rates."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# A runtime's label in the JSON -> the `providers` setting that picks it.
RUNTIMES = {"onnxruntime": "cpu", "openvino": "openvino"}


def runtime_label(detector: Any) -> str:
    """"openvino", "onnxruntime", or on a GPU "onnxruntime-tensorrt" / "onnxruntime-cuda"."""
    from inspection.backends.onnxruntime import CPU_PROVIDER

    first = detector.providers[0]
    if first == CPU_PROVIDER:
        return "onnxruntime"
    if first.endswith("ExecutionProvider"):
        return "onnxruntime-" + first.removesuffix("ExecutionProvider").lower()
    return "openvino"


def setting(label: str, config: Any) -> str:
    """The `providers` setting that runs the runtime `label`."""
    return RUNTIMES.get(label, config.worker.providers)  # a GPU runtime: the config's own setting


def make_detector(manifest: Any, providers: str, config: Any) -> Any:
    """A detector with the worker's threads and cache folder."""
    from inspection.detector import Detector

    w = config.worker
    return Detector(manifest, providers=providers, intra_op_threads=w.intra_op_threads,
                    engine_cache=w.gpu_engine_cache)


def runtimes_to_run(wanted: list[str] | None, config: Any, manifest: Any) -> tuple[Any, dict[str, Any]]:
    """The config's detector and every runtime to measure, by label (the config's own included)."""
    from inspection.backends import openvino_installed

    main = make_detector(manifest, config.worker.providers, config)
    runtimes = {runtime_label(main): main}
    wanted = wanted or [label for label in RUNTIMES if label != "openvino" or openvino_installed()]
    for label in wanted:
        if label not in runtimes:
            runtimes[label] = make_detector(manifest, RUNTIMES[label], config)
    return main, runtimes


def bare_side_by_side(runtimes: dict[str, Any], tiles: list[np.ndarray], frame_mpx: float, seconds: float,
                      rounds: int = 2) -> dict[str, Any]:
    """Every runtime at batch 1, 2, 4, 8 on the same tiles, alternating in `rounds` (best round each)."""
    rates: dict[str, dict[int, float]] = {label: {} for label in runtimes}
    for batch in (1, 2, 4, 8):
        for _ in range(rounds):
            for label, det in runtimes.items():
                rate = measure(lambda d=det, b=batch: batched(d, tiles, b), frame_mpx, seconds / rounds)
                rates[label][batch] = max(rates[label].get(batch, 0.0), rate)
    out = {}
    for label, by_batch in rates.items():
        best = max(by_batch, key=by_batch.get)
        out[label] = {"providers": runtimes[label].providers, "model": runtimes[label].manifest.version,
                      "gives_the_models_results": gives_the_models_results(label, runtimes[label].manifest),
                      "by_batch": {str(b): round(v, 2) for b, v in by_batch.items()}, "best_batch": best,
                      "mpx_per_s": round(by_batch[best], 2)}
    return out


def gives_the_models_results(label: str, manifest: Any) -> bool:
    """False for an int8 copy on OpenVINO: its results differ from the file's (`inspection.backends`),
    which is why "auto" never runs it there; its speed is measured, but it is no baseline."""
    return not (label == "openvino" and isinstance(manifest.data.get("quantization"), dict))


def batched(detector: Any, tiles: list[np.ndarray], batch: int) -> None:
    detector.max_batch = batch
    detector.detect(tiles, min_score=1.0)


def measure(step: Any, mpx_per_step: float, seconds: float) -> float:
    """Mpx/s of `step` over about `seconds`, after one warm-up step."""
    step()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * mpx_per_step / (time.perf_counter() - started)
