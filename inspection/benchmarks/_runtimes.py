"""The runtimes `bench inference` measures side by side: which, how each is built, bare rates.

Every (runtime, model) pair runs the same tiles at batch 1, 2, 4 and 8; rounds alternate over all
pairs and batch sizes, and each keeps its best round: the load on a shared machine changes from
minute to minute, so only figures measured interleaved in one run compare.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

# A runtime's label in the JSON -> the `providers` setting that picks it.
RUNTIMES = {"onnxruntime": "cpu", "openvino": "openvino"}
BATCHES = (1, 2, 4, 8)


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


def bare_side_by_side(pairs: dict[tuple[str, str], Any], tiles: list[np.ndarray], frame_mpx: float,
                      seconds: float, rounds: int = 3) -> dict[str, dict[str, Any]]:
    """Mpx/s of every (runtime label, model version) -> detector on `tiles`, by batch size, best of
    `rounds` interleaved rounds (each pair gets about `seconds` per batch size in all).

    Returns {model version: {runtime: figures, "openvino_to_onnxruntime": ratio when both ran}}."""
    rates: dict[tuple[str, str], dict[int, float]] = {pair: {} for pair in pairs}
    for round_ in range(rounds):
        for batch in BATCHES:
            for pair, det in pairs.items():
                # one warm-up per pair and batch size (first round): a step is every tile, seconds long
                rate = measure(lambda d=det, b=batch: batched(d, tiles, b), frame_mpx, seconds / rounds,
                               warm_up=round_ == 0)
                rates[pair][batch] = max(rates[pair].get(batch, 0.0), rate)
    out: dict[str, dict[str, Any]] = {}
    for (label, version), by_batch in rates.items():
        best = max(by_batch, key=by_batch.__getitem__)
        det = pairs[(label, version)]
        out.setdefault(version, {})[label] = {
            "providers": det.providers, "gives_the_models_results": gives_the_models_results(label, det.manifest),
            "by_batch": {str(b): round(v, 2) for b, v in by_batch.items()}, "best_batch": best,
            "mpx_per_s": round(by_batch[best], 2)}
    for entry in out.values():
        if "openvino" in entry and "onnxruntime" in entry:
            entry["openvino_to_onnxruntime"] = round(entry["openvino"]["mpx_per_s"] / entry["onnxruntime"]["mpx_per_s"],
                                                     3)
    return out


def fastest(entry: dict[str, Any]) -> str:
    """The fastest runtime of one model's `bare_side_by_side` entry that gives the model's own results
    (an int8 copy on OpenVINO does not, unless it carries its own OpenVINO quantization:
    `inspection.backends.INT8_ON_OPENVINO`)."""
    runs = {label: f for label, f in entry.items() if isinstance(f, dict) and f["gives_the_models_results"]}
    return max(runs, key=lambda label: runs[label]["mpx_per_s"])


def gives_the_models_results(label: str, manifest: Any) -> bool:
    """False for an int8 copy on OpenVINO: its results differ from the file's (`inspection.backends`),
    which is why "auto" never runs it there; its speed is measured, but it is no baseline. True again
    when the copy carries its own OpenVINO quantization: that is what OpenVINO runs, measured in the
    manifest (``openvino.metrics``) as the file is."""
    from inspection.manifest import openvino_copy

    if label != "openvino" or not isinstance(manifest.data.get("quantization"), dict):
        return True
    return openvino_copy(manifest) is not None


def batched(detector: Any, tiles: list[np.ndarray], batch: int) -> None:
    detector.max_batch = batch
    detector.detect(tiles, min_score=1.0)


def measure(step: Any, mpx_per_step: float, seconds: float, warm_up: bool = True) -> float:
    """Mpx/s of `step` over about `seconds` (at least one step), after one warm-up step unless told not to."""
    if warm_up:
        step()
    started, steps = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        step()
        steps += 1
    return steps * mpx_per_step / (time.perf_counter() - started)
