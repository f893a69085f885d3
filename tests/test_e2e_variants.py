"""`bench e2e --variant`: parsing, and the trade of a variant against the first on the same frames."""

from __future__ import annotations

import io

import pytest

from inspection.benchmarks._e2e_variants import parse_variants, print_variants, trade
from inspection.benchmarks.e2e import _settings
from inspection.errors import SteelInspectError


def _figures(found: int, false: int, records: int, ground_truth: int = 200) -> dict:
    return {"found": found, "false_defects": false, "recorded_defects": records, "ground_truth_defects": ground_truth,
            "detection_rate": found / ground_truth, "class_accuracy": 0.9, "false_defects_per_m": false / 205.0}


def test_variants_keep_their_order_and_parse_their_overrides_as_toml() -> None:
    variants = parse_variants([["model", "worker.class_thresholds.cold={}"],
                               ["line", 'worker.class_thresholds.cold={"oil spots"=0.2}']], _settings)
    assert list(variants) == ["model", "line"]
    assert variants["model"] == {"worker.class_thresholds.cold": {}}
    assert variants["line"] == {"worker.class_thresholds.cold": {"oil spots": 0.2}}
    assert parse_variants([], _settings) == {"": {}}  # no --variant: one run, as before


@pytest.mark.parametrize(("items", "message"), [([["a=1"]], "expected a NAME first"),
                                                ([["a/b"]], "expected a NAME first"),
                                                ([["a"], ["a", "x=1"]], "given twice"),
                                                ([["a", "x"]], "expected KEY=VALUE")])
def test_bad_variants_are_named(items: list[list[str]], message: str) -> None:
    with pytest.raises(SteelInspectError, match=message):
        parse_variants(items, _settings)


def test_trade_counts_defects_lost_and_false_defects_removed_against_the_first() -> None:
    model, line = _figures(found=196, false=35, records=248), _figures(found=194, false=18, records=227)
    assert trade(model, line) == {"found": -2, "false_defects": -17, "records": -21,
                                  "false_removed_per_defect_lost": 8.5}
    assert trade(model, model)["false_removed_per_defect_lost"] is None  # nothing lost: no ratio
    assert trade(line, model)["false_removed_per_defect_lost"] is None  # defects gained, not lost


def test_the_variants_table_has_a_line_per_variant() -> None:
    out = io.StringIO()
    print_variants({"model": {"windows": _figures(196, 35, 248)}, "line": {"windows": _figures(194, 18, 227)}},
                   "windows", out)
    lines = out.getvalue().strip().splitlines()
    assert lines[0] == "== variants, first stage windows (against 'model')"
    assert lines[2].split()[:2] == ["model", "196/200"] and lines[2].split()[-1] == "-"
    assert lines[3].split()[:2] == ["line", "194/200"] and lines[3].split()[-3:] == ["-2", "-17", "8.5"]


def test_the_variants_table_reads_strip_without_defects() -> None:
    """`--defects-per-100m 0` (clean strip): no detection rate or class accuracy, only false defects."""
    clean = {"found": 0, "false_defects": 4, "recorded_defects": 4, "ground_truth_defects": 0,
             "detection_rate": None, "class_accuracy": None, "false_defects_per_m": 4 / 300.0}
    out = io.StringIO()
    print_variants({"old": {"windows": clean}, "new": {"windows": {**clean, "false_defects": 1}}}, "windows", out)
    lines = out.getvalue().strip().splitlines()
    assert lines[2].split()[:5] == ["old", "0/0", "-", "-", "4"]
    assert lines[3].split()[4] == "1" and lines[3].split()[-2] == "-3"
