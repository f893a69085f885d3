"""The coil map's packed points (`inspection.console.map_data`): the byte layout the canvas
(`inspection/console/static/defect_map/data.js`) decodes, column after column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from inspection.console.map_data import BOTTOM_FLAG, BYTES_PER_POINT, PERIODIC_FLAG, POINT_COLUMNS, pack


def _unpack(points: bytes, n: int) -> dict[str, np.ndarray]:
    columns, offset = {}, 0
    for name, dtype in POINT_COLUMNS:
        columns[name] = np.frombuffer(points, dtype=dtype, count=n, offset=offset)
        offset += n * np.dtype(dtype).itemsize
    assert offset == len(points) == n * BYTES_PER_POINT
    return columns


def test_points_carry_position_class_severity_review_and_flags() -> None:
    defects = pd.DataFrame({"id": [7, 8, 9], "surface": ["top", "bottom", "top"],
                            "along_mm": [1500.0, 250_000.0, 3000.0], "across_mm": [10.0, 1550.5, 800.0],
                            "effective_class": ["patches", "crazing", "a new class"], "severity": [1, 3, 2],
                            "score": [0.91, 0.42, 0.6], "review_status": ["unreviewed", "rejected", "relabelled"]})
    alarms = pd.DataFrame([{"id": 1, "kind": "periodic", "surface": "top", "class": "crazing", "across_mm": 800.0,
                            "pitch_mm": 2200.0, "roll_diameter_mm": 700.0, "count": 9, "message": "",
                            "details": {"defect_ids": [9]}, "time": 0}])
    meta, points = pack(defects, alarms, ["crazing", "patches"], 500.0, 1600.0, version="C1:1.2")
    got = _unpack(points, meta["n"])
    assert list(got["id"]) == [7, 8, 9]
    assert got["x"] == pytest.approx([1.5, 250.0, 3.0]) and got["y"] == pytest.approx([10.0, 1550.5, 800.0])
    assert [meta["classes"][i] for i in got["cls"]] == ["patches", "crazing", "a new class"]
    assert [meta["statuses"][i] for i in got["status"]] == ["unreviewed", "rejected", "relabelled"]
    assert list(got["flags"]) == [0, BOTTOM_FLAG, PERIODIC_FLAG]
    assert list(got["severity"]) == [1, 3, 2] and got["score"] == pytest.approx([0.91, 0.42, 0.6])
    assert meta["legend_classes"] == ["crazing", "patches", "a new class"]
    assert meta["periodic"] == [{"surface": "top", "across_mm": 800.0, "cls": "crazing", "pitch_mm": 2200.0,
                                 "roll_diameter_mm": 700.0, "count": 9}]


def test_an_empty_coil_packs_to_nothing() -> None:
    empty = pd.DataFrame(columns=["id", "surface", "along_mm", "across_mm", "effective_class", "severity", "score",
                                  "review_status"])
    meta, points = pack(empty, pd.DataFrame(), ["crazing"], 1.0, 1.0, version="v")
    assert meta["n"] == 0 and points == b"" and meta["periodic"] == []
