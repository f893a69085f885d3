"""`bench records --parts recorder_zmq`: the recorder fed over ZeroMQ by another process (real
sockets on loopback, a real SQLite file), reporting wall and CPU rates and the CPU per phase."""

from __future__ import annotations

import argparse
from pathlib import Path

from inspection.benchmarks import records


def _args(tmp_path: Path, **overrides: object) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    records.add_arguments(parser)
    args = parser.parse_args(["--parts", "recorder_zmq", "--insert-defects", "2000", "--dir", str(tmp_path)])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_recorder_zmq_reports_every_defect_and_its_cpu_phases(tmp_path: Path) -> None:
    figures = records.run(_args(tmp_path))["recorder_zmq"]
    assert figures["defects"] == figures["expected"] > 0
    assert figures["defects_per_s"] > 0 and figures["defects_per_cpu_s"] > 0
    phases = figures["cpu_phases_s"]
    assert {"decode", "write", "finalise", "other"} <= phases.keys()
    assert abs(sum(phases.values()) - figures["cpu_s"]) < 0.02  # "other" is the rest of the process
    per_defect = figures["cpu_us_per_defect"]
    assert per_defect["total"] > 0 and per_defect["write"] > 0
