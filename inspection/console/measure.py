"""How fast is the coil detail page for a big coil? Prints JSON (`python -m inspection.console.measure`).

Builds a line database through the records API with one coil of `--defects` defects (crops
included), then measures:

- server side, through AppTest: the coil detail script with an empty cache (modules already
  imported), the same page again (cached reads), a gallery page change, and a reject (write
  through the Store, which regrades the coil, plus the rerun that shows it);
- in a real headless Chromium against `streamlit run app.py` (unless `--no-browser`): from
  navigation to the coil page until both defect maps are drawn, the gallery images are loaded
  and the script run is over -- what an inspector waits for.

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
from inspection.testing.sample_db import SampleCoil, build

HELP = "time the console's coil detail page for a coil with many defects (AppTest and headless Chromium)"
CHROMIUM = Path("/usr/bin/chromium")
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
        elif not CHROMIUM.exists():
            figures["browser"] = f"skipped ({CHROMIUM} missing)"
        else:
            figures["browser"] = _browser(folder / "line.db", args.repeat)
        figures["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return figures


def _apptest(database: Path, repeat: int) -> dict[str, float]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    from inspection.records import users
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
    at.switch_page("inspection/console/pages/coil_detail.py").run()  # imports everything once
    cold, warm, gallery, review = [], [], [], []
    for i in range(repeat):
        st.cache_data.clear()
        cold.append(_timed(at.run))
        warm.append(_timed(at.run))
        gallery.append(_timed(at.number_input(key="gallery_page").set_value(i + 2).run))
    defect_ids = [o for o in at.selectbox(key="defect_id_box").options][:repeat]
    for label in defect_ids:
        at.selectbox(key="defect_id_box").select(int(label.split()[0].lstrip("#"))).run()
        review.append(_timed(at.button(key="detail_review_reject").click().run))
    if at.exception or at.error:
        raise RuntimeError(f"the page raised or refused: {at.exception or [e.value for e in at.error]}")
    return {"cold_cache_s": _median(cold), "warm_cache_s": _median(warm), "gallery_page_s": _median(gallery),
            "reject_and_regrade_s": _median(review)}


def _browser(database: Path, repeat: int) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    port = _free_port()
    server = start_console(database, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1200})
                page.goto(url)
                page.get_by_role("heading", name="Line").wait_for(timeout=60_000)  # server-side imports
                baseline = [_timed(lambda: _open_models(page, url)) for _ in range(repeat)]
                first = _timed(lambda: _open_coil(page, f"{url}/coil?coil={COIL}"))
                again = [_timed(lambda: _open_coil(page, f"{url}/coil?coil={COIL}")) for _ in range(repeat)]
                in_app = []
                for _ in range(repeat):  # what an inspector does: a click inside the running app
                    _click_nav(page, "Models")
                    page.get_by_role("heading", name="Versions").wait_for(timeout=60_000)
                    in_app.append(_timed(lambda: _open_coil(page, None)))
            finally:
                browser.close()
    finally:
        stop_console(server)
    return {"first_open_url_s": round(first, 3), "reopen_url_s": _median(again), "open_in_app_s": _median(in_app),
            "models_page_url_s": _median(baseline),
            "what": "until both maps are drawn, 24 gallery crops loaded and the script run is over; *_url_s "
                    "load the whole app from the URL (new session), open_in_app_s clicks 'Coil detail' in "
                    "the sidebar of a running session (cached reads); models_page_url_s is the same URL load "
                    "of a light page, for comparison"}


def _open_models(page: Any, url: str) -> None:
    """The cost of loading the app itself from a URL: a light page."""
    page.goto(f"{url}/models")
    page.get_by_role("heading", name="Promotions and rollbacks").wait_for(timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000)


def _click_nav(page: Any, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()


def _open_coil(page: Any, url: str | None) -> None:
    """Open the coil page (from `url`, or by the sidebar link) and wait until it is usable."""
    if url is None:
        _click_nav(page, "Coil detail")
    else:
        page.goto(url)
    page.get_by_role("heading", name="Coil detail").wait_for(timeout=120_000)
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, "
        "[data-testid=stVegaLiteChart] svg.marks').length >= 2"
        " && [...document.querySelectorAll('[data-testid=stImage] img')].filter(i => i.complete).length >= 24"
        " && !document.querySelector('[data-testid=stStatusWidget]')", timeout=120_000, polling=50)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


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
