"""The final step of `steel-inspect train`: pick the operating point on val, export to ONNX with a
parity check, evaluate on the TEST split through the runtime's own `Detector`, write the manifest
and register the model; it becomes active unless its validation mAP@0.5 is more than `MAX_MAP50_DROP`
below the active model's (then it is registered only, and the reason is in the manifest's
`promotion`). Runs on its own from a finished checkpoint folder (`--resume`).

Choices made on the validation split only (never on test):
- score fusion with the image-level head on or off, whichever gives the higher val mAP@0.5;
- the operating threshold maximising F2 of class-agnostic detection (IoU >= 0.3, as the detection
  rate is defined) over thresholds 0.05..0.80: recall weighs 4x precision because a missed defect
  reaches a customer while a false alarm costs an inspector a glance;
- with a background cap (`Recipe.background_cap`, CLI `--background-cap`), only thresholds whose
  detections per megapixel on defect-free background frames (seed family
  `training.negatives.CHOICE_FAMILY`, not the reported one) stay at or under the cap compete; if
  none does, the threshold with the fewest background detections wins. NEU val alone cannot see
  this failure: every val image holds a defect, so a false alarm on clean strip costs nothing there,
  while on a line clean strip is almost all there is.

The background false-positive figure in `metrics.background` is measured through the runtime's
`Detector` at the operating threshold on held-out frames (`training.negatives.REPORT_FAMILY`), for
the new model and for the line type's previously active model (`previous_active`), so the change
is visible in one place.

With plant data (`--plant-data`), the choices above are made on the public and the plant val parts
together; `metrics.val` and `metrics.test` stay the public splits' (comparable with every earlier
model), `metrics.plant_val` and `metrics.plant_test` are the plant parts', the held-out plant samples
are written to `OUT/plant-test/` for `models compare`, and the model is registered but not activated:
public val alone cannot judge what it learned at the plant, so it is promoted by hand through the gate.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from inspection.code_version import code_version
from inspection.config import REPO_DIR
from inspection.datasets import DATASET_CLASSES, load_split, read_image, read_split_file, split_path
from inspection.errors import SteelInspectError
from inspection.manifest import file_sha256
from training.export import SIZE_MULTIPLE, export_onnx, parity_check
from training.metrics import ImageResult, detection_rate, false_detections, mean_ap
from training.model import PRETRAINED_INFO
from training.negatives import (
    CHOICE_FAMILY,
    REPORT_FAMILY,
    TEXTURE_MAKERS,
    background_report,
    background_tiles,
    per_mpx,
)
from training.plant_data import PlantData, write_holdout
from training.split import split_hashes
from training.thresholds import class_thresholds, val_line_views
from training.train import (
    Options,
    _limit,
    build_model,
    effective_recipe,
    load_plant,
    model_classes,
    plant_part,
    predict_samples,
    split_samples,
    val_results,
)

log = logging.getLogger(__name__)
BACKBONES = {"lite0": "EfficientNet-Lite0 (ImageNet weights, fine-tuned; grayscale stem)",
             "plain": "ResNet-style dense-conv CNN (stem 24, stages 32/64/128/256, trained from scratch)",
             "plain-deep": "ResNet-style dense-conv CNN (stem 24, stages 32/64/128/256 with 1/2/3/2 residual "
                           "blocks, trained from scratch)"}
# NMS IoU settings compared on val (None: 3x3 peaks only); the order breaks ties (simplest first).
# (Image-score fusion used to be a candidate too: see `training.model` for why it is gone.)
POSTPROCESSING = [None, 0.7, 0.6, 0.5, 0.4]
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 17))
CHOICE_FRAMES = 8  # background frames for the threshold choice (48 tiles of 512 px, 12.6 Mpx)
MAX_MAP50_DROP = 0.03  # a new model that loses more val mAP@0.5 than this is registered, not activated
REPORT_FRAMES = 20  # held-out background frames for the reported figure (120 tiles, 31.5 Mpx)


def choose_threshold(results: list[ImageResult], background: Callable[[float], float] | None = None,
                     cap: float | None = None) -> tuple[float, dict[str, Any]]:
    """The threshold with the best class-agnostic F2 on `results`; with `background` (threshold ->
    detections per Mpx on defect-free frames) and `cap`, only thresholds at or under the cap compete
    (none: the fewest background detections). See the module docstring."""
    rows = []
    for t in THRESHOLDS:
        recall = detection_rate(results, t) or 0.0
        above = sum(int((r.pred_scores >= t).sum()) for r in results)
        precision = 1.0 - false_detections(results, t) / above if above else 0.0
        f2 = 5 * precision * recall / (4 * precision + recall) if precision + recall else 0.0
        info: dict[str, Any] = {"f2": round(f2, 4), "recall": round(recall, 4), "precision": round(precision, 4)}
        bg = background(t) if background is not None else None
        if bg is not None:
            info["background_per_mpx"] = round(bg, 3)
        rows.append((t, f2, bg, info))
    feasible = [r for r in rows if cap is None or r[2] is None or r[2] <= cap]
    if feasible:
        t, _, _, info = max(feasible, key=lambda r: r[1])  # first (lowest) threshold on ties
    else:
        t, _, _, info = min(rows, key=lambda r: (r[2], -r[1]))
    if cap is not None and background is not None:
        info.update(background_cap_per_mpx=cap, background_cap_met=bool(feasible))
    return t, info


def bare_ort_speed(model_path: Path, batch: int = 8, size: int = 512, repeats: int = 3) -> dict[str, Any]:
    """Bare ONNX Runtime CPU throughput on random uint8 tiles (2 threads), in megapixels per second."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    tiles = np.random.default_rng(0).integers(0, 256, (batch, 1, size, size), dtype=np.uint8)
    session.run(None, {"image": tiles})
    started = time.perf_counter()
    for _ in range(repeats):
        session.run(None, {"image": tiles})
    seconds = (time.perf_counter() - started) / repeats
    return {"batch": batch, "tile": [size, size], "threads": 2, "seconds_per_batch": round(seconds, 4),
            "mpx_per_s": round(batch * size * size / seconds / 1e6, 2)}


def _hardware() -> str:
    from inspection.benchmarks._line import hardware

    h = hardware()
    return f"{h['cpu']}, {h['cores']} CPU cores (shared), no GPU, {platform.system()}"

def promotion_decision(registry: Any, line_type: str, new_map50: float | None) -> tuple[bool, str]:
    """Activate a new model unless its **validation** mAP@0.5 is more than MAX_MAP50_DROP below the
    active one's (the val split is fixed, so the figures compare one to one). The decision never
    looks at the test split, which stays a report, not a selection criterion."""
    active = registry.active(line_type)
    if active is None:
        return True, "activated when added: no active model"
    try:
        old = registry.resolve(active).data.get("metrics", {}).get("val", {}).get("map50")
    except Exception as exc:  # noqa: BLE001 - an unreadable old model cannot veto the new one
        return True, f"activated when added: the active {active} does not load ({exc})"
    if old is None or new_map50 is None:
        return True, f"activated when added: no val mAP@0.5 to compare with {active}"
    text = f"val mAP@0.5 {new_map50:.4f} vs {old:.4f} of {active} (allowed drop {MAX_MAP50_DROP})"
    if new_map50 < old - MAX_MAP50_DROP:
        return False, "not activated: " + text
    return True, "activated when added: " + text


def decide_activation(registry: Any, line_type: str, folder: Path, manifest: dict[str, Any], activate: bool,
                      reason: str, gate: Any, register: bool) -> tuple[bool, str]:
    """Whether the new model in `folder` goes live, written into ``manifest["promotion"]``: what the val gate
    said (`activate`, `reason`), unless it is not registered, and then the clean-strip check
    (`inspection.clean_strip.Gate`), which runs the active model and the candidate (its model file, and
    `manifest`, written there now, as it will be registered) through the line on defect-free strip and
    may say no. The check does not run when the val gate said no, without a gate or an active model, or
    with the gate's frames at 0. A check that cannot run (its frames folder gone, a line that does not
    start) keeps the model from going live but not from being registered: hours of training are not lost
    to it, and `models promote` runs the check again once the cause is mended."""
    if not register:  # --no-register: the export's manifest must not claim an activation that never happened
        reason = f"not registered (--no-register); the val gate said: {reason}"
    activate = activate and register
    active = registry.active(line_type)
    figures = None
    if activate and gate is not None and gate.frames > 0 and active is not None:
        (folder / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        log.info("clean-strip check: %s beside the active %s, %d frames per camera", manifest["version"], active,
                 gate.frames)
        try:
            figures = gate.compare(active, str(folder), line_type=line_type, registry=registry.root)
        except SteelInspectError as exc:
            log.error("clean-strip check could not run: %s", exc)
            activate, figures = False, {"run": False, "why": str(exc)}
            reason = f"not activated: the clean-strip check could not run: {exc} ({reason})"
        else:
            activate = not figures["findings"]
            reason = (f"{reason}; {gate.summary(figures)}" if activate
                      else f"not activated: {'; '.join(figures['findings'])} ({reason})")
    manifest["promotion"] = {"activated": activate, "reason": reason, **({"clean_strip": figures} if figures else {})}
    return activate, reason


# what a new version never inherits: the source's figures and gate decision (the new file is measured and
# gated again) and the stamps `new_version_manifest` writes for the new file
NOT_INHERITED = ("metrics", "promotion", "version", "created", "code_version", "sha256", "size_bytes")


def new_version_manifest(source: dict[str, Any], version: str, model_file: Path, also_drop: Iterable[str] = ()
                         ) -> dict[str, Any]:
    """A version made from a registered one (`quantize`, `classifier`, `ensemble`, `unknown-rule`): the
    `source` manifest's fields but `NOT_INHERITED` and `also_drop` (what else describes the source's own
    file), stamped as `version` of `model_file`: created now, by this code, with the file's sha256 and size."""
    dropped = {*NOT_INHERITED, *also_drop}
    manifest = {k: v for k, v in source.items() if k not in dropped}
    manifest.update(version=version, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    code_version=code_version(), sha256=file_sha256(model_file),
                    size_bytes=model_file.stat().st_size)
    return manifest


def register_gated(registry: Any, onnx_path: Path, manifest: dict[str, Any], activate: bool, reason: str,
                   extra_files: dict[str, Path] | None = None) -> None:
    """Add the model with its manifest (and `extra_files`, see `Registry.add`); promote it when the gate
    said so. The evaluation plots stay in the run's folder, not the registry: the manifest holds their
    figures, and `evaluate` draws them again."""
    registry.add(onnx_path, manifest, version=manifest["version"], extra_files=extra_files)
    if activate:
        registry.promote(manifest["version"], reason=reason)
    else:
        log.warning("%s registered but NOT activated: %s", manifest["version"], reason)


def background_metric(detector: Any, line_type: str, frames: int | None = None) -> dict[str, Any]:
    """Detections per Mpx of a runtime `Detector` at its operating thresholds (each class its own)
    on held-out frames (default: REPORT_FRAMES)."""
    frames = REPORT_FRAMES if frames is None else frames
    tiles = background_tiles(line_type, frames, REPORT_FAMILY)
    manifest = detector.manifest
    scores = [d.scores for d in detector.detect(tiles)]  # already at each class's operating threshold
    report = background_report(scores, tiles, 0.0, frames, REPORT_FAMILY,
                               int(manifest.data.get("outputs", {}).get("max_detections", 100)), line_type)
    return {**report, "threshold": manifest.operating_threshold,
            "thresholds": dict(zip(manifest.classes, manifest.class_thresholds, strict=True)),
            "version": manifest.version}


def _background(detector: Any, line_type: str, registry: Any) -> dict[str, Any]:
    from inspection.detector import Detector as RuntimeDetector

    result = background_metric(detector, line_type)
    log.info("background: %.3f detections per Mpx at threshold %.2f", result["detections_per_mpx"],
             result["threshold"])
    active = registry.active(line_type)
    if active is not None and active != result["version"]:
        try:
            result["previous_active"] = background_metric(RuntimeDetector(registry.resolve(active),
                                                                          providers="cpu"), line_type)
        except Exception as exc:  # noqa: BLE001 - a broken old model must not lose the new one
            log.warning("background figure of the previous active model %s failed: %s", active, exc)
    return result


def _background_floor(background: Callable[[float], float] | None, cap: float | None, threshold: float) -> float:
    """The lowest threshold whose background detections stay within the cap (no cap: the lowest)."""
    if background is None or cap is None:
        return THRESHOLDS[0]
    return next((t for t in THRESHOLDS if background(t) <= cap), threshold)


def _unknown_rule(model: Any, opts: Options, recipe: Any, classes: tuple[str, ...], images: list[np.ndarray],
                  boxes: list[np.ndarray], thresholds: np.ndarray, plant: PlantData | None) -> dict[str, Any]:
    """Set the model's class prototypes from the train split and choose the unknown rule on val."""
    from training.unknown import (
        SHRINK,
        UNSEEN_TARGET,
        choose_rule,
        detections,
        prototypes,
        unseen_pairs,
        unseen_val_samples,
    )

    train = split_samples(opts, recipe, "train", plant)
    means, precision, counts = prototypes(model, train, [read_image(s.image_path) for s in train], classes)
    model.set_prototypes(torch.from_numpy(means), torch.from_numpy(precision))
    described = {"split": "train", "boxes_per_class": counts, "shrink": SHRINK, "features": int(means.shape[1])}
    try:
        unseen = unseen_val_samples(opts.line_type, opts.datasets_dir, opts.splits_dir, opts.max_images)
        unseen_found = detections(model, [read_image(s.image_path) for s in unseen])
        rule = choose_rule(detections(model, images), boxes, thresholds, unseen=unseen_pairs(unseen_found, unseen),
                           unseen_target=UNSEEN_TARGET)
    except ValueError as exc:  # a model that finds nothing on val: no rule, every class stays as detected
        log.warning("no unknown rule: %s", exc)
        return {"rule": None, "why": str(exc), "prototypes": described}
    log.info("unknown rule: %s", rule)
    return {**rule, "prototypes": described}


def _plant_metrics(detector: Any, plant: PlantData, max_images: int | None, eval_dir: Path) -> dict[str, Any]:
    """The model's figures on the plant val part and on the held-out plant coils, reported apart from
    the public splits' (their images are the plant's own crops, not comparable with the public figures)."""
    from training.evaluate import evaluate

    out = {}
    for split in ("val", "test"):
        samples = plant_part(plant, split, max_images)
        figures = evaluate(detector, samples, eval_dir, plot_prefix=f"plant-{split}-")
        figures["coils"] = plant.coils[split]
        out[f"plant_{split}"] = figures
    return out


def finalize(opts: Options, state: dict[str, Any], models_dir: Path, register: bool = True) -> dict[str, Any]:
    from inspection.detector import Detector as RuntimeDetector
    from inspection.manifest import load_manifest
    from inspection.registry import Registry
    from training.evaluate import evaluate

    if opts.exclude_classes and register:
        log.warning("a model trained without %s is an experiment: it is exported and evaluated, not registered",
                    ", ".join(opts.exclude_classes))
        register = False
    recipe = effective_recipe(opts)
    plant = load_plant(opts, recipe)
    classes = model_classes(recipe, opts, plant)
    model = build_model(recipe, num_classes=len(classes))
    best = torch.load(opts.out_dir / "best.pt", map_location="cpu", weights_only=True)
    model.load_state_dict(best["ema"])
    model.eval()
    public_val = split_samples(opts, recipe, "val")
    val = public_val + plant_part(plant, "val", opts.max_images)  # choices are made on both
    test = _limit(load_split(opts.datasets_dir, recipe.dataset, "test", opts.splits_dir), opts.max_images)
    val_images = [read_image(s.image_path) for s in val]

    grid = val_results(model, val, val_images, classes, settings=POSTPROCESSING)
    choice = {g: (mean_ap(results, len(classes)) or 0.0, results) for g, results in grid.items()}
    best_setting = max(POSTPROCESSING, key=lambda g: choice[g][0])  # first wins ties: simplest
    model.nms_iou = best_setting
    background = None
    if opts.line_type in TEXTURE_MAKERS:
        choice_tiles = background_tiles(opts.line_type, CHOICE_FRAMES, CHOICE_FAMILY)
        choice_scores = [sc for _, sc, _ in predict_samples(model, choice_tiles, batch_size=8)]
        background = lambda t: per_mpx(choice_scores, choice_tiles, t)  # noqa: E731
    threshold, at_threshold = choose_threshold(choice[best_setting][1], background, recipe.background_cap)
    log.info("val mAP@0.5 per NMS IoU: %s; chosen %s, threshold %.2f %s",
             {str(g): round(v[0], 4) for g, v in choice.items()}, best_setting, threshold, at_threshold)
    views = val_line_views(val, val_images, opts.line_type, classes)
    view_results = [ImageResult(b, lb, *pred) for (_, b, lb), pred in
                    zip(views, predict_samples(model, [v[0] for v in views], batch_size=8), strict=True)]
    floor = _background_floor(background, recipe.background_cap, threshold)
    per_class, per_class_info = class_thresholds([*choice[best_setting][1], *view_results], classes, THRESHOLDS,
                                                 floor)
    log.info("per-class thresholds (val images + %d line views, floor %.2f): %s", len(views), floor, per_class)
    unknown = _unknown_rule(model, opts, recipe, classes, [*val_images, *(v[0] for v in views)],
                            [*(s.boxes for s in val), *(v[1] for v in views)],
                            np.array([per_class[c] for c in classes], np.float32), plant)

    export_dir = opts.out_dir / "export"
    shutil.rmtree(export_dir, ignore_errors=True)
    onnx_path = export_onnx(model, export_dir / "model.onnx")
    parity = parity_check(model, onnx_path, val_images[:64], threshold)
    speed = bare_ort_speed(onnx_path) if opts.speed_check else {"mpx_per_s": None, "skipped": True}
    registry = Registry(models_dir)
    version = registry.next_version(opts.line_type)
    split = read_split_file(recipe.dataset, opts.splits_dir)
    split_file = split_path(recipe.dataset, opts.splits_dir).resolve()
    manifest: dict[str, Any] = {
        "schema": 1, "version": version, "line_type": opts.line_type,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model_file": "model.onnx", "classes": list(classes),
        "class_sources": {c: recipe.dataset if c in DATASET_CLASSES[recipe.dataset] else "plant" for c in classes},
        **({"classes_excluded": list(opts.exclude_classes)} if opts.exclude_classes else {}),
        "input": {"name": "image", "dtype": "uint8", "layout": "NCHW", "channels": 1,
                  "size_multiple": SIZE_MULTIPLE, "train_size": list(recipe.window)},
        "outputs": {"boxes": "float32 [N, K, 4] x1, y1, x2, y2 in input pixels",
                    "scores": "float32 [N, K] probabilities, sorted descending",
                    "labels": "int64 [N, K] index into classes", "max_detections": model.max_detections},
        "preprocessing": f"inside the graph: uint8 -> float32, (x - {model.mean}) / {model.std}; no resize "
                         "(native pixel scale); "
                         f"stride-{recipe.stride} heatmap peaks by 3x3 max-pool, top-{model.max_detections}"
                         + (f", fast NMS per class at IoU > {model.nms_iou}, re-sorted" if model.nms_iou else ""),
        "postprocessing_val_map50": {f"nms_iou={g}": round(v[0], 4) for g, v in choice.items()},
        "operating_threshold": threshold,
        "operating_thresholds": per_class,
        "unknown": unknown,
        "operating_point_val": {**at_threshold, "per_class": per_class_info, "per_class_floor": floor,
                                "per_class_rule": "max F2 per class on val images + one line view of each "
                                                  f"(training.thresholds, {len(views)} views), never below the floor",
                                "rule": "max F2 of class-agnostic detection at IoU 0.3 on val"
                                + (f", background detections <= {recipe.background_cap}/Mpx on frames "
                                   f"default_rng([{CHOICE_FAMILY}, i]), i < {CHOICE_FRAMES}"
                                   if recipe.background_cap is not None and background is not None else "")},
        "architecture": (f"{BACKBONES[recipe.backbone]} backbone, FPN, TTFNet-style anchor-free heads at "
                         f"stride {recipe.stride} (class heatmaps + GIoU box distances), image-level "
                         f"multi-label head; {sum(p.numel() for p in model.parameters())} parameters"),
        "pretrained": PRETRAINED_INFO if recipe.backbone == "lite0" else None,
        "training": {"command": " && ".join(state.get("commands") or [opts.command]), "seed": opts.seed,
                     "epochs": state["epoch"], "planned_epochs": state["planned_epochs"],
                     "cut_by_time_budget": state.get("budget_cut", False),
                     "best_epoch": best.get("epoch"), "best_val_map50_torch": state.get("best_map"),
                     "duration_s": round(state["elapsed_s"], 1), "hardware": _hardware(),
                     "torch": torch.__version__, "recipe": asdict(recipe), "history": state["history"],
                     "max_images": opts.max_images,
                     "negatives": state.get("negatives", {"share": 0.0, "per_epoch": 0}),
                     "line_views": state.get("line_views", {"share": 0.0}),
                     "outliers": state.get("outliers", {"share": 0.0}),
                     **{key: state[key] for key in ("init_from", "distill") if key in state},
                     "precision": state.get("precision", "bf16 autocast")},
        "data": {"dataset": recipe.dataset,
                 "split_file": str(split_file.relative_to(REPO_DIR) if split_file.is_relative_to(REPO_DIR)
                                   else split_file),
                 "split_sha256": split_hashes(split), "split_seed": split["seed"],
                 **({"plant": plant.describe()} if plant is not None else {})},
        "code_version": code_version(), "parity": parity, "speed_bare_ort": speed,
    }

    manifest.update(sha256=file_sha256(onnx_path), size_bytes=onnx_path.stat().st_size)
    (export_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    detector = RuntimeDetector(load_manifest(export_dir / "manifest.json"), providers="cpu")
    metrics = {"test": evaluate(detector, test, export_dir / "eval", plot_prefix="test-"),
               "val": evaluate(detector, public_val, export_dir / "eval", plot_prefix="val-")}
    holdout = None
    if plant is not None:
        metrics.update(_plant_metrics(detector, plant, opts.max_images, export_dir / "eval"))
        holdout = write_holdout(plant, plant_part(plant, "test", opts.max_images), opts.out_dir / "plant-test")
    if opts.line_type in TEXTURE_MAKERS:
        metrics["background"] = _background(detector, opts.line_type, registry)
    if detector.unknown_rule is not None:
        from training.unknown import unseen_test_figures

        metrics["unseen_test"] = unseen_test_figures(detector, opts.line_type, opts.datasets_dir, opts.splits_dir,
                                                     opts.max_images)
    manifest["metrics"] = metrics
    (export_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if plant is not None:
        activate, reason = False, ("not activated: trained on plant data; compare it on the plant hold-out "
                                   f"(models compare {opts.line_type} {version} --data {holdout}) and promote it "
                                   "through the gate (models promote)")
    else:
        activate, reason = promotion_decision(registry, opts.line_type, metrics["val"].get("map50"))
    activate, reason = decide_activation(registry, opts.line_type, export_dir, manifest, activate, reason,
                                         opts.clean_strip, register)
    (export_dir / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
    if register:
        register_gated(registry, onnx_path, manifest, activate, reason)
    if "background" in metrics:
        summary_bg = {"detections_per_mpx": metrics["background"]["detections_per_mpx"],
                      "previous_active": (metrics["background"].get("previous_active") or {}).get(
                          "detections_per_mpx")}
    else:
        summary_bg = None
    keys = ("map50", "map50_95", "detection_rate", "false_detections_per_image", "image_accuracy")
    summary = {"version": version, "registered": register, "operating_threshold": threshold,
               "test": {k: metrics["test"].get(k) for k in keys}, "val": {k: metrics["val"].get(k) for k in keys},
               "training_s": round(state["elapsed_s"], 1), "bare_ort_mpx_per_s": speed["mpx_per_s"],
               "parity_max_abs_diff": parity["max_abs_diff"], "background": summary_bg,
               "activated": manifest["promotion"]["activated"], "promotion": reason}
    if plant is not None:
        summary.update({k: {f: metrics[k].get(f) for f in keys} for k in ("plant_val", "plant_test")},
                       plant_holdout=str(holdout), new_classes=list(plant.new_classes))
    (opts.out_dir / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return {"summary": json.dumps(summary), "manifest": manifest}
