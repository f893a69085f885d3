"""Camera sources: simulator, image folder / video replay (OpenCV), GenICam (optional extra).

Every source is a context manager yielding `Frame` and `CoilEvent` values in stream order
(see `cameras.base`). `open_source` builds the one a camera's configuration asks for.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cameras.base import CameraSource, StripGeometry
from inspection.config import CAMERA_SOURCES, CameraConfig, LineConfig
from inspection.errors import SourceError
from inspection.frame import StreamKey

__all__ = ["CameraSource", "StripGeometry", "open_source", "stream_key", "geometry"]

_OPTION_KEYS = {
    "simulator": {"coil_length_m", "defects_per_100m", "ground_truth", "seam_share", "coil_mix", "continuous_strip",
                  "fresh_texture"},
    "folder": {"folder", "coil_length_m", "loop", "realtime"},
    "pylon": {
        "serial",
        "image_folder",
        "grab_timeout_ms",
        "buffers",
        "coil_length_m",
        "position_source",
        "emulator_failed_buffers",
    },
    "genicam": {"cti", "serial", "grab_timeout_ms", "coil_length_m", "position_source"},
}


def stream_key(line: LineConfig, camera: CameraConfig) -> StreamKey:
    return StreamKey(line=line.id, line_type=line.type, camera=camera.id, surface=camera.surface)


def geometry(
    line: LineConfig, camera: CameraConfig, coil_length_mm: float | None, position_source: str = "lines"
) -> StripGeometry:
    return StripGeometry(
        width_px=camera.width_px,
        frame_height_px=camera.frame_height_px,
        mm_per_px_across=camera.mm_per_px_across,
        mm_per_px_along=camera.mm_per_px_along,
        offset_mm=camera.offset_mm,
        speed_m_per_s=line.speed_m_per_s,
        coil_length_mm=coil_length_mm,
        position_source=position_source,
    )


def default_ground_truth(line: LineConfig, camera: CameraConfig) -> Path:
    """Where the simulator writes ground truth unless told: beside the line database."""
    return line.database.parent / "ground_truth" / f"{camera.id}.jsonl"


def open_source(line: LineConfig, camera: CameraConfig, **overrides: Any) -> CameraSource:
    """Build the configured camera source (not yet opened: use it as a context manager).

    `overrides` win over the config: ``source``, ``realtime`` (False: as fast as possible),
    ``seed``, ``first_coil`` (number the coils from there: a line continues after the coils its
    database already holds), and any source option (``folder``, ``ground_truth``, ``max_coils``,
    ``datasets_dir``, ``coil_length_m``, ``defects_per_100m``, ``seam_share``, ``image_folder``, ``cti``, ...).
    """
    kind = overrides.pop("source", None) or camera.source
    if kind not in CAMERA_SOURCES:
        raise SourceError(f"camera {camera.id}: unknown source {kind!r} (expected {', '.join(CAMERA_SOURCES)})")
    # configured options belong to the configured source; another source given as an override
    # (e.g. --source simulator on a pylon camera) starts from its defaults
    options = dict(camera.options) if kind == camera.source else {}
    unknown = set(options) - _OPTION_KEYS[kind]
    if unknown:
        raise SourceError(
            f"camera {camera.id}: option {sorted(unknown)[0]!r} is not known to the {kind} source "
            f"(known: {', '.join(sorted(_OPTION_KEYS[kind]))})"
        )
    options.update({k: v for k, v in overrides.items() if v is not None})
    sim = line.simulator
    seed = int(options.pop("seed", sim.seed))
    first_coil = options.pop("first_coil", None)
    realtime = bool(options.pop("realtime", sim.realtime if kind == "simulator" else kind in ("pylon", "genicam")))
    key = stream_key(line, camera)
    coil_m = options.pop("coil_length_m", sim.coil_length_m if kind == "simulator" else None)
    geo = geometry(line, camera, coil_m * 1000.0 if coil_m else None, options.pop("position_source", "lines"))
    source = _build(kind, line, camera, key, geo, seed, realtime, options)
    if first_coil is not None:
        source.start_coils_at(int(first_coil))
    return source


def _build(kind: str, line: LineConfig, camera: CameraConfig, key: Any, geo: Any, seed: int, realtime: bool,
           options: dict[str, Any]) -> CameraSource:
    sim = line.simulator
    if kind == "simulator":
        from cameras.simulator import SimulatorSource

        return SimulatorSource(
            key,
            geo,
            strip_width_mm=line.strip_width_mm,
            seed=seed,
            defects_per_100m=float(options.pop("defects_per_100m", sim.defects_per_100m)),
            seam_share=float(options.pop("seam_share", sim.seam_share)),
            continuous_strip=bool(options.pop("continuous_strip", sim.continuous_strip)),
            fresh_texture=bool(options.pop("fresh_texture", sim.fresh_texture)),
            coil_mix=options.pop("coil_mix", sim.coil_mix),
            split=options.pop("split", sim.split),
            datasets_dir=options.pop("datasets_dir", sim.datasets),
            realtime=realtime,
            ground_truth=_path(options.pop("ground_truth", default_ground_truth(line, camera))),
            max_coils=options.pop("max_coils", None),
            **_leftover(kind, options),
        )
    if kind == "folder":
        from cameras.replay import ReplaySource

        folder = options.pop("folder", None)
        if not folder:
            raise SourceError(f"camera {camera.id}: the folder source needs a folder or video (--folder)")
        return ReplaySource(
            key,
            geo,
            Path(folder),
            seed=seed,
            realtime=realtime,
            loop=bool(options.pop("loop", False)),
            **_leftover(kind, options),
        )
    if kind == "pylon":
        from cameras.pylon import PylonSource

        return PylonSource(key, geo, seed=seed, realtime=realtime, **_leftover(kind, options))
    from cameras.genicam import GenTLSource

    return GenTLSource(key, geo, seed=seed, realtime=realtime, **_leftover(kind, options))


def _path(value: Any) -> Path | None:
    return Path(value) if value else None


def _leftover(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    allowed = {
        "pylon": {"serial", "image_folder", "grab_timeout_ms", "buffers", "emulator_failed_buffers"},
        "genicam": {"cti", "serial", "grab_timeout_ms"},
    }.get(kind, set())
    extra = set(options) - allowed
    if extra:
        raise SourceError(f"{kind} source: unexpected option {sorted(extra)[0]!r}")
    return options
