"""Line configs for tests: the demo line on free loopback ports, small frames, files in tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

from inspection.config import DEMO_CONFIG
from tests.conftest import free_port


def write_line_config(tmp_path: Path, *, width_px: int = 512, frame_height_px: int = 256,
                      coil_length_m: float = 3.0, speed_m_per_s: float = 5.0,
                      extra: dict[str, str] | None = None) -> Path:
    """A copy of the demo config with free ports, its database under tmp_path and small frames."""
    text = DEMO_CONFIG.read_text()
    for old_port in ("5555", "5556", "5560", "5570"):
        text = text.replace(f"127.0.0.1:{old_port}", f"127.0.0.1:{free_port()}")
    text = text.replace("var/demo/line.db", str(tmp_path / "line.db"))
    text = text.replace("var/demo/crops", str(tmp_path / "crops"))
    text = re.sub(r"width_px = \d+", f"width_px = {width_px}", text)
    text = re.sub(r"strip_width_mm = [\d.]+", f"strip_width_mm = {float(width_px)}", text)
    text = re.sub(r"frame_height_px = \d+", f"frame_height_px = {frame_height_px}", text)
    text = re.sub(r"coil_length_m = [\d.]+", f"coil_length_m = {coil_length_m}", text)
    text = re.sub(r"speed_m_per_s = [\d.]+", f"speed_m_per_s = {speed_m_per_s}", text)
    for old, new in (extra or {}).items():
        if old not in text:
            raise ValueError(f"write_line_config: {old!r} not in the demo config")
        text = text.replace(old, new)
    path = tmp_path / "line.toml"
    path.write_text(text)
    return path
