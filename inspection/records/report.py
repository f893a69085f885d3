"""Coil report: everything a quality engineer sends a customer about one coil, as JSON, CSV or PDF.

`collect(db, coil, rules)` gathers the grade with reasons and history, the plant data, coverage,
the defect table (effective class after reviews, and which limits of the rule set count each
defect), alarms (periodic defects), the cameras' scales and provenance (models, rule set,
reviewers, audit chain head). `to_json`, `to_csv` (the defect table) and `report_pdf.render_pdf`
(A4, needs the `console` extra) render it; `write` picks one by format.

A defect *counts* for the grade when it is not rejected by an inspector and at least one limit of
the rule set counts it (`grading.limits_counting`, the test grading itself applies). With the
standard rule set every defect an inspector did not reject counts (its ``ALL-M2`` limit takes any
class and severity); the PDF lists those in its body and the rest in an appendix.
"""

from __future__ import annotations

import csv
import io
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection import __version__
from inspection.errors import write_problem
from inspection.extras import require_extra
from inspection.records import queries
from inspection.records.errors import ReportError
from inspection.records.grading import GradeDefect, RuleSet, limits_counting, load_rules
from inspection.severity import SEVERITY_NAMES

CSV_COLUMNS = ("id", "surface", "camera", "frame_index", "along_mm", "across_mm", "length_mm", "width_mm",
               "area_mm2", "class", "effective_class", "score", "severity", "review_status", "reviewer",
               "model_version", "crop_sha256", "parts", "counted_by")
FORMATS = ("pdf", "csv", "json")


def collect(db: Database, coil: str, rules: RuleSet | None = None) -> dict[str, Any]:
    """The whole report as a JSON-able dict; `ReportError` for an unknown coil.

    `rules`: the rule set that decides which defects count (the line's; None: the standard set).
    """
    row = queries.coil_row(db, coil)
    if row is None:
        raise ReportError(f"coil: no coil {coil!r} in this database")
    rules = rules or load_rules(None)
    length_m, width_mm = queries.coil_length_m(db, coil), queries.coil_width_mm(db, coil)
    defects = queries.coil_defects(db, coil)
    for d in defects:
        d["counted_by"] = [] if d["review_status"] == "rejected" else list(limits_counting(
            GradeDefect(d["effective_class"], d["severity"], d["surface"], d["along_mm"], d["across_mm"]),
            rules, length_m, width_mm))
    counted = [d for d in defects if d["counted_by"]]
    rejected = sum(1 for d in defects if d["review_status"] == "rejected")
    by_class = Counter((d["effective_class"], d["surface"]) for d in counted)
    grade = queries.current_grade(db, coil)
    auto = [g for g in queries.grade_history(db, coil) if g["source"] == "auto"]
    return {
        "report": {"generated": queries.iso(time.time_ns()), "software": f"steel-inspect {__version__}"},
        "coil": {"id": row["id"], "line": row["line"], "line_type": row["line_type"],
                 "first_seen": queries.iso(row["first_seen_ns"]), "length_m": length_m, "width_mm": width_mm},
        "platform": queries.platform_data(db, coil),
        "grade": grade,
        "grade_history": queries.grade_history(db, coil),
        "counting": {"rule_set": rules.name, "rule_version": rules.version, "rule_sha256": rules.sha256,
                     # the report counts with the line's rule set now; say so when the coil was graded with another
                     "graded_with": ({"rule_set": auto[-1]["rule_set"], "rule_version": auto[-1]["rule_version"],
                                      "rule_sha256": auto[-1]["rule_sha256"]} if auto else None)},
        "summary": {"defects": len(defects), "counted": len(counted), "rejected": rejected,
                    "not_counted": len(defects) - len(counted) - rejected,
                    "by_class": [{"class": c, "surface": s, "count": n} for (c, s), n in sorted(by_class.items())],
                    "by_severity": dict(Counter(SEVERITY_NAMES[d["severity"]] for d in counted))},
        "alarms": queries.coil_alarms(db, coil),
        "cameras": camera_scales(db, row["line"]),
        "provenance": queries.provenance(db, coil),
        "defects": defects,
    }


def camera_scales(db: Database, line: str) -> dict[str, dict[str, Any]]:
    """camera id -> its surface and mm per pixel across / along (None where the line did not record it)."""
    cur = db.execute("SELECT id, surface, mm_per_px_across, mm_per_px_along FROM cameras WHERE line=?", (line,))
    return {cam: {"surface": surface, "mm_per_px_across": across, "mm_per_px_along": along}
            for cam, surface, across, along in cur.fetchall()}


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def to_csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for d in data["defects"]:
        writer.writerow({k: (round(v, 2) if isinstance(v, float) else " ".join(map(str, v))
                             if k in ("parts", "counted_by") else v)
                         for k, v in d.items()})
    return out.getvalue()


def default_path(reports_dir: Path, coil: str, fmt: str) -> Path:
    """``<reports_dir>/coil-<coil>.<fmt>``, the coil id made safe for a file name."""
    return Path(reports_dir) / f"coil-{re.sub(r'[^A-Za-z0-9._-]', '_', coil)}.{fmt}"


def write(data: dict[str, Any], fmt: str, out: Path, crops_dir: Path | None = None) -> Path:
    """Write the report in `fmt` (json | csv | pdf) to `out` (a folder: the default file name in it);
    the PDF shows crops from `crops_dir` when given. Returns the file written."""
    if fmt not in FORMATS:
        raise ReportError(f"format: expected pdf, csv or json, got {fmt!r}")
    if out.is_dir():
        out = default_path(out, data["coil"]["id"], fmt)
    if fmt == "pdf":
        # fpdf2 and matplotlib come with the `console` extra: the line's processes never need them.
        require_extra("console", "the PDF coil report", "fpdf", "matplotlib")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            out.write_text(to_json(data) + "\n", encoding="utf-8")
        elif fmt == "csv":
            out.write_text(to_csv(data), encoding="utf-8")
        else:
            from inspection.records.report_pdf import render_pdf

            render_pdf(data, out, crops_dir=crops_dir)
    except OSError as exc:
        raise ReportError(f"{out}: cannot write report: {write_problem(out, exc)}") from None
    return out
