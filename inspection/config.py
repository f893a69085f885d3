"""Line configuration: one TOML file per line, loaded once into frozen dataclasses.

Every problem is a `ConfigError` whose message names the file, the key and what was wrong,
so the CLI can print it as one line. `load_config(None)` loads the demo line shipped here.

A key's default is written once, as the default of its dataclass field; the loader reads it
from there (`_Section.default`). A field without a default is a key the file must set.
"""

from __future__ import annotations

import logging
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from inspection.backends import SETTINGS as PROVIDER_SETTINGS
from inspection.errors import ConfigError, TransportError
from inspection.flips import FlipError, check_flips
from inspection.frame import IDENT_PATTERN, LINE_TYPES, SURFACES
from inspection.records.audit_keys import KEY_FILE_NAME as AUDIT_KEY_FILE

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
DEMO_CONFIG = PACKAGE_DIR / "lines" / "demo.toml"
CAMERA_SOURCES = ("simulator", "folder", "pylon", "genicam")

log = logging.getLogger(__name__)


def default_models_dir() -> Path:
    """The model registry: $STEEL_INSPECT_MODELS, else the checkout's models/ folder."""
    return Path(os.environ.get("STEEL_INSPECT_MODELS") or REPO_DIR / "models")


def default_datasets_dir() -> Path:
    """The public datasets: $STEEL_INSPECT_DATASETS, else ../shared/datasets beside the checkout."""
    return Path(os.environ.get("STEEL_INSPECT_DATASETS") or REPO_DIR.parent / "shared" / "datasets")


@dataclass(frozen=True, kw_only=True)  # keyword-only, so a default can sit beside its field in key order
class CameraConfig:
    id: str
    surface: str
    source: str = "simulator"
    width_px: int
    frame_height_px: int
    mm_per_px_across: float
    mm_per_px_along: float
    offset_mm: float = 0.0
    endpoint: str
    live: bool = True
    send_hwm: int = 16
    # rows of the previous frame repeated at the top of each frame of a coil (`cameras.pump`): the first
    # stage and the model see a defect cut by the seam with what lies above it; 0: frames do not overlap
    overlap_px: int = 0
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def frame_shapes(self) -> set[tuple[int, int]]:
        """(rows, columns) of the frames this camera sends: the first of a coil has no overlap."""
        return {(self.frame_height_px, self.width_px), (self.frame_height_px + self.overlap_px, self.width_px)}


@dataclass(frozen=True)
class ModelConfig:
    name: str  # no fixed default: the loader uses the line's type (the registry's active model for it)
    registry: Path = field(default_factory=default_models_dir)  # read when the config is loaded
    # `models promote` refuses a candidate whose test figures fall more than this below the active
    # model's (recall of any class; detection rate), unless forced with a reason
    promote_max_recall_drop: float = 0.02
    promote_max_detection_rate_drop: float = 0.0
    # ... and, before a model goes live (`models promote`, and the activation after train, quantize and
    # classifier), runs both on this many frames per camera of simulated defect-free strip through the
    # line (`inspection.clean_strip`; 0: off), refusing a candidate that records more than this many
    # times the active model's defects (or `unknown` ones) there, beyond what chance would give
    promote_clean_strip_frames: int = 600
    promote_max_clean_strip_ratio: float = 1.25
    # None: the check runs on simulated clean strip; else a folder of the plant's own defect-free frames
    # (a subfolder named after a camera's id is that camera's; without one every camera replays the folder)
    promote_clean_strip_folder: Path | None = None
    # A candidate beside the active model on the live stream (`inspection.shadow`): "" follows the
    # registry (`models shadow VERSION|off`), "off" never, else a version or path. Its results touch
    # neither records of defects nor grades nor the PLC; only where the two disagree is recorded.
    shadow: str = ""
    shadow_share: float = 0.25  # share of frames the shadow model also inspects (chosen by frame, not by batch)
    shadow_iou: float = 0.3  # boxes of the two models overlapping this much are the same defect


@dataclass(frozen=True)
class EndpointsConfig:
    results: str
    plc: str


@dataclass(frozen=True)
class WorkerConfig:
    batch_size: int = 8  # frames per batch
    max_wait_ms: float = 20.0  # a partial batch goes after this long
    providers: str = "auto"  # auto: GPU, else OpenVINO, else ONNX Runtime CPU | cpu (ONNX Runtime) | openvino
    intra_op_threads: int = 0
    tile_px: int = 512
    tile_overlap_px: int = 128
    first_stage: str = "windows"  # windows | candidates | none (see inspection.frame_inspector)
    candidate_k_sigma: float = 2.5
    window_context_px: int = 64  # strip kept around a flagged region in a model window
    uint16_shift: int = 8
    # one class per defect: see InspectorSettings / tiling.suppress_other_classes (0: off)
    other_class_iou: float = 0.3
    other_class_containment: float = 0.0
    same_class_containment: dict[str, float | dict[str, float]] = field(default_factory=dict)  # tiling.suppress_nested
    # per line type, class -> the line's operating threshold in place of the model's (`detector.operating_thresholds`)
    class_thresholds: dict[str, dict[str, float]] = field(default_factory=dict)
    # test-time flips (inspection.flips): each window also runs mirrored these ways ("h", "v", "hv") and the
    # views' detections are fused; each costs one more model run, so off by default (a GPU line can afford them)
    flips: tuple[str, ...] = ()
    reload_check_s: float = 1.0  # how often the registry is checked for a new active model
    heartbeat_s: float = 1.0
    results_hwm: int = 1000  # result messages a worker queues for the recorder before it waits
    results_linger_ms: int = 10_000  # at exit, queued results get this long to reach the recorder
    # The CPU path (inspection/cpu_runs.py): one window per model run and every window shape run at start
    # keep a worker's memory flat; cpu_batch 16 and cpu_warm_up false are how it ran before
    cpu_batch: int = 1  # windows (of one shape) per model run on a CPU
    cpu_warm_up: bool = True  # run every window shape before the worker reports ready
    # The GPU path (TensorRT / CUDA; a CPU worker ignores these): inspection/shapes.py, inspection/providers.py
    gpu_fp16: bool = True  # TensorRT may pick fp16 kernels (box maths stay within 1 px up to 2048 px)
    gpu_fp32_source: bool = True  # an int8 model runs as its fp32 source (TensorRT rejects its uint8 QDQ)
    gpu_window_px: tuple[int, ...] = (256, 384, 512)  # windows are padded to one of these sides (shape buckets)
    gpu_batch: int = 16  # images per GPU batch: every batch is padded to it (one fixed shape per bucket)
    gpu_device: int = -1  # -1: worker-N uses GPU N-1 (one worker per GPU); >= 0: that GPU
    gpu_engine_cache: Path | None = None  # None: $STEEL_INSPECT_TRT_CACHE, else ~/.cache/steel-inspect/trt
    # (OpenVINO's compiled models go there too, in <sha256>/openvino)
    gpu_trt_exclude_ops: tuple[str, ...] = ()  # op types TensorRT leaves to CUDA (fp32), e.g. MaxPool, Equal


@dataclass(frozen=True)
class SimulatorConfig:
    seed: int = 7
    coil_length_m: float = 120.0
    defects_per_100m: float = 40.0
    split: str = "test"
    datasets: Path = field(default_factory=default_datasets_dir)  # read when the config is loaded
    realtime: bool = True
    seam_share: float = 0.0  # share of pasted defects placed across a frame seam (cut in two frames)
    # each frame's background continues the previous one's, as a real strip does (`cameras.textures`);
    # false: every frame a separate window of texture (a step at every seam), as before 2026-12-02
    continuous_strip: bool = True
    # every frame's strip texture generated anew (about 45 ms a frame), so no flake of it comes back;
    # false: frames cut from a bank of four tiles (`cameras.textures`), what the benchmarks measure on
    fresh_texture: bool = False
    # (share of coils, defects per 100 m) bands: each coil draws its density from them, the same on
    # every camera; empty: every coil at defects_per_100m (what the benchmarks need)
    coil_mix: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class RecordsConfig:
    rules: Path | None = None  # None: the standard rule set shipped in inspection/rules/
    coverage_min: float = 0.995
    crop_margin_px: int = 16
    crop_retention_days: int = 30
    seam_margin_px: float = 6.0  # a defect cut by a frame seam: how close to the seam (px) its parts end
    seam_min_overlap: float = 0.3  # ... and how much they overlap across (share of the narrower part)
    seam_one_to_one: bool = True  # ... and each fragment pairs with at most one across a seam (the best overlap)
    flush_ms: float = 50.0  # the recorder writes (and publishes to the PLC) at least this often
    review_budget_per_hour: float = 60.0  # sampled + uncertain review items per hour of strip (one inspector)
    reports_dir: Path | None = None  # where `report` writes without --out; None: "reports" beside the database
    audit_key: Path | None = None  # None: audit.hmac_key in the key folder (see `LineConfig.audit_key_path`)
    audit_anchor: Path | None = None  # None: <database>.anchors.jsonl (see `LineConfig.audit_anchor_for`)
    anchor_s: float = 60.0  # the recorder anchors the signed chain head at least this often (and at coil end)
    stage_log: Path | None = None  # None: off; a file: one JSON line of stage times per published defect


@dataclass(frozen=True)
class SecurityConfig:
    curve: bool = True  # CURVE on every link and camera signatures; false is allowed but warned about at every start
    keys_dir: Path | None = None  # None: "keys" beside the database (see `LineConfig.keys_dir`)


@dataclass(frozen=True)
class PlantConfig:
    """How `import-plant` reads the plant's MES / ERP data (see `inspection.records.plant_sql`)."""

    timezone: str = "UTC"  # IANA zone of the plant's clocks: naive MES timestamps are read in it, stored in UTC
    password_file: Path | None = None  # a file holding only the MES database password (mode 0600)
    connect_timeout_s: int = 10  # whole seconds (libpq's rule; at least 2 are applied)
    statement_timeout_s: float = 120.0  # the server cancels any one statement (each fetched batch) after this
    batch_rows: int = 5000  # rows fetched from the server, and committed to the line database, at a time


@dataclass(frozen=True)
class ConsoleConfig:
    address: str = "127.0.0.1"  # where the console listens (the demo, `console.launch`); loopback: put a
    # TLS reverse proxy in front to reach it from other machines
    session_idle_min: float = 480.0  # a signed-in session ends after this long without an action
    lockout_attempts: int = 5  # wrong passwords in a row that lock an account ...
    lockout_min: float = 15.0  # ... for this long


@dataclass(frozen=True)
class LineConfig:
    path: Path
    overrides: dict[str, Any]  # dotted keys applied over the file (see `load_config`); {} normally
    id: str
    type: str
    strip_width_mm: float
    speed_m_per_s: float
    database: Path
    crops_dir: Path
    model: ModelConfig
    cameras: tuple[CameraConfig, ...]
    endpoints: EndpointsConfig
    worker: WorkerConfig
    simulator: SimulatorConfig
    records: RecordsConfig
    security: SecurityConfig = field(default_factory=SecurityConfig)
    plant: PlantConfig = field(default_factory=PlantConfig)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)

    @property
    def keys_dir(self) -> Path:
        """The line's CURVE key folder (`inspection.keys` describes its layout)."""
        return self.security.keys_dir or self.database.parent / "keys"

    @property
    def audit_key_path(self) -> Path:
        """The audit key file (`inspection.records.audit_keys`): outside the database, in the key folder."""
        return self.records.audit_key or self.keys_dir / AUDIT_KEY_FILE

    def audit_anchor_for(self, database: Path | None = None) -> Path:
        """The anchor file of `database` (default: the config's): ``[records] audit_anchor``, or beside it."""
        db = Path(database or self.database)
        return self.records.audit_anchor or db.with_name(db.name + ".anchors.jsonl")

    def camera(self, camera_id: str | None = None) -> CameraConfig:
        """The camera with this id, or the first camera when `camera_id` is None."""
        if camera_id is None:
            return self.cameras[0]
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        known = ", ".join(c.id for c in self.cameras)
        raise ConfigError(f"{self.path}: no camera {camera_id!r} (cameras: {known})")

    def summary(self) -> dict[str, Any]:
        """A JSON-able view of everything applied, for the start-up log (key folder resolved;
        only where the keys are, never a key)."""
        view = _jsonable(asdict(self))
        view["security"]["keys_dir"] = str(self.keys_dir)
        return view


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


class _Section:
    """Typed access to one TOML table; every error names file and key.

    `defaults_from` is the dataclass the table becomes: a key the table lacks takes its field's
    default, and a key whose field has none is missing.
    """

    def __init__(self, path: Path, prefix: str, table: Any, defaults_from: type | None = None) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {prefix}: expected a table, got {type(table).__name__}")
        self.path, self.prefix, self.table = path, prefix, table
        self.used: set[str] = set()
        self.defaults = _field_defaults(defaults_from) if defaults_from is not None else {}

    def _key(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {self._key(key)}: {problem}")

    def default(self, key: str) -> Any:
        """The dataclass field's default for `key` (a fresh one for a factory), or ... when it has none."""
        make = self.defaults.get(key)
        return ... if make is None else make()

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
        """The value of `key` checked against `kind`; a missing key takes `default`, else the field's."""
        self.used.add(key)
        if key not in self.table:
            if default is ...:
                default = self.default(key)
            if default is ...:
                raise self.error(key, "missing")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if isinstance(value, bool) and kind is not bool:
            raise self.error(key, f"expected {_kind_name(kind)}, got {value!r}")
        if not isinstance(value, kind):
            raise self.error(key, f"expected {_kind_name(kind)}, got {value!r}")
        return value

    def positive(self, key: str, kind: type, default: Any = ...) -> Any:
        value = self.get(key, kind, default)
        if value <= 0:
            raise self.error(key, f"expected a number > 0, got {value!r}")
        return value

    def share(self, key: str) -> float:
        """A share between 0 and 1 (inclusive)."""
        value = self.get(key, float)
        if not 0.0 <= value <= 1.0:
            raise self.error(key, f"expected a share between 0 and 1, got {value!r}")
        return value

    def non_negative(self, key: str, kind: type) -> Any:
        value = self.get(key, kind)
        if value < 0:
            raise self.error(key, f"expected a number >= 0, got {value!r}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> str:
        value = self.get(key, str, default)
        if value not in choices:
            raise self.error(key, f"expected one of {', '.join(choices)}, got {value!r}")
        return value

    def ident(self, key: str) -> str:
        import re

        value = self.get(key, str)
        if not re.fullmatch(IDENT_PATTERN, value):
            raise self.error(key, f"expected an identifier matching {IDENT_PATTERN!r}, got {value!r}")
        return value

    def endpoint(self, key: str) -> str:
        """A ZeroMQ endpoint spec, checked here so a typo names its key when the config is loaded
        instead of failing later in whichever process opens the socket."""
        value = self.get(key, str)
        try:
            return check_endpoint(value)
        except TransportError as exc:
            raise self.error(key, str(exc)) from None

    def path_value(self, key: str) -> Path | None:
        """A path; absent or empty means the field's default."""
        value = self.get(key, str, "")
        return Path(value).expanduser() if value else self.default(key)

    def check_unknown(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self.error(unknown[0], "unknown key (a typo?)")


def check_endpoint(spec: str) -> str:
    """`spec` when it is a well-formed endpoint (``bind:ADDR``, ``connect:ADDR`` or ``ADDR``; a tcp
    address with a port 1..65535 or ``*``), else `TransportError` saying what is wrong with it."""
    from inspection.transport import parse_endpoint  # zmq: imported when an endpoint is checked

    address = parse_endpoint(spec, "bind").address
    if address.startswith("tcp://"):
        port = address.rsplit(":", 1)[-1]
        if address.count(":") < 2 or not (port == "*" or (port.isdigit() and 1 <= int(port) <= 65535)):
            raise TransportError(f"endpoint {spec!r}: expected tcp://HOST:PORT with a port 1..65535 (or *)")
    return spec


def _field_defaults(cls: type) -> dict[str, Callable[[], Any]]:
    """field name -> a callable giving its default, for the fields of dataclass `cls` that have one."""
    out: dict[str, Callable[[], Any]] = {}
    for f in fields(cls):
        if f.default is not MISSING:
            out[f.name] = lambda value=f.default: value
        elif f.default_factory is not MISSING:
            out[f.name] = f.default_factory
    return out


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             dict: "a table", list: "an array"}
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None) -> LineConfig:
    """Load and validate a line config; `None` loads the demo line.

    `overrides` maps dotted keys to values applied over the file before validation, for
    benchmarks and tests that move a line to free ports or a scratch folder:
    ``{"line.database": "/tmp/x/line.db", "endpoints.results": "tcp://127.0.0.1:6001",
    "cameras.0.endpoint": ...}``. Processes of one line pass the same overrides along.
    """
    path = Path(path) if path is not None else DEMO_CONFIG
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    overrides = dict(overrides or {})
    for key, value in overrides.items():
        _override(path, raw, key, value)
    return _build(path, raw, overrides)


def _override(path: Path, raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    node: Any = raw
    for part in parents:
        try:
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        except (ValueError, IndexError, AttributeError):
            raise ConfigError(f"{path}: override {key!r}: no such place in the config") from None
    if isinstance(node, list) or not isinstance(node, dict):
        raise ConfigError(f"{path}: override {key!r}: no such place in the config")
    node[last] = value


def _build(path: Path, raw: dict[str, Any], overrides: dict[str, Any]) -> LineConfig:
    top = _Section(path, "", raw)
    line = _Section(path, "line", top.get("line", dict))
    line_type = line.choice("type", LINE_TYPES)
    config = LineConfig(
        path=path,
        overrides=overrides,
        id=line.ident("id"),
        type=line_type,
        strip_width_mm=line.positive("strip_width_mm", float),
        speed_m_per_s=line.positive("speed_m_per_s", float),
        database=Path(line.get("database", str)).expanduser(),
        crops_dir=Path(line.get("crops_dir", str)).expanduser(),
        model=_model(path, top.get("model", dict), line_type),
        cameras=_cameras(path, top.get("cameras", list)),
        endpoints=_endpoints(path, top.get("endpoints", dict)),
        worker=_worker(path, top.get("worker", dict, {})),
        simulator=_simulator(path, top.get("simulator", dict, {})),
        records=_records(path, top.get("records", dict, {})),
        security=_security(path, top.get("security", dict, {})),
        plant=_plant(path, top.get("plant", dict, {})),
        console=_console(path, top.get("console", dict, {})),
    )
    line.check_unknown()
    top.check_unknown()
    return config


def _model(path: Path, table: Any, line_type: str) -> ModelConfig:
    s = _Section(path, "model", table, ModelConfig)
    model = ModelConfig(name=s.get("name", str, line_type), registry=s.path_value("registry"),
                        promote_max_recall_drop=s.share("promote_max_recall_drop"),
                        promote_max_detection_rate_drop=s.share("promote_max_detection_rate_drop"),
                        promote_clean_strip_frames=s.non_negative("promote_clean_strip_frames", int),
                        promote_max_clean_strip_ratio=s.positive("promote_max_clean_strip_ratio", float),
                        promote_clean_strip_folder=s.path_value("promote_clean_strip_folder"),
                        shadow=s.get("shadow", str).strip(), shadow_share=s.share("shadow_share"),
                        shadow_iou=s.share("shadow_iou"))
    if model.name in LINE_TYPES and model.name != line_type:
        # a hot model on cold strip finds plausible-looking nonsense: refuse before anything runs
        raise s.error("name", f"{model.name!r} is the {model.name} line's active model but this line is "
                      f"{line_type}: name {line_type!r} or a {line_type} version")
    if model.promote_max_clean_strip_ratio < 1.0:
        raise s.error("promote_max_clean_strip_ratio", "expected a ratio >= 1 (below 1 a candidate equal to the "
                      f"active model would be refused), got {model.promote_max_clean_strip_ratio!r}")
    if model.shadow_iou <= 0.0:
        raise s.error("shadow_iou", f"expected a share > 0 (boxes that do not overlap are never one defect), "
                                    f"got {model.shadow_iou!r}")
    s.check_unknown()
    return model


def _cameras(path: Path, items: list[Any]) -> tuple[CameraConfig, ...]:
    if not items:
        raise ConfigError(f"{path}: cameras: expected at least one [[cameras]] entry")
    cameras = []
    for i, table in enumerate(items):
        s = _Section(path, f"cameras[{i}]", table, CameraConfig)
        cam = CameraConfig(
            id=s.ident("id"),
            surface=s.choice("surface", SURFACES),
            source=s.choice("source", CAMERA_SOURCES),
            width_px=s.positive("width_px", int),
            frame_height_px=s.positive("frame_height_px", int),
            mm_per_px_across=s.positive("mm_per_px_across", float),
            mm_per_px_along=s.positive("mm_per_px_along", float),
            offset_mm=s.get("offset_mm", float),
            endpoint=s.endpoint("endpoint"),
            live=s.get("live", bool),
            send_hwm=s.positive("send_hwm", int),
            overlap_px=s.get("overlap_px", int),
            options=dict(s.get("options", dict)),
        )
        if not 0 <= cam.overlap_px < cam.frame_height_px:
            raise s.error("overlap_px", f"expected 0 to frame_height_px - 1 ({cam.frame_height_px - 1}) rows, "
                                        f"got {cam.overlap_px!r}")
        s.check_unknown()
        cameras.append(cam)
    ids = [c.id for c in cameras]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ConfigError(f"{path}: cameras: duplicate camera id {dupes[0]!r}")
    return tuple(cameras)


def _endpoints(path: Path, table: Any) -> EndpointsConfig:
    s = _Section(path, "endpoints", table, EndpointsConfig)
    endpoints = EndpointsConfig(results=s.endpoint("results"), plc=s.endpoint("plc"))
    s.check_unknown()
    return endpoints


def _worker(path: Path, table: Any) -> WorkerConfig:
    s = _Section(path, "worker", table, WorkerConfig)
    worker = WorkerConfig(
        batch_size=s.positive("batch_size", int),
        max_wait_ms=s.positive("max_wait_ms", float),
        providers=s.choice("providers", PROVIDER_SETTINGS),
        intra_op_threads=s.get("intra_op_threads", int),
        tile_px=s.positive("tile_px", int),
        tile_overlap_px=s.get("tile_overlap_px", int),
        first_stage=s.choice("first_stage", ("windows", "candidates", "none")),
        candidate_k_sigma=s.positive("candidate_k_sigma", float),
        window_context_px=s.get("window_context_px", int),
        uint16_shift=s.get("uint16_shift", int),
        other_class_iou=s.share("other_class_iou"),
        other_class_containment=s.share("other_class_containment"),
        same_class_containment=_same_class_containment(s),
        class_thresholds=_class_thresholds(s),
        flips=_flips(s),
        reload_check_s=s.positive("reload_check_s", float),
        heartbeat_s=s.positive("heartbeat_s", float),
        results_hwm=s.positive("results_hwm", int),
        results_linger_ms=s.positive("results_linger_ms", int),
        cpu_batch=s.positive("cpu_batch", int),
        cpu_warm_up=s.get("cpu_warm_up", bool),
        gpu_fp16=s.get("gpu_fp16", bool),
        gpu_fp32_source=s.get("gpu_fp32_source", bool),
        gpu_window_px=_window_sides(s),
        gpu_batch=s.positive("gpu_batch", int),
        gpu_device=s.get("gpu_device", int),
        gpu_engine_cache=s.path_value("gpu_engine_cache"),
        gpu_trt_exclude_ops=_op_types(s),
    )
    if not 0 <= worker.tile_overlap_px < worker.tile_px:
        raise s.error("tile_overlap_px", f"expected 0 <= overlap < tile_px={worker.tile_px}, "
                      f"got {worker.tile_overlap_px}")
    if not 0 <= worker.uint16_shift <= 8:
        raise s.error("uint16_shift", f"expected 0..8, got {worker.uint16_shift}")
    if worker.window_context_px < 0:
        raise s.error("window_context_px", f"expected >= 0, got {worker.window_context_px}")
    if worker.gpu_device < -1:
        raise s.error("gpu_device", f"expected -1 (by worker number) or a GPU index >= 0, got {worker.gpu_device}")
    s.check_unknown()
    return worker


def _by_line_type(s: _Section, key: str) -> dict[str, Any]:
    """A table of `key` keyed by line type (hot, cold); a type left out takes no setting."""
    table = s.get(key, dict, {})
    wrong = [name for name in table if name not in LINE_TYPES]
    if wrong:
        raise s.error(key, f"expected keys named by line type ({', '.join(LINE_TYPES)}), got {wrong[0]!r}")
    return table


def _same_class_containment(s: _Section) -> dict[str, float | dict[str, float]]:
    """`same_class_containment = { hot = 0.8 }`: a share per line type, or `{ hot = { crazing = 0.5 } }`:
    a share per class (a class left out keeps every box); a line type left out keeps every box. Class
    names are checked against the model when it loads, as `class_thresholds`' are."""
    def share(name: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= value <= 1.0:
            raise s.error(f"same_class_containment.{name}", f"expected a share between 0 and 1, got {value!r}")
        return float(value)

    out: dict[str, float | dict[str, float]] = {}
    for line_type, value in _by_line_type(s, "same_class_containment").items():
        if isinstance(value, dict):
            out[str(line_type)] = {str(c): share(f"{line_type}.{c}", v) for c, v in value.items()}
        else:
            out[str(line_type)] = share(str(line_type), value)
    return out


def _class_thresholds(s: _Section) -> dict[str, dict[str, float]]:
    """`[worker.class_thresholds.cold]` `pits = 0.25`: scores in (0, 1) by class, per line type. Class
    names are checked against the model when it loads (a worker can swap models while running)."""
    out: dict[str, dict[str, float]] = {}
    for line_type, per_class in _by_line_type(s, "class_thresholds").items():
        if not isinstance(per_class, dict):
            raise s.error(f"class_thresholds.{line_type}", f"expected a table of class = threshold, got {per_class!r}")
        for name, value in per_class.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value < 1.0:
                raise s.error(f"class_thresholds.{line_type}.{name}",
                              f"expected a score between 0 and 1, got {value!r}")
        out[line_type] = {str(name): float(value) for name, value in per_class.items()}
    return out


def _window_sides(s: _Section) -> tuple[int, ...]:
    """Ascending distinct sides of 32..2048 px (fp16 box maths stay within a pixel up to 2048)."""
    sides = s.get("gpu_window_px", (list, tuple))
    if (not sides or any(isinstance(v, bool) or not isinstance(v, int) or not 32 <= v <= 2048 for v in sides)
            or list(sides) != sorted(set(sides))):
        raise s.error("gpu_window_px", f"expected ascending distinct sides of 32..2048 px, got {list(sides)!r}")
    return tuple(sides)


def _flips(s: _Section) -> tuple[str, ...]:
    flips = s.get("flips", (list, tuple))
    try:
        return check_flips(flips)
    except FlipError as exc:
        raise s.error("flips", str(exc)) from None


def _op_types(s: _Section) -> tuple[str, ...]:
    ops = s.get("gpu_trt_exclude_ops", (list, tuple))
    if any(not isinstance(op, str) or not op.isidentifier() for op in ops):
        raise s.error("gpu_trt_exclude_ops", f"expected ONNX op type names like \"MaxPool\", got {list(ops)!r}")
    return tuple(ops)


def _simulator(path: Path, table: Any) -> SimulatorConfig:
    s = _Section(path, "simulator", table, SimulatorConfig)
    sim = SimulatorConfig(
        seed=s.get("seed", int),
        coil_length_m=s.positive("coil_length_m", float),
        defects_per_100m=s.get("defects_per_100m", float),
        split=s.choice("split", ("train", "val", "test")),
        datasets=s.path_value("datasets"),
        realtime=s.get("realtime", bool),
        seam_share=s.share("seam_share"),
        continuous_strip=s.get("continuous_strip", bool),
        fresh_texture=s.get("fresh_texture", bool),
        coil_mix=_coil_mix(s),
    )
    s.check_unknown()
    return sim


def _coil_mix(s: _Section) -> tuple[tuple[float, float], ...]:
    bands = s.get("coil_mix", list)
    shape = "expected [[share of coils, defects per 100 m], ...] with shares > 0 and densities >= 0"
    out = []
    for band in bands:
        if (not isinstance(band, list) or len(band) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in band)
                or band[0] <= 0 or band[1] < 0):
            raise s.error("coil_mix", f"{shape}, got {bands!r}")
        out.append((float(band[0]), float(band[1])))
    return tuple(out)


def _records(path: Path, table: Any) -> RecordsConfig:
    s = _Section(path, "records", table, RecordsConfig)
    records = RecordsConfig(
        rules=s.path_value("rules"),
        coverage_min=s.share("coverage_min"),
        crop_margin_px=s.get("crop_margin_px", int),
        crop_retention_days=s.positive("crop_retention_days", int),
        seam_margin_px=s.non_negative("seam_margin_px", float),
        seam_min_overlap=s.share("seam_min_overlap"),
        seam_one_to_one=s.get("seam_one_to_one", bool),
        flush_ms=s.positive("flush_ms", float),
        review_budget_per_hour=s.non_negative("review_budget_per_hour", float),
        reports_dir=s.path_value("reports_dir"),
        audit_key=s.path_value("audit_key"),
        audit_anchor=s.path_value("audit_anchor"),
        anchor_s=s.positive("anchor_s", float),
        stage_log=s.path_value("stage_log"),
    )
    s.check_unknown()
    return records


def _security(path: Path, table: Any) -> SecurityConfig:
    s = _Section(path, "security", table, SecurityConfig)
    security = SecurityConfig(curve=s.get("curve", bool), keys_dir=s.path_value("keys_dir"))
    s.check_unknown()
    return security


def _plant(path: Path, table: Any) -> PlantConfig:
    s = _Section(path, "plant", table, PlantConfig)
    zone = s.get("timezone", str)
    try:
        ZoneInfo(zone)
    except (ValueError, OSError, LookupError):  # ZoneInfoNotFoundError is a KeyError; a bad name a ValueError
        raise s.error("timezone", f"expected an IANA time zone such as \"Europe/Berlin\" or \"UTC\", "
                                  f"got {zone!r}") from None
    plant = PlantConfig(
        timezone=zone,
        password_file=s.path_value("password_file"),
        connect_timeout_s=s.positive("connect_timeout_s", int),
        statement_timeout_s=s.positive("statement_timeout_s", float),
        batch_rows=s.positive("batch_rows", int),
    )
    s.check_unknown()
    return plant


def _console(path: Path, table: Any) -> ConsoleConfig:
    s = _Section(path, "console", table, ConsoleConfig)
    console = ConsoleConfig(
        address=s.get("address", str),
        session_idle_min=s.positive("session_idle_min", float),
        lockout_attempts=s.positive("lockout_attempts", int),
        lockout_min=s.positive("lockout_min", float),
    )
    if not console.address or any(c.isspace() or c == "/" for c in console.address):
        raise s.error("address", f"expected a host name or IP address such as 127.0.0.1, got {console.address!r}")
    s.check_unknown()
    return console


def log_config(config: LineConfig, logger: logging.Logger | None = None) -> None:
    """Log everything a process applied, once, at start (and, with CURVE off, warn: every process
    of such a line says so at every start)."""
    import json

    (logger or log).info("config %s: %s", config.path, json.dumps(config.summary(), sort_keys=True))
    warn_if_curve_off(config, logger)


def warn_if_curve_off(config: LineConfig, logger: logging.Logger | None = None) -> None:
    """The warning of a line whose links run without CURVE (``[security] curve = false``)."""
    if not config.security.curve:
        (logger or log).warning("%s: [security] curve = false: the line's ZeroMQ links are neither encrypted nor "
                                "authenticated, and cameras do not sign their frames; anyone who reaches a port can "
                                "take frames, forge results or read the PLC output", config.path)
