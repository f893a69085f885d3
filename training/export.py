"""Torch -> ONNX export of `training.model.Detector` and the parity check that guards it.

The exported graph is the whole detector: uint8 [N, 1, H, W] in (N, H, W dynamic; H and W multiples
of 32), normalisation, network, 3x3 peak extraction and top-K inside, boxes / scores / labels out.
`export_onnx` refuses to return a model whose ONNX Runtime outputs differ from PyTorch's on the
given real images (max abs difference over the top detections, and identical detections above
the threshold): a broken export fails loudly instead of shipping.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspection.errors import SteelInspectError
from training.data import eval_batches
from training.model import Detector, ExportWrapper

log = logging.getLogger(__name__)
OPSET = 17
SIZE_MULTIPLE = 32
# Scores are compared slot by slot where either side is >= this. Far below it, an untrained-looking
# flat heatmap (e.g. replicate padding) has plateaus whose 3x3-peak ties float rounding may break
# differently, which shifts the tail of the sorted list without changing any real detection.
SCORE_FLOOR = 0.05


class ExportError(SteelInspectError):
    """The ONNX export failed or its outputs do not match PyTorch's."""


def export_onnx(model: Detector, path: Path, example: np.ndarray | None = None) -> Path:
    """Write `model` as ONNX (opset 17) with dynamic batch, height and width."""
    import onnx

    model = model.eval().float().to(memory_format=torch.contiguous_format)
    if example is None:
        example = np.full((2, 1, 64, 96), 128, np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The exporter restores the wrapper's train/eval mode afterwards, recursively: keep it eval.
    wrapper = ExportWrapper(model).eval()
    with torch.no_grad():
        torch.onnx.export(
            wrapper, (torch.from_numpy(example),), str(path), input_names=["image"],
            output_names=["boxes", "scores", "labels"], opset_version=OPSET, dynamo=False,
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, "boxes": {0: "batch"},
                          "scores": {0: "batch"}, "labels": {0: "batch"}})
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def _session(path: Path):  # noqa: ANN202 - onnxruntime session
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def parity_check(model: Detector, path: Path, images: Sequence[np.ndarray], threshold: float,
                 batch_size: int = 8, tolerance: float = 1e-3) -> dict[str, Any]:
    """Run PyTorch and ONNX Runtime on the same padded batches of real images and compare.

    Scores are compared slot by slot (where >= SCORE_FLOOR); boxes and labels over detections >= `threshold`
    in PyTorch, which must also be the ONNX detections above the threshold
    (box coordinates within 0.05 px + `tolerance` relative). Raises `ExportError` on any mismatch.
    Detections are compared as sets (sorted by label and position), so two detections with equal
    scores in a different order still count as identical.
    """
    if not images:
        raise ExportError("parity check needs at least one image")
    session = _session(path)
    model = model.eval().float()
    max_score_diff, max_box_diff, compared = 0.0, 0.0, 0
    identical = True
    with torch.no_grad():
        for _, batch in eval_batches(images, batch_size, SIZE_MULTIPLE):
            t_boxes, t_scores, t_labels = (t.numpy() for t in model.detect(batch))
            o_boxes, o_scores, o_labels = session.run(["boxes", "scores", "labels"], {"image": batch.numpy()})
            if o_boxes.dtype != np.float32 or o_scores.dtype != np.float32 or o_labels.dtype != np.int64:
                raise ExportError(f"{path}: output dtypes {o_boxes.dtype}, {o_scores.dtype}, {o_labels.dtype}; "
                                  "expected float32, float32, int64")
            scored = (t_scores >= SCORE_FLOOR) | (o_scores >= SCORE_FLOOR)
            if scored.any():
                max_score_diff = max(max_score_diff, float(np.abs(t_scores - o_scores)[scored].max()))
            for row in range(len(t_scores)):
                t_det = _above(t_boxes[row], t_scores[row], t_labels[row], threshold)
                o_det = _above(o_boxes[row], o_scores[row], o_labels[row], threshold)
                compared += len(t_det)
                same = t_det.shape == o_det.shape and np.array_equal(t_det[:, 0], o_det[:, 0])
                if same and len(t_det):
                    diff = np.abs(t_det[:, 1:] - o_det[:, 1:])
                    max_box_diff = max(max_box_diff, float(diff.max()))
                    same = bool((diff <= 0.05 + tolerance * np.abs(t_det[:, 1:])).all())
                identical &= bool(same)
    report = {"images": len(images), "max_abs_diff": max(max_score_diff, max_box_diff),
              "max_score_diff": max_score_diff, "max_box_diff_px": max_box_diff,
              "detections_compared": compared, "threshold": threshold, "identical_detections": identical}
    log.info("parity on %d images: %s", len(images), report)
    if not identical or max_score_diff > tolerance:
        raise ExportError(f"{path}: ONNX Runtime and PyTorch disagree: {report}")
    return report


def _above(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """[m, 5] rows (label, x1, y1, x2, y2) of detections >= threshold, in a canonical order."""
    keep = scores >= threshold
    rows = np.concatenate([labels[keep, None].astype(np.float64), boxes[keep].astype(np.float64)], axis=1)
    order = np.lexsort((np.round(rows[:, 2], 1), np.round(rows[:, 1], 1), rows[:, 0]))
    return rows[order]
