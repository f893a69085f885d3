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
  from an e-mail), again in the same tab, and by the sidebar link of a running session; a click
  on the defect map until the selected defect's crop and form show;
- with `--against DIR`, the same browser timings of another checkout's console (for example main
  in a second worktree) in turn with this one's, in the same run, and always the floor: a
  Streamlit app of one title timed the same way, what Streamlit itself costs on this machine.

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
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inspection.arguments import positive_int
from inspection.code_version import code_version
from inspection.config import REPO_DIR
from inspection.console import measure_browser as mb
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
    parser.add_argument("--against", type=_checkout, metavar="DIR",
                        help="another checkout of this repository (e.g. a worktree of main) whose console is timed "
                             "in turn with this one's in the same run")


def _checkout(value: str) -> Path:
    path = Path(value).resolve()
    if not (path / "app.py").is_file() or not (path / "inspection" / "console").is_dir():
        raise argparse.ArgumentTypeError(f"{value}: not a checkout of this repository (no app.py and "
                                         "inspection/console there)")
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    require_extra("console", "bench console", "streamlit")
    with tempfile.TemporaryDirectory(prefix="console-measure-") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        build(folder / "line.db", folder / "crops", [SampleCoil(COIL, 500.0, args.defects)], seed=11)
        figures: dict[str, Any] = {"defects": args.defects, "build_s": round(time.perf_counter() - t0, 2),
                                   "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
                                   "load_average_1min_at_start": round(os.getloadavg()[0], 2),
                                   "checkouts": {"this": f"{REPO_DIR} {code_version(REPO_DIR)}"},
                                   "apptest": _apptest(folder / "line.db", args.repeat)}
        if args.against is not None:
            figures["checkouts"]["against"] = f"{args.against} {code_version(args.against)}"
        if args.no_browser:
            figures["browser"] = "skipped (--no-browser)"
        elif not console_browser.CHROMIUM.exists():
            figures["browser"] = f"skipped ({console_browser.CHROMIUM} missing)"
        else:
            figures["browser"] = _browser(folder / "line.db", args.repeat, args.against)
        figures["load_average_1min_at_end"] = round(os.getloadavg()[0], 2)
    return figures


def _apptest(database: Path, repeat: int) -> dict[str, float]:
    """Server side, this checkout only (AppTest runs the script in this process)."""
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


FLOOR_TITLE = "Floor"
FLOOR_APP = f"import streamlit as st\n\nst.title({FLOOR_TITLE!r})\n"  # what Streamlit itself costs


@dataclass
class _Target:
    """One checkout's console (or the floor app) under measurement, and its samples."""

    url: str
    samples: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    page: Any = None  # the tab of a running session (reopen, in-app open, map clicks, gallery)

    @property
    def coil_url(self) -> str:
        return f"{self.url}/coil?coil={COIL}"


def _browser(database: Path, repeat: int, against: Path | None) -> dict[str, Any]:
    """Every timing in turn on this checkout's console and, with `against`, another checkout's (the
    order swapped every round), and a title-only app (the floor): the load of a shared machine
    falls on both alike, so their ratio means more than either figure."""
    from playwright.sync_api import sync_playwright

    floor_app = database.parent / "floor_app.py"
    floor_app.write_text(FLOOR_APP, encoding="utf-8")
    servers: list[Any] = []

    def serve(**where: Any) -> str:
        port = console_browser.free_port()
        servers.append(start_console(database, port, timeout_s=180, **where))
        return f"http://127.0.0.1:{port}"

    try:
        targets = {"this": _Target(serve())}
        if against is not None:
            targets["against"] = _Target(serve(checkout=against))
        floor = _Target(serve(app=floor_app))
        with sync_playwright() as pw:
            browser = console_browser.launch(pw)
            try:
                _measure(browser, targets, floor, repeat)
            finally:
                browser.close()
    finally:
        for server in servers:
            stop_console(server)
    figures: dict[str, Any] = {name: _summary(target) for name, target in targets.items()}
    floor_s = _median(floor.samples["floor"])
    for name in targets:
        figures[name]["fresh_url_over_floor"] = round(figures[name]["fresh_url_s"] / floor_s, 2)
    return {**figures, "floor_url_s": floor_s, "floor_url_all_s": [round(f, 3) for f in floor.samples["floor"]],
            "what": WHAT}


def _rounds(targets: dict[str, _Target], i: int) -> list[_Target]:
    ordered = list(targets.values())
    return ordered if i % 2 == 0 else ordered[::-1]


def _measure(browser: Any, targets: dict[str, _Target], floor: _Target, repeat: int) -> None:
    # Each server imports the console's modules at its first page view: not what is measured.
    for target in targets.values():
        mb.fresh(browser, lambda page, t=target: mb.open_light(page, t.url))
    mb.fresh(browser, lambda page: mb.open_title(page, floor.url, FLOOR_TITLE))
    for target in targets.values():
        target.page = mb.new_page(browser)
        target.samples["first"].append(mb.open_coil(target.page, target.coil_url))  # reads not cached yet
    for i in range(repeat):
        for target in _rounds(targets, i):
            target.samples["fresh"].append(mb.fresh(browser, lambda page, t=target: mb.open_coil(page, t.coil_url)))
        floor.samples["floor"].append(mb.fresh(browser, lambda page: mb.open_title(page, floor.url, FLOOR_TITLE)))
    for i in range(repeat):
        for target in _rounds(targets, i):
            target.samples["light"].append(mb.fresh(browser, lambda page, t=target: mb.open_light(page, t.url)))
    for i in range(repeat):
        for target in _rounds(targets, i):
            target.samples["again"].append(mb.open_coil(target.page, target.coil_url)["usable_s"])
    for i in range(repeat):  # what an inspector does: a click inside the running app
        for target in _rounds(targets, i):
            console_browser.nav(target.page, "Coils")
            target.samples["in_app"].append(mb.open_coil(target.page, None)["usable_s"])
    for i in range(repeat):  # a different marker each time, along the strip
        for target in _rounds(targets, i):
            target.samples["click"].append(mb.click_map(target.page, (i + 0.5) / repeat))
    for target in targets.values():
        target.samples["gallery"].append(mb.open_gallery(target.page))


def _summary(target: _Target) -> dict[str, Any]:
    s = target.samples
    first, fresh = s["first"][0], s["fresh"]
    return {"first_open_url_s": first["usable_s"], "first_open_phases_s": first,
            "fresh_url_s": _median([f["usable_s"] for f in fresh]),
            "fresh_url_phases_s": {k: _median([f[k] for f in fresh]) for k in fresh[0]},
            "fresh_url_all_s": [f["usable_s"] for f in fresh],
            "reopen_url_s": _median(s["again"]), "open_in_app_s": _median(s["in_app"]),
            "light_page_url_s": _median(s["light"]), "map_click_s": _median(s["click"]),
            "map_click_all_s": [round(c, 3) for c in s["click"]], "gallery_open_s": s["gallery"][0]}


WHAT = ("this: the checkout bench console runs from; against: the --against checkout, timed in turn in the same "
        "run (order swapped every round). Page times run until both maps are drawn, the crops on the page loaded "
        "and the script run is over. first_open_url_s: the coil's URL in a new browser context (empty browser "
        "cache, new session) while the server has not read this coil yet; fresh_url_s: the same with the "
        "server's reads cached (median); reopen_url_s: the URL again in the same tab; open_in_app_s: 'Coil "
        "detail' clicked in the sidebar of a running session; light_page_url_s: the Coils page of a one-coil "
        "database in a new context, the cost of loading the app itself; map_click_s: a click on a marker of the "
        "top map until the page shows that defect selected, its crop loaded and the run over; floor_url_s: a "
        "Streamlit app of one title, with this checkout's config, from its URL in a new context until the title "
        "shows and the run is over: what Streamlit itself costs on this machine. Phases: from navigation to the "
        "page's title, to both maps drawn, to the run's end with every crop shown loaded; gallery_open_s: a "
        "click on the closed crop gallery until its 24 crops are loaded")


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
