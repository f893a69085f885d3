"""A small line config for camera and transport tests (small frames keep the tests fast), and
helpers to run `steel-inspect camera` as a process and collect what it sends."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from inspection.frame import CoilEvent
from inspection.transport import FrameReceiver
from tests.conftest import REPO


def write_line_config(
    folder: Path,
    *,
    endpoint: str | None = None,
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
    curve: bool = False,
) -> Path:
    """Write `line.toml` with one camera ("cam-1") into `folder` and return its path.

    Its endpoints are ipc sockets in `folder` (the camera's unless `endpoint` is given): tests
    pass the address to use on the command line (``--connect``), and a config that names no
    TCP port cannot collide with the demo line or anything else on the machine. CURVE is off
    unless `curve`: these tests play the worker with a bare `FrameReceiver`."""
    path = folder / "line.toml"
    endpoint = endpoint or f"ipc://{folder / 'cam-1.sock'}"
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
results = "ipc://{folder / "results.sock"}"
plc = "ipc://{folder / "plc.sock"}"

[simulator]
seed = 11
coil_length_m = {coil_length_m}
defects_per_100m = {defects_per_100m}
datasets = "{datasets}"
realtime = {str(realtime).lower()}

[security]
curve = {str(curve).lower()}
""",
        encoding="utf-8",
    )
    return path


def start_camera(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`steel-inspect camera ARGS` as its own process (stdout / stderr captured as text)."""
    return subprocess.Popen([sys.executable, "-m", "inspection", "camera", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def receive_all(receiver: FrameReceiver, timeout_ms: int = 15000) -> list:
    """Messages from `receiver` up to and including the first coil_end (or until it stays quiet)."""
    messages = []
    while (message := receiver.recv(timeout_ms=timeout_ms)) is not None:
        messages.append(message)
        if isinstance(message, CoilEvent) and message.kind == "coil_end":
            break
    return messages
