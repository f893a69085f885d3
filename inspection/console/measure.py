"""How fast is the coil detail page for a big coil? Prints JSON (`python -m inspection.console.measure`).

Builds a line database through the records API with one coil of `--defects` defects (crops
included), then measures:

- server side, through AppTest: the coil detail script with an empty cache (modules already
  imported), the same page again (cached reads), a gallery page change, and a reject (write
  through the Store, which regrades the coil, plus the rerun that shows it);
- in a real headless Chromium against `streamlit run app.py` (unless `--no-browser`): from
  navigation to the coil page until both defect maps are drawn, the page's crops are loaded
  and the script run is over -- what an inspector waits for -- with the time to each of these
  phases; the coil's URL in a new browser context (empty cache, a new session, as a link opened
  from an e-mail), again in the same tab, and by the sidebar link of a running session.

Same interface as the `inspection.benchmarks` modules (HELP, add_arguments, run).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from inspection.arguments import positive_int
from inspection.config import REPO_DIR
from inspection.console.launch import start_console, stop_console
from inspection.extras import require_extra
from inspection.testing import console_browser
from inspection.testing.sample_db import SampleCoil, build

HELP = "time the console's coil detail page for a coil with many defects (AppTest and headless Chromium)"
COIL = "BIG-1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--defects", type=positive_int, default=5000,
                        help="defects on the measured coil (default 5000)")
    parser.add_argument("--repeat", type=positive_int, default=3, help="repetitions of each timing (median reported)")
    parser.add_argument("--no-browser", action="store_true", help="skip the headless Chromium timing")


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_extra("console", "bench console", "streamlit")
    with tempfile.TemporaryDirectory(prefix="console-measure-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build(folder / "line.db", folder / "crops", [SampleCoil(COIL, 500.0, args.defects)], seed=11)
        figures: dict[str, Any] = {"defects": args.defects, "build_s": round(time.perf_counter() - t0, 2),
                                   "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                                   "load_average_1min_at_start": round(os.getloadavg()[0], 2),
                                   "apptest": _apptest(folder / "line.db", args.repeat)}
        if args.no_browser:
            figures["browser"] = "skipped (--no-browser)"
        elif not console_browser.CHROMIUM.exists():
            figures["browser"] = f"skipped ({console_browser.CHROMIUM} missing)"
        else:
            figures["browser"] = _browser(folder / "line.db", args.repeat)
        figures["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return figures


def _apptest(database: Path, repeat: int) -> dict[str, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from inspection.records import queries, users
    from inspection.records.db import open_db

    os.environ["STEEL_INSPECT_DB"] = str(database)
    password = secrets.token_urlsafe(16)
    db = open_db(database)
    try:
        users.add_user(db, "measure", "quality_engineer", password, actor="measure")
    finally:
        db.close()
    at = AppTest.from_file(str(REPO_DIR / "app.py"), default_timeout=120)
    at.run()
    at.sidebar.text_input(key="sign_in_name").input("measure")
    at.sidebar.text_input(key="sign_in_password").input(password)
    at.sidebar.button(key="sign_in_submit").click().run()  # reviews are recorded with the signed-in user
    if not any(c.value.startswith("Signed in as") for c in at.sidebar.caption):
        raise RuntimeError("the measuring user could not sign in: the reject timings would time a refusal")
    at.session_state["selected_coil"] = COIL
    at.session_state["gallery_open"] = True  # the gallery is built only once opened: time its page change
    at.switch_page("inspection/console/pages/coil_detail.py").run()  # imports everything once
    cold, warm, gallery, review = [], [], [], []
    for i in range(repeat):
        st.cache_data.clear()
        cold.append(_timed(at.run))
        warm.append(_timed(at.run))
        gallery.append(_timed(at.number_input(key="gallery_page").set_value(i + 2).run))
    with open_db(database, readonly=True) as db:
        defect_ids = queries.first_defect_ids(db, COIL, repeat)
    for defect_id in defect_ids:
        at.text_input(key="defect_id_box").input(str(defect_id)).run()
        review.append(_timed(at.button(key="detail_review_reject").click().run))
    if at.exception or at.error:
        raise RuntimeError(f"the page raised or refused: {at.exception or [e.value for e in at.error]}")
    return {"cold_cache_s": _median(cold), "warm_cache_s": _median(warm), "gallery_page_s": _median(gallery),
            "reject_and_regrade_s": _median(review)}


def _browser(database: Path, repeat: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    port = console_browser.free_port()
    server = start_console(database, port, timeout_s=180)
    url = f"http://127.0.0.1:{port}"
    coil_url = f"{url}/coil?coil={COIL}"
    try:
        with sync_playwright() as pw:
            browser = console_browser.launch(pw)
            try:
                # The server imports the console's modules at its first page view: not what is measured.
                _fresh(browser, lambda page: _open_light(page, url))
                first_page = _new_page(browser)
                first = _open_coil(first_page, coil_url)  # the coil's reads not cached yet on the server
                fresh = [_fresh(browser, lambda page: _open_coil(page, coil_url)) for _ in range(repeat)]
                light = [_fresh(browser, lambda page: _open_light(page, url)) for _ in range(repeat)]
                again = [_open_coil(first_page, coil_url)["usable_s"] for _ in range(repeat)]
                in_app = []
                for _ in range(repeat):  # what an inspector does: a click inside the running app
                    console_browser.nav(first_page, "Coils")
                    in_app.append(_open_coil(first_page, None)["usable_s"])
                gallery = _open_gallery(first_page)
            finally:
                browser.close()
    finally:
        stop_console(server)
    return {"first_open_url_s": first["usable_s"], "first_open_phases_s": first,
            "fresh_url_s": _median([f["usable_s"] for f in fresh]),
            "fresh_url_phases_s": {k: _median([f[k] for f in fresh]) for k in fresh[0]},
            "reopen_url_s": _median(again), "open_in_app_s": _median(in_app), "light_page_url_s": _median(light),
            "gallery_open_s": gallery,
            "what": "until both maps are drawn, the crops on the page loaded and the script run is over. "
                    "first_open_url_s: the coil's URL in a new browser context (empty browser cache, new session) "
                    "while the server has not read this coil yet; fresh_url_s: the same with the server's reads "
                    "cached (median); reopen_url_s: the URL again in the same tab; open_in_app_s: 'Coil detail' "
                    "clicked in the sidebar of a running session; light_page_url_s: the Coils page of a one-coil "
                    "database in a new context, the cost of loading the app itself. Phases: from navigation to "
                    "the page's title, to both maps drawn, to the run's end with every crop shown loaded; "
                    "gallery_open_s: a click on the closed crop gallery until its 24 crops are loaded"}


def _new_page(browser: Any) -> Any:
    page = browser.new_context(viewport={"width": 1500, "height": 1200}).new_page()
    page.set_default_timeout(120_000)
    page.set_default_navigation_timeout(120_000)
    return page


def _fresh(browser: Any, visit: Any) -> Any:
    """`visit(page)` in a new browser context: empty cache, no cookies, a new Streamlit session."""
    page = _new_page(browser)
    try:
        return visit(page)
    finally:
        page.context.close()


def _open_light(page: Any, url: str) -> float:
    """The cost of loading the app itself from a URL: the Coils page (one coil, no maps)."""
    t0 = time.perf_counter()
    page.goto(f"{url}/coils")
    page.get_by_role("heading", name="Coils").wait_for()
    page.get_by_test_id("stDataFrame").first.wait_for()
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", polling=50)
    return time.perf_counter() - t0


_RUN_OVER = ("!document.querySelector('[data-testid=stStatusWidget]') "
             "&& !document.querySelector('[data-testid=stSkeleton]')")
_IMAGES_LOADED = "[...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete)"


def _open_gallery(page: Any) -> float | None:
    """Seconds from a click on the closed crop gallery until its crops are loaded (None when it is
    open from the start, as before the gallery was built only on demand)."""
    images = page.locator("[data-testid=stImage] img").count()
    if images >= 24:
        return None
    t0 = time.perf_counter()
    page.get_by_test_id("stExpander").filter(has_text="Crop gallery").locator("summary").click()
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=stImage] img').length >= {images + 24}"
                           f" && {_IMAGES_LOADED} && {_RUN_OVER}", polling=50)
    return round(time.perf_counter() - t0, 3)


def _open_coil(page: Any, url: str | None) -> dict[str, float]:
    """Open the coil page (from `url`, or by the sidebar link); seconds until each phase, the last
    (``usable_s``) when both maps are drawn, the page's crops loaded and the run is over."""
    t0 = time.perf_counter()
    if url is None:
        page.get_by_test_id("stSidebarNav").get_by_text("Coil detail", exact=True).click()
    else:
        page.goto(url)
    phases: dict[str, float] = {}
    page.get_by_role("heading", name="Coil detail").wait_for()
    phases["title_s"] = time.perf_counter() - t0
    page.wait_for_function("() => document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, "
                           "[data-testid=stVegaLiteChart] svg.marks').length >= 2", polling=50)
    phases["maps_s"] = time.perf_counter() - t0
    page.wait_for_function(f"() => {_RUN_OVER}", polling=50)
    page.wait_for_function(f"() => {_IMAGES_LOADED}", polling=50)
    phases["usable_s"] = time.perf_counter() - t0
    return {k: round(v, 3) for k, v in phases.items()}


def _timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _median(values: list[float]) -> float:
    return round(statistics.median(values), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=HELP)
    parser.add_argument("--json", type=Path, metavar="OUT", help="also write the figures to this file")
    add_arguments(parser)
    args = parser.parse_args()
    text = json.dumps(run(args), indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
