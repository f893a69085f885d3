"""The coil report as an A4 PDF (fpdf2): grade, plant data, coverage, defect map, crops, tables.

The pages flow: every section starts where the previous one ended, and moves to a new page only
when its first lines would not fit, so no page is left mostly blank. Order: grade and reasons,
plant data, coverage and the defect map (page 1); the defects per class; crops of the critical
defects (else the most severe); the defects that count for the grade; grade history; provenance;
an appendix with the defects that do not count (rejected by inspectors, or counted by no limit).
Colours and the map's axes are the console's (`inspection.defect_style`).

fpdf2 and matplotlib (the defect map) come with the `console` extra; `report.write` checks for
them before importing this module, so a line PC without them gets one clear line, not a traceback.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path
from typing import Any

import cv2
from fpdf import FPDF
from fpdf.fonts import FontFace

from inspection.defect_style import GRADE_COLOURS, MAP_X, MAP_Y, class_colour, rgb
from inspection.records.crops import CropStore
from inspection.records.report_figures import crop_picture, map_png
from inspection.severity import CRITICAL, SEVERITY_NAMES

MAX_PDF_ROWS = 400  # per table; longer ones go to the CSV export
CROPS_FILL = 8  # crops shown when fewer defects are critical: the most severe next
CROPS_MAX = 24  # at most this many crops (critical first)
CROP_COLUMNS = 4
MAP_HEIGHT_MM = (70.0, 100.0)  # the map shrinks to what is left of page 1, down to the first figure
HEAD_FILL = (225, 230, 238)
DEFECT_HEADINGS = ["Id", "Surface", "Along (m)", "Across (mm)", "Size (mm)", "Class", "Score", "Severity"]
DEFECT_WIDTHS = [14, 16, 18, 20, 24, 44, 14, 18]


def _t(value: Any) -> str:
    """Text the PDF core fonts can show (latin-1); None becomes a dash."""
    if value is None or value == "":
        return "-"
    if isinstance(value, str) and value.isspace():
        return value  # a blank cell on purpose (a colour swatch)
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

    def room(self) -> float:
        """Millimetres left above the bottom margin of this page."""
        return self.page_break_trigger - self.get_y()

    def section(self, title: str, keep_mm: float = 25.0) -> None:
        """A section title, kept with at least `keep_mm` of what follows it (else on the next page)."""
        if self.room() < keep_mm + 9:
            self.add_page()
        self.ln(2)
        self.set_font("Helvetica", "B", 11)
        self.cell(0, 7, _t(title), new_x="LMARGIN", new_y="NEXT")
        self.set_font("Helvetica", "", 8)

    def note(self, text: str, style: str = "I") -> None:
        self.set_font("Helvetica", style, 7.5)
        self.multi_cell(0, 3.8, align="L", text=_t(text), new_x="LMARGIN", new_y="NEXT")
        self.set_font("Helvetica", "", 8)

    def kv_table(self, pairs: list[tuple[str, Any]], columns: int = 2) -> None:
        rows = [pairs[i:i + columns] for i in range(0, len(pairs), columns)]
        widths = [32, 61] * columns
        with self.table(col_widths=widths, first_row_as_headings=False, line_height=4.6, text_align="LEFT",
                        borders_layout="HORIZONTAL_LINES", width=sum(widths), align="LEFT") as table:
            for chunk in rows:
                row = table.row()
                for key, value in chunk:
                    row.cell(_t(key), style=FontFace(emphasis="BOLD"))
                    row.cell(_t(value))
                for _ in range(columns - len(chunk)):
                    row.cell("")
                    row.cell("")

    def grid(self, headings: list[str], rows: list[list[Any]], widths: list[float],
             fills: list[tuple[int, int, int] | None] | None = None) -> None:
        """A table, one line per row, its heading repeated on every page it spans; `fills` colours the
        first cell of each row (a class's swatch). Plain cells, not fpdf2's table: hundreds of defect
        rows render in a fraction of the time."""
        line_h = 4.2
        if self.will_page_break(2 * line_h + 1):
            self.add_page()
        self._grid_heading(headings, widths)
        for i, values in enumerate(rows):
            if self.will_page_break(line_h):
                self.add_page()
                self._grid_heading(headings, widths)
            for j, (value, width) in enumerate(zip(values, widths, strict=True)):
                fill = fills[i] if fills and j == 0 else None
                if fill:
                    self.set_fill_color(*fill)
                self.cell(width, line_h, self._fit(_t(value), width), fill=fill is not None)
            self.ln(line_h)
        self.set_fill_color(255)

    def _grid_heading(self, headings: list[str], widths: list[float]) -> None:
        self.set_font("Helvetica", "B", 8)
        self.set_fill_color(*HEAD_FILL)
        for heading, width in zip(headings, widths, strict=True):
            self.cell(width, 5, self._fit(_t(heading), width), fill=True)
        self.ln(5)
        self.set_draw_color(120)
        self.line(self.l_margin, self.get_y(), self.l_margin + sum(widths), self.get_y())
        self.set_font("Helvetica", "", 8)

    def _fit(self, text: str, width: float) -> str:
        """`text` cut to the cell's width (with "..."), so a row stays one line."""
        room = width - 2 * self.c_margin
        if self.get_string_width(text) <= room:
            return text
        while text and self.get_string_width(text + "...") > room:
            text = text[:-1]
        return text + "..."


def render_pdf(data: dict[str, Any], out: Path, crops_dir: Path | None = None) -> None:
    """Render the report (`report.collect`'s dict) to `out`; crops come from `crops_dir` when given."""
    coil = data["coil"]
    pdf = _Pdf(format="A4")
    pdf.coil, pdf.generated = coil["id"], f"generated {data['report']['generated']}"
    pdf.set_auto_page_break(True, margin=15)
    pdf.alias_nb_pages()
    pdf.set_margins(12, 12, 12)
    pdf.set_title(f"Coil {coil['id']} inspection report")
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 16)
    pdf.cell(0, 9, _t(f"Coil {coil['id']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", "", 9)
    pdf.cell(0, 5, _t(f"Line {coil['line']} ({coil['line_type']} strip), first seen {coil['first_seen']}"),
             new_x="LMARGIN", new_y="NEXT")
    _grade(pdf, data)
    _plant(pdf, data)
    _coverage(pdf, data)
    _map(pdf, data)
    _summary(pdf, data)
    _crops(pdf, data, crops_dir)
    _counted(pdf, data)
    _history(pdf, data)
    _provenance(pdf, data)
    _appendix(pdf, data)
    pdf.output(str(out))


def _grade(pdf: _Pdf, data: dict[str, Any]) -> None:
    grade = data["grade"]
    name = grade["grade"] if grade else "not graded"
    fill = rgb(GRADE_COLOURS.get(name, "#7f7f7f"))
    pdf.ln(2)
    pdf.set_fill_color(*fill)
    # white on the dark grade colours, black on the light ones (secondary's olive)
    pdf.set_text_color(*((0, 0, 0) if 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2] > 150 else (255, 255, 255)))
    pdf.set_font("Helvetica", "B", 14)
    pdf.cell(60, 10, _t(f"GRADE: {name.upper()}"), fill=True, align="C")
    pdf.set_text_color(0)
    pdf.set_fill_color(255)  # tables below must not inherit the grade colour
    pdf.set_font("Helvetica", "", 8)
    if not grade:
        pdf.ln(11)
        return
    source = (f"override by {grade['by']}" if grade["source"] == "override"
              else f"rule set {grade['rule_set']} v{grade['rule_version']}")
    pdf.cell(0, 10, _t(f"  {source}, {grade['time']}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(1)
    for reason in grade["reasons"]:
        pdf.multi_cell(0, 4, align="L", text=_t(f"- {reason}"), new_x="LMARGIN", new_y="NEXT")
    auto = [g for g in data["grade_history"] if g["source"] == "auto"]
    if grade["source"] == "override" and auto:
        pdf.note(f"Automatic grade before the override: {auto[-1]['grade']}")
        for reason in auto[-1]["reasons"]:
            pdf.note(f"- {reason}", style="")


def _plant(pdf: _Pdf, data: dict[str, Any]) -> None:
    platform, coil = data["platform"], data["coil"]
    pdf.section("Plant data", keep_mm=20)
    if not platform:
        pdf.note("No plant data (order, steel grade, heat) imported for this coil.")
        return
    pdf.kv_table([("Order", platform.get("order_no")), ("Customer", platform.get("customer")),
                  ("Steel grade", platform.get("steel_grade")), ("Product spec", platform.get("product_spec")),
                  ("Heat", platform.get("heat")), ("Slab", platform.get("slab_id")),
                  ("Thickness (mm)", platform.get("thickness_mm")), ("Width (mm)", platform.get("width_mm")),
                  ("Length (m)", platform.get("length_m")), ("Weight (t)", platform.get("weight_t")),
                  ("Produced", platform.get("produced_at")), ("Shift", platform.get("shift")),
                  ("Finishing temp. (C)", platform.get("finishing_temp_c")),
                  ("Coiling temp. (C)", platform.get("coiling_temp_c")),
                  ("Line speed (m/s)", platform.get("speed_m_per_s")), ("Inspected length (m)", coil["length_m"])])


def _coverage(pdf: _Pdf, data: dict[str, Any]) -> None:
    cov = data["provenance"]["coverage"]
    state = "complete" if cov["complete"] else "INCOMPLETE"
    pdf.section(f"Inspection coverage: {cov['share']:.2%} ({state})", keep_mm=12)
    pdf.grid(["Camera", "Surface", "Frames", "Inspected", "Dropped (worker)", "Dropped (camera)", "Share"],
             [[c["camera"], c["surface"], c["frames"], c["inspected"], c["dropped_worker"],
               c["dropped_camera"], f"{c['share']:.2%}"] for c in cov["cameras"]],
             [28, 20, 20, 22, 30, 30, 20])


def _map(pdf: _Pdf, data: dict[str, Any]) -> None:
    low, high = MAP_HEIGHT_MM
    if pdf.room() < low + 20:
        pdf.add_page()
    height = min(high, pdf.room() - 20)
    pdf.section("Defect map", keep_mm=height)
    pdf.note(f"x: {MAP_X.title}; y: {MAP_Y.title}. Colour: class; size: severity; faint: rejected as a false "
             "alarm; diamond: part of a periodic defect. Same colours and axes as the console's coil map.",
             style="")
    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "map.png"
        map_png(data, image, width_mm=pdf.epw, height_mm=height)
        pdf.image(str(image), w=pdf.epw, h=height)


def _summary(pdf: _Pdf, data: dict[str, Any]) -> None:
    s = data["summary"]
    pdf.section(f"Defects: {s['counted']} counted for the grade, {s['rejected']} rejected as false alarms by "
                f"inspectors" + (f", {s['not_counted']} counted by no limit" if s["not_counted"] else ""))
    per: dict[str, dict[str, int]] = {}
    for item in s["by_class"]:
        per.setdefault(item["class"], {"top": 0, "bottom": 0})[item["surface"]] = item["count"]
    rows = [[" ", cls, v["top"], v["bottom"], v["top"] + v["bottom"]] for cls, v in sorted(per.items())]
    if rows:
        pdf.grid([" ", "Class", "Top", "Bottom", "Total"], rows, [6, 50, 25, 25, 25],
                 fills=[rgb(class_colour(r[1])) for r in rows])
    sev = ", ".join(f"{k}: {v}" for k, v in sorted(s["by_severity"].items()))
    pdf.cell(0, 5, _t(f"By severity: {sev or 'none'}"), new_x="LMARGIN", new_y="NEXT")
    for alarm in data["alarms"]:
        pdf.set_text_color(180, 0, 0)
        pdf.multi_cell(0, 4, align="L", text=_t(f"ALARM ({alarm['kind']}): {alarm['message']}"),
                       new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(0)


def crop_selection(defects: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int]:
    """(defects to show a crop of, how many counted defects are critical): every critical one up to
    CROPS_MAX, else the most severe up to CROPS_FILL; most severe and most certain first."""
    ranked = sorted((d for d in defects if d["counted_by"]), key=lambda d: (-d["severity"], -d["score"], d["along_mm"]))
    critical = sum(1 for d in ranked if d["severity"] >= CRITICAL)
    return ranked[:min(max(critical, CROPS_FILL), CROPS_MAX)], critical


def _crops(pdf: _Pdf, data: dict[str, Any], crops_dir: Path | None) -> None:
    shown, critical = crop_selection(data["defects"])
    if not shown:
        return
    title = (f"Critical defects ({critical})" if critical else "Most severe defects (none critical)")
    if critical > len(shown):
        title += f": the {len(shown)} most certain shown"
    elif len(shown) > critical:
        title += f" and the next {len(shown) - critical} by severity"
    cell_w = pdf.epw / CROP_COLUMNS
    side = cell_w - 4
    row_h = side + 15
    pdf.section(title, keep_mm=row_h)
    pdf.note("Box in the class colour; scale bar in millimetres across the strip.", style="")
    store = CropStore(crops_dir) if crops_dir else None
    for start in range(0, len(shown), CROP_COLUMNS):
        if pdf.room() < row_h:
            pdf.add_page()
        top = pdf.get_y() + 1
        for i, d in enumerate(shown[start:start + CROP_COLUMNS]):
            x = pdf.l_margin + i * cell_w
            _crop_cell(pdf, d, data["cameras"].get(d["camera"], {}), store, x, top, side)
        pdf.set_xy(pdf.l_margin, top + row_h)


def _crop_cell(pdf: _Pdf, d: dict[str, Any], camera: dict[str, Any], store: CropStore | None,
               x: float, y: float, side: float) -> None:
    png = store.get(d["crop_sha256"]) if store and d["crop_sha256"] else None
    picture = crop_picture(png, d, (camera.get("mm_per_px_across"), camera.get("mm_per_px_along"))) if png else None
    if picture is not None:
        h, w = picture.shape[:2]
        scale = side / max(w, h)
        ok, encoded = cv2.imencode(".png", cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
        pdf.image(io.BytesIO(encoded.tobytes()), x=x + (side - w * scale) / 2, y=y, w=w * scale, h=h * scale)
    else:
        why = ("no crop stored" if not d["crop_sha256"] else "crop folder not given" if store is None
               else "crop pruned by retention")
        pdf.set_draw_color(190)
        pdf.rect(x, y, side, side)
        pdf.set_xy(x, y + side / 2 - 2)
        pdf.set_font("Helvetica", "I", 7)
        pdf.cell(side, 4, _t(why), align="C")
    was = f" (was {d['class']})" if d["effective_class"] != d["class"] else ""
    lines = [f"#{d['id']} {d['effective_class']}{was}",
             f"{SEVERITY_NAMES[d['severity']]}, score {d['score']:.2f}, {d['surface']}",
             f"along {d['along_mm'] / 1000:.2f} m, across {d['across_mm']:.0f} mm",
             f"size {d['length_mm']:.0f} x {d['width_mm']:.0f} mm"]
    pdf.set_xy(x, y + side + 0.5)
    pdf.set_font("Helvetica", "B", 7)
    pdf.cell(side, 3.2, _t(lines[0]), new_x="LEFT", new_y="NEXT")
    pdf.set_font("Helvetica", "", 6.5)
    for line in lines[1:]:
        pdf.cell(side, 3.0, _t(line), new_x="LEFT", new_y="NEXT")


def _defect_row(d: dict[str, Any]) -> list[Any]:
    was = f" (was {d['class']})" if d["effective_class"] != d["class"] else ""
    return [d["id"], d["surface"], f"{d['along_mm'] / 1000:.2f}", f"{d['across_mm']:.0f}",
            f"{d['length_mm']:.0f} x {d['width_mm']:.0f}", d["effective_class"] + was, f"{d['score']:.2f}",
            SEVERITY_NAMES[d["severity"]]]


def _first(rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    if len(rows) <= MAX_PDF_ROWS:
        return rows, ""
    return rows[:MAX_PDF_ROWS], f" (first {MAX_PDF_ROWS} of {len(rows)}; the CSV export has all)"


def _counted(pdf: _Pdf, data: dict[str, Any]) -> None:
    counted = sorted((d for d in data["defects"] if d["counted_by"]), key=lambda d: (-d["severity"], d["along_mm"]))
    shown, more = _first(counted)
    c = data["counting"]
    pdf.section(f"Defects counted for the grade: {len(counted)}{more}")
    text = (f"Every defect that a limit of rule set {c['rule_set']} v{c['rule_version']} counts and no inspector "
            "rejected, most severe first. Severity already includes the confidence rule: a detection scored "
            "below the rule set's uncertain score counts one step lower.")
    graded = c["graded_with"]
    if graded and graded["rule_sha256"] != c["rule_sha256"]:
        text += (f" The coil was graded with rule set {graded['rule_set']} v{graded['rule_version']}, not the one "
                 "counted with here.")
    pdf.note(text, style="")
    if shown:
        pdf.grid([*DEFECT_HEADINGS, "Review"], [[*_defect_row(d), d["review_status"]] for d in shown],
                 [*DEFECT_WIDTHS, 18])


def _history(pdf: _Pdf, data: dict[str, Any]) -> None:
    pdf.section("Grade history", keep_mm=12)
    pdf.grid(["Time", "Grade", "Source", "Trigger", "By", "Rule set"],
             [[g["time"], g["grade"], g["source"], g["trigger"], g["by"] if g["source"] == "override" else None,
               f"{g['rule_set']} v{g['rule_version']}" if g["rule_set"] else None]
              for g in data["grade_history"]],
             [42, 22, 18, 40, 25, 39])


def _provenance(pdf: _Pdf, data: dict[str, Any]) -> None:
    p = data["provenance"]
    pdf.section("Provenance", keep_mm=20)
    pdf.grid(["Model version", "sha256", "Frames"], [[m["version"], m["sha256"], m["frames"]] for m in p["models"]],
             [40, 120, 20])
    pdf.ln(1)
    pdf.grid(["Rule set", "Version", "sha256"],
             [[r["rule_set"], r["rule_version"], r["rule_sha256"]] for r in p["rule_sets"]], [40, 30, 116])
    pdf.ln(1)
    head = p["audit_head"]
    reviewers = ", ".join(p["reviewers"]) or "none"
    chain = f"seq {head['seq']}, sha256 {head['hash']}" if head else "empty"
    pdf.multi_cell(0, 4, align="L", new_x="LMARGIN", new_y="NEXT",
                   text=_t(f"Reviewers: {reviewers}.  Audit chain head at report time: {chain} "
                           "(verify with `steel-inspect audit verify`)."))


def _appendix(pdf: _Pdf, data: dict[str, Any]) -> None:
    rest = [d for d in data["defects"] if not d["counted_by"]]
    if not rest:
        return
    shown, more = _first(rest)
    rule_set = data["counting"]["rule_set"]
    pdf.section(f"Appendix: defects not counted for the grade: {len(rest)}{more}")
    pdf.note("Rejected by an inspector as false alarms, or counted by no limit of the rule set; in position order.",
             style="")

    def why(d: dict[str, Any]) -> str:
        if d["review_status"] == "rejected":
            return f"rejected by {d['reviewer']}" if d.get("reviewer") else "rejected"
        return f"no limit of {rule_set}"

    pdf.grid([*DEFECT_HEADINGS, "Why not counted"], [[*_defect_row(d), why(d)] for d in shown],
             [*DEFECT_WIDTHS[:5], 34, 14, 18, 28])
