"""`steel-inspect bench soak`: a short run of the whole line (simulated cameras, worker, recorder, PLC
subscriber) at a rate measured first, and the figures it reports."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from inspection.cli import main as cli_main
from inspection.registry import Registry
from tests.line_configs import write_line_config
from tests.tiny_models import add_tiny_model

NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_bench_soak_runs_the_line_and_reports_losses_latency_and_memory(
        tmp_path: Path, ipc_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    add_tiny_model(Registry(tmp_path / "models"), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    monkeypatch.setenv("STEEL_INSPECT_MODELS", str(tmp_path / "models"))
    config = write_line_config(tmp_path, ipc_dir=ipc_dir)
    out = tmp_path / "soak.json"
    # 12 s of line after the cameras start (memory counted from the 6th second once 5 frames per camera
    # are recorded), at a tenth of what one worker was measured to inspect, so the line keeps up even
    # on a shared machine
    assert cli_main(["bench", "soak", "--minutes", "0.2", "--load", "0.1", "--warmup-s", "6", "--warmup-frames",
                     "5", "--sample-s", "1", "--config", str(config), "--dir", str(tmp_path / "soak"),
                     "--json", str(out)]) == 0
    figures = json.loads(out.read_text())
    assert figures["fps_source"] == "measured" and figures["calibration"]["worker_fps"] > 0
    assert figures["fps_per_camera"] == pytest.approx(0.1 * figures["calibration"]["worker_fps"] / 2, rel=0.01)
    assert figures["frames_sent"] > 0 and figures["frames_lost"] == 0, figures
    assert figures["frames_sent"] == (figures["frames_inspected"] + figures["frames_dropped_by_workers"]
                                      + figures["frames_lost"])
    assert 6 <= figures["warmup_ended_s"] < figures["seconds_line"]
    assert figures["latency_frames"] > 0 and 0 < figures["latency_ms_p50"] <= figures["latency_ms_p99"]
    assert set(figures["rss"]) == {"recorder", "worker-1", "camera-top-1", "camera-bottom-1", "plc-listener"}
    for process in figures["rss"].values():
        assert process["rss_start_mb"] > 0 and process["rss_end_mb"] > 0 and process["samples"] >= 2
    assert figures["rss_growth_ratio"] == max(p["growth_ratio"] for p in figures["rss"].values())
    assert figures["plc"]["invalid"] == 0 and figures["plc"]["received"].get("heartbeat", 0) > 0
    assert figures["restarts"] == {} and figures["crashes"] == []
    assert figures["command"].startswith("steel-inspect bench soak --minutes 0.2")
    assert figures["hardware"]["cores"] and len(figures["load_average"]["start"]) == 3
