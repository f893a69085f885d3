"""A scratch copy of a line for benchmarks: its own database folder and its own ipc endpoints."""

from __future__ import annotations

import atexit
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any

from inspection.config import LineConfig, load_config
from inspection.line.process import StopFlag

# An ipc:// address is a Unix socket path, which Linux limits to 107 bytes: a longer scratch
# folder (say `bench e2e --dir` deep in a home directory) keeps its sockets in a short one instead.
IPC_DIR_MAX = 80

# The simulator every line benchmark measures on: one defect density for every coil (figures per metre)
# and the texture bank of four tiles the README's figures were measured on (not the demo's fresh texture).
BENCH_SIMULATOR: dict[str, Any] = {"simulator.coil_mix": [], "simulator.fresh_texture": False}


def run_line(config: LineConfig, stop: StopFlag, **kwargs: Any) -> dict[str, Any]:
    """`run_pipeline` under the benchmark's own stop flag, made once per benchmark: SIGTERM or Ctrl-C
    stops the line that is running (its processes end cleanly) and then the whole benchmark, as
    KeyboardInterrupt (the command exits "interrupted", no JSON written: the figures would be part of
    a run). Each line used to make its own flag, so a signal ended only the point being measured and
    the benchmark went on with the next one."""
    from inspection.line.pipeline import run_pipeline

    if stop.is_set():
        raise KeyboardInterrupt
    summary = run_pipeline(config, stop=stop, **kwargs)
    if stop.is_set():
        raise KeyboardInterrupt
    return summary


def scratch_line(config_path: Path | None, folder: Path, **overrides: Any) -> LineConfig:
    """The line at `config_path` (default: the demo line) moved to `folder`: database, crops, and
    the endpoints its processes meet on.

    Those are ``ipc://`` sockets in the folder, not free TCP ports: every process of the line needs
    the addresses before any of them binds, and a port found free by binding and releasing it can
    be taken by anything else on the machine before the camera or recorder binds it again; a
    socket file in the benchmark's own folder cannot. (At the benchmarks' frame rates the link's
    cost is small next to its capacity on either transport; `bench transport` measures both.)
    """
    base = load_config(config_path)
    sockets = _socket_dir(Path(folder).absolute())
    moved: dict[str, Any] = {
        "line.database": str(folder / "line.db"),
        "line.crops_dir": str(folder / "crops"),
        # its own CURVE keys, made by `run_pipeline`: a benchmark never writes into a real line's folder
        "security.keys_dir": str(folder / "keys"),
        "endpoints.results": f"ipc://{sockets / 'results.sock'}",
        "endpoints.plc": f"ipc://{sockets / 'plc.sock'}",
    }
    for i, _ in enumerate(base.cameras):
        moved[f"cameras.{i}.endpoint"] = f"ipc://{sockets / f'cam-{i}.sock'}"
    return load_config(config_path, {**moved, **overrides})


def _socket_dir(folder: Path) -> Path:
    if len(str(folder)) <= IPC_DIR_MAX:
        return folder
    short = Path(tempfile.mkdtemp(prefix="si-"))
    atexit.register(shutil.rmtree, short, ignore_errors=True)  # the benchmark's process owns the line
    return short


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
