"""The worker -> recorder contract (ZeroMQ multipart, PUSH -> PULL): JSON header + raw crop parts, no pickle.

The camera -> worker format is `inspection.wire`; both share the strict header parsing and the
stream identity checks of `inspection.json_header`, each with its own error type. `Defect` is the
one defect value from the frame inspector (`inspection.frame_inspector`) to the database.

Part 0 is UTF-8 JSON with ``"v": 1`` and ``"type"``; every type carries the stream identity
``line``, ``line_type`` (hot | cold), ``camera``, ``surface`` (top | bottom), ``coil`` and ``seq`` (the
camera stream's sequence number). Types:

- ``frame_result``: one inspected frame. Adds ``index`` (frame number in its coil), ``captured_ns``,
  ``position_mm`` (first row, from the coil head), ``length_mm`` (strip length of the frame),
  ``model`` ``{"version", "sha256"}`` (the model that inspected it), ``inspected_ns`` and ``defects``:
  a list of ``{"class", "score" (0..1), "severity" (1..3, `inspection.severity`),
  "box" [x1, y1, x2, y2] (px in the frame), "along_mm" (centre, from the coil head),
  "across_mm" (centre, from the drive-side edge), "length_mm" (along), "width_mm" (across),
  "area_mm2", "crop"[, "guesses"]}``. ``guesses`` (only for class ``unknown``: the model cannot tell
  what the defect is) lists its best classes as ``[class, score]`` pairs, best first, at most
  `MAX_GUESSES`. ``crop`` is null or the index (>= 1) of the message part holding that
  defect's crop as PNG bytes; each extra part is referenced exactly once. Optional ``timing``
  (`WorkerTiming`): the worker's stage times for this frame, ``{"recv_ns", "infer_start_ns",
  "infer_end_ns", "sent_ns"}`` (all four, integers in 0..2**63-1 ns since the epoch, CLOCK_REALTIME
  of the worker's host; no other key): when it took the frame off its socket, when the model run
  of the frame's batch started and ended, and when it began to send this result. Only for the
  latency breakdown (`inspection.stage_times`); nothing is decided on it, so its order is not
  checked (a clock step must not cost a frame its record). Across hosts the breakdown needs
  synchronised clocks (PTP, or NTP for figures of milliseconds).
- ``frame_dropped``: a frame the worker received (or knows it lost) but could not inspect. Adds
  ``index``, ``captured_ns`` and ``reason`` (text). It counts against coverage.
- ``capture`` (frame_result and frame_dropped, on a line whose cameras sign): what the camera signed
  about the frame, carried unchanged from its header: ``position_mm``, ``offset_mm``,
  ``mm_per_px_x``, ``mm_per_px_y``, ``dtype``, ``shape``, ``digest`` and ``sig``
  (`inspection.frame.Capture`, `inspection.signing`); coil events carry the camera's ``sig``.
- ``worker_status``: a worker's health, every heartbeat: ``worker`` (name), ``host``, ``pid``,
  ``time_ns`` and ``stats`` (a flat object of counters and short texts). Not evidence: the
  recorder keeps the latest per worker in the ``status`` table for the console.
- ``coil_start`` / ``coil_end``: the camera's coil events, forwarded as they arrived (fields of
  `inspection.frame.CoilEvent`: ``time_ns``, and at coil end ``length_mm``, ``frames`` (captured by
  the camera) and ``dropped`` (frames the camera could not send)).
- ``shadow_result``: where a candidate model running in shadow disagrees with the active model on
  an inspected frame; documented in `inspection.shadow_results`.

`decode` raises `RecordError` naming the field for anything malformed; nothing else escapes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from inspection.errors import FrameError, RecordError
from inspection.frame import MAX_INT, Capture, CoilEvent, StreamKey, check_ident
from inspection.json_header import check_keys, coil_event, parse_object, stream_source

RESULTS_VERSION = 1
MAX_HEADER_BYTES = 8 * 1024 * 1024
MAX_DEFECTS_PER_FRAME = 10_000
MAX_CROP_BYTES = 4 * 1024 * 1024
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_IDENTITY = ("line", "line_type", "camera", "surface", "coil", "seq")
_DEFECT_KEYS = frozenset(
    "class score severity box along_mm across_mm length_mm width_mm area_mm2 crop".split()
)
_DEFECT_KEYS_GUESSED = _DEFECT_KEYS | {"guesses"}  # a defect of class "unknown" adds its best guesses
MAX_GUESSES = 8
UNKNOWN = "unknown"  # the class of a defect the model could not name (see inspection.detector)
_RESULT_KEYS = frozenset(_IDENTITY) | frozenset(
    "v type index captured_ns position_mm length_mm model inspected_ns defects".split()
)
# A frame_result's optional parts: what the camera signed ("capture") and the worker's stage times
# ("timing", `WorkerTiming`); the allowed keys for each combination present, built once.
_RESULT_KEY_SETS = {
    (signed, timed): _RESULT_KEYS | {key for key, present in (("capture", signed), ("timing", timed)) if present}
    for signed in (False, True) for timed in (False, True)
}
_TIMING_KEYS = ("recv_ns", "infer_start_ns", "infer_end_ns", "sent_ns")  # in the order they happen
_DROPPED_KEYS = frozenset(_IDENTITY) | {"v", "type", "index", "captured_ns", "reason"}
_EVENT_KEYS = frozenset(_IDENTITY) | {"v", "type", "time_ns", "length_mm", "frames", "dropped"}
_SIGNED_EVENT_KEYS = _EVENT_KEYS | {"sig"}
_SIGNED_DROPPED_KEYS = _DROPPED_KEYS | {"capture"}
_STATUS_KEYS = frozenset({"v", "type", "worker", "host", "pid", "time_ns", "stats"})
MAX_STATUS_STATS = 64


@dataclass(frozen=True)
class Defect:
    """One defect found in a frame, already on strip coordinates, as it is sent and recorded."""

    cls: str
    score: float
    severity: int
    box: tuple[float, float, float, float]
    along_mm: float
    across_mm: float
    length_mm: float
    width_mm: float
    area_mm2: float
    crop_png: bytes | None = None
    # for class "unknown" (the model cannot tell what it is): its best classes and their scores
    guesses: tuple[tuple[str, float], ...] = ()

    def __post_init__(self) -> None:
        _check_defect(self, "defect")


@dataclass(frozen=True)
class WorkerTiming:
    """A worker's stage times for one frame (ns, CLOCK_REALTIME; see the module docstring)."""

    recv_ns: int
    infer_start_ns: int
    infer_end_ns: int
    sent_ns: int

    def __post_init__(self) -> None:
        for name in _TIMING_KEYS:
            _int(f"timing.{name}", getattr(self, name))

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in _TIMING_KEYS}


@dataclass(frozen=True)
class FrameResult:
    """An inspected frame and the defects found in it."""

    source: StreamKey
    coil: str
    seq: int
    index: int
    captured_ns: int
    position_mm: float
    length_mm: float
    model_version: str
    model_sha256: str
    inspected_ns: int
    defects: tuple[Defect, ...] = ()
    capture: Capture | None = None  # what the camera signed about this frame, carried unchanged
    timing: WorkerTiming | None = None  # the worker's stage times, for the latency breakdown only

    def __post_init__(self) -> None:
        _guard(lambda: check_ident("coil", self.coil))
        for name in ("seq", "index", "captured_ns", "inspected_ns"):
            _int(name, getattr(self, name))
        if self.timing is not None and not isinstance(self.timing, WorkerTiming):
            raise RecordError(f"timing: expected WorkerTiming or None, got {type(self.timing).__name__}")
        _num("position_mm", self.position_mm, minimum=0.0)
        _num("length_mm", self.length_mm, minimum=0.0)
        _guard(lambda: check_ident("model.version", self.model_version))
        _sha("model.sha256", self.model_sha256)
        if len(self.defects) > MAX_DEFECTS_PER_FRAME:
            raise RecordError(f"defects: at most {MAX_DEFECTS_PER_FRAME} per frame, got {len(self.defects)}")


@dataclass(frozen=True)
class FrameDropped:
    """A frame that was not inspected (decode failure, overload, crash): it counts against coverage."""

    source: StreamKey
    coil: str
    seq: int
    index: int
    captured_ns: int
    reason: str
    capture: Capture | None = None  # as in `FrameResult`: a drop is signed when its frame's header was

    def __post_init__(self) -> None:
        _guard(lambda: check_ident("coil", self.coil))
        for name in ("seq", "index", "captured_ns"):
            _int(name, getattr(self, name))
        if not isinstance(self.reason, str) or not self.reason or len(self.reason) > 500:
            raise RecordError(
                f"reason: expected a non-empty text of at most 500 characters, got {self.reason!r}"
            )


@dataclass(frozen=True)
class WorkerStatus:
    """A worker's health report (not evidence; see the module docstring)."""

    worker: str
    host: str
    pid: int
    time_ns: int
    stats: dict[str, Any]

    def __post_init__(self) -> None:
        _guard(lambda: check_ident("worker", self.worker))
        if not isinstance(self.host, str) or not 0 < len(self.host) <= 255:
            raise RecordError(f"host: expected a host name, got {self.host!r}")
        _int("pid", self.pid)
        _int("time_ns", self.time_ns)
        if not isinstance(self.stats, dict) or len(self.stats) > MAX_STATUS_STATS:
            raise RecordError(f"stats: expected an object of at most {MAX_STATUS_STATS} entries")
        for key, value in self.stats.items():
            plain = isinstance(value, int | float | str | type(None)) or (
                isinstance(value, dict) and all(isinstance(v, int | float | str) for v in value.values()))
            if not isinstance(key, str) or not plain or (isinstance(value, str) and len(value) > 500):
                raise RecordError(f"stats.{key}: expected a number, a short text or a flat object, got {value!r}")


ResultMessage = FrameResult | FrameDropped | CoilEvent | WorkerStatus


def encode(message: ResultMessage) -> list[bytes]:
    """Encode a message into multipart parts: [JSON header, crop PNG, crop PNG, ...]."""
    if isinstance(message, CoilEvent):  # forwarded as the camera sent it, its signature included
        sig = {} if message.sig is None else {"sig": message.sig}
        return [_dump({"v": RESULTS_VERSION, "type": message.kind, **message.header_fields(), **sig})]
    from inspection import shadow_results  # it builds on this module: imported here, not at load time

    if isinstance(message, shadow_results.ShadowResult):
        return shadow_results.encode(message)
    if isinstance(message, WorkerStatus):
        return [_dump({"v": RESULTS_VERSION, "type": "worker_status", "worker": message.worker,
                       "host": message.host, "pid": message.pid, "time_ns": message.time_ns,
                       "stats": message.stats})]
    ident = {
        "line": message.source.line,
        "line_type": message.source.line_type,
        "camera": message.source.camera,
        "surface": message.source.surface,
        "coil": message.coil,
        "seq": message.seq,
    }
    if isinstance(message, FrameDropped):
        return [
            _dump(
                {
                    "v": RESULTS_VERSION,
                    "type": "frame_dropped",
                    **ident,
                    "index": message.index,
                    "captured_ns": message.captured_ns,
                    "reason": message.reason,
                    **_capture_field(message.capture),
                }
            )
        ]
    if not isinstance(message, FrameResult):
        raise RecordError(
            f"message: expected FrameResult, FrameDropped or CoilEvent, got {type(message).__name__}"
        )
    crops: list[bytes] = []
    defects = []
    for d in message.defects:
        ref = None
        if d.crop_png is not None:
            crops.append(d.crop_png)
            ref = len(crops)
        defects.append(
            {
                "class": d.cls,
                "score": d.score,
                "severity": d.severity,
                "box": list(d.box),
                "along_mm": d.along_mm,
                "across_mm": d.across_mm,
                "length_mm": d.length_mm,
                "width_mm": d.width_mm,
                "area_mm2": d.area_mm2,
                "crop": ref,
                **({"guesses": [list(g) for g in d.guesses]} if d.guesses else {}),
            }
        )
    header = {
        "v": RESULTS_VERSION,
        "type": "frame_result",
        **ident,
        "index": message.index,
        "captured_ns": message.captured_ns,
        "position_mm": message.position_mm,
        "length_mm": message.length_mm,
        "inspected_ns": message.inspected_ns,
        "model": {"version": message.model_version, "sha256": message.model_sha256},
        "defects": defects,
        **_capture_field(message.capture),
    }
    if message.timing is not None:
        header["timing"] = message.timing.as_dict()
    return [_dump(header), *crops]


def _capture_field(capture: Capture | None) -> dict[str, Any]:
    return {} if capture is None else {"capture": capture.as_wire()}


def _capture(header: dict[str, Any]) -> Capture | None:
    """The ``capture`` object of a frame_result / frame_dropped header, checked (`RecordError`)."""
    obj = header.get("capture")
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise RecordError(f"capture: expected an object, got {type(obj).__name__}")
    _keys(obj, Capture.KEYS | (Capture.OPTIONAL_KEYS & obj.keys()), "capture")
    return _guard(lambda: Capture.from_wire(obj))  # type: ignore[no-any-return]


def decode(parts: Sequence[Any]) -> ResultMessage:
    """Decode multipart parts into a message; any problem is a `RecordError` naming the field."""
    from inspection.result_structs import frame_result  # it builds on this module

    fast = frame_result(parts)  # a plainly valid frame_result, decoded and checked by msgspec
    if fast is not None:
        return fast
    return decode_slowly(parts)


def decode_slowly(parts: Sequence[Any]) -> ResultMessage:
    """`decode` field by field, without the fast path: the reference it must agree with, and what
    names the field of anything malformed."""
    try:
        return _decode(parts)
    except RecordError:
        raise
    except FrameError as exc:
        raise RecordError(str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - the contract: only RecordError escapes
        raise RecordError(f"malformed message: {type(exc).__name__}: {exc}") from None


def _decode(parts: Sequence[Any]) -> ResultMessage:
    if (
        isinstance(parts, bytes | bytearray | memoryview | str)
        or not isinstance(parts, Sequence)
        or not parts
    ):
        raise RecordError("parts: expected a non-empty sequence of message parts")
    header = parse_object(memoryview(parts[0]), MAX_HEADER_BYTES, RecordError)
    if header.get("v") != RESULTS_VERSION:
        raise RecordError(f"header.v: expected version {RESULTS_VERSION}, got {header.get('v')!r}")
    kind = header.get("type")
    # crops arrive as bytes from recv_multipart: no second copy of each PNG (only other buffers are copied)
    extra = [p if type(p) is bytes else bytes(memoryview(p)) for p in parts[1:]]
    if kind in ("coil_start", "coil_end"):
        _keys(header, _SIGNED_EVENT_KEYS if "sig" in header else _EVENT_KEYS, "header")
        _no_extra(extra, kind)
        return coil_event(kind, header, RecordError)
    if kind == "worker_status":
        _keys(header, _STATUS_KEYS, "header")
        _no_extra(extra, kind)
        return WorkerStatus(worker=header["worker"], host=header["host"], pid=header["pid"],
                            time_ns=header["time_ns"], stats=header["stats"])
    if kind == "frame_dropped":
        _keys(header, _SIGNED_DROPPED_KEYS if "capture" in header else _DROPPED_KEYS, "header")
        _no_extra(extra, kind)
        return FrameDropped(
            source=_source(header),
            coil=header["coil"],
            seq=header["seq"],
            index=header["index"],
            captured_ns=header["captured_ns"],
            reason=header["reason"],
            capture=_capture(header),
        )
    if kind == "shadow_result":
        from inspection import shadow_results

        return shadow_results.decode(header, extra)  # type: ignore[return-value]
    if kind != "frame_result":
        raise RecordError(
            f"header.type: expected frame_result, frame_dropped, worker_status, shadow_result, coil_start or "
            f"coil_end, got {kind!r}"
        )
    _keys(header, _RESULT_KEY_SETS["capture" in header, "timing" in header], "header")
    model = header["model"]
    if not isinstance(model, dict):
        raise RecordError(f"model: expected an object with version and sha256, got {model!r}")
    _keys(model, frozenset({"version", "sha256"}), "model")
    items = header["defects"]
    if not isinstance(items, list):
        raise RecordError(f"defects: expected a list, got {type(items).__name__}")
    if len(items) > MAX_DEFECTS_PER_FRAME:
        raise RecordError(f"defects: at most {MAX_DEFECTS_PER_FRAME} per frame, got {len(items)}")
    used: set[int] = set()
    defects = tuple(_defect(i, item, extra, used) for i, item in enumerate(items))
    if len(used) != len(extra):
        raise RecordError(f"parts: {len(extra)} crop part(s) but {len(used)} referenced by defects")
    return FrameResult(
        source=_source(header),
        coil=header["coil"],
        seq=header["seq"],
        index=header["index"],
        captured_ns=header["captured_ns"],
        position_mm=header["position_mm"],
        length_mm=header["length_mm"],
        model_version=model["version"],
        model_sha256=model["sha256"],
        inspected_ns=header["inspected_ns"],
        defects=defects,
        capture=_capture(header),
        timing=_timing(header["timing"]) if "timing" in header else None,
    )


def _timing(value: Any) -> WorkerTiming:
    if not isinstance(value, dict):
        raise RecordError(f"timing: expected an object with {', '.join(_TIMING_KEYS)}, got {value!r}"[:300])
    _keys(value, frozenset(_TIMING_KEYS), "timing")
    return WorkerTiming(**value)


def _defect(i: int, item: Any, extra: list[bytes], used: set[int]) -> Defect:
    name = f"defects[{i}]"
    if not isinstance(item, dict):
        raise RecordError(f"{name}: expected an object, got {type(item).__name__}")
    if item.keys() != _DEFECT_KEYS and item.keys() != _DEFECT_KEYS_GUESSED:
        _keys(item, _DEFECT_KEYS_GUESSED if "guesses" in item else _DEFECT_KEYS, name)
    ref, crop = item["crop"], None
    if ref is not None:
        if isinstance(ref, bool) or not isinstance(ref, int) or not 1 <= ref <= len(extra) or ref in used:
            raise RecordError(
                f"{name}.crop: expected null or an unused part index 1..{len(extra)}, got {ref!r}"
            )
        used.add(ref)
        crop = extra[ref - 1]
    box = item["box"]
    if not isinstance(box, list) or len(box) != 4:
        raise RecordError(f"{name}.box: expected [x1, y1, x2, y2], got {box!r}")
    # The recorder's hot path: a frozen dataclass's __init__ sets each field through
    # object.__setattr__; filling __dict__ at once and validating once (with this defect's name in
    # any error) is about twice as fast and checks exactly the same things.
    record = object.__new__(Defect)
    record.__dict__.update(cls=item["class"], score=item["score"], severity=item["severity"], box=tuple(box),
                           along_mm=item["along_mm"], across_mm=item["across_mm"], length_mm=item["length_mm"],
                           width_mm=item["width_mm"], area_mm2=item["area_mm2"], crop_png=crop,
                           guesses=_guesses(item["guesses"], name) if "guesses" in item else ())
    _check_defect(record, name)
    return record


_NUMBER_TYPES = frozenset({int, float})  # exactly: a bool is not a number here


def _guesses(value: Any, name: str) -> tuple[tuple[str, float], ...]:
    """An unknown defect's best guesses, [[class, score], ...] on the wire, checked."""
    if not isinstance(value, list | tuple) or len(value) > MAX_GUESSES:
        raise RecordError(f"{name}.guesses: expected a list of at most {MAX_GUESSES} [class, score] pairs")
    out = []
    for i, pair in enumerate(value):
        if (not isinstance(pair, list | tuple) or len(pair) != 2 or not isinstance(pair[0], str)
                or not 0 < len(pair[0]) <= 64):
            raise RecordError(f"{name}.guesses[{i}]: expected [class, score], got {pair!r}"[:300])
        _num(f"{name}.guesses[{i}].score", pair[1], minimum=0.0, maximum=1.0)
        out.append((pair[0], float(pair[1])))
    return tuple(out)


def _check_defect(d: Defect, name: str) -> None:
    if _plainly_valid(d):
        return
    if not isinstance(d.cls, str) or not d.cls or len(d.cls) > 64:
        raise RecordError(f"{name}.class: expected a class name, got {d.cls!r}")
    _num(f"{name}.score", d.score, minimum=0.0, maximum=1.0)
    if isinstance(d.severity, bool) or d.severity not in (1, 2, 3):
        raise RecordError(f"{name}.severity: expected 1, 2 or 3, got {d.severity!r}")
    if not isinstance(d.box, tuple) or len(d.box) != 4:
        raise RecordError(f"{name}.box: expected (x1, y1, x2, y2), got {d.box!r}")
    for k, v in zip(("x1", "y1", "x2", "y2"), d.box, strict=True):
        _num(f"{name}.box.{k}", v)
    if d.box[2] < d.box[0] or d.box[3] < d.box[1]:
        raise RecordError(f"{name}.box: expected x2 >= x1 and y2 >= y1, got {list(d.box)}")
    _num(f"{name}.along_mm", d.along_mm, minimum=0.0)
    _num(f"{name}.across_mm", d.across_mm)
    for key in ("length_mm", "width_mm", "area_mm2"):
        _num(f"{name}.{key}", getattr(d, key), minimum=0.0)
    if d.guesses:
        _guesses(d.guesses, name)
    if d.crop_png is not None:
        if not isinstance(d.crop_png, bytes) or not d.crop_png.startswith(PNG_SIGNATURE):
            raise RecordError(f"{name}.crop: expected PNG bytes")
        if len(d.crop_png) > MAX_CROP_BYTES:
            raise RecordError(f"{name}.crop: at most {MAX_CROP_BYTES} bytes, got {len(d.crop_png)}")


def _plainly_valid(d: Defect) -> bool:
    """Fast path for the common case (one pass, no messages); anything unusual gets the named checks."""
    box = d.box
    if type(box) is not tuple or len(box) != 4 or type(d.cls) is not str or not 0 < len(d.cls) <= 64 or d.guesses:
        return False
    numbers = (d.score, d.along_mm, d.across_mm, d.length_mm, d.width_mm, d.area_mm2, *box)
    if not _NUMBER_TYPES.issuperset(map(type, numbers)) or not math.isfinite(sum(numbers)):  # C loops, no genexpr
        return False
    return (0.0 <= d.score <= 1.0 and d.severity in (1, 2, 3) and type(d.severity) is int and d.along_mm >= 0
            and d.length_mm >= 0 and d.width_mm >= 0 and d.area_mm2 >= 0 and box[2] >= box[0]
            and box[3] >= box[1] and (d.crop_png is None or (type(d.crop_png) is bytes
                                                             and d.crop_png.startswith(PNG_SIGNATURE)
                                                             and len(d.crop_png) <= MAX_CROP_BYTES)))


def _source(header: dict[str, Any]) -> StreamKey:
    return stream_source(header, RecordError)


def _guard(fn: Any) -> Any:
    try:
        return fn()
    except FrameError as exc:
        raise RecordError(str(exc)) from None


def _keys(obj: dict[str, Any], expected: frozenset[str], name: str) -> None:
    check_keys(obj, expected, name, RecordError)


def _no_extra(extra: list[bytes], kind: str) -> None:
    if extra:
        raise RecordError(f"parts: a {kind} message has 1 part, got {1 + len(extra)}")


def _int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise RecordError(f"{name}: expected an integer in 0..{MAX_INT}, got {value!r}"[:300])


def _num(name: str, value: Any, minimum: float | None = None, maximum: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise RecordError(f"{name}: expected a finite number, got {value!r}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise RecordError(f"{name}: expected a number in [{minimum}, {maximum}], got {value!r}")


_HEX = frozenset("0123456789abcdef")  # lowercase only


def _sha(name: str, value: Any) -> None:
    if not isinstance(value, str) or len(value) != 64 or not _HEX.issuperset(value):
        raise RecordError(f"{name}: expected 64 lowercase hex characters, got {value!r}")


def _dump(header: dict[str, Any]) -> bytes:
    try:
        return json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    except ValueError as exc:
        raise RecordError(f"message: cannot encode: {exc}") from None
