"""Run a registered ONNX detector: `Detector(manifest).detect(images) -> list[Detections]`.

Backends (`inspection.backends`): TensorRT, then CUDA through ONNX Runtime when a GPU provider
really starts (`inspection.backends.onnxruntime`), else on the CPU OpenVINO when it is installed
and compiles the model (`inspection.backends.openvino`; an int8 copy stays on ONNX Runtime unless
it carries its own OpenVINO quantization, which OpenVINO then runs), else ONNX Runtime's CPU
provider; `providers` "openvino" or "cpu" (ONNX Runtime) names one. Every backend runs the same
model.onnx (an int8 copy's OpenVINO IR is a quantization of the same fp32 source, measured apart:
`training.quantize_openvino`) and this module does the rest, so thresholds and the unknown rule do
not depend on it. The choice, and on a GPU which provider runs which nodes, is logged.

GPU path (prepared from ONNX Runtime's documentation and code, not yet run on a GPU: the
development machine has none; `steel-inspect bench gpu` is the check):
- an int8 copy (`steel-inspect quantize`) runs as its fp32 source (`quantization.source_version`),
  since TensorRT rejects its asymmetric uint8 activations and CUDA runs its convolutions as fp32
  after dequantizing; TensorRT adds fp16 (`fp16`). Results then name the source version and its
  sha256, because that is the model that ran. Back on a CPU, the int8 copy runs as registered.
- windows are padded to a few fixed sizes and batches to a fixed size (`inspection.shapes`), with
  one explicit TensorRT profile over them; every shape runs once (`warm_up`) before the detector
  is returned, so engines are built (or loaded from the per-model cache, `inspection.providers`)
  before a worker reports ready, not on its first frame.
- one non-spinning intra-op thread per GPU session.

On CPU: `intra_op_threads` (0 = the runtime's default, one per core), one inter-op thread
and sequential execution, since the graph is a single chain and workers scale by process.

The runtime pads each image at its bottom and right edges (replicate border) to the
manifest's `size_multiple` (on a GPU: to its shape bucket), so box coordinates need no shift;
boxes are clipped to the original image and boxes lying wholly in the padding are dropped.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from inspection import gpu as gpu_libs
from inspection.backends import Backend, check_setting, cpu_backend
from inspection.backends.onnxruntime import OnnxRuntimeBackend, gpu_candidates, gpu_session
from inspection.ensemble import Member, ensemble_members, fuse_members
from inspection.errors import ManifestError, SteelInspectError
from inspection.flips import check_flips, flipped, fuse
from inspection.frame import IDENT_PATTERN
from inspection.manifest import MANIFEST_FILE, openvino_copy
from inspection.providers import (
    GpuSettings,
    assignment,
    cache_root,
    convolutions_on_cpu,
    describe_assignment,
    locked,
    prepare_engine_cache,
)
from inspection.registry import Manifest, load_manifest
from inspection.results import UNKNOWN
from inspection.shapes import ShapeBuckets, merge_views, pad_to

log = logging.getLogger(__name__)

GPU_PROVIDERS = gpu_libs.GPU_PROVIDERS
CPU_PROVIDER = gpu_libs.CPU
OUTPUT_NAMES = ("boxes", "scores", "labels")
# Optional outputs (models exported since the unknown-class work): every class's score at the detection's
# cell [N, K, C] and the novelty of its features [N, K]; with the manifest's `unknown` rule they make a
# detection `unknown` (see `training.unknown`).
UNKNOWN_OUTPUTS = ("class_scores", "novelty")


class DetectorError(SteelInspectError, ValueError):
    """Images given to a detector are not 2-D uint8 arrays, or a score threshold is invalid."""


def operating_thresholds(manifest: Manifest, line_thresholds: Mapping[str, float]) -> np.ndarray:
    """float32 [classes]: the manifest's threshold per class, replaced by the line's where it names the
    class. The manifest's are chosen on dataset images (`training.thresholds`); a line chooses its own
    on its frames (`bench e2e --set worker.class_thresholds.LINE_TYPE.CLASS=...`)."""
    bad = {name: value for name, value in line_thresholds.items()
           if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0}
    if bad:
        name, value = next(iter(bad.items()))
        raise DetectorError(f"class thresholds for {manifest.version}: {name!r} must be a score between 0 and 1, "
                            f"got {value!r}")
    unknown = sorted(set(line_thresholds) - set(manifest.classes))
    if unknown:  # a tuning knob never stops the line: a model without the class just ignores it
        log.warning("model %s has no class %s: the line's threshold for it is not used (classes: %s)",
                    manifest.version, " or ".join(repr(c) for c in unknown), ", ".join(manifest.classes))
    own = manifest.class_thresholds
    thresholds = [float(line_thresholds.get(c, own[i])) for i, c in enumerate(manifest.classes)]
    changed = [f"{c} {t:g} (model's {own[i]:g})" for i, (c, t) in enumerate(zip(manifest.classes, thresholds,
                                                                                strict=True)) if t != own[i]]
    if changed:
        log.info("model %s: the line's class thresholds: %s", manifest.version, ", ".join(changed))
    return np.array(thresholds, np.float32)


def reaching(scores: np.ndarray, labels: np.ndarray, threshold: np.ndarray) -> np.ndarray:
    """Which detections score above 0 and at or above their class's threshold (`threshold` [classes]) or
    the one threshold (0-d). A label outside the classes is clipped here; `_post` reports it."""
    limit = threshold[np.clip(labels, 0, len(threshold) - 1)] if threshold.ndim else threshold
    return (scores >= limit) & (scores > 0)


def reaching_fields(fused: dict[str, np.ndarray | None], threshold: np.ndarray) -> dict[str, np.ndarray | None]:
    """Fused fields (`inspection.flips.fuse`) of the detections that reach their threshold (`reaching`)."""
    keep = reaching(fused["scores"], fused["labels"], threshold)  # type: ignore[arg-type]
    return {name: (values[keep] if values is not None else None) for name, values in fused.items()}


def check_min_score(min_score: float | None) -> float | None:
    """`min_score` itself when it is None or a number in 0..1; else a DetectorError naming it."""
    if min_score is not None and (isinstance(min_score, bool) or not isinstance(min_score, int | float)
                                  or not 0.0 <= min_score <= 1.0):
        raise DetectorError(f"min_score: expected a number in 0..1, got {min_score!r}")
    return min_score


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


def fp32_source(manifest: Manifest, gpu_expected: bool = True) -> Manifest | None:
    """The fp32 model an int8 copy was quantized from (`quantization.source_version`), found beside it
    in the registry and checked against `quantization.source_sha256`; None when `manifest` is no
    quantized copy, has a crop classifier appended (which its source lacks), or its source is missing
    or does not match (then said in a warning). `gpu_expected=False` (no GPU provider can start here)
    says a missing source at INFO only: a copy checked from a folder of its own, e.g. by the clean-strip
    check, has no source beside it, and on a CPU that changes nothing."""
    quantization = manifest.data.get("quantization")
    source = quantization.get("source_version") if isinstance(quantization, dict) else None
    if not isinstance(source, str) or not re.fullmatch(IDENT_PATTERN, source):
        return None
    if manifest.data.get("classifier"):  # `steel-inspect classifier`: the fp32 source lacks the appended stage
        log.info("model %s appends a crop classifier to an int8 detector; its fp32 source %s has none, so "
                 "the GPU runs %s as it is", manifest.version, source, manifest.version)
        return None
    try:
        found = load_manifest(manifest.model_path.parent.parent / source / MANIFEST_FILE)
    except ManifestError as exc:
        log.log(logging.WARNING if gpu_expected else logging.INFO,
                "model %s is an int8 copy of %s, which cannot be loaded (%s): a GPU would run the int8 copy",
                manifest.version, source, exc)
        return None
    if quantization.get("source_sha256") not in (None, found.sha256):
        log.warning("model %s names source %s with sha256 %s, but %s has %s: the GPU runs the int8 copy",
                    manifest.version, source, str(quantization.get("source_sha256"))[:12], source, found.sha256[:12])
        return None
    return found



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
    return rule_of(manifest.data.get("unknown"), f"{manifest.manifest_path}: field 'unknown'")


def rule_of(entry: Any, where: str) -> UnknownRule | None:
    """The rule an `unknown` entry sets (None: no entry, or no rule could be chosen on val)."""
    if not isinstance(entry, dict) or entry.get("rule", "") is None:
        return None
    try:
        return UnknownRule(float(entry["novelty_max"]), float(entry["class_share_min"]))
    except (KeyError, TypeError, ValueError):
        raise ManifestError(f"{where}: expected novelty_max and class_share_min numbers, "
                            f"got {entry!r}"[:300]) from None


def _fitted(buckets: ShapeBuckets, multiple: int) -> ShapeBuckets:
    """`buckets` with each side rounded up to the model's size multiple (the graph needs it)."""
    sides = tuple(sorted({-(-s // multiple) * multiple for s in buckets.sides}))
    return buckets if sides == buckets.sides else ShapeBuckets(sides, buckets.batch, buckets.always)


class Detector:
    """One registered model on one backend (`inspection.backends`), plus the thin pre/post-processing.

    On a GPU (see the module docstring) `manifest` may be the int8 copy of the model that runs:
    `requested` is what was asked for, `manifest` what runs and what results must name.

    The keyword-only arguments matter only on a GPU: `buckets` the fixed input shapes (default
    `ShapeBuckets()`; `always=True` pads on the CPU too), `device_id` the GPU, `use_fp32_source`
    whether an int8 copy runs as its fp32 source, `engine_cache` the root of TensorRT's engine
    cache and OpenVINO's (default $STEEL_INSPECT_TRT_CACHE or ~/.cache/steel-inspect/trt), `trt_exclude_ops` op
    types TensorRT leaves to CUDA. `fp16` lets TensorRT pick fp16 kernels; `max_batch` is the
    CPU's batch limit (a GPU runs `buckets.batch`).
    """

    def __init__(self, manifest: Manifest, providers: str | Sequence[str] = "auto", intra_op_threads: int = 0,
                 max_batch: int = 16, fp16: bool = True, *, buckets: ShapeBuckets | None = None, device_id: int = 0,
                 use_fp32_source: bool = True, engine_cache: Path | None = None,
                 trt_exclude_ops: Sequence[str] = (), class_thresholds: Mapping[str, float] | None = None,
                 flips: Sequence[str] = ()) -> None:
        """`class_thresholds`: the line's own operating threshold for some classes, in place of the
        manifest's (`[worker.class_thresholds]`); a class the model does not have is logged and left out.
        `flips`: test-time flips (`inspection.flips`, `[worker] flips`): each image also runs mirrored
        these ways and the views' detections are fused; each flip costs one more model run."""
        if max_batch < 1:
            raise DetectorError(f"max_batch: expected >= 1, got {max_batch}")
        self.flips = check_flips(flips)
        check_setting(providers)
        # before the model loads: a bad value fails fast (an int8 copy's GPU source is judged again below)
        thresholds = operating_thresholds(manifest, class_thresholds or {})
        self.requested = manifest
        self.max_batch = max_batch
        self.precision = "fp16" if fp16 else "fp32"
        self.warm_up_s: dict[str, float] = {}
        self.warmed_shapes: tuple[tuple[int, int], ...] = ()  # what `warm_up_cpu` ran (before padding)
        candidates = gpu_candidates(providers)
        chosen = manifest
        if candidates and use_fp32_source:
            gpu_expected = any(gpu_libs.check(p).can_try for p in candidates)
            chosen = fp32_source(manifest, gpu_expected) or manifest
        self.buckets = _fitted(buckets or ShapeBuckets(), chosen.size_multiple)
        cache = None
        if gpu_libs.TENSORRT in candidates and gpu_libs.check(gpu_libs.TENSORRT).can_try:
            cache = prepare_engine_cache(cache_root(engine_cache), chosen.sha256, self.precision)
        settings = GpuSettings(fp16=fp16, device_id=device_id, buckets=self.buckets, input_name=chosen.input_name,
                               cache_dir=cache, trt_exclude=tuple(trt_exclude_ops))
        with locked(cache):  # one process builds a model's engines; the others wait and load them
            session = gpu_session(chosen.model_path, providers, intra_op_threads, fp16, settings)
            if session is None:  # no GPU (after all): on a CPU the int8 copy is the faster model
                chosen = manifest
            self.backend: Backend = OnnxRuntimeBackend(session) if session is not None else cpu_backend(
                manifest.model_path, manifest.sha256, providers, intra_op_threads, cache_root(engine_cache),
                int8=isinstance(manifest.data.get("quantization"), dict), openvino_copy=openvino_copy(manifest))
            self.manifest = chosen
            self._thresholds = (thresholds if chosen is manifest
                                else operating_thresholds(chosen, class_thresholds or {}))
            self.providers: list[str] = list(self.backend.providers)
            self._check_io()
            self.nodes = assignment(self.session) if self.on_gpu else {}
            self._log_start()
            if self.on_gpu:
                self.warm_up()

    @property
    def file_sha256(self) -> str:
        """sha256 of the model file that runs: the manifest's ONNX file, or, when OpenVINO runs an int8
        copy's own quantization, that IR (the manifest's `openvino.sha256`). Results name it, so a record
        says which of a version's two files found its defects."""
        return getattr(self.backend, "sha256", None) or self.manifest.sha256

    @property
    def session(self) -> Any:
        """The ONNX Runtime session when ONNX Runtime runs the model, else None."""
        return getattr(self.backend, "session", None)

    @property
    def on_gpu(self) -> bool:
        return bool(self.providers) and self.providers[0] in GPU_PROVIDERS

    @property
    def bucketing(self) -> bool:
        """Whether inputs are padded to the fixed shapes (on a GPU, or when the buckets say always)."""
        return self.on_gpu or self.buckets.always

    def _log_start(self) -> None:
        m = self.manifest
        log.info("model %s (%s, sha256 %s) on %s", m.version, m.line_type, m.sha256[:12], ", ".join(self.providers))
        if self.flips:
            log.info("model %s with test-time flips %s: %d model runs per image, views fused", m.version,
                     ", ".join(self.flips), 1 + len(self.flips))
        if m is not self.requested:
            log.info("model %s is an int8 copy of %s: the GPU runs %s (%s), and results name it",
                     self.requested.version, m.version, m.version, self.precision)
        if self.on_gpu:
            log.info("node assignment of %s: %s", m.version, describe_assignment(self.nodes))
            on_cpu = convolutions_on_cpu(self.nodes)
            if on_cpu:
                log.warning("%d convolution(s) of %s run on the CPU, not the GPU: see the node assignment above",
                            on_cpu, m.version)

    def warm_up(self) -> dict[str, float]:
        """Run every bucket shape once at the full batch (largest first, TensorRT's optimum), so engines
        and tuned kernels exist before the first frame; seconds per shape."""
        timings: dict[str, float] = {}
        for height, width in self.buckets.shapes:
            started = time.perf_counter()
            self._run(np.zeros((self.buckets.batch, 1, height, width), np.uint8))
            timings[f"{height}x{width}"] = round(time.perf_counter() - started, 3)
        self.warm_up_s = timings
        log.info("warm-up of %s on %s: %d shapes at batch %d in %.1f s (%s)", self.manifest.version,
                 self.providers[0], len(timings), self.buckets.batch, sum(timings.values()),
                 ", ".join(f"{k} {v:.2f} s" for k, v in timings.items()))
        return timings

    def warm_up_cpu(self, shapes: Sequence[tuple[int, int]], passes: int = 2) -> float:
        """Run every input shape in `shapes`, one image per run, `passes` times, so the CPU arena has
        grown to what those shapes need before the first frame (why: `inspection.cpu_runs`); seconds."""
        started = time.perf_counter()
        for _ in range(passes):
            for height, width in shapes:
                self._run(self._pad(np.zeros((height, width), np.uint8))[None, None])
        took = time.perf_counter() - started
        self.warmed_shapes = tuple(shapes)
        log.info("warm-up of %s on %s: %d window shapes x %d in %.1f s", self.manifest.version, self.providers[0],
                 len(shapes), passes, took)
        return took

    def _check_io(self) -> None:
        inputs, outputs = self.backend.inputs, set(self.backend.outputs)
        path = self.manifest.model_path
        if self.manifest.input_name not in inputs:
            raise ManifestError(f"{path}: no input {self.manifest.input_name!r} (inputs: {sorted(inputs)})")
        if inputs[self.manifest.input_name] != "uint8":
            raise ManifestError(f"{path}: input {self.manifest.input_name!r} is "
                                f"{inputs[self.manifest.input_name]}, expected uint8")
        # one group of outputs per model in the file: a registered ensemble holds several (inspection.ensemble)
        members = ensemble_members(self.manifest) or [Member(self.manifest.version, "", None)]
        self.outputs: list[str] = []
        self._groups: list[tuple[int, int, UnknownRule | None]] = []  # (first output, outputs, member's rule)
        for member in members:
            names = [member.prefix + name for name in OUTPUT_NAMES]
            missing = [name for name in names if name not in outputs]
            if missing:
                raise ManifestError(f"{path}: missing outputs {missing} (outputs: {sorted(outputs)})")
            extra = [member.prefix + name for name in UNKNOWN_OUTPUTS if member.prefix + name in outputs]
            rule = None
            if len(extra) == len(UNKNOWN_OUTPUTS):
                rule = (rule_of(member.unknown, f"{path.parent}: ensemble member {member.version}'s 'unknown'")
                        if member.prefix else unknown_rule(self.manifest))
            self._groups.append((len(self.outputs), len(names) + len(extra), rule))
            self.outputs += [*names, *extra]
        # what reports say of the model: an ensemble's detections are judged when any member has a rule
        self.unknown_rule = next((rule for _, _, rule in self._groups if rule is not None), None)

    def detect(self, images: Sequence[np.ndarray], min_score: float | None = None) -> list[Detections]:
        """Detections per image, in input order; `min_score` defaults to each class's operating
        threshold (`Manifest.class_thresholds`)."""
        threshold = self.thresholds if check_min_score(min_score) is None else np.float32(min_score)
        if isinstance(images, np.ndarray):
            raise DetectorError(f"images: expected a sequence of 2-D uint8 arrays, "
                                f"got one {_describe(images)}")
        for index, image in enumerate(images):
            if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 2
                    or image.size == 0):
                raise DetectorError(f"images[{index}]: expected a non-empty 2-D uint8 array (H, W), "
                                    f"got {_describe(image)}")
        if self.flips:
            return self._detect_flipped(images, threshold)
        return self._detect_views(images, threshold)

    def _detect_flipped(self, images: Sequence[np.ndarray], threshold: np.ndarray) -> list[Detections]:
        """Each image and its `flips` run as views of it; every detection of a view is kept (its score
        counts in the fusion) and the fused score meets the operating threshold."""
        views = ("", *self.flips)
        found = self._detect_views([flipped(image, f) for image in images for f in views], threshold * 0)
        results = []
        for index, image in enumerate(images):
            fields = reaching_fields(fuse(found[index * len(views):(index + 1) * len(views)], views, *image.shape),
                                     threshold)
            if self.unknown_rule is not None and fields["novelty"] is not None:
                fields["unknown"] = self.unknown_rule.applies(fields["novelty"], fields["class_scores"],
                                                              fields["labels"])
            results.append(Detections(classes=self.manifest.classes, **fields))  # type: ignore[arg-type]
        return results

    def _detect_views(self, images: Sequence[np.ndarray], threshold: np.ndarray) -> list[Detections]:
        """`detect` without flips: images batched by shape (or padded to the GPU's buckets)."""
        if self.bucketing:
            return self._detect_bucketed(images, threshold)
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

    def _detect_bucketed(self, images: Sequence[np.ndarray], threshold: np.ndarray) -> list[Detections]:
        """Each image padded to its bucket (or cut into views of the largest one), full fixed batches."""
        views: list[tuple[int, Any, np.ndarray]] = []  # (image index, Tile or None, pixels)
        for index, image in enumerate(images):
            if self.buckets.shape_for(*image.shape) is not None:
                views.append((index, None, image))
            else:
                views.extend((index, t, image[t.y:t.y + t.height, t.x:t.x + t.width])
                             for t in self.buckets.split(*image.shape))
        by_shape: dict[tuple[int, int], list[int]] = {}
        for v, (_, _, pixels) in enumerate(views):
            by_shape.setdefault(self.buckets.shape_for(*pixels.shape), []).append(v)  # type: ignore[arg-type]
        found: list[Detections | None] = [None] * len(views)
        size = self.buckets.batch
        for (height, width), members in by_shape.items():
            for start in range(0, len(members), size):
                chunk = members[start:start + size]
                batch = np.zeros((size, 1, height, width), np.uint8)  # rows past the chunk: padding, not read
                for row, v in enumerate(chunk):
                    batch[row, 0] = pad_to(views[v][2], height, width)
                outputs = self._run(batch)
                for row, v in enumerate(chunk):
                    found[v] = self._post(outputs, row, *views[v][2].shape, threshold)
        per_image: list[list[int]] = [[] for _ in images]
        for v, (index, _, _) in enumerate(views):
            per_image[index].append(v)
        results = []
        for index, members in enumerate(per_image):
            if views[members[0]][1] is None:
                results.append(found[members[0]])
            else:
                merged = merge_views([views[v][1] for v in members], [found[v] for v in members], *images[index].shape)
                results.append(Detections(classes=self.manifest.classes, **merged))  # type: ignore[arg-type]
        return results  # type: ignore[return-value]
    @property
    def thresholds(self) -> np.ndarray:
        """float32 [classes]: the operating threshold of each class (the line's where it sets one)."""
        return self._thresholds

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
        outputs = tuple(self.backend.run({self.manifest.input_name: batch}, self.outputs))
        for start, count, _ in self._groups:
            self._check_shapes(outputs[start:start + count], batch.shape[0])
        return outputs

    def _check_shapes(self, outputs: tuple[np.ndarray, ...], n: int) -> None:
        boxes, scores, labels = outputs[:3]
        if boxes.ndim != 3 or boxes.shape[0] != n or boxes.shape[2] != 4 or scores.shape != boxes.shape[:2] \
                or labels.shape != boxes.shape[:2]:
            raise ManifestError(f"{self.manifest.model_path}: outputs have shapes boxes {boxes.shape}, "
                                f"scores {scores.shape}, labels {labels.shape}; "
                                f"expected [N, K, 4], [N, K], [N, K]")
        if len(outputs) > 3 and (outputs[3].shape != (*boxes.shape[:2], len(self.manifest.classes))
                                 or outputs[4].shape != boxes.shape[:2]):
            raise ManifestError(f"{self.manifest.model_path}: outputs class_scores {outputs[3].shape} and novelty "
                                f"{outputs[4].shape}; expected [N, K, {len(self.manifest.classes)}] and [N, K]")

    def _post(self, outputs: tuple[np.ndarray, ...], row: int, height: int, width: int,
              threshold: np.ndarray) -> Detections:
        """One image's detections at `threshold`; an ensemble's members' (each with every detection) fused."""
        if len(self._groups) == 1:
            return self._post_model(outputs, row, height, width, threshold, self.unknown_rule)
        found = [self._post_model(outputs[start:start + count], row, height, width, threshold * 0, rule)
                 for start, count, rule in self._groups]
        return Detections(classes=self.manifest.classes,
                          **reaching_fields(fuse_members(found, height, width), threshold))  # type: ignore[arg-type]

    def _post_model(self, outputs: tuple[np.ndarray, ...], row: int, height: int, width: int,
                    threshold: np.ndarray, rule: UnknownRule | None) -> Detections:
        boxes, scores, labels = (o[row] for o in outputs[:3])
        keep = reaching(scores, labels, threshold)
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
            if rule is not None:
                extra["unknown"] = rule.applies(novelty, class_scores, labels[order])
        return Detections(boxes=boxes[inside][order], scores=scores[keep][inside][order].astype(np.float32),
                          labels=labels[order], classes=self.manifest.classes, **extra)
