"""A small line config for camera and transport tests (small frames keep the tests fast)."""

from __future__ import annotations

from pathlib import Path


def write_line_config(
    folder: Path,
    *,
    endpoint: str = "tcp://127.0.0.1:5555",
    line_type: str = "hot",
    width_px: int = 640,
    frame_height_px: int = 256,
    coil_length_m: float = 2.0,
    live: bool = True,
    speed_m_per_s: float = 5.0,
    defects_per_100m: float = 300.0,
    datasets: str = "",
    realtime: bool = False,
    options: str = "",
) -> Path:
    """Write `line.toml` with one camera ("cam-1") into `folder` and return its path."""
    path = folder / "line.toml"
    path.write_text(
        f"""
[line]
id = "test-line"
type = "{line_type}"
strip_width_mm = {width_px * 1.0 - 40.0}
speed_m_per_s = {speed_m_per_s}
database = "{folder / "line.db"}"
crops_dir = "{folder / "crops"}"

[model]
name = "{line_type}"

[[cameras]]
id = "cam-1"
surface = "top"
width_px = {width_px}
frame_height_px = {frame_height_px}
mm_per_px_across = 1.0
mm_per_px_along = 1.0
offset_mm = 0.0
endpoint = "{endpoint}"
live = {str(live).lower()}
send_hwm = 4
{options}

[endpoints]
results = "tcp://127.0.0.1:5560"
plc = "tcp://127.0.0.1:5570"

[simulator]
seed = 11
coil_length_m = {coil_length_m}
defects_per_100m = {defects_per_100m}
datasets = "{datasets}"
realtime = {str(realtime).lower()}
""",
        encoding="utf-8",
    )
    return path
