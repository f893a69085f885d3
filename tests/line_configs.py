"""Line configs for tests: the demo line on ipc endpoints of the test's own, small frames, files in tmp_path
(its CURVE keys too: ``tmp_path/keys``, made by the line on its first start, or here with `keys`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from inspection.config import DEMO_CONFIG, load_config
from tests.conftest import IPC_DIR_MAX


def _demo_endpoints() -> dict[str, tuple[str, str]]:
    """Each link's address as the demo config writes it (read from the file, so no test names the
    demo's fixed ports) and the short socket file it becomes in a test (an ipc path must stay under
    ~100 characters)."""
    demo = load_config(DEMO_CONFIG)
    links = {c.id: c.endpoint for c in demo.cameras}
    links.update(results=demo.endpoints.results, plc=demo.endpoints.plc)
    return {name: (address, f"{name}.sock") for name, address in links.items()}


DEMO_ENDPOINTS = _demo_endpoints()


def write_line_config(tmp_path: Path, *, ipc_dir: Path | None = None, endpoints: Mapping[str, str] | None = None,
                      width_px: int = 512, frame_height_px: int = 256, coil_length_m: float = 3.0,
                      speed_m_per_s: float = 5.0, extra: dict[str, str] | None = None, curve: bool = True,
                      keys: bool = False) -> Path:
    """A copy of the demo config with its database under tmp_path and small frames.

    The line's processes need every address before any of them binds, so each link is an
    ``ipc://`` endpoint in `ipc_dir` (the `ipc_dir` fixture; default tmp_path): no TCP port, so
    nothing else on the machine can hold it. `endpoints` replaces some of them by name (``top-1``,
    ``bottom-1``, ``results``, ``plc``), e.g. with the real address of a socket a test has bound
    on ``tcp://127.0.0.1:*`` when TCP is the point.

    CURVE is on, as in the demo, unless `curve` is False (a test that plays a worker or a PLC with
    a bare socket). The key folder is ``tmp_path/keys`` (beside the database); `keys` makes the
    keys now, for a test whose own sockets need them before the line has started.
    """
    folder = ipc_dir or tmp_path
    if len(str(folder)) > IPC_DIR_MAX:
        raise ValueError(f"write_line_config: {folder} is too long for ipc socket paths: pass the ipc_dir fixture")
    unknown = set(endpoints or {}) - set(DEMO_ENDPOINTS)
    if unknown:
        raise ValueError(f"write_line_config: no endpoint named {sorted(unknown)} (known: {sorted(DEMO_ENDPOINTS)})")
    text = DEMO_CONFIG.read_text()
    for name, (demo_address, socket_file) in DEMO_ENDPOINTS.items():
        if f'"{demo_address}"' not in text:
            raise ValueError(f"write_line_config: {demo_address} ({name}) not in the demo config")
        address = (endpoints or {}).get(name, f"ipc://{folder / socket_file}")
        text = text.replace(f'"{demo_address}"', f'"{address}"')
    text = text.replace("var/demo/line.db", str(tmp_path / "line.db"))
    text = text.replace("var/demo/crops", str(tmp_path / "crops"))
    text = re.sub(r"width_px = \d+", f"width_px = {width_px}", text)
    text = re.sub(r"strip_width_mm = [\d.]+", f"strip_width_mm = {float(width_px)}", text)
    text = re.sub(r"frame_height_px = \d+", f"frame_height_px = {frame_height_px}", text)
    text = re.sub(r"coil_length_m = [\d.]+", f"coil_length_m = {coil_length_m}", text)
    text = re.sub(r"speed_m_per_s = [\d.]+", f"speed_m_per_s = {speed_m_per_s}", text)
    if not curve:
        text = text.replace("\ncurve = true", "\ncurve = false")
    for old, new in (extra or {}).items():
        if old not in text:
            raise ValueError(f"write_line_config: {old!r} not in the demo config")
        text = text.replace(old, new)
    path = tmp_path / "line.toml"
    path.write_text(text)
    if keys and curve:
        from inspection.config import load_config
        from inspection.security import ensure_keys

        ensure_keys(load_config(path))
    return path


def clean_strip_gate_config(tmp_path: Path, ipc_dir: Path, frames: int = 8,
                            extra: dict[str, str] | None = None) -> Path:
    """The demo line with the clean-strip check (`inspection.clean_strip`) on `frames` small frames per
    camera: the --config of a test that makes and activates a model (the demo's 600 full frames per
    camera take minutes)."""
    return write_line_config(tmp_path, ipc_dir=ipc_dir, width_px=512, frame_height_px=256, coil_length_m=1.0,
                             extra={"promote_clean_strip_frames = 600": f"promote_clean_strip_frames = {frames}",
                                    **(extra or {})})


def assert_clean_strip_decided(promotion: dict[str, Any], activated: bool) -> None:
    """A new model's manifest says what decided its activation: when the val gate passed it over an active
    model, the clean-strip check ran (both models on the same strip) and its findings agree with the
    outcome; when the val gate refused it, the check did not run."""
    if "clean_strip" not in promotion:
        assert not activated and promotion["reason"].startswith("not activated: val mAP")
        return
    clean = promotion["clean_strip"]
    assert clean["active"]["strip_m"] == clean["candidate"]["strip_m"] > 0
    assert (clean["findings"] == []) == activated
    assert ("clean strip" in promotion["reason"]) and promotion["activated"] == activated
