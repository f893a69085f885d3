"""`bench line_thresholds`: the line's own class thresholds chosen from val replays' scored records.

The choice is checked on records and ground truth written out by hand (what `_matching.read_rows`
and the simulator give), and the command end to end on the shipped hot model: its check run on a
third sample must have recorded nothing below the thresholds it chose.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from inspection.benchmarks.line_thresholds import Sample, _grid, _judged_as, choose
from inspection.errors import SteelInspectError
from inspection.records.db import open_db

REPO = Path(__file__).resolve().parents[1]
GRID = [0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4]


def truth(along: float, cls: str) -> dict[str, Any]:
    """A 20 x 20 mm ground-truth defect at `along` mm on coil C1, camera top."""
    return {"coil": "C1", "camera": "top", "class": cls, "along_mm": [along, along + 20], "across_mm": [100, 120],
            "group": None, "source": "test"}


def record(along: float, cls: str, score: float, guesses: list | None = None) -> dict[str, Any]:
    """A recorded 20 x 20 mm defect centred on the ground-truth box at `along` (or on plain strip)."""
    row = {"coil": "C1", "camera": "top", "class": cls, "score": score, "along_mm": along + 10, "across_mm": 110,
           "length_mm": 20, "width_mm": 20}
    if guesses is not None:
        row["guesses"] = guesses
    return row


def sample(rows: list[dict[str, Any]], gts: list[dict[str, Any]]) -> Sample:
    return Sample(rows, gts, len(rows), 100_000.0, 0.3)


def pick(rows: list[dict[str, Any]], gts: list[dict[str, Any]], reference: dict[str, float],
         worth: float = 5.0) -> dict[str, float]:
    chosen, _ = choose([sample(rows, gts)], GRID, reference, worth=worth)
    return chosen


def test_a_threshold_rises_above_false_records_that_score_below_every_real_one() -> None:
    gts = [truth(1000 * i, "patches") for i in range(4)]
    rows = [record(1000 * i, "patches", 0.5) for i in range(4)]
    rows += [record(1000 * i + 500, "patches", s) for i, s in enumerate((0.12, 0.18, 0.22, 0.28))]  # plain strip
    assert pick(rows, gts, {"patches": 0.1}) == {"patches": 0.3}


def test_a_real_defect_is_given_up_only_for_more_false_ones_than_it_is_worth() -> None:
    gts = [truth(0, "scratches"), truth(1000, "scratches")]
    rows = [record(0, "scratches", 0.6), record(1000, "scratches", 0.15)]
    below_it = [record(5000 + 100 * i, "scratches", 0.12) for i in range(3)]  # go at no cost
    above_it = [record(9000 + 100 * i, "scratches", 0.17) for i in range(6)]  # go only with the 0.15 defect
    # past 0.15: one defect lost for 6 false removed: worth 5 -> rise; worth 7 -> stay just below the defect
    assert pick(rows + below_it + above_it, gts, {"scratches": 0.1}) == {"scratches": 0.2}
    assert pick(rows + below_it + above_it, gts, {"scratches": 0.1}, worth=7.0) == {"scratches": 0.15}
    # exactly as many false as a defect is worth: equal cost, so the nearer threshold (no rise past it)
    assert pick(rows + below_it + above_it[:5], gts, {"scratches": 0.1}) == {"scratches": 0.15}


def test_a_class_the_sample_says_nothing_about_keeps_the_lines_threshold() -> None:
    gts = [truth(0, "patches")]
    rows = [record(0, "patches", 0.5)]
    assert pick(rows, gts, {"patches": 0.3, "crazing": 0.25}) == {"patches": 0.3, "crazing": 0.25}


def test_a_move_one_sample_pays_for_and_another_loses_by_is_not_made() -> None:
    lucky = sample([record(5000 + 100 * i, "patches", 0.12) for i in range(10)], [])  # 10 false at 0.12
    unlucky = sample([record(0, "patches", 0.12)], [truth(0, "patches")])  # a real defect at 0.12
    # pooled, 0.15 costs 5 (the defect) against 10: cheaper, but the second sample loses by it
    chosen, table = choose([lucky, unlucky], GRID, {"patches": 0.1}, worth=5.0)
    assert chosen == {"patches": 0.1}
    assert {row["threshold"]: row["cost"] for row in table["patches"]}[0.15] == 5.0
    # with the defect scored above the false ones, the move holds on both samples
    chosen, _ = choose([lucky, sample([record(0, "patches", 0.3)], [truth(0, "patches")])], GRID,
                       {"patches": 0.1}, worth=5.0)
    assert chosen == {"patches": 0.15}


def test_of_equal_costs_the_smallest_move_wins() -> None:
    gts = [truth(0, "crazing")]
    rows = [record(0, "crazing", 0.5), record(5000, "crazing", 0.2)]  # 0.25 .. 0.5 all cost nothing
    assert pick(rows, gts, {"crazing": 0.1}) == {"crazing": 0.25}
    rows = [record(0, "crazing", 0.3), record(5000, "crazing", 0.2)]  # 0.25 and 0.3 cost nothing
    assert pick(rows, gts, {"crazing": 0.4}) == {"crazing": 0.3}  # from above, the nearer of the two


def test_an_unknown_record_is_judged_by_its_best_guess() -> None:
    row = record(0, "unknown", 0.2, guesses=[["inclusion", 0.2], ["scratches", 0.1]])
    assert _judged_as(row) == "inclusion"
    assert _judged_as(record(0, "crazing", 0.2)) == "crazing"
    gts = [truth(0, "inclusion")]
    false_unknown = [record(5000, "unknown", 0.15, guesses=[["inclusion", 0.15]])]
    rows = [record(0, "inclusion", 0.4), *false_unknown]
    assert pick(rows, gts, {"inclusion": 0.1, "scratches": 0.1}) == {"inclusion": 0.2, "scratches": 0.1}


def test_the_grid_runs_from_the_floor_to_the_top_and_bad_bounds_are_named() -> None:
    assert _grid(0.1, 0.3, 0.05) == [0.1, 0.15, 0.2, 0.25, 0.3]
    with pytest.raises(SteelInspectError, match="--top 0.1 is below the floor 0.2"):
        _grid(0.2, 0.1, 0.05)
    with pytest.raises(SteelInspectError, match="--floor 0"):
        _grid(0.0, 0.5, 0.05)


def test_the_command_confirms_its_choice_on_a_line_that_records_nothing_below_it(tmp_path: Path) -> None:
    out = tmp_path / "thresholds.json"
    done = subprocess.run([sys.executable, "-m", "inspection", "bench", "line_thresholds", "--frames", "4",
                           "--dir", str(tmp_path / "runs"), "--json", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["line_type"] == "hot" and figures["split"] == "val"
    assert set(figures["chosen"]) == set(figures["model_thresholds"])
    assert all(t in figures["grid"] for t in figures["chosen"].values())
    assert figures["grid"][0] == figures["floor"]
    assert "[worker.class_thresholds.hot]" in done.stderr
    assert "cost less on the sample the choice did not see" in done.stderr
    con = open_db(tmp_path / "runs" / "check-chosen" / "line.db", readonly=True)
    try:
        recorded = list(con.execute("SELECT d.class, d.score, g.guesses FROM defects d "
                                    "LEFT JOIN defect_guesses g ON g.defect_id = d.id"))
    finally:
        con.close()
    for cls, score, guesses in recorded:
        judged = json.loads(guesses)[0][0] if cls == "unknown" else cls
        assert score >= figures["chosen"][judged] - 1e-6, (cls, score, figures["chosen"])
    choice = figures["choice_samples"]  # two samples pooled: more defects than either floor run alone
    assert choice["seeds"] == [11, 12] and figures["check_sample"]["seed"] == 13
    assert choice["floor"]["ground_truth_defects"] > figures["check_sample"]["config"]["ground_truth_defects"]
    # the choice only moves a threshold for a lower cost on the choice samples' records
    present, picked = choice["present_predicted"], choice["chosen_predicted"]
    assert (5 * (picked["ground_truth_defects"] - picked["found"]) + picked["false_defects"]
            <= 5 * (present["ground_truth_defects"] - present["found"]) + present["false_defects"])
    assert (picked == present) == (figures["chosen"] == {**figures["model_thresholds"], **figures["config_thresholds"]})
    for name in ("config", "chosen"):  # the choice's measure, on the unseen sample
        f = figures["check_sample"][name]
        missed = f["ground_truth_defects"] - f["found"]
        assert figures["check_sample"]["cost"][name] == 5 * missed + f["false_defects"]
    assert figures["check_sample"]["chosen_against_config"]["found"] == (
        figures["check_sample"]["chosen"]["found"] - figures["check_sample"]["config"]["found"])


def test_a_check_seed_among_the_choice_seeds_is_refused() -> None:
    done = subprocess.run([sys.executable, "-m", "inspection", "bench", "line_thresholds", "--seed", "11", "12",
                           "--check-seed", "12"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert "--check-seed 12 is one of the choice's seeds" in done.stderr
