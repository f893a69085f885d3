"""`bench gpu`'s engine-cache collision check (needs TensorRT): does version B run version A's engine?

Two registered versions with the same TensorRT cache name (same file name and tensor names,
different weights) are built one after the other, first into one shared folder (the layout before
per-sha256 folders), then each into its own folder. B's TensorRT scores are compared with B's and
with A's CPU scores on the same input: the smaller difference says whose engine B ran.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from inspection.gpu import CPU, TENSORRT
from inspection.providers import GpuSettings, prepare_engine_cache, provider_list, session_options


def collision_check(registry: Any, buckets: Any, folder: Path) -> dict[str, Any]:
    from inspection.benchmarks._gpu_checks import name_fingerprint

    groups: dict[str, list[Any]] = {}
    for manifest in registry.versions():
        groups.setdefault(name_fingerprint(manifest.model_path) or "", []).append(manifest)
    pair = next(([g[0], g[1]] for key, g in groups.items() if key and len({m.sha256 for m in g}) > 1), None)
    if pair is None:
        return {"checked": False, "note": "no two registered versions share TensorRT's cache name"}
    a, b = pair
    side = buckets.sides[0]
    batch = np.random.default_rng(7).integers(40, 200, (1, 1, side, side), dtype=np.uint8)
    cpu = {m.version: _scores(m, batch, None, None) for m in pair}
    shared = prepare_engine_cache(folder / "shared", a.sha256, "fp32").parent.parent  # one folder for both
    result: dict[str, Any] = {"checked": True, "a": a.version, "b": b.version}
    for layout in ("shared_folder", "per_sha256_folders"):
        for m in pair:
            where = shared if layout == "shared_folder" else prepare_engine_cache(folder / "per_sha", m.sha256, "fp32")
            gpu_scores = _scores(m, batch, where, buckets)
            if m is b:
                own, other = _diff(gpu_scores, cpu[b.version]), _diff(gpu_scores, cpu[a.version])
                result[layout] = {"b_vs_own_cpu_max_diff": round(own, 5), "b_vs_a_cpu_max_diff": round(other, 5),
                                  "b_ran": "its own engine" if own < other else f"{a.version}'s engine"}
    return result


def _scores(manifest: Any, batch: np.ndarray, cache: Path | None, buckets: Any) -> np.ndarray:
    if cache is None:
        session = ort.InferenceSession(str(manifest.model_path), session_options(1), providers=[CPU])
    else:  # fp32, so only the engine, not the precision, can make B differ from its CPU run
        settings = GpuSettings(fp16=False, buckets=buckets, input_name=manifest.input_name, cache_dir=cache)
        session = ort.InferenceSession(str(manifest.model_path), session_options(1, gpu=True),
                                       providers=provider_list([TENSORRT], settings))
    return session.run(["scores"], {manifest.input_name: batch})[0]


def _diff(x: np.ndarray, y: np.ndarray) -> float:
    """Largest difference of two score tensors [N, K], over the top-K both have (sorted descending)."""
    k = min(x.shape[1], y.shape[1])
    return float(np.abs(x[:, :k] - y[:, :k]).max())
