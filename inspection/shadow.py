"""Shadow mode in the worker: a candidate model inspects a share of the frames beside the active one.

So the ML engineer sees, on the plant's own strip, what a promotion would change before making it.
The shadow's defects never become records: the worker sends, after each chosen frame's own result,
a `shadow_results.ShadowResult` naming only where the two models disagree (with crops), which the
recorder keeps in tables of their own.

- **Which frames**: `chosen` hashes camera, coil and frame index, so the same frames are chosen on
  every worker and in every run, whatever the batching, spread evenly over coils and cameras;
  ``[model] shadow_share`` of them (1.0: all, where the machine has the time).
- **The same views**: the shadow model sees exactly the windows the active model saw (the first stage
  runs once), so a disagreement is the models', never the first stage's.
- **Never slows the line's output**: the active model's results of a batch are sent before the
  shadow runs, so records and PLC messages do not wait for it; it delays the next batch by its own
  time, on the chosen share only. That time is counted (`WorkerStats.shadow_s` beside ``inspect_s``,
  in every worker_status) and measured by `steel-inspect bench shadow`.
- **Matching** (`compare`): boxes are paired one to one, greedily by IoU, at least ``[model]
  shadow_iou``, whatever their classes; a pair of other classes is ``other_class``, an active defect
  left alone ``active_only``, a shadow defect left alone ``shadow_only``.
- **Which model**: ``[model] shadow`` names it ("" follows the registry's ``shadow`` entry, which
  `steel-inspect models shadow VERSION|off` writes; running workers pick a change up between batches
  like a promotion). A shadow that is the active model (after it was promoted) is not run.
- **Failures**: a shadow model that does not load or fails on a batch is logged and counted
  (``shadow_failed``, ``shadow_error``); the frames' own results have gone out already.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from inspection.config import ModelConfig
from inspection.detector import Detector
from inspection.frame import Frame
from inspection.frame_inspector import FrameInspection, FrameInspector, InspectorSettings, crop_png, to_uint8
from inspection.model_loading import BackgroundLoad
from inspection.registry import Manifest, Registry
from inspection.results import Defect
from inspection.severity import SeverityRule
from inspection.shadow_results import Disagreement, ShadowResult
from inspection.tiling import iou_matrix

log = logging.getLogger(__name__)


def chosen(frame: Frame, share: float) -> bool:
    """Whether the shadow model inspects `frame`: the same answer on every worker, in every run."""
    if share >= 1.0:
        return True
    if share <= 0.0:
        return False
    key = f"{frame.source.camera}:{frame.coil}:{frame.index}".encode()
    return zlib.crc32(key) < share * 2**32


@dataclass(frozen=True)
class Match:
    """One entry of `compare`: a disagreement's kind, the defects' indexes, their overlap."""

    kind: str
    active: int | None
    shadow: int | None
    iou: float


def compare(active: Sequence[Defect], shadow: Sequence[Defect], iou_min: float) -> list[Match]:
    """Where the two models' defects in one frame disagree (see the module docstring); agreeing
    pairs are left out. Ordered: active defects by index, then the shadow's own."""
    ious = iou_matrix(np.array([d.box for d in active], float).reshape(-1, 4),
                      np.array([d.box for d in shadow], float).reshape(-1, 4))
    pair_of: dict[int, tuple[int, float]] = {}
    taken: set[int] = set()
    # greedy, best overlap first: with a handful of defects per frame it is what a person would pair
    for flat in np.argsort(-ious, axis=None, kind="stable"):
        i, j = divmod(int(flat), ious.shape[1])
        if ious[i, j] < iou_min:
            break
        if i not in pair_of and j not in taken:
            pair_of[i] = (j, float(ious[i, j]))
            taken.add(j)
    out = []
    for i, defect in enumerate(active):
        if i in pair_of:
            j, overlap = pair_of[i]
            if shadow[j].cls != defect.cls:
                out.append(Match("other_class", i, j, overlap))
        else:
            out.append(Match("active_only", i, None, float(ious[i].max()) if ious.shape[1] else 0.0))
    for j in range(len(shadow)):
        if j not in taken:
            out.append(Match("shadow_only", None, j, float(ious[:, j].max()) if ious.shape[0] else 0.0))
    return out


class ShadowSlot:
    """The shadow model of one line type, following the config or the registry (see the module docstring)."""

    def __init__(self, registry: Registry, setting: str, line_type: str, load: Callable[[Manifest], Detector]) -> None:
        self.registry, self.setting, self.line_type, self._load = registry, setting, line_type, load
        self.detector: Detector | None = None
        self.error: str | None = None
        self._token: str | None = None
        self._loading: BackgroundLoad | None = None
        self.refresh(wait=True)  # at start, before the worker takes frames

    @property
    def manifest(self) -> Manifest | None:
        return self.detector.manifest if self.detector is not None else None

    def _wanted(self) -> Manifest | None:
        name = None if self.setting == "off" else self.setting or self.registry.shadow(self.line_type)
        manifest = self.registry.resolve(name) if name else None
        if manifest is not None and manifest.line_type != self.line_type:
            raise ValueError(f"shadow {manifest.version} is a {manifest.line_type} model, not {self.line_type}")
        return manifest

    def refresh(self, wait: bool = False) -> bool:
        """Follow a registry change; True when the shadow model changed. Loading runs in the
        background (`wait` False): the active model keeps inspecting meanwhile."""
        if self._loading is not None:
            return self._collect()
        token = self.registry.state_token()
        if token == self._token:
            return False
        self._token = token
        try:
            manifest = self._wanted()
        except Exception as exc:  # noqa: BLE001 - a bad shadow entry must not stop the line
            return self._failed(exc)
        current = self.manifest
        if manifest is None:
            self.detector, self.error = None, None
            if current is not None:
                log.info("shadow for %s: off (was %s)", self.line_type, current.version)
            return current is not None
        if current is not None and (manifest.version, manifest.sha256) == (current.version, current.sha256):
            return False
        self._loading = BackgroundLoad(self._load, manifest, name=f"shadow-{manifest.version}")
        if wait:
            self._loading.join()
            return self._collect()
        return False

    def _collect(self) -> bool:
        loading = self._loading
        if loading is None or loading.is_alive():
            return False
        self._loading = None
        if loading.error is not None:
            return self._failed(loading.error)
        log.info("shadow for %s: %s -> %s", self.line_type, self.manifest.version if self.manifest else "none",
                 loading.manifest.version)
        self.detector, self.error = loading.detector, None
        return True

    def _failed(self, exc: Exception) -> bool:
        self.error = f"{type(exc).__name__}: {exc}"[:200]
        log.error("shadow model for %s not loaded, keeping %s: %s", self.line_type,
                  self.manifest.version if self.manifest else "none", self.error)
        return False


class ShadowRunner:
    """Runs a `ShadowSlot`'s model on the chosen frames of a batch the active model inspected."""

    def __init__(self, slot: ShadowSlot, config: ModelConfig, settings: InspectorSettings,
                 severity_rule: SeverityRule) -> None:
        self.slot, self.share, self.iou = slot, config.shadow_share, config.shadow_iou
        self.settings = dataclasses.replace(settings, crops=False)  # crops are cut for disagreements only
        self.severity_rule = severity_rule

    def run(self, inspections: Sequence[FrameInspection], active_detector: Detector
            ) -> tuple[list[ShadowResult], float]:
        """The shadow results of the chosen frames, and the seconds they took (0 when none ran); each
        model named by its version and the sha256 of its file that ran (`Detector.file_sha256`), as the
        frames' own results name them."""
        detector, active = self.slot.detector, active_detector.manifest
        if detector is None or (detector.manifest.version, detector.manifest.sha256) == (active.version,
                                                                                         active.sha256):
            return [], 0.0
        picked = [r for r in inspections if chosen(r.frame, self.share)]
        if not picked:
            return [], 0.0
        started = time.perf_counter()
        seen = FrameInspector(detector, self.settings, self.severity_rule).inspect(
            [r.frame for r in picked], plans=[(list(r.views), r.tiles_total) for r in picked])
        results = [(r, s, compare(r.defects, s.defects, self.iou)) for r, s in zip(picked, seen, strict=True)]
        items = [tuple(self._item(r, s, m) for m in matches) for r, s, matches in results]
        elapsed = time.perf_counter() - started
        ms = elapsed * 1000.0 / len(picked)
        shadow = detector.manifest
        return [ShadowResult(source=r.frame.source, coil=r.frame.coil, seq=r.frame.seq, index=r.frame.index,
                             captured_ns=r.frame.captured_ns, active_version=active.version,
                             active_sha256=active_detector.file_sha256, shadow_version=shadow.version,
                             shadow_sha256=detector.file_sha256, shadow_ms=ms, active_defects=len(r.defects),
                             shadow_defects=len(s.defects), disagreements=found)
                for (r, s, _), found in zip(results, items, strict=True)], elapsed

    def _item(self, active: FrameInspection, shadow: FrameInspection, match: Match) -> Disagreement:
        a = active.defects[match.active] if match.active is not None else None
        s = shadow.defects[match.shadow] if match.shadow is not None else None
        shown = a if a is not None else s
        if shown is None:  # `compare` never yields one: every match has at least one side
            raise ValueError(f"disagreement {match} names neither model's defect")
        crop = a.crop_png if a is not None else None  # the recorded defect's own crop, the same bytes
        if crop is None:
            image = to_uint8(active.frame.pixels, self.settings.uint16_shift)
            crop = crop_png(image, shown.box, self.settings.crop_margin_px) or None
        return Disagreement(kind=match.kind, box=shown.box, along_mm=shown.along_mm, across_mm=shown.across_mm,
                            iou=min(1.0, max(0.0, round(match.iou, 6))), active_index=match.active,
                            active_class=a.cls if a else None, active_score=a.score if a else None,
                            shadow_class=s.cls if s else None, shadow_score=s.score if s else None, crop_png=crop)
