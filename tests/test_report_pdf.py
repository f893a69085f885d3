"""The PDF coil report as a reader sees it: rendered by poppler (`pdftoppm`, `pdftotext`, `pdfimages`) from
a real line database with real crops, checked for blank pages, the console's class colours and map axes,
crops of the critical defects with their box, the counted defects and the appendix, and where it is written.
"""

from __future__ import annotations

import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest

from inspection.cli import main
from inspection.datasets import DATASET_CLASSES, LINE_DATASETS
from inspection.defect_style import CLASS_COLOURS, MAP_X, MAP_Y, class_colour, rgb
from inspection.frame import CoilEvent, StreamKey
from inspection.frame_inspector import crop_png
from inspection.records import platform, report
from inspection.records.crops import CropStore
from inspection.records.db import open_db
from inspection.records.grading import load_rules
from inspection.records.report_figures import crop_picture, map_figure
from inspection.records.store import Store
from inspection.results import Defect, FrameResult
from inspection.severity import severity
from tests.line_configs import write_line_config

COIL = "K-1"
FRAME_PX = (1024, 1600)  # frame height (along) x width (across), 1 mm per pixel
FRAMES = 30
MARGIN = 16  # the worker's crop margin (records.crop_margin_px)
MODEL = ("hot-test-1", "ab" * 32)
START_NS = 1_763_900_000 * 10**9
# (class, camera index, frame, x1, y1, x2, y2, score): two critical defects far apart on the top surface
CRITICAL = {"patches": ("patches", 0, 2, 1330, 300, 1490, 460, 0.9),
            "scratches": ("scratches", 0, 25, 190, 100, 200, 500, 0.85)}
POPPLER = pytest.mark.skipif(not (shutil.which("pdftoppm") and shutil.which("pdftotext") and shutil.which("pdfimages")),
                             reason="poppler-utils (pdftoppm, pdftotext, pdfimages) not installed: "
                                    "apt-get install -y poppler-utils")


def _defect(frame: np.ndarray, index: int, cls: str, box: tuple[int, int, int, int], score: float) -> Defect:
    """A defect as a worker sends it: box in frame pixels, mm on the strip, the crop cut as the worker cuts it."""
    x1, y1, x2, y2 = box
    frame[y1:y2, x1:x2] = 40  # dark where the defect is, so the crop shows it
    length, width = float(y2 - y1), float(x2 - x1)
    return Defect(cls=cls, score=score, severity=severity(cls, length, width, length * width, score),
                  box=(float(x1), float(y1), float(x2), float(y2)), along_mm=index * 1024.0 + (y1 + y2) / 2,
                  across_mm=(x1 + x2) / 2, length_mm=length, width_mm=width, area_mm2=length * width,
                  crop_png=crop_png(frame, (x1, y1, x2, y2), MARGIN))


def _coil_messages() -> list[Any]:
    """Two critical defects, six major ones and 140 minor low-score detections (scores 0.2-0.45)."""
    rng = random.Random(5)
    planned: dict[tuple[int, int], list[tuple[str, tuple[int, int, int, int], float]]] = {}
    for cls, cam, index, x1, y1, x2, y2, score in CRITICAL.values():
        planned.setdefault((cam, index), []).append((cls, (x1, y1, x2, y2), score))
    for i in range(6):
        x, y = rng.randrange(100, 1400), rng.randrange(50, 900)
        planned.setdefault((i % 2, 5 + 3 * i), []).append(("rolled-in_scale", (x, y, x + 40, y + 30), 0.6))
    for _ in range(140):
        x, y, s = rng.randrange(20, 1550), rng.randrange(20, 980), rng.randrange(5, 15)
        key = (rng.randrange(2), rng.randrange(FRAMES))
        planned.setdefault(key, []).append(("crazing", (x, y, x + s, y + s), round(rng.uniform(0.2, 0.45), 3)))
    out: list[Any] = []
    for cam, (camera, surface) in enumerate((("top-1", "top"), ("bottom-1", "bottom"))):
        src = StreamKey(line="demo-hot-1", line_type="hot", camera=camera, surface=surface)
        out.append(CoilEvent("coil_start", src, COIL, 0, START_NS))
        for index in range(FRAMES):
            frame = np.random.default_rng(index).normal(128, 10, FRAME_PX).clip(0, 255).astype(np.uint8)
            defects = tuple(_defect(frame, index, cls, box, score) for cls, box, score in planned.get((cam, index), []))
            t = START_NS + index * 50_000_000
            out.append(FrameResult(src, COIL, index + 1, index, t, index * 1024.0, 1024.0, *MODEL, t + 5_000_000,
                                   defects))
        out.append(CoilEvent("coil_end", src, COIL, FRAMES + 1, START_NS + FRAMES * 50_000_000,
                             length_mm=FRAMES * 1024.0, frames=FRAMES, dropped=0))
    return out


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A line database (``<tmp>/line.db``, crops beside it) with coil K-1 graded, one false alarm rejected."""
    folder = tmp_path_factory.mktemp("line")
    db, crops = folder / "line.db", folder / "crops"
    with Store(db, crops=CropStore(crops), clock=lambda: START_NS) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [
            {"id": "top-1", "surface": "top", "width_px": 1600, "mm_per_px_across": 1.0, "mm_per_px_along": 1.0},
            {"id": "bottom-1", "surface": "bottom", "width_px": 1600, "mm_per_px_across": 1.0,
             "mm_per_px_along": 1.0}])
        store.apply_batch(_coil_messages())
        platform.import_rows(store.db, [("item 1", r) for r in platform.synthetic_extract(
            [COIL], "hot", 1, width_mm=1600.0, length_m=FRAMES * 1.024)], "mes")
        store.grade_coil(COIL, "coil_end")
        ids = {cls: store.db.execute("SELECT id FROM defects WHERE class=?", (cls,)).fetchone()[0] for cls in CRITICAL}
        false_alarm = store.db.execute("SELECT id FROM defects WHERE class='crazing' ORDER BY id LIMIT 1").fetchone()[0]
        for cls, defect_id in ids.items():  # what the recorder raises for a critical defect
            store.add_alarm("severe_defect", f"severity 3 {cls} on coil {COIL} (top)", coil=COIL, surface="top",
                            class_=cls, details={"defect_id": defect_id})
        members = [r[0] for r in store.db.execute("SELECT id FROM defects WHERE class='rolled-in_scale' AND "
                                                  "surface='top'")]
        store.add_alarm("periodic", f"periodic rolled-in_scale on coil {COIL} (top): pitch 2513 mm", coil=COIL,
                        surface="top", class_="rolled-in_scale", across_mm=800.0, pitch_mm=2513.0,
                        roll_diameter_mm=800.0, count=len(members), details={"defect_ids": members})
        store.add_review(false_alarm, "anna", "reject", reason="texture")
        store.grade_coil(COIL, "review")
    out = folder / "report.pdf"
    assert main(["report", "--coil", COIL, "--db", str(db), "--out", str(out)]) == 0
    return {"db": db, "crops": crops, "pdf": out, "ids": ids, "false_alarm": false_alarm}


def _text(pdf: Path, page: int | None = None) -> str:
    pages = ["-f", str(page), "-l", str(page)] if page else []
    return subprocess.run(["pdftotext", "-layout", *pages, str(pdf), "-"], check=True, capture_output=True,
                          text=True, timeout=60).stdout


def _pages(pdf: Path, folder: Path, dpi: int = 30) -> list[np.ndarray]:
    subprocess.run(["pdftoppm", "-r", str(dpi), "-gray", "-png", str(pdf), str(folder / "page")], check=True,
                   timeout=120)
    return [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted(folder.glob("page-*.png"))]


def _images(pdf: Path, folder: Path, page: int) -> list[np.ndarray]:
    """The page's embedded images as stored (lossless), RGB."""
    subprocess.run(["pdfimages", "-png", "-f", str(page), "-l", str(page), str(pdf), str(folder / f"img{page}")],
                   check=True, timeout=60)
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted(folder.glob(f"img{page}-*.png"))]


def _where(image: np.ndarray, colour: str, tolerance: int = 6) -> np.ndarray:
    """(row, column) of every pixel of `colour`."""
    return np.argwhere(np.all(np.abs(image.astype(int) - np.array(rgb(colour))) <= tolerance, axis=2))


def _marker(picture: np.ndarray, cls: str) -> tuple[float, float]:
    """(x, y) of the leftmost blob of the class's colour: its marker on the map, left of the legend."""
    mask = np.zeros(picture.shape[:2], np.uint8)
    rows, cols = _where(picture, CLASS_COLOURS[cls]).T
    mask[rows, cols] = 255
    count, _, stats, centres = cv2.connectedComponentsWithStats(mask)
    blobs = [i for i in range(1, count) if stats[i, cv2.CC_STAT_AREA] > 20]
    assert len(blobs) >= 2, f"{cls}: expected a marker and a legend swatch in its colour, found {len(blobs)} blobs"
    x, y = min((centres[i] for i in blobs), key=lambda c: c[0])
    return float(x), float(y)


@POPPLER
def test_pages_flow_without_blank_pages(line: dict[str, Any], tmp_path: Path) -> None:
    pages = _pages(line["pdf"], tmp_path)
    assert len(pages) >= 3  # a coil with 148 defects: the tables span pages
    for number, page in enumerate(pages, 1):
        mm = page.shape[0] / 297.0
        body = page[round(20 * mm):round(282 * mm)]  # between the running header and the footer
        inked = np.flatnonzero((body < 160).any(axis=1))
        assert len(inked), f"page {number} is blank"
        if number < len(pages):  # only the last page may end early
            assert inked[-1] >= 0.7 * len(body), f"page {number} ends at {inked[-1] / len(body):.0%} of its height"
            assert len(inked) >= 0.3 * len(body), f"page {number} is mostly empty ({len(inked) / len(body):.0%} inked)"


@POPPLER
def test_map_has_the_console_colours_and_axes(line: dict[str, Any], tmp_path: Path) -> None:
    text = _text(line["pdf"], 1)
    assert "Defect map" in text and MAP_X.title in text and MAP_Y.title in text
    (picture,) = _images(line["pdf"], tmp_path, 1)  # page 1 holds one picture: the map
    # Each class colour shows twice: its marker on the map and its swatch in the legend (right of the map).
    (p_col, p_row), (s_col, s_row) = _marker(picture, "patches"), _marker(picture, "scratches")
    # patches: 2.4 m from the head, 1410 mm across; scratches: 25.9 m, 195 mm; both on the top panel.
    # Length runs along x (head at the left) and width up y (drive side at the bottom), as in the console.
    assert p_col < 0.3 * picture.shape[1] < 0.5 * picture.shape[1] < s_col
    assert p_row < s_row < picture.shape[0] / 2
    assert len(_where(picture, CLASS_COLOURS["inclusion"])) == 0  # a class the coil does not have is not drawn

    data = report.collect(open_db(line["db"], readonly=True), COIL)
    top, bottom = map_figure(data, 186, 100).axes[:2]
    assert (bottom.get_xlabel(), top.get_ylabel()) == (MAP_X.title, MAP_Y.title)
    assert top.get_xlim() == pytest.approx((0, FRAMES * 1.024)) and top.get_ylim() == pytest.approx((0, 1600))


def test_console_map_draws_with_the_same_table() -> None:
    from inspection.console.map_data import pack

    classes = ["crazing", "patches", "unknown", "made-up class"]
    defects = pd.DataFrame({"id": [1, 2, 3, 4], "surface": "top", "along_mm": [1000.0, 2000, 3000, 4000],
                            "across_mm": [100.0, 200, 300, 400], "effective_class": classes, "severity": 1,
                            "score": 0.5, "review_status": "unreviewed"})
    meta, _ = pack(defects, pd.DataFrame(), classes, 10.0, 1600.0, version="v")
    assert (meta["classes"], meta["colours"]) == (classes, [class_colour(c) for c in classes])
    assert (meta["x_title"], meta["y_title"]) == (MAP_X.title, MAP_Y.title)
    assert class_colour("made-up class") == class_colour("made-up class")  # stable for names outside the table
    for line_type, dataset in LINE_DATASETS.items():  # every class a model of either line type names has its own
        named = DATASET_CLASSES[dataset]
        assert set(named) <= set(CLASS_COLOURS), line_type
        assert len({CLASS_COLOURS[c] for c in (*named, "unknown")}) == len(named) + 1, line_type  # none shared


@POPPLER
def test_crops_of_the_critical_defects_with_box_and_scale(line: dict[str, Any], tmp_path: Path) -> None:
    text = _text(line["pdf"])
    assert "Critical defects (2) and the next 6 by severity" in text
    for cls, defect_id in line["ids"].items():
        assert f"#{defect_id} {cls}" in text
    page = next(n for n in range(1, 4) if "Critical defects" in _text(line["pdf"], n))
    crops = _images(line["pdf"], tmp_path, page)
    assert len(crops) >= 8  # 2 critical + the next 6 by severity (the major rolled-in scale)

    # The box sits where the defect is: patches is 160 x 160 px in a crop grown by 16 px on each side.
    data = report.collect(open_db(line["db"], readonly=True), COIL)
    d = next(d for d in data["defects"] if d["id"] == line["ids"]["patches"])
    png = CropStore(line["crops"]).get(d["crop_sha256"])
    picture = crop_picture(png, d, (1.0, 1.0))
    edge = _where(picture, CLASS_COLOURS["patches"], tolerance=2)
    scale = 360 / 192  # the crop (160 + 2 x 16 px) resampled to 360 px
    rows, cols = edge[:, 0], edge[:, 1]
    assert cols.min() == pytest.approx(16 * scale, abs=3) and cols.max() == pytest.approx(176 * scale, abs=3)
    assert rows.min() == pytest.approx(16 * scale, abs=3) and rows.max() == pytest.approx(176 * scale, abs=3)
    band = picture[360:]  # the scale bar's band under the crop
    assert band.shape[0] == 36 and (band < 50).all(axis=2).sum() > 200  # a black bar and its label


@POPPLER
def test_counted_defects_in_the_body_and_the_rest_in_an_appendix(line: dict[str, Any]) -> None:
    text = _text(line["pdf"])
    assert "Defects counted for the grade: 147" in text  # 148 less the one rejected
    appendix = text[text.index("Appendix: defects not counted for the grade: 1"):]
    assert "rejected by anna" in appendix and f"{line['false_alarm']} " in appendix
    body = text[text.index("Defects counted for the grade"):text.index("Grade history")]
    assert "rejected by" not in body and "0.2" in body  # low-score detections count under the standard rules
    for heading in ("Order", "Steel grade", "Customer", "Heat", "Along (m)", "Across (mm)"):
        assert heading in text
    for column in ("order_no", "steel_grade", "along_mm", "effective_class"):
        assert column not in text


def test_a_defect_no_limit_counts_goes_to_the_appendix(line: dict[str, Any], tmp_path: Path) -> None:
    rules = tmp_path / "critical-only.toml"
    rules.write_text('name = "critical-only"\nversion = "1"\n[[limit]]\nid = "CRIT"\nseverity_min = 3\n'
                     'per = "coil"\nmax = 0\ngrade = "reject"\n')
    data = report.collect(open_db(line["db"], readonly=True), COIL, load_rules(rules))
    counted = {d["id"] for d in data["defects"] if d["counted_by"]}
    assert counted == set(line["ids"].values())
    assert data["summary"] == {**data["summary"], "counted": 2, "rejected": 1, "not_counted": 145}


def test_default_output_is_the_reports_folder_beside_the_database(
        line: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    assert main(["report", "--coil", COIL, "--db", str(line["db"]), "--format", "json"]) == 0
    expected = line["db"].parent / "reports" / f"coil-{COIL}.json"
    assert capsys.readouterr().out.strip() == f"wrote {expected}"
    assert expected.is_file() and not list(cwd.iterdir())  # nothing in the current folder


def test_reports_dir_from_the_config_and_out_honoured(
        line: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("line.db", "crops"):
        shutil.copytree(line["db"].parent / name, tmp_path / name) if name == "crops" else \
            shutil.copy(line["db"], tmp_path / name)
    reports = tmp_path / "customer" / "reports"
    config = write_line_config(tmp_path, extra={'reports_dir = ""': f'reports_dir = "{reports}"'})
    assert main(["report", "--coil", COIL, "--config", str(config), "--format", "csv"]) == 0
    assert (reports / f"coil-{COIL}.csv").is_file()  # the folder was made
    out = tmp_path / "elsewhere" / "k1.csv"
    assert main(["report", "--coil", COIL, "--config", str(config), "--format", "csv", "--out", str(out)]) == 0
    assert out.is_file() and capsys.readouterr().out.splitlines()[-1] == f"wrote {out}"
    folder = tmp_path / "folder"
    folder.mkdir()
    assert main(["report", "--coil", COIL, "--config", str(config), "--format", "json", "--out", str(folder)]) == 0
    assert (folder / f"coil-{COIL}.json").is_file()


def test_an_unwritable_output_is_one_line_and_exit_2(
        line: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["report", "--coil", COIL, "--db", str(line["db"]), "--format", "csv",
                 "--out", str(blocker / "r.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"steel-inspect report: error: {blocker / 'r.csv'}: cannot write report: ")
    assert len(err.splitlines()) == 1 and "Traceback" not in err
