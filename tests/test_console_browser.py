"""End to end in a real headless Chromium: `streamlit run app.py` on a free port, driven by Playwright.

An inspector's shift, each step checked on what the page shows and then in the database: the
Line page picks up a new recorder status on its own (fragment refresh); the inspector signs in,
opens a coil, clicks a defect on the canvas map (its crop and review form appear beside the map),
rejects it and selects another with the keyboard; then confirms the top item of the review queue.
The review rows carry the signed-in user's name and the coil is regraded. A second test keeps a
signed-in session across a reload and a new tab (the HttpOnly cookie), and after "Sign out" a
reload shows the sign-in form again.
Screenshots of every page go to test-artifacts/screenshots/ (not committed; the README's come
from scripts/console_screenshots.py).
"""

from __future__ import annotations

import re
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from inspection.console import session_cookie
from inspection.console.launch import ConsoleStartError, start_console, stop_console
from inspection.passwords import ScryptParams
from inspection.records import audit, users
from inspection.records.db import open_db
from inspection.records.store import Store
from inspection.registry import Registry
from inspection.testing import console_browser as browser
from inspection.testing.sample_db import SampleCoil, build
from tests.conftest import ARTIFACTS, free_port
from tests.tiny_models import add_tiny_model

SHOTS = ARTIFACTS / "screenshots"
STARTUP_TIMEOUT_S = 45.0
STEP_TIMEOUT_MS = 60_000  # one script run on a loaded 2-core machine can take seconds
COILS = (SampleCoil("C2001", 120.0, 30, periodic=True), SampleCoil("C2002", 60.0, 6))
USER, PASSWORD = "eve", "eve-browser-password"  # an admin: every page has something to show
INSPECTOR, INSPECTOR_PASSWORD = "ines", "ines-browser-password"

playwright_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
pytestmark = pytest.mark.skipif(not browser.CHROMIUM.exists(),
                                reason=f"{browser.CHROMIUM} is missing (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    """(base URL, database) of a console started with `streamlit run app.py`, stopped afterwards."""
    folder = tmp_path_factory.mktemp("browser")
    database = folder / "line.db"
    build(database, folder / "crops", COILS, seed=5)
    fast = ScryptParams(n=2**12, r=8, p=1)
    with open_db(database) as db:
        users.add_user(db, USER, "admin", PASSWORD, actor="test", params=fast)
        users.add_user(db, INSPECTOR, "inspector", INSPECTOR_PASSWORD, actor="test", params=fast)
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


@pytest.fixture
def chromium() -> Iterator[object]:
    with playwright_api.sync_playwright() as pw:
        launched = browser.launch(pw)
        try:
            yield launched
        finally:
            launched.close()


def _page(context: object) -> object:
    page = context.new_page()
    page.set_default_timeout(STEP_TIMEOUT_MS)
    page.set_default_navigation_timeout(STEP_TIMEOUT_MS)
    return page


def _metric(page: object, label: str) -> str:
    return page.get_by_test_id("stMetric").filter(has_text=label).get_by_test_id("stMetricValue").inner_text()


def test_inspector_selects_a_defect_on_the_map_rejects_it_and_works_the_review_queue(
        console: tuple[str, Path], chromium: object) -> None:
    url, database = console
    grades_before = sqlite3.connect(database).execute(
        "SELECT count(*) FROM grades WHERE coil = 'C2002'").fetchone()[0]
    context = chromium.new_context(viewport={"width": 1500, "height": 3000})  # Streamlit scrolls inside
    page = _page(context)
    requested: list[str] = []  # a plant PC may have no internet: nothing may be fetched from it
    page.on("request", lambda request: requested.append(request.url))
    page.goto(url)
    page.get_by_role("heading", name="Line").wait_for()
    page.get_by_text("demo-hot-1 (hot)").wait_for()
    browser.settle(page)
    browser.screenshot(page, SHOTS / "1-line.png")
    with Store(database) as store:  # the recorder reports; the page must show it without a reload
        store.set_status({"recorder:demo-hot-1": {"pid": 4242, "frames_per_s": 12.5, "messages": 99}})
    page.get_by_text("Recorder pid 4242 reporting").wait_for(timeout=20_000)
    assert page.get_by_test_id("stMetric").filter(has_text="Frames/s").inner_text().endswith("12.5")
    browser.sign_in(page, USER, PASSWORD)
    assert page.get_by_text(f"Signed in as {USER} (admin)").is_visible()

    browser.nav(page, "Coils")
    page.get_by_test_id("stDataFrame").first.wait_for()
    page.get_by_test_id("stSelectbox").last.wait_for()  # widgets are lazy-loaded: wait before the shot
    browser.screenshot(page, SHOTS / "2-coils.png")
    browser.choose(page, "Open coil", "C2002")
    page.get_by_role("button", name="Open coil").click()
    page.get_by_role("heading", name="Coil detail").wait_for()
    browser.map_canvas(page).wait_for()
    browser.settle(page)
    assert page.get_by_text("Click a point on the map").is_visible()  # nothing selected yet
    browser.screenshot(page, SHOTS / "3-coil-detail.png")

    defect_id = browser.click_a_point(page)  # select on the map, as an inspector does
    crop = page.get_by_test_id("stImage").filter(has_text=browser.SELECTED_CAPTION)
    reject = page.get_by_role("button", name="Reject as false alarm")
    crop.wait_for()
    # beside the maps, not further down the page: the crop next to the top map, the form above the gallery
    map_box, gallery_box, crop_box, reject_box = browser.settled_boxes(
        page, page.locator(browser.MAP_FRAME), page.get_by_test_id("stExpander").filter(has_text="Crop gallery"),
        crop, reject)
    assert crop_box["x"] > map_box["x"] + map_box["width"] / 2
    assert map_box["y"] - 200 < crop_box["y"] < map_box["y"] + map_box["height"]
    assert reject_box["y"] + reject_box["height"] < gallery_box["y"]
    assert page.get_by_label("New class (for relabel)").is_visible()
    page.get_by_label("Reason (optional)", exact=True).fill("reflection on the strip")
    reject.click()
    done = f"Defect #{defect_id} of coil C2002 rejected as false alarm"
    page.get_by_text(done).wait_for()
    browser.settle(page)
    browser.screenshot(page, SHOTS / "4-coil-detail-after-reject.png")
    with sqlite3.connect(database) as conn:  # the keyboard way: Home / End on the focused map, then Enter
        top_ids = [r[0] for r in conn.execute("SELECT id FROM defects WHERE coil = 'C2002' AND surface = 'top' "
                                              "ORDER BY along_mm, across_mm").fetchall()]
    key, expected = ("Home", top_ids[0]) if top_ids[0] != defect_id else ("End", top_ids[-1])
    canvas = browser.map_canvas(page)
    canvas.focus()
    canvas.press(key)
    canvas.press("Enter")
    page.get_by_test_id("stMarkdownContainer").filter(has_text=re.compile(rf"#{expected} .*review:", re.S)).wait_for()
    browser.settle(page)

    browser.nav(page, "Review queue")
    reviewed_before = int(_metric(page, "Reviewed").split()[0])
    top = page.get_by_role("heading", level=3).filter(has_text=re.compile(r"^#\d+ ")).first
    queued_id = int(re.match(r"#(\d+) ", top.inner_text()).group(1))
    queued_coil = sqlite3.connect(database).execute("SELECT coil FROM defects WHERE id = ?", (queued_id,)).fetchone()[0]
    assert page.get_by_text(f"Coil {queued_coil} ·").first.is_visible()
    browser.screenshot(page, SHOTS / "5-review-queue.png")
    assert page.get_by_role("button", name=re.compile(r"^Confirm")).is_visible()
    page.locator("body").press("a")  # the queue's shortcut for Confirm, as an inspector works through it
    page.get_by_text(f"Defect #{queued_id} of coil {queued_coil} confirmed").wait_for()
    browser.settle(page)
    assert int(_metric(page, "Reviewed").split()[0]) == reviewed_before + 1
    # the next one: waits (up to 10 s) for the rerun that replaces the confirmed item; a loaded machine is slow
    expect(page.get_by_role("heading", level=3).filter(has_text=f"#{queued_id} ")).to_have_count(0, timeout=10_000)

    for title, name in (("Analytics", "6-analytics"), ("Models", "7-models")):
        browser.nav(page, title)
        page.wait_for_timeout(500)  # let charts finish drawing before the picture
        browser.screenshot(page, SHOTS / f"{name}.png")
    context.close()

    outside = sorted({u for u in requested if not u.startswith((url, "data:", "blob:"))})
    assert not outside, f"the console fetched from outside the machine: {outside[:5]}"
    with sqlite3.connect(database) as conn:
        reviews = conn.execute("SELECT defect_id, reviewer, action, reason FROM reviews WHERE reviewer = ? "
                               "ORDER BY id", (USER,)).fetchall()
        grades = conn.execute(
            "SELECT trigger, defects_counted FROM grades WHERE coil = 'C2002' ORDER BY id").fetchall()
    assert reviews == [(defect_id, USER, "reject", "reflection on the strip"), (queued_id, USER, "confirm", None)]
    assert len(grades) >= grades_before + 1
    assert grades[grades_before][0].startswith("review:") and grades[grades_before][1] == 5  # 6, one rejected
    with open_db(database, readonly=True) as db:
        assert audit.verify(db).ok


def test_a_session_survives_a_reload_and_a_new_tab_and_sign_out_ends_it(console: tuple[str, Path],
                                                                        chromium: object) -> None:
    url, database = console
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = _page(context)
    page.goto(f"{url}/coils")
    page.get_by_role("heading", name="Coils").wait_for()
    browser.sign_in(page, INSPECTOR, INSPECTOR_PASSWORD)
    cookie = _session_cookie(context, page)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] == -1  # ends with the browser
    assert session_cookie.COOKIE not in page.evaluate("document.cookie")  # no script in the page can read it
    with sqlite3.connect(database) as conn:
        stored = conn.execute("SELECT token_sha256 FROM console_sessions WHERE name = ?", (INSPECTOR,)).fetchall()
    assert len(stored) == 1 and cookie["value"] not in stored[0][0]  # only its hash is kept

    page.reload()
    page.get_by_role("heading", name="Coils").wait_for()
    page.get_by_text(f"Signed in as {INSPECTOR} (inspector)").wait_for()
    assert not page.get_by_role("button", name="Sign in").count()
    tab = _page(context)  # a new tab of the same browser
    tab.goto(f"{url}/review")
    tab.get_by_role("heading", name="Review queue").wait_for()
    tab.get_by_text(f"Signed in as {INSPECTOR} (inspector)").wait_for()

    page.get_by_role("button", name="Sign out").click()
    page.get_by_text("Signed out.").wait_for()
    _wait_until(lambda: not [c for c in context.cookies() if c["name"] == session_cookie.COOKIE], page)
    page.reload()
    page.get_by_role("button", name="Sign in").wait_for()
    assert not page.get_by_text("Signed in as").count()
    tab.get_by_role("button", name="Skip").click()  # the other tab's next run finds the session ended
    tab.get_by_role("button", name="Sign in").wait_for()
    with sqlite3.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM console_sessions WHERE name = ?", (INSPECTOR,)).fetchone() == (0,)
    context.close()


@pytest.mark.parametrize(("headers", "status"), [({}, 403), ({session_cookie.HEADER: "1"}, 410)])
def test_the_cookie_route_needs_its_header_and_a_live_claim_code(console: tuple[str, Path], headers: dict[str, str],
                                                                 status: int) -> None:
    url, _ = console
    request = urllib.request.Request(f"{url}/{session_cookie.CLAIM_PATH}", data=b"guessed-code", headers=headers,
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == status and "set-cookie" not in {k.lower() for k in refused.value.headers}


def _session_cookie(context: object, page: object) -> dict:
    _wait_until(lambda: [c for c in context.cookies() if c["name"] == session_cookie.COOKIE], page)
    return next(c for c in context.cookies() if c["name"] == session_cookie.COOKIE)


def _wait_until(condition: object, page: object, timeout_ms: int = STEP_TIMEOUT_MS) -> None:
    for _ in range(timeout_ms // 200):
        if condition():
            return
        page.wait_for_timeout(200)
    raise AssertionError("timed out waiting for the session cookie to change")
