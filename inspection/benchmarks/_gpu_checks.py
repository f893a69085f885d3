"""Checks behind `bench gpu`: detections against a reference, TensorRT's engine cache key, validation images."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from inspection.benchmarks._matching import iou
from inspection.errors import SteelInspectError
from inspection.providers import cache_root, engine_cache_dir


def compare(reference: list[Any], candidate: list[Any], min_iou: float = 0.5) -> dict[str, Any]:
    """Detections of one model run two ways (`Detections` per image): how many are the same (same
    class, IoU >= `min_iou`, greedy by reference score), and the largest score and box differences
    among those."""
    matched = reference_n = candidate_n = 0
    score_diff = box_diff = 0.0
    for ref, cand in zip(reference, candidate, strict=True):
        reference_n += len(ref)
        candidate_n += len(cand)
        taken: set[int] = set()
        for i in range(len(ref)):
            best, best_iou = None, min_iou
            for j in range(len(cand)):
                if j in taken or cand.labels[j] != ref.labels[i]:
                    continue
                overlap = iou(ref.boxes[i], cand.boxes[j])
                if overlap >= best_iou:
                    best, best_iou = j, overlap
            if best is not None:
                taken.add(best)
                matched += 1
                score_diff = max(score_diff, abs(float(ref.scores[i]) - float(cand.scores[best])))
                box_diff = max(box_diff, float(np.abs(ref.boxes[i] - cand.boxes[best]).max()))
    return {"images": len(reference), "reference_detections": reference_n, "detections": candidate_n,
            "same": matched, "same_share": round(matched / max(1, reference_n, candidate_n), 4),
            "score_abs_diff_max": round(score_diff, 5), "box_px_diff_max": round(box_diff, 3),
            "rule": f"same class, IoU >= {min_iou}, at the operating thresholds"}


def name_fingerprint(model_path: Path) -> str | None:
    """What ONNX Runtime's TensorRT provider hashes into its engine cache name (`TRTGenerateId`, read
    in its source): the model's file name, the graph inputs and initializers by name, every node
    output by name, then library versions. No weights. None without the `onnx` package (`train` extra)."""
    try:
        import onnx
    except ImportError:
        return None
    graph = onnx.load(str(model_path), load_external_data=False).graph
    names = [Path(model_path).name, *(i.name for i in graph.input), *(t.name for t in graph.initializer),
             *(o for node in graph.node for o in node.output if o)]
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def cache_key_check(registry: Any, configured_cache: Path | None) -> dict[str, Any]:
    """Registered versions whose TensorRT cache names would collide in one shared folder, and the
    per-sha256 folders they get instead."""
    fingerprints: dict[str, list[str]] = {}
    folders: dict[str, str] = {}
    root = cache_root(configured_cache)
    for manifest in registry.versions():
        key = name_fingerprint(manifest.model_path)
        if key is None:
            return {"checked": False, "note": "needs the onnx package (train extra) to read tensor names"}
        fingerprints.setdefault(key, []).append(manifest.version)
        folders[manifest.version] = str(engine_cache_dir(root, manifest.sha256, "fp16"))
    sharing = [versions for versions in fingerprints.values() if len(versions) > 1]
    return {"checked": True, "versions": len(folders),
            "same_tensorrt_cache_name": sharing,
            "folders_distinct": len(set(folders.values())) == len(folders),
            "note": "versions listed together would share cached engines in one folder; each sha256 has its own"}


def validation_images(manifest: Any, count: int) -> tuple[list[np.ndarray], str]:
    """Up to `count` val-split images of the model's dataset, and where they came from (or why none)."""
    from inspection.config import default_datasets_dir
    from inspection.datasets import LINE_DATASETS, load_split, read_image

    dataset = LINE_DATASETS[manifest.line_type]
    try:
        samples = load_split(default_datasets_dir(), dataset, "val")[:count]
        return [read_image(s.image_path) for s in samples], f"{dataset} val, first {len(samples)}"
    except SteelInspectError as exc:
        return [], f"no validation images: {exc}"
