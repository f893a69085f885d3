"""The coil report as an A4 PDF (fpdf2): summary and grade, plant data, defect map, tables, provenance.

fpdf2 and matplotlib (the defect map) come with the `console` extra; `report.write` checks for
them before importing this module, so a line PC without them gets one clear line, not a traceback.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from fpdf import FPDF
from fpdf.fonts import FontFace

from inspection.severity import SEVERITY_NAMES

GRADE_COLOURS = {"prime": (30, 130, 60), "secondary": (200, 140, 0), "downgrade": (210, 90, 20),
                 "reject": (190, 30, 30), "hold": (90, 90, 90)}
MAX_PDF_ROWS = 400  # longer defect tables go to the CSV export
HEAD = FontFace(emphasis="BOLD", fill_color=(225, 230, 238))


def _t(value: Any) -> str:
    """Text the PDF core fonts can show (latin-1); None becomes a dash."""
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        value = f"{value:,.2f}".rstrip("0").rstrip(".")
    return str(value).replace("\u2192", "->").encode("latin-1", "replace").decode("latin-1")


class _Pdf(FPDF):
    coil = ""
    generated = ""

    def header(self) -> None:
        self.set_font("Helvetica", "B", 9)
        self.set_text_color(90)
        self.cell(0, 5, _t(f"Coil inspection report  -  coil {self.coil}"), align="L")
        self.cell(0, 5, _t(self.generated), align="R", new_x="LMARGIN", new_y="NEXT")
        self.set_draw_color(180)
        self.line(self.l_margin, self.get_y() + 1, self.w - self.r_margin, self.get_y() + 1)
        self.ln(4)
        self.set_text_color(0)

    def footer(self) -> None:
        self.set_y(-12)
        self.set_font("Helvetica", "", 7)
        self.set_text_color(120)
        self.cell(0, 5, _t(f"steel-inspect surface inspection  -  page {self.page_no()}/{{nb}}"), align="C")

    def section(self, title: str) -> None:
        self.ln(2)
        self.set_font("Helvetica", "B", 11)
        self.cell(0, 7, _t(title), new_x="LMARGIN", new_y="NEXT")
        self.set_font("Helvetica", "", 8)

    def kv_table(self, pairs: list[tuple[str, Any]], columns: int = 2) -> None:
        rows = [pairs[i:i + columns] for i in range(0, len(pairs), columns)]
        widths = [30, 60] * columns
        with self.table(col_widths=widths, first_row_as_headings=False, line_height=4.6, text_align="LEFT",
                        borders_layout="HORIZONTAL_LINES", width=sum(widths)) as table:
            for chunk in rows:
                row = table.row()
                for key, value in chunk:
                    row.cell(_t(key), style=FontFace(emphasis="BOLD"))
                    row.cell(_t(value))
                for _ in range(columns - len(chunk)):
                    row.cell("")
                    row.cell("")

    def grid(self, headings: list[str], rows: list[list[Any]], widths: list[float]) -> None:
        with self.table(col_widths=widths, line_height=4.2, text_align="LEFT", headings_style=HEAD,
                        width=sum(widths), borders_layout="SINGLE_TOP_LINE") as table:
            head = table.row()
            for h in headings:
                head.cell(_t(h))
            for values in rows:
                row = table.row()
                for v in values:
                    row.cell(_t(v))


def render_pdf(data: dict[str, Any], out: Path) -> None:
    coil, platform, grade = data["coil"], data["platform"], data["grade"]
    pdf = _Pdf(format="A4")
    pdf.coil, pdf.generated = coil["id"], f"generated {data['report']['generated']}"
    pdf.set_auto_page_break(True, margin=15)
    pdf.alias_nb_pages()
    pdf.set_margins(12, 12, 12)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, _t(f"Coil {coil['id']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, _t(f"line {coil['line']} ({coil['line_type']} strip), first seen {coil['first_seen']}"),
             new_x="LMARGIN", new_y="NEXT")
    _grade_box(pdf, grade)
    auto = [g for g in data["grade_history"] if g["source"] == "auto"]
    if grade and grade["source"] == "override" and auto:
        pdf.set_font("Helvetica", "I", 8)
        pdf.multi_cell(0, 4, align="L", text=_t(f"Automatic grade before the override: {auto[-1]['grade']}"),
                       new_x="LMARGIN", new_y="NEXT")
        for reason in auto[-1]["reasons"]:
            pdf.multi_cell(0, 4, align="L", text=_t(f"- {reason}"), new_x="LMARGIN", new_y="NEXT")
    pdf.section("Plant data")
    pdf.kv_table([("Order", platform.get("order_no")), ("Customer", platform.get("customer")),
                  ("Steel grade", platform.get("steel_grade")),
                  ("Product spec", platform.get("product_spec")),
                  ("Heat", platform.get("heat")), ("Slab", platform.get("slab_id")),
                  ("Thickness mm", platform.get("thickness_mm")), ("Width mm", platform.get("width_mm")),
                  ("Length m", platform.get("length_m")), ("Weight t", platform.get("weight_t")),
                  ("Produced", platform.get("produced_at")), ("Shift", platform.get("shift")),
                  ("Finishing temp C", platform.get("finishing_temp_c")),
                  ("Coiling temp C", platform.get("coiling_temp_c")),
                  ("Speed m/s", platform.get("speed_m_per_s")), ("Inspected length m", coil["length_m"])])
    cov = data["provenance"]["coverage"]
    state = "complete" if cov["complete"] else "INCOMPLETE"
    pdf.section(f"Inspection coverage: {cov['share']:.2%} ({state})")
    pdf.grid(["camera", "surface", "frames", "inspected", "dropped (worker)", "dropped (camera)", "share"],
             [[c["camera"], c["surface"], c["frames"], c["inspected"], c["dropped_worker"],
               c["dropped_camera"], f"{c['share']:.2%}"] for c in cov["cameras"]],
             [28, 20, 20, 22, 30, 30, 20])
    with tempfile.TemporaryDirectory() as tmp:
        from inspection.records.report import map_png

        image = Path(tmp) / "map.png"
        map_png(data, image)
        pdf.section("Defect map (colour: class, size: severity; x: rejected false alarms)")
        pdf.image(str(image), w=pdf.epw)
    _summary(pdf, data)
    _history(pdf, data)
    _defect_table(pdf, data)
    _provenance(pdf, data)
    pdf.output(str(out))


def _grade_box(pdf: _Pdf, grade: dict[str, Any] | None) -> None:
    name = grade["grade"] if grade else "not graded"
    pdf.ln(2)
    pdf.set_fill_color(*GRADE_COLOURS.get(name, (90, 90, 90)))
    pdf.set_text_color(255)
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(60, 10, _t(f"GRADE: {name.upper()}"), fill=True, align="C")
    pdf.set_text_color(0)
    pdf.set_fill_color(255)  # tables below must not inherit the grade colour
    pdf.set_font("Helvetica", "", 8)
    if grade:
        source = (f"override by {grade['by']}" if grade["source"] == "override"
                  else f"rule set {grade['rule_set']} v{grade['rule_version']}")
        pdf.cell(0, 10, _t(f"  {source}, {grade['time']}"), new_x="LMARGIN", new_y="NEXT")
        pdf.ln(1)
        for reason in grade["reasons"]:
            pdf.multi_cell(0, 4, align="L", text=_t(f"- {reason}"), new_x="LMARGIN", new_y="NEXT")
    else:
        pdf.ln(11)


def _summary(pdf: _Pdf, data: dict[str, Any]) -> None:
    s = data["summary"]
    pdf.section(f"Defects: {s['counted']} counted, {s['rejected']} rejected as false alarms by inspectors")
    per: dict[str, dict[str, int]] = {}
    for item in s["by_class"]:
        per.setdefault(item["class"], {"top": 0, "bottom": 0})[item["surface"]] = item["count"]
    rows = [[cls, v["top"], v["bottom"], v["top"] + v["bottom"]] for cls, v in sorted(per.items())]
    pdf.grid(["class", "top", "bottom", "total"], rows, [50, 25, 25, 25])
    sev = ", ".join(f"{k}: {v}" for k, v in sorted(s["by_severity"].items()))
    pdf.cell(0, 5, _t(f"By severity: {sev or 'none'}"), new_x="LMARGIN", new_y="NEXT")
    for alarm in data["alarms"]:
        pdf.set_text_color(180, 0, 0)
        text = _t(f"ALARM ({alarm['kind']}): {alarm['message']}")
        pdf.multi_cell(0, 4, align="L", text=text, new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)


def _history(pdf: _Pdf, data: dict[str, Any]) -> None:
    pdf.section("Grade history")
    pdf.grid(["time", "grade", "source", "trigger", "by", "rule set"],
             [[g["time"], g["grade"], g["source"], g["trigger"], g["by"],
               f"{g['rule_set']} v{g['rule_version']}" if g["rule_set"] else None]
              for g in data["grade_history"]],
             [42, 22, 18, 40, 25, 39])


def _defect_table(pdf: _Pdf, data: dict[str, Any]) -> None:
    defects = data["defects"]
    shown = defects[:MAX_PDF_ROWS]
    more = ""
    if len(defects) > len(shown):
        more = f" (first {MAX_PDF_ROWS} of {len(defects)}; the CSV export has all)"
    pdf.add_page()
    pdf.section(f"Defect table{more}")
    rows = [[d["id"], d["surface"], f"{d['along_mm'] / 1000:.2f}", f"{d['across_mm']:.0f}",
             f"{d['length_mm']:.0f} x {d['width_mm']:.0f}", d["effective_class"]
             + (f" (was {d['class']})" if d["effective_class"] != d["class"] else ""),
             f"{d['score']:.2f}", SEVERITY_NAMES[d["severity"]], d["review_status"]] for d in shown]
    pdf.grid(["id", "surface", "along m", "across mm", "size mm", "class", "score", "severity", "review"],
             rows,
             [14, 16, 18, 18, 22, 46, 14, 18, 20])


def _provenance(pdf: _Pdf, data: dict[str, Any]) -> None:
    p = data["provenance"]
    pdf.section("Provenance")
    pdf.grid(["model version", "sha256", "frames"],
             [[m["version"], m["sha256"], m["frames"]] for m in p["models"]],
             [40, 120, 20])
    pdf.ln(1)
    pdf.grid(["rule set", "version", "sha256"], [[r["rule_set"], r["rule_version"], r["rule_sha256"]]
                                                 for r in p["rule_sets"]], [40, 30, 116])
    pdf.ln(1)
    head = p["audit_head"]
    reviewers = ", ".join(p["reviewers"]) or "none"
    chain = f"seq {head['seq']}, sha256 {head['hash']}" if head else "empty"
    text = (f"Reviewers: {reviewers}.  Audit chain head at report time: {chain} "
            "(verify with `steel-inspect audit verify`).")
    pdf.multi_cell(0, 4, align="L", text=_t(text), new_x="LMARGIN", new_y="NEXT")
