"""The Basler path for real: simulator frames -> files -> pylon's emulated camera -> ZeroMQ -> worker.

The emulator is enabled by PYLON_CAMEMU=1, which pylon reads when it is first loaded in a
process, so the camera runs as its own process (`steel-inspect camera --source pylon`) with
that variable set, exactly as a plant would run it against a real camera without it.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from cameras import open_source
from inspection.config import load_config
from inspection.frame import Frame
from inspection.transport import FrameReceiver
from tests._camera_config import receive_all, start_camera, write_line_config

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("pypylon") is None, reason="pypylon is not installed (the genicam extra)"
)


def render_strip_files(config: Path, folder: Path, count: int) -> list[np.ndarray]:
    line = load_config(config)
    images = []
    with open_source(line, line.camera(), source="simulator", realtime=False, ground_truth="") as source:
        for message in source:
            if isinstance(message, Frame):
                images.append(message.pixels.copy())
                cv2.imwrite(str(folder / f"frame_{len(images):03d}.png"), message.pixels)
                if len(images) == count:
                    source.stop()
    return images


def test_emulated_basler_camera_streams_simulator_frames_to_a_worker(tmp_path: Path, ipc_endpoint: str) -> None:
    config = write_line_config(tmp_path, coil_length_m=100.0)
    folder = tmp_path / "strip"
    folder.mkdir()
    images = render_strip_files(config, folder, 3)
    env = {**os.environ, "PYLON_CAMEMU": "1"}
    with FrameReceiver(f"bind:{ipc_endpoint}") as receiver:
        proc = start_camera("--config", str(config), "--source", "pylon", "--folder", str(folder), "--frames", "5",
                            "--fast", "--connect", ipc_endpoint, env=env)
        messages = receive_all(receiver, timeout_ms=30000)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    assert "Emulation" in err or "CamEmu" in err  # the SDK's emulated device really streamed
    frames = [m for m in messages if isinstance(m, Frame)]
    assert messages[0].kind == "coil_start" and messages[-1].kind == "coil_end"
    assert len(frames) == 5 and messages[-1].frames == 5 and messages[-1].dropped == 0
    assert [f.seq for f in frames] == [1, 2, 3, 4, 5] and [f.index for f in frames] == [0, 1, 2, 3, 4]
    assert [f.position_mm for f in frames] == [0.0, 256.0, 512.0, 768.0, 1024.0]  # lines x 1 mm per line
    for frame in frames:
        assert (frame.source.camera, frame.source.line, frame.pixels.shape) == (
            "cam-1",
            "test-line",
            (256, 640),
        )
        assert frame.coil == messages[0].coil
    # the emulator cycles through the files in name order: the worker sees the simulator's pixels
    assert all(np.array_equal(f.pixels, images[i % 3]) for i, f in enumerate(frames))


def test_failed_buffers_are_counted_in_the_coil_not_passed_on(tmp_path: Path, ipc_endpoint: str) -> None:
    config = write_line_config(
        tmp_path, coil_length_m=100.0, options='source = "pylon"\noptions = { emulator_failed_buffers = 2 }'
    )
    folder = tmp_path / "strip"
    folder.mkdir()
    render_strip_files(config, folder, 2)
    with FrameReceiver(f"bind:{ipc_endpoint}") as receiver:
        proc = start_camera("--config", str(config), "--source", "pylon", "--folder", str(folder), "--frames", "4",
                            "--fast", "--connect", ipc_endpoint, env={**os.environ, "PYLON_CAMEMU": "1"})
        messages = receive_all(receiver, timeout_ms=30000)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-3000:]
    frames = [m for m in messages if isinstance(m, Frame)]
    end = messages[-1]
    assert len(frames) == 4 and (end.frames, end.dropped) == (6, 2)  # the SDK's failed buffers, counted
    indices = [f.index for f in frames]
    assert indices[0] == 0 and len(set(range(6)) - set(indices)) == 2  # the gaps show which strip is missing
    assert [f.position_mm for f in frames] == [256.0 * i for i in indices]
    assert "incomplete grab not passed on" in err
