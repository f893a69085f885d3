"""The inference worker: frames in, defects out, the active model hot-swapped between batches.

The loop receives camera messages, batches frames (up to `batch_size` frames, or whatever
arrived within `max_wait_ms` of the first), runs them through `FrameInspector`, and sends
one `FrameResult` per frame to the recorder. Coil events are forwarded in stream order: a
batch is flushed before the event that follows it, so a coil end never overtakes the
coil's frames inside one worker. A frame the model fails on, or one that arrived malformed but
still named (`BrokenFrame`), is reported as `FrameDropped` (it counts against coverage), never
silently lost.

Hot reload: every `reload_check_s` the worker compares the registry's state token; when
the model it runs is no longer the active one, it loads the new model beside the old one
and switches between two batches. Every frame is inspected by exactly one model and every
result carries that model's version and the sha256 of its file that ran (the ONNX file, or an
int8 copy's OpenVINO IR). On a GPU the new model is loaded and warmed
up (its engines built) in a background thread while the old one keeps inspecting, because
that takes minutes; on a CPU too when it warms up (every window shape run once, `cpu_runs`:
seconds), else loading takes a fraction of a second and happens in the loop.

Stage times: every `FrameResult` carries `results.WorkerTiming` (when the worker took the frame,
when its batch's model run started and ended, when its result was sent), for the latency
breakdown of `bench inference` (`inspection.stage_times`); CLOCK_REALTIME, like the camera's
``captured_ns``, so the stages of processes on one host (or on hosts with synchronised clocks) add up.

Shadow mode (`inspection.shadow`): after a batch's results are sent, a candidate model inspects the
chosen share of its frames on the same windows and the worker sends where the two disagree; the
active model's results never wait for it, and its time is counted apart (``shadow_s``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from inspection.candidates import CandidateSettings
from inspection.config import LineConfig, WorkerConfig
from inspection.cpu_runs import model_shapes
from inspection.detector import Detector
from inspection.errors import ManifestError
from inspection.frame import LINE_TYPES, BrokenFrame, Capture, CoilEvent, Frame, StreamMessage
from inspection.frame_inspector import FrameInspection, FrameInspector, InspectorSettings
from inspection.model_loading import BackgroundLoad
from inspection.registry import Manifest, Registry
from inspection.results import FrameDropped, FrameResult, ResultMessage, WorkerTiming
from inspection.severity import SeverityRule
from inspection.shadow import ShadowRunner, ShadowSlot
from inspection.shadow_results import ShadowResult
from inspection.shapes import ShapeBuckets

log = logging.getLogger(__name__)

Receive = Callable[[float], StreamMessage | BrokenFrame | None]  # timeout in seconds -> message or None
Send = Callable[[ResultMessage | ShadowResult], None]


@dataclass
class WorkerStats:
    frames_received: int = 0
    frames_inspected: int = 0
    frames_failed: int = 0
    events_forwarded: int = 0
    defects: int = 0
    batches: int = 0
    tiles_total: int = 0
    tiles_inspected: int = 0
    frame_px: int = 0  # pixels of the frames inspected
    model_px: int = 0  # pixels the model saw (the first stage's windows or tiles)
    reloads: int = 0
    models: dict[str, str] = field(default_factory=dict)  # line type -> version in use
    inspect_s: float = 0.0  # the active model's inspection, first stage included (shadow_s is apart)
    shadow_frames: int = 0  # frames the shadow model also inspected
    shadow_s: float = 0.0  # what that cost: inspection, comparison, crops of the disagreements
    shadow_disagreements: int = 0
    shadow_failed: int = 0  # frames of batches the shadow model failed on (their own results went out)
    shadow_error: str | None = None  # why the shadow model last failed to load or run
    shadow_models: dict[str, str] = field(default_factory=dict)  # line type -> shadow version in use


def inspector_settings(config: LineConfig) -> InspectorSettings:
    w = config.worker
    return InspectorSettings(
        tile_px=w.tile_px, tile_overlap_px=w.tile_overlap_px, first_stage=w.first_stage,
        candidates=CandidateSettings(k_sigma=w.candidate_k_sigma), window_context_px=w.window_context_px,
        uint16_shift=w.uint16_shift, other_class_iou=w.other_class_iou,
        other_class_containment=w.other_class_containment, same_class_containment=w.same_class_containment,
        crop_margin_px=config.records.crop_margin_px,
    )


class ModelSlot:
    """The model a worker runs for one line type, reloaded when the registry changes."""

    def __init__(self, registry: Registry, name: str, providers: str, threads: int, batch: int,
                 gpu: WorkerConfig | None = None, cpu_shapes: list[tuple[int, int]] | None = None,
                 line_type: str | None = None) -> None:
        """`batch`: windows per model run on a CPU; `cpu_shapes`: what a CPU detector runs before it is
        used (`cpu_runs`; None: nothing); `line_type`: the strip its frames come from (a model trained
        for the other strip is refused)."""
        self.registry, self.name, self.line_type = registry, name, line_type
        self.providers, self.threads, self.batch = providers, threads, batch
        self.gpu = gpu or WorkerConfig()
        self.cpu_shapes = cpu_shapes
        self.token = registry.state_token()
        self.active = self._resolve()  # what the registry names (on a GPU an int8 copy's source may run)
        self.detector = self._load(self.active)  # on a GPU: warmed up, engines built, before the worker is ready
        self._loading: BackgroundLoad | None = None

    def _resolve(self) -> Manifest:
        """The named model, refused before it is loaded when it was trained for the other strip."""
        manifest = self.registry.resolve(self.name)
        if self.line_type is not None and manifest.line_type != self.line_type:
            raise ManifestError(f"model {manifest.version} was trained for {manifest.line_type} strip; frames of "
                                f"{self.line_type} strip need a {self.line_type} model ([model] name)")
        return manifest

    def _load(self, manifest: Manifest) -> Detector:
        g = self.gpu
        detector = Detector(
            manifest, providers=self.providers, intra_op_threads=self.threads, max_batch=self.batch,
            fp16=g.gpu_fp16, buckets=ShapeBuckets(g.gpu_window_px, g.gpu_batch), device_id=max(0, g.gpu_device),
            use_fp32_source=g.gpu_fp32_source, engine_cache=g.gpu_engine_cache, trt_exclude_ops=g.gpu_trt_exclude_ops,
            class_thresholds=g.class_thresholds.get(manifest.line_type, {}), flips=g.flips,
        )
        if self.cpu_shapes and not detector.on_gpu:
            detector.warm_up_cpu(self.cpu_shapes)
        return detector

    @property
    def manifest(self) -> Manifest:
        """The model that runs, the one results name."""
        return self.detector.manifest

    @property
    def loading(self) -> bool:
        """A new model is being loaded in the background (on a GPU)."""
        return self._loading is not None

    def refresh(self) -> bool:
        """Load the newly active model if the registry changed; True when the model was switched.
        A load that fails raises here, and the old model stays."""
        if self._loading is not None:
            return self._collect()
        token = self.registry.state_token()
        if token == self.token:
            return False
        self.token = token
        manifest = self._resolve()
        if manifest.version == self.active.version and manifest.sha256 == self.active.sha256:
            return False
        if self.detector.on_gpu or self.cpu_shapes:  # engines, or the CPU warm-up: the old model inspects meanwhile
            self._loading = BackgroundLoad(self._load, manifest, name=f"load-{manifest.version}")
            log.info("model for %s: loading %s beside %s", self.name, manifest.version, self.manifest.version)
            return False
        self._switch(manifest, self._load(manifest))  # loaded beside the old one: a failure keeps the old model
        return True

    def _collect(self) -> bool:
        loader = self._loading
        if loader is None or loader.is_alive():
            return False
        self._loading = None
        if loader.error is not None:
            raise loader.error
        self._switch(loader.manifest, loader.detector)  # type: ignore[arg-type]
        return True

    def _switch(self, manifest: Manifest, detector: Detector) -> None:
        log.info("model for %s: %s -> %s", self.name, self.manifest.version, detector.manifest.version)
        self.active, self.detector = manifest, detector


class InferenceWorker:
    """Batches frames, inspects them, sends results; see the module docstring."""

    def __init__(self, config: LineConfig, registry: Registry, receive: Receive, send: Send,
                 severity_rule: SeverityRule | None = None) -> None:
        self.config = config
        self.registry = registry
        self.receive, self.send = receive, send
        self.settings = inspector_settings(config)
        self.severity_rule = severity_rule or SeverityRule()
        self.slots: dict[str, ModelSlot] = {}
        self.shadows: dict[str, ShadowRunner] = {}
        self.stats = WorkerStats()
        self._pending: list[Frame] = []
        self._recv_ns: dict[int, int] = {}  # id of a pending frame -> when it came off the socket
        self._first_at = 0.0
        self._last_reload_check = time.monotonic()

    def load(self, line_type: str) -> ModelSlot:
        """The model slot for a line type, loading its model now if needed."""
        return self._slot(line_type)

    def _slot(self, line_type: str) -> ModelSlot:
        slot = self.slots.get(line_type)
        if slot is None:
            configured = self.config.model.name
            # The configured model serves the config's line type; other types use their active model.
            name = configured if line_type == self.config.type or configured not in LINE_TYPES else line_type
            w = self.config.worker
            shapes = None
            if w.cpu_warm_up:
                shapes = model_shapes(set().union(*(c.frame_shapes for c in self.config.cameras)),
                                      first_stage=w.first_stage, tile_px=w.tile_px,
                                      window_min_px=self.settings.window_min_px)
            slot = ModelSlot(self.registry, name, w.providers, w.intra_op_threads, w.cpu_batch, w, shapes,
                             line_type=line_type)
            self.slots[line_type] = slot
            self.stats.models[line_type] = slot.manifest.version
            # like the model: the config's shadow for the config's line type, the registry's for others
            shadow = self.config.model.shadow if line_type == self.config.type else ""
            self.shadows[line_type] = ShadowRunner(ShadowSlot(self.registry, shadow, line_type, slot._load),
                                                   self.config.model, self.settings, self.severity_rule)
            self._shadow_status(line_type)
        return slot

    def run(self, should_stop: Callable[[], bool], max_frames: int | None = None) -> WorkerStats:
        """Loop until `should_stop()` or `max_frames` frames were handled; flushes what is pending."""
        max_wait = self.config.worker.max_wait_ms / 1000.0
        try:
            while not should_stop():
                if max_frames is not None and self.stats.frames_received >= max_frames and not self._pending:
                    break
                timeout = max_wait
                if self._pending:
                    timeout = max(0.0, self._first_at + max_wait - time.monotonic())
                message = self.receive(timeout)
                if message is not None:
                    self.handle(message)
                if self._pending and (len(self._pending) >= self.config.worker.batch_size
                                      or time.monotonic() - self._first_at >= max_wait):
                    self.flush()
                self._maybe_reload()
        finally:
            self.flush()
        return self.stats

    def handle(self, message: StreamMessage | BrokenFrame) -> None:
        if isinstance(message, BrokenFrame):  # malformed on the wire, but it says which frame it was
            self.send(FrameDropped(message.source, message.coil, message.seq, message.index, message.captured_ns,
                                   reason=f"malformed on the wire: {message.reason}"[:500], capture=message.capture))
            self.stats.frames_received += 1
            self.stats.frames_failed += 1
            return
        if isinstance(message, CoilEvent):
            self.flush()  # the coil's frames go before its end event
            self.send(message)
            self.stats.events_forwarded += 1
            return
        if not self._pending:
            self._first_at = time.monotonic()
        self._pending.append(message)
        self._recv_ns[id(message)] = time.time_ns()
        self.stats.frames_received += 1

    def _maybe_reload(self) -> None:
        now = time.monotonic()
        loading = any(slot.loading for slot in self.slots.values())  # collect a finished load soon
        if self._pending or now - self._last_reload_check < (0.0 if loading else self.config.worker.reload_check_s):
            return
        self._last_reload_check = now
        for line_type, slot in self.slots.items():
            try:
                switched = slot.refresh()
            except Exception as exc:  # noqa: BLE001 - a bad new model must not stop the line
                log.error("model reload for %s failed, keeping %s: %s", line_type, slot.manifest.version, exc)
                continue
            if switched:
                self.stats.reloads += 1
                self.stats.models[line_type] = slot.manifest.version
        for line_type, runner in self.shadows.items():
            runner.slot.refresh()  # never raises: a bad shadow is logged and kept out (see inspection.shadow)
            self._shadow_status(line_type)

    def _shadow_status(self, line_type: str) -> None:
        slot = self.shadows[line_type].slot
        if slot.manifest is not None:
            self.stats.shadow_models[line_type] = slot.manifest.version
        else:
            self.stats.shadow_models.pop(line_type, None)
        self.stats.shadow_error = slot.error or self.stats.shadow_error

    def flush(self) -> None:
        if not self._pending:
            return
        frames, self._pending = self._pending, []
        received, self._recv_ns = self._recv_ns, {}
        by_type: dict[str, list[Frame]] = {}
        for frame in frames:
            by_type.setdefault(frame.source.line_type, []).append(frame)
        for line_type, group in by_type.items():
            self._inspect(line_type, group, received)
        self.stats.batches += 1

    def _inspect(self, line_type: str, frames: list[Frame], received: dict[int, int] | None = None) -> None:
        try:
            slot = self._slot(line_type)
            started, started_ns = time.perf_counter(), time.time_ns()  # after a first-use model load
            results = FrameInspector(slot.detector, self.settings, self.severity_rule).inspect(frames)
            inspected_s = time.perf_counter() - started  # before sending: a slow recorder is not inspection
            ended_ns = time.time_ns()
        except Exception as exc:  # noqa: BLE001 - report the frames as not inspected, keep running
            log.exception("inspection of %d %s frame(s) failed", len(frames), line_type)
            for frame in frames:
                self.send(FrameDropped(frame.source, frame.coil, frame.seq, frame.index, frame.captured_ns,
                                       reason=f"inspection failed: {type(exc).__name__}: {exc}"[:500],
                                       capture=Capture.of(frame)))
            self.stats.frames_failed += len(frames)
            return
        received = received or {}
        for result in results:
            recv_ns = received.get(id(result.frame), started_ns)
            self.send(self._result(result, slot.detector, (min(recv_ns, started_ns), started_ns, ended_ns)))
            self.stats.frames_inspected += 1
            self.stats.defects += len(result.defects)
            self.stats.tiles_total += result.tiles_total
            self.stats.tiles_inspected += result.tiles_inspected
            self.stats.frame_px += result.frame.pixels.size
            self.stats.model_px += result.model_px
        self.stats.inspect_s += inspected_s
        self._shadow(line_type, results, slot.detector)

    def _shadow(self, line_type: str, results: list[FrameInspection], active: Detector) -> None:
        """The shadow model on the chosen frames, after their own results went out."""
        try:
            messages, seconds = self.shadows[line_type].run(results, active)
        except Exception as exc:  # noqa: BLE001 - the shadow must never cost the line a frame
            log.exception("shadow inspection of %d %s frame(s) failed", len(results), line_type)
            self.stats.shadow_failed += len(results)
            self.stats.shadow_error = f"{type(exc).__name__}: {exc}"[:200]
            return
        for message in messages:
            self.send(message)
        self.stats.shadow_frames += len(messages)
        self.stats.shadow_s += seconds
        self.stats.shadow_disagreements += sum(len(m.disagreements) for m in messages)

    def _result(self, inspection: FrameInspection, detector: Detector,
                stages: tuple[int, int, int] | None = None) -> FrameResult:
        """The frame's result, naming the version `detector` runs and the sha256 of its file that ran
        (`Detector.file_sha256`); `stages` = (received, model run started, ended) in ns, its timing."""
        frame = inspection.frame
        now = time.time_ns()  # when this result is handed to the socket: the timing's sent_ns
        timing = WorkerTiming(stages[0], stages[1], max(stages[2], stages[1]), max(now, stages[2])) \
            if stages is not None else None
        return FrameResult(
            source=frame.source, coil=frame.coil, seq=frame.seq, index=frame.index,
            captured_ns=frame.captured_ns, position_mm=frame.position_mm, length_mm=frame.length_mm,
            model_version=detector.manifest.version, model_sha256=detector.file_sha256, inspected_ns=now,
            defects=inspection.defects, capture=Capture.of(frame),  # the camera's signature, carried unchanged
            timing=timing,
        )
