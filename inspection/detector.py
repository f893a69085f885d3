"""Run a registered ONNX detector: `Detector(manifest).detect(images) -> list[Detections]`.

Execution providers are probed once at start, in order TensorRT, then CUDA, then CPU: a GPU
provider is used only if ONNX Runtime lists it *and* a session actually starts on it
(onnxruntime-gpu lists CUDA even on machines without a GPU or without the CUDA libraries, and
then silently runs on CPU). Every failed probe is logged, and the choice is logged.

GPU notes (unverified here: the development machine has no GPU). TensorRT gets
`trt_fp16_enable` unless `fp16=False` (TensorRT picks fp16 kernels only where the GPU has
them) and an engine cache in `$STEEL_INSPECT_TRT_CACHE` (default `~/.cache/steel-inspect/trt`),
because building engines takes minutes; ONNX Runtime keys cached engines by the model, so a
hot reload builds once per new version. CUDA runs the graph as exported (fp32).

On CPU: `intra_op_threads` (0 = ONNX Runtime's default, one per core), one inter-op thread
and sequential execution, since the graph is a single chain and workers scale by process.

The runtime pads each image at its bottom and right edges (replicate border) to the
manifest's `size_multiple`, so box coordinates need no shift; boxes are clipped to the
original image and boxes lying wholly in the padding are dropped.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnxruntime as ort

from inspection.errors import ManifestError, SteelInspectError
from inspection.registry import Manifest
from inspection.results import UNKNOWN

log = logging.getLogger(__name__)

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
OUTPUT_NAMES = ("boxes", "scores", "labels")
# Optional outputs (models exported since the unknown-class work): every class's score at the detection's
# cell [N, K, C] and the novelty of its features [N, K]; with the manifest's `unknown` rule they make a
# detection `unknown` (see `training.unknown`).
UNKNOWN_OUTPUTS = ("class_scores", "novelty")
_failed_providers: dict[str, str] = {}  # provider -> why; probed once per process


class DetectorError(SteelInspectError, ValueError):
    """Images given to a detector are not 2-D uint8 arrays, or a score threshold is invalid."""


@dataclass(frozen=True)
class Detections:
    """Detections in one image: boxes x1, y1, x2, y2 in pixels of that image."""

    boxes: np.ndarray  # float32 [n, 4]
    scores: np.ndarray  # float32 [n]
    labels: np.ndarray  # int64 [n], index into classes: the best guess, also for an unknown detection
    classes: tuple[str, ...]
    class_scores: np.ndarray | None = None  # float32 [n, len(classes)], when the model outputs them
    novelty: np.ndarray | None = None  # float32 [n], when the model outputs it
    unknown: np.ndarray | None = None  # bool [n]: the model's unknown rule says it cannot tell the class

    def __post_init__(self) -> None:
        boxes, scores, labels = self.boxes, self.scores, self.labels
        if (not isinstance(boxes, np.ndarray) or boxes.dtype != np.float32 or boxes.ndim != 2
                or boxes.shape[1] != 4):
            raise DetectorError(f"Detections.boxes: expected float32 [n, 4], got {_describe(boxes)}")
        n = boxes.shape[0]
        if not isinstance(scores, np.ndarray) or scores.dtype != np.float32 or scores.shape != (n,):
            raise DetectorError(f"Detections.scores: expected float32 [{n}], got {_describe(scores)}")
        if not isinstance(labels, np.ndarray) or labels.dtype != np.int64 or labels.shape != (n,):
            raise DetectorError(f"Detections.labels: expected int64 [{n}], got {_describe(labels)}")
        if n and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise DetectorError(f"Detections.labels: expected 0..{len(self.classes) - 1}, "
                                f"got {sorted(set(labels.tolist()))}")
        if n and not (np.all(boxes[:, 2] >= boxes[:, 0]) and np.all(boxes[:, 3] >= boxes[:, 1])):
            raise DetectorError("Detections.boxes: expected x2 >= x1 and y2 >= y1")
        for name, shape, dtype in (("class_scores", (n, len(self.classes)), np.float32),
                                   ("novelty", (n,), np.float32), ("unknown", (n,), np.bool_)):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, np.ndarray) or value.dtype != dtype
                                      or value.shape != shape):
                raise DetectorError(f"Detections.{name}: expected {np.dtype(dtype).name} {list(shape)} or None, "
                                    f"got {_describe(value)}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def class_names(self) -> list[str]:
        """The class each detection is reported as: `unknown` where the model cannot tell."""
        names = [self.classes[i] for i in self.labels.tolist()]
        if self.unknown is not None:
            names = [UNKNOWN if u else name for name, u in zip(names, self.unknown.tolist(), strict=True)]
        return names

    def guesses(self, i: int, top: int = 3) -> list[tuple[str, float]]:
        """The model's best classes for detection `i` with their scores, best first."""
        if self.class_scores is None:
            return [(self.classes[int(self.labels[i])], float(self.scores[i]))]
        order = np.argsort(-self.class_scores[i], kind="stable")[:top]
        return [(self.classes[int(c)], float(self.class_scores[i, c])) for c in order]

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-able: [{"class", "score", "box": [x1, y1, x2, y2]}], highest score first; an unknown
        detection adds its best guesses ("guesses": [{"class", "score"}]) and its novelty."""
        out = []
        for i, (name, score, box) in enumerate(zip(self.class_names, self.scores, self.boxes, strict=True)):
            entry: dict[str, Any] = {"class": name, "score": round(float(score), 6),
                                     "box": [round(float(v), 2) for v in box]}
            if name == UNKNOWN:
                entry["guesses"] = [{"class": c, "score": round(p, 6)} for c, p in self.guesses(i)]
                if self.novelty is not None:
                    entry["novelty"] = round(float(self.novelty[i]), 4)
            out.append(entry)
        return out


def _describe(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


def _trt_options(fp16: bool) -> dict[str, Any]:
    default = Path.home() / ".cache" / "steel-inspect" / "trt"
    cache = Path(os.environ.get("STEEL_INSPECT_TRT_CACHE") or default)
    return {"trt_fp16_enable": fp16, "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}


def _session_options(intra_op_threads: int) -> ort.SessionOptions:
    options = ort.SessionOptions()
    options.intra_op_num_threads = max(0, int(intra_op_threads))
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return options


def create_session(model_path: Path, providers: str | Sequence[str] = "auto",
                   intra_op_threads: int = 0, fp16: bool = True) -> ort.InferenceSession:
    """A session on the first provider that really starts: TensorRT, CUDA, then CPU."""
    if providers == "cpu":
        wanted: list[str] = [CPU_PROVIDER]
    elif providers == "auto":
        wanted = [*GPU_PROVIDERS, CPU_PROVIDER]
    elif isinstance(providers, str):
        raise DetectorError(f"providers: expected 'auto', 'cpu' or a list of provider names, "
                            f"got {providers!r}")
    else:
        wanted = [*providers, CPU_PROVIDER] if CPU_PROVIDER not in providers else list(providers)
    available = set(ort.get_available_providers())
    for provider in wanted:
        if provider != CPU_PROVIDER and (provider not in available or provider in _failed_providers):
            continue
        options = _trt_options(fp16) if provider == "TensorrtExecutionProvider" else {}
        try:
            # enable_fallback=0: ONNX Runtime would otherwise retry on CPU by itself (printing to
            # stdout) and we could not tell that the GPU provider failed.
            session = ort.InferenceSession(str(model_path), sess_options=_session_options(intra_op_threads),
                                           providers=[(provider, options)], enable_fallback=0)
        except Exception as exc:  # noqa: BLE001 - any provider failure means: try the next one
            if provider == CPU_PROVIDER:
                raise ManifestError(f"{model_path}: ONNX Runtime cannot load the model: {exc}") from None
            _failed_providers[provider] = str(exc).strip().splitlines()[0][:300]
            log.warning("execution provider %s failed to start, trying the next one: %s", provider,
                        _failed_providers[provider])
            continue
        used = session.get_providers()
        if provider != CPU_PROVIDER and (not used or used[0] != provider):
            _failed_providers[provider] = f"session started on {used} instead"
            log.warning("execution provider %s is listed but did not start (session uses %s)", provider, used)
            continue
        return session
    raise DetectorError(f"none of the execution providers {wanted} could start")  # not reached: CPU raises


@dataclass(frozen=True)
class UnknownRule:
    """The manifest's `unknown` rule: a detection whose features lie far from everything the model
    learned (novelty), or whose class score is a small share of all classes' scores at its cell,
    is reported as `unknown` (limits chosen on val, `training.unknown`)."""

    novelty_max: float
    class_share_min: float

    def applies(self, novelty: np.ndarray, class_scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        if not len(labels):
            return np.zeros(0, bool)
        own = np.take_along_axis(class_scores, labels[:, None].astype(np.int64), axis=1)[:, 0]
        share = own / np.maximum(class_scores.sum(axis=1), 1e-9)
        return (novelty > self.novelty_max) | (share < self.class_share_min)


def unknown_rule(manifest: Manifest) -> UnknownRule | None:
    """The rule of a manifest's `unknown` entry, or None when it has none (older models)."""
    entry = manifest.data.get("unknown")
    if not isinstance(entry, dict) or entry.get("rule", "") is None:  # none, or none could be chosen on val
        return None
    try:
        return UnknownRule(float(entry["novelty_max"]), float(entry["class_share_min"]))
    except (KeyError, TypeError, ValueError):
        raise ManifestError(f"{manifest.manifest_path}: field 'unknown': expected novelty_max and "
                            f"class_share_min numbers, got {entry!r}"[:300]) from None


class Detector:
    """An ONNX Runtime session for one registered model, plus the thin pre/post-processing."""

    def __init__(self, manifest: Manifest, providers: str | Sequence[str] = "auto", intra_op_threads: int = 0,
                 max_batch: int = 16, fp16: bool = True) -> None:
        if max_batch < 1:
            raise DetectorError(f"max_batch: expected >= 1, got {max_batch}")
        self.manifest = manifest
        self.max_batch = max_batch
        self.session = create_session(manifest.model_path, providers, intra_op_threads, fp16)
        self.providers: list[str] = list(self.session.get_providers())
        self._check_io()
        log.info("model %s (%s, sha256 %s) on %s", manifest.version, manifest.line_type, manifest.sha256[:12],
                 ", ".join(self.providers))

    def _check_io(self) -> None:
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        path = self.manifest.model_path
        if self.manifest.input_name not in inputs:
            raise ManifestError(f"{path}: no input {self.manifest.input_name!r} (inputs: {sorted(inputs)})")
        if inputs[self.manifest.input_name].type != "tensor(uint8)":
            raise ManifestError(f"{path}: input {self.manifest.input_name!r} is "
                                f"{inputs[self.manifest.input_name].type}, expected tensor(uint8)")
        missing = [name for name in OUTPUT_NAMES if name not in outputs]
        if missing:
            raise ManifestError(f"{path}: missing outputs {missing} (outputs: {sorted(outputs)})")
        self.outputs = [*OUTPUT_NAMES, *(name for name in UNKNOWN_OUTPUTS if name in outputs)]
        self.unknown_rule = unknown_rule(self.manifest) if len(self.outputs) == len(OUTPUT_NAMES) + 2 else None

    def detect(self, images: Sequence[np.ndarray], min_score: float | None = None) -> list[Detections]:
        """Detections per image, in input order; `min_score` defaults to each class's operating
        threshold (`Manifest.class_thresholds`)."""
        if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, int | float)
                                      or not 0.0 <= min_score <= 1.0):
            raise DetectorError(f"min_score: expected a number in 0..1, got {min_score!r}")
        threshold = self.thresholds if min_score is None else np.float32(min_score)
        if isinstance(images, np.ndarray):
            raise DetectorError(f"images: expected a sequence of 2-D uint8 arrays, "
                                f"got one {_describe(images)}")
        for index, image in enumerate(images):
            if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2
                    or image.size == 0):
                raise DetectorError(f"images[{index}]: expected a non-empty 2-D uint8 array (H, W), "
                                    f"got {_describe(image)}")
        results: list[Detections | None] = [None] * len(images)
        by_shape: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        for (height, width), indices in by_shape.items():
            for start in range(0, len(indices), self.max_batch):
                chunk = indices[start:start + self.max_batch]
                outputs = self._run(np.stack([self._pad(images[i]) for i in chunk])[:, None])
                for row, index in enumerate(chunk):
                    results[index] = self._post(outputs, row, height, width, threshold)
        return results  # type: ignore[return-value]

    @property
    def thresholds(self) -> np.ndarray:
        """float32 [classes]: the operating threshold of each class."""
        return np.array(self.manifest.class_thresholds, np.float32)

    def passes(self, scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Which detections (scores, labels) reach their class's operating threshold."""
        return np.asarray(scores) >= self.thresholds[np.asarray(labels, dtype=np.int64)]

    def _pad(self, image: np.ndarray) -> np.ndarray:
        multiple = self.manifest.size_multiple
        bottom = -image.shape[0] % multiple
        right = -image.shape[1] % multiple
        if bottom == 0 and right == 0:
            return image
        return cv2.copyMakeBorder(image, 0, bottom, 0, right, cv2.BORDER_REPLICATE)

    def _run(self, batch: np.ndarray) -> tuple[np.ndarray, ...]:
        outputs = self.session.run(self.outputs, {self.manifest.input_name: batch})
        boxes, scores, labels = outputs[:3]
        n = batch.shape[0]
        if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] \
                or labels.shape != boxes.shape[:2]:
            raise ManifestError(f"{self.manifest.model_path}: outputs have shapes boxes {boxes.shape}, "
                                f"scores {scores.shape}, labels {labels.shape}; "
                                f"expected [N, K, 4], [N, K], [N, K]")
        if len(outputs) > 3 and (outputs[3].shape != (*boxes.shape[:2], len(self.manifest.classes))
                                 or outputs[4].shape != boxes.shape[:2]):
            raise ManifestError(f"{self.manifest.model_path}: outputs class_scores {outputs[3].shape} and novelty "
                                f"{outputs[4].shape}; expected [N, K, {len(self.manifest.classes)}] and [N, K]")
        return tuple(outputs)

    def _post(self, outputs: tuple[np.ndarray, ...], row: int, height: int, width: int,
              threshold: np.ndarray) -> Detections:
        boxes, scores, labels = (o[row] for o in outputs[:3])
        # per class (a label outside the classes is clipped here and reported below) or one for all
        limit = threshold[np.clip(labels, 0, len(threshold) - 1)] if threshold.ndim else threshold
        keep = (scores >= limit) & (scores > 0)
        boxes = boxes[keep].astype(np.float32, copy=True)
        np.clip(boxes[:, 0::2], 0, width, out=boxes[:, 0::2])
        np.clip(boxes[:, 1::2], 0, height, out=boxes[:, 1::2])
        inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
        labels = labels[keep][inside].astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() >= len(self.manifest.classes)):
            bad = sorted({int(v) for v in labels if not 0 <= v < len(self.manifest.classes)})
            raise ManifestError(f"{self.manifest.model_path}: labels {bad} outside the "
                                f"{len(self.manifest.classes)} classes of the manifest")
        order = np.argsort(-scores[keep][inside], kind="stable")
        extra: dict[str, np.ndarray] = {}
        if len(outputs) > 3:
            class_scores = outputs[3][row][keep][inside][order].astype(np.float32)
            novelty = outputs[4][row][keep][inside][order].astype(np.float32)
            extra = {"class_scores": class_scores, "novelty": novelty}
            if self.unknown_rule is not None:
                extra["unknown"] = self.unknown_rule.applies(novelty, class_scores, labels[order])
        return Detections(boxes=boxes[inside][order], scores=scores[keep][inside][order].astype(np.float32),
                          labels=labels[order], classes=self.manifest.classes, **extra)
