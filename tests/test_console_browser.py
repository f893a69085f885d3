"""End to end in a real headless Chromium: `streamlit run app.py` on a free port, driven by Playwright.

The Line page picks up a new recorder status on its own (fragment refresh). The reviewer signs in
(name and password in the sidebar form), opens a coil, clicks a defect on the map, rejects it; the
review row, in the signed-in user's name, and the regraded coil must then be in the database. A
screenshot of every page goes to test-artifacts/screenshots/ (not committed).
"""

from __future__ import annotations

import io
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from inspection.console.launch import ConsoleStartError, start_console, stop_console
from inspection.passwords import ScryptParams
from inspection.records import audit, users
from inspection.records.db import open_db
from inspection.records.store import Store
from inspection.registry import Registry
from inspection.testing.sample_db import SampleCoil, build
from tests.conftest import ARTIFACTS, free_port
from tests.tiny_models import add_tiny_model

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
SHOTS = ARTIFACTS / "screenshots"
STARTUP_TIMEOUT_S = 45.0
COILS = (SampleCoil("C2001", 120.0, 30, periodic=True), SampleCoil("C2002", 60.0, 6))
USER, PASSWORD = "eve", "eve-browser-password"  # an admin: every page has something to show

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(not CHROMIUM.exists(),
                                reason=f"{CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, database) of a console started with `streamlit run app.py`, stopped afterwards."""
    folder = tmp_path_factory.mktemp("browser")
    database = folder / "line.db"
    build(database, folder / "crops", COILS, seed=5)
    with open_db(database) as db:
        users.add_user(db, USER, "admin", PASSWORD, actor="test", params=ScryptParams(n=2**12, r=8, p=1))
    add_tiny_model(Registry(folder / "models"), folder, classes=("crazing", "inclusion"),
                   version="hot-20261123-1", activate=True)
    port = free_port()
    with (folder / "streamlit.log").open("w") as log:
        try:
            server = start_console(database, port, env={"STEEL_INSPECT_MODELS": str(folder / "models")}, log=log,
                                   timeout_s=STARTUP_TIMEOUT_S)
        except ConsoleStartError as exc:
            pytest.fail(f"{exc}:\n{(folder / 'streamlit.log').read_text()[-2000:]}")
        try:
            yield f"http://127.0.0.1:{port}", database
        finally:
            stop_console(server)


def _shot(page: object, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)


def _settle(page: object) -> None:
    """Wait until the script run finished and lazily loaded widgets replaced their skeletons."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')"
                           " && !document.querySelector('[data-testid=stSkeleton]')", timeout=30_000)


def _nav(page: object, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).wait_for(timeout=30_000)
    _settle(page)


def _choose(page: object, label: str, text: str) -> None:
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.click()
    page.keyboard.type(text)
    page.get_by_role("option").filter(has_text=text).first.click()
    _settle(page)


def _click_a_point(page: object) -> int:
    """Click the centre of a marker on the top-surface map; return the defect id the page then selected."""
    plot = page.get_by_test_id("stVegaLiteChart").first.locator("svg.marks, canvas").first
    box = plot.bounding_box()
    pixels = np.asarray(Image.open(io.BytesIO(plot.screenshot())).convert("RGB")).astype(int)
    coloured = (pixels.max(axis=2) - pixels.min(axis=2)) > 40  # markers are coloured; axes and grid are grey
    coloured[:, int(coloured.shape[1] * 0.75):] = False  # the legend sits on the right
    count, _, stats, centres = cv2.connectedComponentsWithStats(coloured.astype(np.uint8))
    assert count > 1, "no coloured marker found on the map"
    x, y = centres[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    page.mouse.click(box["x"] + x * box["width"] / pixels.shape[1], box["y"] + y * box["height"] / pixels.shape[0])
    selected = page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(r"#\d+ .*review:", re.S))
    selected.first.wait_for(timeout=30_000)
    return int(re.search(r"#(\d+) ", selected.first.inner_text()).group(1))


def test_reviewer_opens_a_coil_rejects_a_defect_and_the_coil_is_regraded(console: tuple[str, Path]) -> None:
    url, database = console
    grades_before = sqlite3.connect(database).execute(
        "SELECT count(*) FROM grades WHERE coil = 'C2002'").fetchone()[0]
    with playwright_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 3000})  # Streamlit scrolls inside
            requested: list[str] = []  # a plant PC may have no internet: nothing may be fetched from it
            page.on("request", lambda request: requested.append(request.url))
            page.goto(url)
            page.get_by_role("heading", name="Line").wait_for(timeout=30_000)
            page.get_by_text("demo-hot-1 (hot)").wait_for()
            _settle(page)
            _shot(page, "1-line")
            with Store(database) as store:  # the recorder reports; the page must show it without a reload
                store.set_status({"recorder:demo-hot-1": {"pid": 4242, "frames_per_s": 12.5, "messages": 99}})
            page.get_by_text("Recorder pid 4242 reporting").wait_for(timeout=20_000)
            assert page.get_by_test_id("stMetric").filter(has_text="Frames/s").inner_text().endswith("12.5")
            page.get_by_label("User name", exact=True).fill(USER)
            page.get_by_label("Password", exact=True).fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            page.get_by_text("Signed in as").wait_for(timeout=30_000)
            _settle(page)

            _nav(page, "Coils")
            page.get_by_test_id("stDataFrame").first.wait_for()
            page.get_by_test_id("stSelectbox").last.wait_for()  # widgets are lazy-loaded: wait before the shot
            _shot(page, "2-coils")
            _choose(page, "Open coil", "C2002")
            page.get_by_role("button", name="Open coil").click()
            page.get_by_role("heading", name="Coil detail").wait_for(timeout=30_000)
            page.get_by_test_id("stVegaLiteChart").first.wait_for(timeout=30_000)
            _settle(page)
            _shot(page, "3-coil-detail")

            defect_id = _click_a_point(page)  # select on the map, as an inspector does
            page.get_by_label("Reason (optional)", exact=True).fill("reflection on the strip")
            page.get_by_role("button", name="Reject as false alarm").click()
            done = f"Defect #{defect_id} of coil C2002 rejected as false alarm"
            page.get_by_text(done).wait_for(timeout=30_000)
            _settle(page)
            _shot(page, "4-coil-detail-after-reject")

            for title, name in (("Review queue", "5-review-queue"), ("Analytics", "6-analytics"),
                                ("Models", "7-models")):
                _nav(page, title)
                page.wait_for_timeout(500)  # let charts finish drawing before the picture
                _shot(page, name)
        finally:
            browser.close()

    outside = sorted({u for u in requested if not u.startswith((url, "data:", "blob:"))})
    assert not outside, f"the console fetched from outside the machine: {outside[:5]}"
    with sqlite3.connect(database) as conn:
        reviews = conn.execute("SELECT defect_id, reviewer, action, reason FROM reviews").fetchall()
        grades = conn.execute(
            "SELECT trigger, defects_counted FROM grades WHERE coil = 'C2002' ORDER BY id").fetchall()
    assert reviews == [(defect_id, USER, "reject", "reflection on the strip")]
    assert len(grades) == grades_before + 1
    assert grades[-1][0].startswith("review:") and grades[-1][1] == 5  # 6 detections, one rejected
    with open_db(database, readonly=True) as db:
        assert audit.verify(db).ok
