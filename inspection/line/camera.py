"""The camera process: one camera source, its frames and coil events PUSHed to the workers.

Live cameras never wait: when the workers fall behind, frames are dropped and counted into the
coil's ``coil_end``; replay sources wait (backpressure). SIGTERM / Ctrl-C end the current coil
cleanly with a ``coil_end``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger("inspection.camera")


def source_overrides(kind: str, *, source: str | None = None, seed: int | None = None, fast: bool = False,
                     folder: Path | None = None, ground_truth: Path | None = None,
                     coils: int | None = None) -> dict[str, Any]:
    """Command-line choices as `cameras.open_source` options for a source of `kind`."""
    overrides: dict[str, Any] = {"source": source, "seed": seed}
    if fast:
        overrides["realtime"] = False
    if kind == "folder":
        overrides["folder"] = folder
    elif kind == "pylon":
        overrides["image_folder"] = folder
    if kind == "simulator":
        overrides["ground_truth"] = ground_truth
        overrides["max_coils"] = coils
    return overrides


def main(
    config_path: str | None,
    camera_id: str | None,
    *,
    endpoint: str | None = None,
    max_frames: int | None = None,
    install_signals: bool = True,
    config_overrides: dict[str, Any] | None = None,
    summary_path: str | None = None,
    source: str | None = None,
    seed: int | None = None,
    fast: bool = False,
    folder: Path | None = None,
    ground_truth: Path | None = None,
    coils: int | None = None,
    tally_path: str | None = None,
    **options: Any,
) -> dict[str, Any]:
    """One camera process: config read once and logged, signals, source and sender built, pump until
    done (`max_frames`) or stopped, both closed; returns (and with `summary_path` writes) what it sent.

    `tally_path`: keep the running counts there too (`inspection.line.tally`), for a supervisor that
    restarts a camera killed before it could write its summary. `options` are further source options
    that win over the config (e.g. ``realtime``, ``seed``, ``first_coil``).
    """
    from cameras import open_source
    from cameras.pump import pump
    from inspection import curve as curves
    from inspection.config import load_config, log_config
    from inspection.errors import SourceError
    from inspection.line.process import StopFlag
    from inspection.line.tally import Tally
    from inspection.security import curve_for, signer_for
    from inspection.transport import FrameSender, parse_endpoint

    stop = StopFlag(install=install_signals)
    if max_frames is not None and max_frames <= 0:
        raise SourceError(f"--frames: expected a positive number, got {max_frames}")
    line = load_config(config_path, config_overrides)
    log_config(line, log)
    camera = line.camera(camera_id)
    spec = parse_endpoint(endpoint or camera.endpoint, "bind")
    curve = curve_for(line, "frames", "camera", [spec], camera=camera.id)  # keys first: no camera opened in vain
    signer = signer_for(line, camera.id)  # every source signs what this process sends (`inspection.signing`)
    overrides = {**source_overrides(source or camera.source, source=source, seed=seed, fast=fast, folder=folder,
                                    ground_truth=ground_truth, coils=coils),
                 **options}
    with open_source(line, camera, **overrides) as cam:
        live = camera.live and cam.live
        log.info("camera %s applied: %s", camera.id, json.dumps(cam.describe(), default=str, sort_keys=True))
        # At exit the workers get time to take what is queued, the coil_end included (bounded, so a
        # dead worker cannot hang the camera): replay waits up to 60 s, a live camera 10 s.
        sender = FrameSender(spec, live=live, hwm=camera.send_hwm, stopping=stop.is_set,
                             linger_ms=10_000 if live else 60_000, curve=curve, signer=signer)
        tally = Tally(tally_path) if tally_path else None
        try:
            stats = pump(cam, sender, max_frames=max_frames, stopping=stop.is_set,
                         progress=tally.update if tally is not None else None, overlap_rows=camera.overlap_px)
        finally:
            sender.close()
            if tally is not None:
                tally.close()
    result = {"camera": camera.id, "endpoint": str(sender.endpoint), "live": live, **stats.as_dict(),
              "events_lost": sender.events_lost}
    if curve is not None:  # workers with unknown keys this camera refused (`inspection.curve`)
        result["curve_refused"] = curves.refused_total()
    log.info("camera %s done: %s", camera.id, json.dumps(result, sort_keys=True))
    if summary_path:
        Path(summary_path).write_text(json.dumps(result, default=str), encoding="utf-8")
    return result
