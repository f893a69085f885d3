"""Coil report: everything a quality engineer sends a customer about one coil, as JSON, CSV or PDF.

`collect(db, coil)` gathers the grade with reasons and history, the plant data, coverage, the
defect table (effective class after reviews), alarms (periodic defects) and provenance (models,
rule set, reviewers, audit chain head). `to_json`, `to_csv` (the defect table) and
`report_pdf.render_pdf` (A4: summary, defect map of top and bottom, tables; needs the `console`
extra) render it; `write` picks one by format.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from inspection import __version__
from inspection.extras import require_extra
from inspection.records import queries
from inspection.records.errors import ReportError
from inspection.severity import SEVERITY_NAMES

CSV_COLUMNS = ("id", "surface", "camera", "frame_index", "along_mm", "across_mm", "length_mm", "width_mm",
               "area_mm2", "class", "effective_class", "score", "severity", "review_status", "reviewer",
               "model_version", "crop_sha256", "parts")


def collect(db: Database, coil: str) -> dict[str, Any]:
    """The whole report as a JSON-able dict; `ReportError` for an unknown coil."""
    row = queries.coil_row(db, coil)
    if row is None:
        raise ReportError(f"coil: no coil {coil!r} in this database")
    defects = queries.coil_defects(db, coil)
    counted = [d for d in defects if d["review_status"] != "rejected"]
    summary = Counter((d["effective_class"], d["surface"]) for d in counted)
    return {
        "report": {"generated": queries.iso(time.time_ns()), "software": f"steel-inspect {__version__}"},
        "coil": {"id": row["id"], "line": row["line"], "line_type": row["line_type"],
                 "first_seen": queries.iso(row["first_seen_ns"]),
                 "length_m": queries.coil_length_m(db, coil), "width_mm": queries.coil_width_mm(db, coil)},
        "platform": queries.platform_data(db, coil),
        "grade": queries.current_grade(db, coil),
        "grade_history": queries.grade_history(db, coil),
        "summary": {"defects": len(defects), "counted": len(counted),
                    "rejected": len(defects) - len(counted),
                    "by_class": [{"class": c, "surface": s, "count": n}
                                 for (c, s), n in sorted(summary.items())],
                    "by_severity": dict(Counter(SEVERITY_NAMES[d["severity"]] for d in counted))},
        "alarms": queries.coil_alarms(db, coil),
        "provenance": queries.provenance(db, coil),
        "defects": defects,
    }


def to_json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True, default=str)


def to_csv(data: dict[str, Any]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for d in data["defects"]:
        writer.writerow({k: (round(v, 2) if isinstance(v, float) else " ".join(map(str, v)) if k == "parts" else v)
                         for k, v in d.items()})
    return out.getvalue()


def map_png(data: dict[str, Any], path: Path) -> None:
    """Defect map, top and bottom side by side: along (m) x across (mm), colour = class, size = severity."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    coil, defects = data["coil"], data["defects"]
    classes = sorted({d["effective_class"] for d in defects})
    colours = {c: plt.get_cmap("tab10")(i % 10) for i, c in enumerate(classes)}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True, constrained_layout=True)
    for ax, surface in zip(axes, ("top", "bottom"), strict=True):
        for cls in classes:
            pts = [d for d in defects if d["surface"] == surface and d["effective_class"] == cls
                   and d["review_status"] != "rejected"]
            if pts:
                ax.scatter([d["across_mm"] for d in pts], [d["along_mm"] / 1000 for d in pts],
                           s=[8 * d["severity"] ** 2 for d in pts], color=colours[cls], label=cls, alpha=0.8,
                           edgecolors="none")
        rejected = [d for d in defects if d["surface"] == surface and d["review_status"] == "rejected"]
        if rejected:
            ax.scatter([d["across_mm"] for d in rejected], [d["along_mm"] / 1000 for d in rejected],
                       marker="x", s=14, color="0.6", label="rejected (false alarm)")
        for a in data["alarms"]:
            if a["kind"] == "periodic" and a["surface"] == surface:
                ax.axvline(a["across_mm"], color="red", lw=0.8, ls="--")
                ax.text(a["across_mm"], 0, f" periodic {a['pitch_mm']:.0f} mm", color="red", fontsize=7,
                        rotation=90, va="bottom")
        ax.set_xlim(0, coil["width_mm"])
        ax.set_ylim(coil["length_m"] or 1, 0)
        ax.set_title(f"{surface} surface")
        ax.set_xlabel("across (mm from drive side)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("along (m from head)")
    handles, labels = axes[0].get_legend_handles_labels()
    h2, l2 = axes[1].get_legend_handles_labels()
    merged = dict(zip(labels + l2, handles + h2, strict=True))
    if merged:
        fig.legend(merged.values(), merged.keys(), loc="outside right center", fontsize=8, title="class")
    fig.savefig(path, dpi=150)
    plt.close(fig)


def write(data: dict[str, Any], fmt: str, out: Path) -> Path:
    """Write the report in `fmt` (json | csv | pdf) to `out`."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if fmt == "json":
            out.write_text(to_json(data) + "\n", encoding="utf-8")
        elif fmt == "csv":
            out.write_text(to_csv(data), encoding="utf-8")
        elif fmt == "pdf":
            # fpdf2 and matplotlib come with the `console` extra: the line's processes never need them.
            require_extra("console", "the PDF coil report", "fpdf", "matplotlib")
            from inspection.records.report_pdf import render_pdf

            render_pdf(data, out)
        else:
            raise ReportError(f"format: expected pdf, csv or json, got {fmt!r}")
    except OSError as exc:
        raise ReportError(f"{out}: cannot write report: {exc}") from None
    return out
