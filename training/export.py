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
# the runtime requires the first three; class_scores and novelty let it call a detection `unknown`
OUTPUTS = ("boxes", "scores", "labels", "class_scores", "novelty")
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
            output_names=list(OUTPUTS), opset_version=OPSET, dynamo=False,
            dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"}, **{name: {0: "batch"} for name in OUTPUTS}})
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

    Detections are compared as sets, not slot by slot: each PyTorch detection (score >= SCORE_FLOOR)
    is paired with the ONNX detection of the same class whose box lies within 0.05 px + `tolerance`
    relative, and their scores must agree within `tolerance`. The detections >= `threshold` must be
    the same in both (sorted by label and position, so equal scores in another order still count as
    identical). A peak of a barely trained model's flat heatmap can tie with its neighbour in one
    runtime and not in the other; such a pair shifts every later slot of the top-K, which is why
    slots are not compared: a detection whose box has no partner but whose class and score do
    (a tie) is counted (`tied_peaks`). Raises `ExportError` on any mismatch.
    """
    if not images:
        raise ExportError("parity check needs at least one image")
    session = _session(path)
    model = model.eval().float()
    max_score_diff, max_box_diff, compared, tied = 0.0, 0.0, 0, 0
    identical = True
    with torch.no_grad():
        for _, batch in eval_batches(images, batch_size, SIZE_MULTIPLE):
            t_boxes, t_scores, t_labels = (t.numpy() for t in model.detect(batch)[:3])
            o_boxes, o_scores, o_labels = session.run(["boxes", "scores", "labels"], {"image": batch.numpy()})
            if o_boxes.dtype != np.float32 or o_scores.dtype != np.float32 or o_labels.dtype != np.int64:
                raise ExportError(f"{path}: output dtypes {o_boxes.dtype}, {o_scores.dtype}, {o_labels.dtype}; "
                                  "expected float32, float32, int64")
            for row in range(len(t_scores)):
                diff, ties = _paired_score_diff((t_boxes[row], t_scores[row], t_labels[row]),
                                                   (o_boxes[row], o_scores[row], o_labels[row]), tolerance)
                max_score_diff, tied = max(max_score_diff, diff), tied + ties
                t_det = _above(t_boxes[row], t_scores[row], t_labels[row], threshold)
                o_det = _above(o_boxes[row], o_scores[row], o_labels[row], threshold)
                compared += len(t_det)
                same = t_det.shape == o_det.shape and np.array_equal(t_det[:, 0], o_det[:, 0])
                if same and len(t_det):
                    box_diff = np.abs(t_det[:, 1:] - o_det[:, 1:])
                    max_box_diff = max(max_box_diff, float(box_diff.max()))
                    same = bool((box_diff <= 0.05 + tolerance * np.abs(t_det[:, 1:])).all())
                identical &= bool(same)
    report = {"images": len(images), "max_abs_diff": max(max_score_diff, max_box_diff),
              "max_score_diff": max_score_diff, "max_box_diff_px": max_box_diff,
              "detections_compared": compared, "tied_peaks": tied, "threshold": threshold,
              "identical_detections": identical}
    log.info("parity on %d images: %s", len(images), report)
    if not identical or max_score_diff > tolerance:
        raise ExportError(f"{path}: ONNX Runtime and PyTorch disagree: {report}")
    return report


def _paired_score_diff(torch_out: tuple[np.ndarray, ...], onnx_out: tuple[np.ndarray, ...],
                       tolerance: float) -> tuple[float, int]:
    """Largest score difference over detections (>= SCORE_FLOOR) paired by class and box, and how
    many pairs were ties (see `parity_check`).

    Detections of one class whose boxes agree are paired. What is left is a tie when the other
    runtime has a detection of the same class and score (within `tolerance`), paired or not: the
    same heatmap value, another cell of its plateau chosen as the peak (a barely trained model's
    heatmap is one plateau over the whole image). Otherwise it counts as its score minus the
    floor: the other runtime has nothing like it. Detections at or above the operating threshold
    are compared box by box in `parity_check`, so a tie never hides a different decision there.
    """
    (t_boxes, t_scores, t_labels), (o_boxes, o_scores, o_labels) = torch_out, onnx_out
    t_left = [int(i) for i in np.nonzero(t_scores >= SCORE_FLOOR)[0]]
    o_left = [int(j) for j in np.nonzero(o_scores >= SCORE_FLOOR)[0]]
    worst, ties = 0.0, 0

    def pair(close) -> list[int]:  # noqa: ANN001 - (i, j) -> bool
        nonlocal worst
        unpaired = []
        for i in t_left:
            match = [j for j in o_left if o_labels[j] == t_labels[i] and close(i, j)]
            if not match:
                unpaired.append(i)
                continue
            j = min(match, key=lambda j: abs(float(o_scores[j] - t_scores[i])))
            o_left.remove(j)
            worst = max(worst, float(abs(o_scores[j] - t_scores[i])))
        return unpaired

    t_left = pair(lambda i, j: bool((np.abs(o_boxes[j] - t_boxes[i]) <= 0.05 + tolerance * np.abs(t_boxes[i])).all()))

    for score, label, (_, other_scores, other_labels) in [
            *((t_scores[i], t_labels[i], onnx_out) for i in t_left),
            *((o_scores[j], o_labels[j], torch_out) for j in o_left)]:
        same = (other_labels == label) & (np.abs(other_scores - score) <= tolerance) & (other_scores >= SCORE_FLOOR)
        if same.any():
            ties += 1
        else:
            worst = max(worst, float(score) - SCORE_FLOOR)
    return worst, ties


def _above(boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """[m, 5] rows (label, x1, y1, x2, y2) of detections >= threshold, in a canonical order."""
    keep = scores >= threshold
    rows = np.concatenate([labels[keep, None].astype(np.float64), boxes[keep].astype(np.float64)], axis=1)
    order = np.lexsort((np.round(rows[:, 2], 1), np.round(rows[:, 1], 1), rows[:, 0]))
    return rows[order]
