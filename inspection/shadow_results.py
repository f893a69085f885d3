"""Shadow mode on the worker -> recorder link: where a candidate model disagrees with the active one.

One ``shadow_result`` message per frame the shadow model inspected (`inspection.shadow`), on the same
results link and in the same format as `inspection.results` (JSON header + one PNG part per crop,
the same checks, `RecordError` for anything malformed). It is sent after the frame's own
``frame_result``, never instead of it, and it records nothing about the frame itself: coverage,
defects, grades and the PLC output stay the active model's alone.

Header: the stream identity (``line``, ``line_type``, ``camera``, ``surface``, ``coil``, ``seq``),
``index``, ``captured_ns``, ``active`` and ``shadow`` (``{"version", "sha256"}``), ``shadow_ms`` (the
shadow model's share of its batch's time, per frame), ``active_defects`` and ``shadow_defects`` (what
each model found in the frame) and ``disagreements``, each
``{"kind", "active_index", "active_class", "active_score", "shadow_class", "shadow_score", "iou",
"box", "along_mm", "across_mm", "crop"}`` with kind

- ``active_only``: the active model found it, the shadow did not (promoting the shadow would lose it);
  ``active_index`` is the defect's index in the frame's ``frame_result`` (its ``defect_index``);
- ``shadow_only``: the shadow found it, the active model did not (promoting would add it);
- ``other_class``: both found it (boxes overlapping by ``[model] shadow_iou``) with other classes.

``iou`` is the overlap of the matched boxes, or for a defect only one model found, its best overlap
with any box of the other model (0: nothing there at all). ``box`` (frame pixels), ``along_mm`` and
``across_mm`` are the active model's defect where there is one, else the shadow's.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from inspection.errors import RecordError
from inspection.frame import StreamKey, check_ident
from inspection.json_header import check_keys, stream_source
from inspection.results import (
    _IDENTITY,
    MAX_CROP_BYTES,
    MAX_DEFECTS_PER_FRAME,
    PNG_SIGNATURE,
    RESULTS_VERSION,
    _guard,
    _int,
    _num,
    _sha,
)

KINDS = ("active_only", "shadow_only", "other_class")
_KEYS = frozenset(_IDENTITY) | frozenset(
    "v type index captured_ns active shadow shadow_ms active_defects shadow_defects disagreements".split())
_ITEM_KEYS = frozenset("kind active_index active_class active_score shadow_class shadow_score iou box along_mm "
                       "across_mm crop".split())


@dataclass(frozen=True)
class Disagreement:
    """One defect the two models see differently (see the module docstring for the kinds)."""

    kind: str
    box: tuple[float, float, float, float]
    along_mm: float
    across_mm: float
    iou: float
    active_index: int | None = None
    active_class: str | None = None
    active_score: float | None = None
    shadow_class: str | None = None
    shadow_score: float | None = None
    crop_png: bytes | None = None

    def __post_init__(self) -> None:
        _check_item(self, "disagreement")


@dataclass(frozen=True)
class ShadowResult:
    """What the shadow model saw differently in one frame (possibly nothing: the frame still counts)."""

    source: StreamKey
    coil: str
    seq: int
    index: int
    captured_ns: int
    active_version: str
    active_sha256: str
    shadow_version: str
    shadow_sha256: str
    shadow_ms: float
    active_defects: int
    shadow_defects: int
    disagreements: tuple[Disagreement, ...] = ()

    def __post_init__(self) -> None:
        _guard(lambda: check_ident("coil", self.coil))
        for name in ("seq", "index", "captured_ns", "active_defects", "shadow_defects"):
            _int(name, getattr(self, name))
        for side in ("active", "shadow"):
            _guard(lambda side=side: check_ident(f"{side}.version", getattr(self, f"{side}_version")))
            _sha(f"{side}.sha256", getattr(self, f"{side}_sha256"))
        _num("shadow_ms", self.shadow_ms, minimum=0.0)
        if len(self.disagreements) > MAX_DEFECTS_PER_FRAME:
            raise RecordError(f"disagreements: at most {MAX_DEFECTS_PER_FRAME} per frame, "
                              f"got {len(self.disagreements)}")


def encode(message: ShadowResult) -> list[bytes]:
    """[JSON header, crop PNG, ...], like `inspection.results.encode`."""
    crops: list[bytes] = []
    items = []
    for d in message.disagreements:
        ref = None
        if d.crop_png is not None:
            crops.append(d.crop_png)
            ref = len(crops)
        items.append({"kind": d.kind, "active_index": d.active_index, "active_class": d.active_class,
                      "active_score": d.active_score, "shadow_class": d.shadow_class, "shadow_score": d.shadow_score,
                      "iou": d.iou, "box": list(d.box), "along_mm": d.along_mm, "across_mm": d.across_mm,
                      "crop": ref})
    s = message.source
    header = {"v": RESULTS_VERSION, "type": "shadow_result", "line": s.line, "line_type": s.line_type,
              "camera": s.camera, "surface": s.surface, "coil": message.coil, "seq": message.seq,
              "index": message.index, "captured_ns": message.captured_ns,
              "active": {"version": message.active_version, "sha256": message.active_sha256},
              "shadow": {"version": message.shadow_version, "sha256": message.shadow_sha256},
              "shadow_ms": message.shadow_ms, "active_defects": message.active_defects,
              "shadow_defects": message.shadow_defects, "disagreements": items}
    try:
        text = json.dumps(header, separators=(",", ":"), allow_nan=False)
    except ValueError as exc:
        raise RecordError(f"message: cannot encode: {exc}") from None
    return [text.encode("utf-8"), *crops]


def decode(header: dict, extra: list[bytes]) -> ShadowResult:
    """The `ShadowResult` of a parsed ``shadow_result`` header and its crop parts, or `RecordError`."""
    check_keys(header, _KEYS, "header", RecordError)
    models = {}
    for side in ("active", "shadow"):
        model = header[side]
        if not isinstance(model, dict):
            raise RecordError(f"{side}: expected an object with version and sha256, got {model!r}"[:300])
        check_keys(model, frozenset({"version", "sha256"}), side, RecordError)
        models[side] = model
    items = header["disagreements"]
    if not isinstance(items, list) or len(items) > MAX_DEFECTS_PER_FRAME:
        raise RecordError(f"disagreements: expected a list of at most {MAX_DEFECTS_PER_FRAME}")
    used: set[int] = set()
    disagreements = tuple(_item(i, item, extra, used) for i, item in enumerate(items))
    if len(used) != len(extra):
        raise RecordError(f"parts: {len(extra)} crop part(s) but {len(used)} referenced by disagreements")
    return ShadowResult(
        source=stream_source(header, RecordError), coil=header["coil"], seq=header["seq"], index=header["index"],
        captured_ns=header["captured_ns"], active_version=models["active"]["version"],
        active_sha256=models["active"]["sha256"], shadow_version=models["shadow"]["version"],
        shadow_sha256=models["shadow"]["sha256"], shadow_ms=header["shadow_ms"],
        active_defects=header["active_defects"], shadow_defects=header["shadow_defects"],
        disagreements=disagreements)


def _item(i: int, item: object, extra: list[bytes], used: set[int]) -> Disagreement:
    name = f"disagreements[{i}]"
    if not isinstance(item, dict):
        raise RecordError(f"{name}: expected an object, got {type(item).__name__}")
    check_keys(item, _ITEM_KEYS, name, RecordError)
    ref, crop = item["crop"], None
    if ref is not None:
        if isinstance(ref, bool) or not isinstance(ref, int) or not 1 <= ref <= len(extra) or ref in used:
            raise RecordError(f"{name}.crop: expected null or an unused part index 1..{len(extra)}, got {ref!r}"[:300])
        used.add(ref)
        crop = extra[ref - 1]
    box = item["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise RecordError(f"{name}.box: expected [x1, y1, x2, y2], got {box!r}"[:300])
    record = object.__new__(Disagreement)  # checked once below, with this item's name in any error
    record.__dict__.update(kind=item["kind"], box=tuple(box), along_mm=item["along_mm"], across_mm=item["across_mm"],
                           iou=item["iou"], active_index=item["active_index"], active_class=item["active_class"],
                           active_score=item["active_score"], shadow_class=item["shadow_class"],
                           shadow_score=item["shadow_score"], crop_png=crop)
    _check_item(record, name)
    return record


def _check_item(d: Disagreement, name: str) -> None:
    if d.kind not in KINDS:
        raise RecordError(f"{name}.kind: expected one of {', '.join(KINDS)}, got {d.kind!r}"[:300])
    # which side must be there follows from the kind: a record that names a class the kind says is
    # absent would be counted under the wrong heading on the Models page
    has_active, has_shadow = d.kind != "shadow_only", d.kind != "active_only"
    for side, present in (("active", has_active), ("shadow", has_shadow)):
        cls, score = getattr(d, f"{side}_class"), getattr(d, f"{side}_score")
        if not present:
            if cls is not None or score is not None:
                raise RecordError(f"{name}: a {d.kind} disagreement has no {side} class or score")
            continue
        if not isinstance(cls, str) or not 0 < len(cls) <= 64:
            raise RecordError(f"{name}.{side}_class: expected a class name, got {cls!r}"[:300])
        _num(f"{name}.{side}_score", score, minimum=0.0, maximum=1.0)
    if has_active:
        _int(f"{name}.active_index", d.active_index)
        if d.active_index >= MAX_DEFECTS_PER_FRAME:  # type: ignore[operator]
            raise RecordError(f"{name}.active_index: expected < {MAX_DEFECTS_PER_FRAME}, got {d.active_index}")
    elif d.active_index is not None:
        raise RecordError(f"{name}.active_index: a shadow_only disagreement has none, got {d.active_index!r}"[:300])
    if d.kind == "other_class" and d.active_class == d.shadow_class:
        raise RecordError(f"{name}: other_class with the same class {d.active_class!r} on both sides"[:300])
    _num(f"{name}.iou", d.iou, minimum=0.0, maximum=1.0)
    if not isinstance(d.box, tuple) or len(d.box) != 4:
        raise RecordError(f"{name}.box: expected (x1, y1, x2, y2), got {d.box!r}"[:300])
    for key, value in zip(("x1", "y1", "x2", "y2"), d.box, strict=True):
        _num(f"{name}.box.{key}", value)
    if d.box[2] < d.box[0] or d.box[3] < d.box[1]:
        raise RecordError(f"{name}.box: expected x2 >= x1 and y2 >= y1, got {list(d.box)}")
    _num(f"{name}.along_mm", d.along_mm, minimum=0.0)
    _num(f"{name}.across_mm", d.across_mm)
    if d.crop_png is not None and (not isinstance(d.crop_png, bytes) or not d.crop_png.startswith(PNG_SIGNATURE)
                                   or len(d.crop_png) > MAX_CROP_BYTES):
        raise RecordError(f"{name}.crop: expected PNG bytes of at most {MAX_CROP_BYTES}")
