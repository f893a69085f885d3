"""A signal stops a whole benchmark, not only the line of the point it is measuring.

`bench e2e` and `bench inference` run the line several times (variants, loads). Each line used to
make its own stop flag, so SIGTERM or Ctrl-C ended the line that was running and the benchmark
started the next one (seen: `bench inference` went on to its next load after a SIGTERM)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from inspection.benchmarks._line import run_line
from inspection.config import load_config
from inspection.line.process import StopFlag
from inspection.registry import Registry
from tests.line_configs import write_line_config
from tests.line_runs import cameras_running, in_background, recorded
from tests.tiny_models import add_tiny_model

pytestmark = [pytest.mark.slow, pytest.mark.timeout(150)]


def _sigterm_once_frames_are_recorded(db: Path) -> None:
    deadline = time.monotonic() + 90
    while recorded(db) < 4 or not cameras_running():
        if time.monotonic() > deadline:
            raise AssertionError("the line recorded no frames within 90 s")
        time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` or a CI timeout sends it to the benchmark


def test_sigterm_stops_the_running_line_and_the_benchmark(tmp_path: Path, ipc_dir: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "models"
    add_tiny_model(Registry(folder), tmp_path, version="hot-tiny", activate=True)
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(folder))  # the line's children inherit it
    line = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir))
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = StopFlag()  # what `bench e2e` / `bench inference` make once, before their first line
        killer = in_background(_sigterm_once_frames_are_recorded, line.database)
        started = time.monotonic()
        with pytest.raises(KeyboardInterrupt):  # the CLI prints "interrupted" and exits 130
            run_line(line, stop, max_frames=100_000, camera_overrides={"realtime": True})
        assert "failed" not in killer, killer.get("failed")
        assert time.monotonic() - started < 120  # the line stopped on the signal, not after 100,000 frames
        assert not cameras_running()
        with pytest.raises(KeyboardInterrupt):  # the next point of the benchmark does not start
            run_line(line, stop, max_frames=10, camera_overrides={"realtime": True})
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
