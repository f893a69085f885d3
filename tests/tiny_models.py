"""Tiny real ONNX detectors built with the `onnx` helper API (no torch), for tests.

`build_blob_model` writes a model with the production contract (input `image` uint8
[N, 1, H, W]; outputs `boxes` [N, K, 4], `scores` [N, K] sorted descending, `labels` int64
[N, K]) that "detects" bright blobs on a dark background:

- the image is cut into `stride` x `stride` cells (H and W are multiples of `stride`, which
  the manifest publishes as `size_multiple`, so the runtime pads for it);
- a cell whose brightest pixel is >= 128 is one detection; its box is the exact extent of
  the pixels >= 128 inside that cell, its score is brightest / 255 (0.5 ... 1.0), and its
  class is the brightness band: the range 128..255 split evenly into `len(classes)` bands.

So a blob drawn with `blob_value(k, n)` inside one cell is found with class k and a known
score; a blob that crosses a cell border comes out as one box per cell (like duplicate
detections of a real model). Everything is computed by the ONNX graph, so pipelines that
use it (detector, evaluation, worker) are exercised for real.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper

BRIGHT = 128  # pixels at or above this value belong to a blob
DARK = 40  # a background value well below BRIGHT
_BIG = 1.0e6


def blob_value(class_index: int, num_classes: int) -> int:
    """The pixel value whose brightness band is `class_index` (the middle of the band)."""
    if not 0 <= class_index < num_classes:
        raise ValueError(f"class_index {class_index} outside 0..{num_classes - 1}")
    band = (256 - BRIGHT) / num_classes
    return int(BRIGHT + band * (class_index + 0.5))


def expected_score(value: int) -> float:
    """The score the model gives a blob whose brightest pixel is `value`."""
    return value / 255.0


def blob_image(height: int, width: int, blobs: Sequence[tuple[Sequence[int], int]] = (),
               num_classes: int = 2, background: int = DARK) -> np.ndarray:
    """A dark uint8 image with filled rectangles `(x1, y1, x2, y2)` (exclusive ends) per class."""
    image = np.full((height, width), background, dtype=np.uint8)
    for (x1, y1, x2, y2), class_index in blobs:
        image[y1:y2, x1:x2] = blob_value(class_index, num_classes)
    return image


def _const(name: str, values: Any, dtype: int = TensorProto.INT64) -> onnx.NodeProto:
    array = np.asarray(values)
    tensor = helper.make_tensor(name + "_value", dtype, array.shape, array.flatten().tolist())
    return helper.make_node("Constant", [], [name], value=tensor)


def _cell_pool(nodes: list, name: str, source: str, stride: int) -> str:
    nodes.append(helper.make_node("MaxPool", [source], [name], kernel_shape=[stride, stride],
                                  strides=[stride, stride]))
    return name


def build_blob_model(path: Path, num_classes: int = 2, stride: int = 32, max_detections: int = 20,
                     opset: int = 17) -> Path:
    """Write the bright-blob detector to `path` and return it."""
    k = max_detections
    n: list = []
    n.append(helper.make_node("Cast", ["image"], ["img_f"], to=TensorProto.FLOAT))
    n.append(_const("c255", 255.0, TensorProto.FLOAT))
    n.append(helper.make_node("Div", ["img_f", "c255"], ["v"]))
    n.append(_const("half", BRIGHT / 255.0 - 1e-6, TensorProto.FLOAT))
    n.append(helper.make_node("GreaterOrEqual", ["v", "half"], ["mask_b"]))
    n.append(helper.make_node("Cast", ["mask_b"], ["mask"], to=TensorProto.FLOAT))
    # Pixel coordinate grids of the (dynamic) input size.
    n.append(helper.make_node("Shape", ["image"], ["shape"]))
    for axis, name in ((2, "h"), (3, "w")):
        n.append(_const(f"i{axis}", [axis]))
        n.append(helper.make_node("Gather", ["shape", f"i{axis}"], [f"{name}_1"], axis=0))
        n.append(helper.make_node("Squeeze", [f"{name}_1"], [f"{name}_s"]))
        n.append(helper.make_node("Cast", [f"{name}_s"], [f"{name}_f"], to=TensorProto.FLOAT))
    n.append(_const("zero_f", 0.0, TensorProto.FLOAT))
    n.append(_const("one_f", 1.0, TensorProto.FLOAT))
    n.append(helper.make_node("Range", ["zero_f", "w_f", "one_f"], ["xs"]))
    n.append(helper.make_node("Range", ["zero_f", "h_f", "one_f"], ["ys"]))
    n.append(_const("shape_x", [1, 1, 1, -1]))
    n.append(_const("shape_y", [1, 1, -1, 1]))
    n.append(helper.make_node("Reshape", ["xs", "shape_x"], ["grid_x"]))
    n.append(helper.make_node("Reshape", ["ys", "shape_y"], ["grid_y"]))
    n.append(_const("big", _BIG, TensorProto.FLOAT))
    n.append(helper.make_node("Sub", ["one_f", "mask"], ["not_mask"]))
    n.append(helper.make_node("Mul", ["not_mask", "big"], ["far"]))
    for axis in ("x", "y"):
        # max extent: exclusive end = max(mask * (coord + 1)); min extent: -max(-(coord or BIG))
        n.append(helper.make_node("Add", [f"grid_{axis}", "one_f"], [f"{axis}p1"]))
        n.append(helper.make_node("Mul", ["mask", f"{axis}p1"], [f"{axis}_end_px"]))
        _cell_pool(n, f"{axis}2_cell", f"{axis}_end_px", stride)
        n.append(helper.make_node("Mul", ["mask", f"grid_{axis}"], [f"{axis}_m"]))
        n.append(helper.make_node("Add", [f"{axis}_m", "far"], [f"{axis}_start_px"]))
        n.append(helper.make_node("Neg", [f"{axis}_start_px"], [f"{axis}_start_neg"]))
        _cell_pool(n, f"{axis}1_neg_cell", f"{axis}_start_neg", stride)
        n.append(helper.make_node("Neg", [f"{axis}1_neg_cell"], [f"{axis}1_cell"]))
    _cell_pool(n, "vmax_cell", "v", stride)
    # Flatten every per-cell map to [N, cells] and pad with K empty cells so TopK always has K.
    n.append(_const("i0", [0]))
    n.append(helper.make_node("Gather", ["shape", "i0"], ["n_1"], axis=0))
    n.append(_const("k_1", [k]))
    n.append(helper.make_node("Concat", ["n_1", "k_1"], ["pad_shape"], axis=0))
    n.append(helper.make_node("ConstantOfShape", ["pad_shape"], ["pad"],
                              value=helper.make_tensor("z", TensorProto.FLOAT, [1], [0.0])))
    n.append(_const("flat_shape", [0, -1]))
    for name in ("vmax_cell", "x1_cell", "y1_cell", "x2_cell", "y2_cell"):
        n.append(helper.make_node("Reshape", [name, "flat_shape"], [name + "_flat"]))
        n.append(helper.make_node("Concat", [name + "_flat", "pad"], [name + "_padded"], axis=1))
    n.append(helper.make_node("GreaterOrEqual", ["vmax_cell_padded", "half"], ["hit_b"]))
    n.append(helper.make_node("Cast", ["hit_b"], ["hit"], to=TensorProto.FLOAT))
    n.append(helper.make_node("Mul", ["vmax_cell_padded", "hit"], ["cell_score"]))
    n.append(helper.make_node("TopK", ["cell_score", "k_1"], ["scores", "top_idx"], axis=1, largest=1,
                              sorted=1))
    n.append(helper.make_node("GreaterOrEqual", ["scores", "half"], ["keep_b"]))
    n.append(helper.make_node("Cast", ["keep_b"], ["keep"], to=TensorProto.FLOAT))
    coords = []
    for name in ("x1_cell", "y1_cell", "x2_cell", "y2_cell"):
        n.append(helper.make_node("GatherElements", [name + "_padded", "top_idx"], [name + "_top"], axis=1))
        n.append(helper.make_node("Mul", [name + "_top", "keep"], [name + "_kept"]))
        n.append(_const(name + "_ax", [2]))
        n.append(helper.make_node("Unsqueeze", [name + "_kept", name + "_ax"], [name + "_u"]))
        coords.append(name + "_u")
    n.append(helper.make_node("Concat", coords, ["boxes"], axis=2))
    # Class = brightness band of the cell's brightest pixel.
    n.append(_const("bands", float(num_classes) * 255.0 / (256 - BRIGHT), TensorProto.FLOAT))
    n.append(helper.make_node("Sub", ["scores", "half"], ["above"]))
    n.append(helper.make_node("Mul", ["above", "bands"], ["band_f"]))
    n.append(helper.make_node("Floor", ["band_f"], ["band_floor"]))
    n.append(_const("max_band", float(num_classes - 1), TensorProto.FLOAT))
    n.append(helper.make_node("Clip", ["band_floor", "zero_f", "max_band"], ["band_clip"]))
    n.append(helper.make_node("Mul", ["band_clip", "keep"], ["band_kept"]))
    n.append(helper.make_node("Cast", ["band_kept"], ["labels"], to=TensorProto.INT64))
    graph = helper.make_graph(
        n, "tiny_blob_detector",
        [helper.make_tensor_value_info("image", TensorProto.UINT8, ["N", 1, "H", "W"])],
        [helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["N", k, 4]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["N", k]),
         helper.make_tensor_value_info("labels", TensorProto.INT64, ["N", k])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def tiny_manifest(classes: Sequence[str] = ("dark_spot", "bright_spot"), line_type: str = "hot",
                  version: str | None = None, stride: int = 32, max_detections: int = 20,
                  operating_threshold: float = 0.5, operating_thresholds: dict[str, float] | None = None
                  ) -> dict[str, Any]:
    """Manifest content for the blob model (sha256/size are filled in by `Registry.add`)."""
    manifest: dict[str, Any] = {
        "schema": 1, "line_type": line_type,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "classes": list(classes),
        "input": {"name": "image", "dtype": "uint8", "layout": "NCHW", "channels": 1,
                  "size_multiple": stride, "train_size": [stride * 2, stride * 2]},
        "outputs": {"boxes": "float32 [N, K, 4] x1 y1 x2 y2 px", "scores": "float32 [N, K]",
                    "labels": "int64 [N, K]", "max_detections": max_detections},
        "preprocessing": "uint8 / 255; cells of stride px; pixels >= 128 are a blob",
        "operating_threshold": operating_threshold,
        "architecture": "tests/tiny_models.py bright-blob detector (no learning)",
        "pretrained": None,
        "training": None,
        "data": None,
    }
    if version is not None:
        manifest["version"] = version
    if operating_thresholds is not None:
        manifest["operating_thresholds"] = operating_thresholds
    return manifest


def add_tiny_model(registry: Any, tmp_dir: Path, classes: Sequence[str] = ("dark_spot", "bright_spot"),
                   line_type: str = "hot", version: str | None = None, activate: bool = False,
                   stride: int = 32, max_detections: int = 20, operating_threshold: float = 0.5,
                   operating_thresholds: dict[str, float] | None = None) -> Any:
    """Build the blob model in `tmp_dir` and add it to `registry` (an `inspection.registry.Registry`)."""
    model = build_blob_model(tmp_dir / f"blob-{line_type}-{len(classes)}-{stride}.onnx", len(classes),
                             stride, max_detections)
    manifest = tiny_manifest(classes, line_type, version, stride, max_detections, operating_threshold,
                             operating_thresholds)
    return registry.add(model, manifest, version=version, activate=activate)
