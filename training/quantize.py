"""int8 post-training quantization of a registered detector (`steel-inspect quantize`).

Why: on a CPU the fp32 detector runs at ~5-6 Mpx/s per core, far from the 40 Mpx/s of one hot-strip
surface. ONNX Runtime's int8 convolutions (VNNI on recent x86) run the same graph about 2x faster
on this machine; the question is only what the accuracy costs, so it is measured, and the usual
promotion gate (validation mAP@0.5, never the test split) decides whether the int8 model goes live.

Recipe (ONNX Runtime static quantization, QDQ format):
- convolutions only; weights int8 per output channel, activations uint8 with min/max ranges
  calibrated on `calibration_images` training-split images (deterministic shuffle, seed 0) plus
  `calibration_backgrounds` defect-free strip frames of the training seed family
  (`training.negatives.TRAIN_FAMILY`), because on a line most tiles are clean strip;
- the stem convolution and the output heads stay fp32 (`KEEP_FP32`): on hot-20261123-2 this was
  chosen on the VAL split -- every conv int8: val mAP@0.5 0.709 (fp32 0.737); heads kept fp32:
  0.732; heads and stem kept fp32: 0.740 -- at the same speed (13.2-13.8 vs 5.7-5.9 Mpx/s on one
  thread, 512 px tiles, batch 4).

The result is a new registry version whose manifest copies the source's (classes, threshold,
training record) and adds ``quantization`` (source version and sha256, recipe, calibration set,
agreement with the fp32 model on validation images), ``speed_side_by_side`` (fp32 and int8 in the
same run, alternating) and fresh ``metrics`` (val, test, background) measured through the
runtime's `Detector`.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from inspection.datasets import load_split, read_image
from inspection.detector import Detector
from inspection.errors import SteelInspectError
from inspection.manifest import load_manifest
from inspection.registry import Registry

log = logging.getLogger(__name__)

KEEP_FP32 = ("stem", "head")  # substrings of the conv node names left in fp32 (see the module docstring)


class QuantizeError(SteelInspectError):
    """A model cannot be quantized: unknown version, missing data, or quantization failed."""


def _pad(image: np.ndarray, multiple: int) -> np.ndarray:
    """Pad at the bottom and right as the runtime does (`Detector`), to the model's size multiple."""
    import cv2

    h, w = image.shape
    return cv2.copyMakeBorder(image, 0, -h % multiple, 0, -w % multiple, cv2.BORDER_REPLICATE)


def calibration_set(line_type: str, dataset: str, datasets_dir: Path, splits_dir: Path | None,
                    images: int, backgrounds: int, size_multiple: int = 32) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Training-split images and training-family background frames (as 512 px tiles)."""
    from training.negatives import TRAIN_FAMILY, background_tiles

    samples = load_split(datasets_dir, dataset, "train", splits_dir)
    if not samples:
        raise QuantizeError(f"{dataset}: the train split is empty, nothing to calibrate on")
    order = list(range(len(samples)))
    random.Random(0).shuffle(order)
    picked = [samples[i] for i in order[:images]]
    arrays = [_pad(read_image(s.image_path), size_multiple) for s in picked]
    tiles = background_tiles(line_type, backgrounds, TRAIN_FAMILY) if backgrounds else []
    info = {"train_images": len(picked), "dataset": dataset, "shuffle_seed": 0,
            "background_frames": backgrounds, "background_tiles": len(tiles),
            "background_seeds": f"np.random.default_rng([{TRAIN_FAMILY}, i]) for i < {backgrounds}"}
    return arrays + tiles, info


def quantize_file(source: Path, target: Path, calibration: Sequence[np.ndarray],
                  keep_fp32: Sequence[str] = KEEP_FP32) -> list[str]:
    """Write the int8 (QDQ) model of `source` to `target`; returns the conv nodes kept in fp32."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    try:
        convs = [n.name for n in onnx.load(str(source)).graph.node if n.op_type == "Conv"]
    except Exception as exc:  # noqa: BLE001 - protobuf / OS errors: a corrupt or unreadable file
        raise QuantizeError(f"{source}: not a readable ONNX model: {exc}") from None
    excluded = [name for name in convs if any(part in name for part in keep_fp32)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._items = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            image = next(self._items, None)
            return None if image is None else {"image": image[None, None]}

    try:
        quantize_static(str(source), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv"], per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=excluded)
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many kinds; name the model
        raise QuantizeError(f"{source}: ONNX Runtime quantization failed: {exc}") from None
    return excluded


def recalibrated_unknown(candidate: Detector, parent: Any, val: Sequence[Any], dataset: str,
                         unseen: Sequence[Any] = (), chosen_on: str = "this int8 copy's outputs",
                         novelty: dict[str, Any] | None = None, unseen_target: float | None = None
                         ) -> dict[str, Any]:
    """The unknown rule chosen again on a derived model's own outputs (val images and their line views,
    as at training, and `unseen`: the other line type's val images): an int8 copy's features, and so
    its novelty, differ from the fp32 source's; a crop classifier changes the class scores. `novelty`:
    where the candidate measures novelty otherwise than the source (a crop classifier's feature bank),
    what it measures, recorded in place of the source's prototypes. `unseen_target`: the share of the
    unseen types found that the budget is chosen to call unknown (`training.unknown.choose_rule`;
    None: `training.unknown.UNSEEN_TARGET`)."""
    from inspection.datasets import DATASET_CLASSES
    from training.thresholds import val_line_views
    from training.unknown import UNSEEN_TARGET, choose_rule, runtime_detections, unseen_pairs

    images = [read_image(s.image_path) for s in val]
    views = val_line_views(val, images, parent.line_type, DATASET_CLASSES[dataset])
    boxes = [*(s.boxes for s in val), *(v[1] for v in views)]
    unseen_found = runtime_detections(candidate, [read_image(s.image_path) for s in unseen])
    rule = choose_rule(runtime_detections(candidate, [*images, *(v[0] for v in views)]), boxes,
                       candidate.thresholds, unseen=unseen_pairs(unseen_found, unseen),
                       unseen_target=UNSEEN_TARGET if unseen_target is None else unseen_target)
    measured = {"novelty": novelty} if novelty else {"prototypes": parent.data["unknown"].get("prototypes")}
    return {**rule, **measured,
            "chosen_on": f"{chosen_on} (the source {parent.version}'s rule: "
                         f"novelty_max {parent.data['unknown']['novelty_max']}, "
                         f"class_share_min {parent.data['unknown']['class_share_min']})"}


def with_unknown_rule_again(manifest: dict[str, Any], work: Path, candidate: Detector, parent: Any,
                            val: Sequence[Any], datasets_dir: Path, splits_dir: Path | None,
                            chosen_on: str = "this int8 copy's outputs",
                            novelty: dict[str, Any] | None = None, unseen_target: float | None = None) -> Detector:
    """Where the source has an unknown rule: the rule chosen again on `candidate`'s outputs, written into
    `manifest` (and `work`/manifest.json); the candidate loaded again with it. Else `candidate` as it was.
    `unseen_target`: as `recalibrated_unknown`'s."""
    from training.unknown import unseen_val_samples

    if not (isinstance(parent.data.get("unknown"), dict) and parent.data["unknown"].get("novelty_max") is not None):
        return candidate
    manifest["unknown"] = recalibrated_unknown(candidate, parent, val, manifest["data"]["dataset"],
                                               unseen_val_samples(parent.line_type, datasets_dir, splits_dir),
                                               chosen_on=chosen_on, novelty=novelty, unseen_target=unseen_target)
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    return Detector(load_manifest(work / "manifest.json"), providers="cpu")


def derived_metrics(candidate: Detector, val: Sequence[Any], test: Sequence[Any], work: Path, datasets_dir: Path,
                    splits_dir: Path | None) -> dict[str, Any]:
    """What a model made from a registered one is measured by: val and test, defect-free background, and
    (with an unknown rule) the other line type's test defects, which it never learned."""
    from training.evaluate import evaluate
    from training.finalize import background_metric
    from training.unknown import unseen_test_figures

    line_type = candidate.manifest.line_type
    metrics = {"val": evaluate(candidate, val, work / "eval", plot_prefix="val-"),
               "test": evaluate(candidate, test, work / "eval", plot_prefix="test-")}
    if line_type in ("hot", "cold"):
        metrics["background"] = background_metric(candidate, line_type)
    if candidate.unknown_rule is not None:
        metrics["unseen_test"] = unseen_test_figures(candidate, line_type, datasets_dir, splits_dir)
    return metrics


def headline(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The val and test figures a derived model's summary prints, from `derived_metrics`' result."""
    keys = ("map50", "map50_95", "detection_rate", "false_detections_per_image", "image_accuracy")
    return {split: {k: metrics[split].get(k) for k in keys} for split in ("val", "test")}


def agreement(reference: Detector, candidate: Detector, images: Sequence[np.ndarray]) -> dict[str, Any]:
    """How far the int8 model's detections at the operating threshold follow the fp32 model's.

    A detection is matched when the other model has one of the same class with IoU >= 0.5."""
    from training.metrics import iou_matrix

    matched = total_ref = total_new = kept_new = 0
    score_diffs: list[float] = []
    for ref, new in zip(reference.detect(images), candidate.detect(images), strict=True):
        total_ref, total_new = total_ref + len(ref), total_new + len(new)
        if not len(ref) or not len(new):
            continue
        iou = iou_matrix(ref.boxes, new.boxes) * (ref.labels[:, None] == new.labels[None, :])
        best = iou.argmax(axis=1)
        hit = iou[np.arange(len(ref)), best] >= 0.5
        matched += int(hit.sum())
        kept_new += int((iou.max(axis=0) >= 0.5).sum())
        score_diffs += np.abs(ref.scores[hit] - new.scores[best[hit]]).tolist()
    return {"images": len(images), "fp32_detections": total_ref, "int8_detections": total_new,
            "fp32_found_by_int8": round(matched / total_ref, 4) if total_ref else None,
            "int8_found_by_fp32": round(kept_new / total_new, 4) if total_new else None,
            "matched_score_abs_diff_max": round(max(score_diffs), 4) if score_diffs else None,
            "matched_score_abs_diff_mean": round(float(np.mean(score_diffs)), 4) if score_diffs else None,
            "rule": "same class, IoU >= 0.5, at the operating threshold"}


def side_by_side_speed(paths: dict[str, Path], threads: Sequence[int] = (1, 2), batch: int = 4, size: int = 512,
                       trials: int = 5) -> dict[str, Any]:
    """Bare ONNX Runtime CPU throughput of each model, alternating trials in one run (median)."""
    import onnxruntime as ort

    from training.negatives import REPORT_FAMILY, TEXTURE_MAKERS

    tiles = np.stack([TEXTURE_MAKERS["hot"](np.random.default_rng([REPORT_FAMILY, 100 + i]), size, size)
                      for i in range(batch)])[:, None]
    result: dict[str, Any] = {"batch": batch, "tile": [size, size], "trials": trials, "statistic": "median"}
    for n in threads:
        sessions = {}
        for name, path in paths.items():
            options = ort.SessionOptions()
            options.intra_op_num_threads, options.inter_op_num_threads = n, 1
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            sessions[name].run(None, {"image": tiles})
        times: dict[str, list[float]] = {name: [] for name in paths}
        for _ in range(trials):
            for name, session in sessions.items():
                started = time.perf_counter()
                session.run(None, {"image": tiles})
                times[name].append(time.perf_counter() - started)
        result[f"threads_{n}"] = {name: round(batch * size * size / float(np.median(t)) / 1e6, 2)
                                  for name, t in times.items()}
    return result


def with_openvino_copy(manifest: dict[str, Any], work: Path, parent: Any, reference: Detector,
                       calibration: Sequence[np.ndarray], val: Sequence[Any], test: Sequence[Any]) -> dict[str, Path]:
    """Make the copy's OpenVINO quantization in `work`, measure it on OpenVINO (agreement with the fp32
    source, val and test) into `manifest["openvino"]`; the files for `Registry.add`'s `extra_files`."""
    from training.quantize_openvino import BIN, XML, quantize_for_openvino

    entry = quantize_for_openvino(parent.model_path, work, calibration)
    manifest["openvino"] = entry
    (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    on_openvino = Detector(load_manifest(work / "manifest.json"), providers="openvino")
    entry["agreement_val"] = agreement(reference, on_openvino, [read_image(s.image_path) for s in val[:64]])
    entry.update(openvino_figures(on_openvino, val, test, work))
    return {XML: work / XML, BIN: work / BIN}


def openvino_figures(on_openvino: Detector, val: Sequence[Any], test: Sequence[Any], work: Path
                     ) -> dict[str, Any]:
    """A version's OpenVINO copy measured on val and test (its manifest's ``openvino.metrics`` and
    ``metrics_runtime``); the plots go to `work`/eval-openvino."""
    from training.evaluate import evaluate

    return {"metrics": {"val": evaluate(on_openvino, val, work / "eval-openvino", plot_prefix="val-"),
                        "test": evaluate(on_openvino, test, work / "eval-openvino", plot_prefix="test-")},
            "metrics_runtime": on_openvino.providers[0]}


def quantize_version(source: str, *, models_dir: Path | None = None, datasets_dir: Path,
                     splits_dir: Path | None = None, calibration_images: int = 120,
                     calibration_backgrounds: int = 4, register: bool = True,
                     openvino: bool | None = None, clean_strip: Any = None) -> dict[str, Any]:
    """Quantize registered `source` (a version, hot/cold, or a path), evaluate, register; a summary dict.

    `openvino`: also make the copy's own OpenVINO quantization (`training.quantize_openvino`); None:
    when nncf and openvino are installed (else one INFO line says why not). `clean_strip`: an
    `inspection.clean_strip.Gate` that may keep a copy the val gate passed from going live (None: not run)."""
    from training.finalize import decide_activation, new_version_manifest, promotion_decision, register_gated
    from training.quantize_openvino import missing_packages

    if openvino is None:
        missing = missing_packages()
        openvino = not missing
        if missing:
            log.info("no OpenVINO copy: %s not installed (pip install -e '.[train]')", " and ".join(missing))

    registry = Registry(models_dir)
    parent = registry.resolve(source)
    if parent.data.get("ensemble"):  # its weights are stored as fp16 and its outputs are its members'
        raise QuantizeError(f"{parent.version} is an ensemble: quantizing one is not supported; its members run "
                            "in fp32 (on a GPU, as TensorRT fp16)")
    if parent.data.get("quantization"):
        raise QuantizeError(f"{parent.version} is already quantized (from "
                            f"{parent.data['quantization'].get('source_version')})")
    dataset = (parent.data.get("data") or {}).get("dataset")
    if not dataset:
        raise QuantizeError(f"{parent.version}: the manifest names no training dataset to calibrate on")
    log.info("quantizing %s: calibration on %d %s train images + %d background frames", parent.version,
             calibration_images, dataset, calibration_backgrounds)
    calibration, calibration_info = calibration_set(parent.line_type, dataset, datasets_dir, splits_dir,
                                                    calibration_images, calibration_backgrounds, parent.size_multiple)
    work = Path(tempfile.mkdtemp(prefix="steel-quantize-"))
    try:
        onnx_path = work / "model.onnx"
        started = time.perf_counter()
        kept = quantize_file(parent.model_path, onnx_path, calibration)
        log.info("quantized in %.1f s (%d conv nodes kept fp32)", time.perf_counter() - started, len(kept))
        version = registry.next_version(parent.line_type)
        manifest = new_version_manifest(parent.data, version, onnx_path, ("speed_bare_ort", "parity"))
        manifest["architecture"] = f"{parent.data.get('architecture', '')}; int8 (QDQ) quantized"
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        reference = Detector(parent, providers="cpu")
        candidate = Detector(load_manifest(work / "manifest.json"), providers="cpu")
        val = load_split(datasets_dir, dataset, "val", splits_dir)
        test = load_split(datasets_dir, dataset, "test", splits_dir)
        manifest["quantization"] = {
            "source_version": parent.version, "source_sha256": parent.sha256, "tool": "onnxruntime.quantization",
            "format": "QDQ", "ops": ["Conv"], "weights": "int8 per channel", "activations": "uint8",
            "calibration_method": "MinMax", "kept_fp32": kept, "calibration": calibration_info,
            "agreement_val": agreement(reference, candidate, [read_image(s.image_path) for s in val[:64]]),
            "command": f"steel-inspect quantize {parent.version}"}
        candidate = with_unknown_rule_again(manifest, work, candidate, parent, val, datasets_dir, splits_dir)
        manifest["speed_side_by_side"] = side_by_side_speed({"fp32": parent.model_path, "int8": onnx_path})
        metrics = derived_metrics(candidate, val, test, work, datasets_dir, splits_dir)
        manifest["metrics"] = metrics
        extra_files = with_openvino_copy(manifest, work, parent, reference, calibration, val, test) if openvino else {}
        activate, reason = promotion_decision(registry, parent.line_type, metrics["val"].get("map50"))
        activate, reason = decide_activation(registry, parent.line_type, work, manifest, activate, reason,
                                             clean_strip, register)
        summary = {"version": version, "source": parent.version, "registered": register,
                   "activated": activate, "promotion": reason,
                   "speed": manifest["speed_side_by_side"], "agreement_val": manifest["quantization"]["agreement_val"],
                   **headline(metrics),
                   "source_metrics": {split: (parent.data.get("metrics") or {}).get(split, {}).get("map50")
                                      for split in ("val", "test")},
                   "background_per_mpx": metrics.get("background", {}).get("detections_per_mpx")}
        if "openvino" in manifest:
            figures = ("map50", "detection_rate", "false_detections_per_image", "image_accuracy")
            summary["openvino"] = {split: {k: manifest["openvino"]["metrics"][split].get(k) for k in figures}
                                   for split in ("val", "test")}
        if register:
            register_gated(registry, onnx_path, manifest, activate, reason, extra_files)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)
