"""A scratch copy of a line for benchmarks: free loopback ports and its own database folder."""

from __future__ import annotations

import platform
import socket
from pathlib import Path
from typing import Any

from inspection.config import LineConfig, load_config


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def scratch_line(config_path: Path | None, folder: Path, **overrides: Any) -> LineConfig:
    """The line at `config_path` (default: the demo line) moved to free ports and `folder`."""
    base = load_config(config_path)
    moved: dict[str, Any] = {
        "line.database": str(folder / "line.db"),
        "line.crops_dir": str(folder / "crops"),
        "endpoints.results": f"tcp://127.0.0.1:{free_port()}",
        "endpoints.plc": f"tcp://127.0.0.1:{free_port()}",
    }
    for i, _ in enumerate(base.cameras):
        moved[f"cameras.{i}.endpoint"] = f"tcp://127.0.0.1:{free_port()}"
    return load_config(config_path, {**moved, **overrides})


def simulated_frames(config: LineConfig, count: int, seed: int) -> tuple[list[Any], list[dict[str, Any]]]:
    """The first `count` frames of the line's first camera from the simulator (as fast as it can
    render them), and the ground-truth rows of the defects pasted into them."""
    import tempfile

    from cameras import open_source
    from cameras.simulator import read_ground_truth
    from inspection.frame import Frame

    frames: list[Any] = []
    with tempfile.TemporaryDirectory() as tmp:
        gt_path = Path(tmp) / "gt.jsonl"
        with open_source(config, config.cameras[0], realtime=False, ground_truth=gt_path, seed=seed) as source:
            for message in source:
                if isinstance(message, Frame):
                    frames.append(message)
                    if len(frames) >= count:
                        break
        return frames, read_ground_truth(gt_path)


def hardware() -> dict[str, Any]:
    import os

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "gpu": None, "python": platform.python_version(),
            "machine": platform.machine()}
