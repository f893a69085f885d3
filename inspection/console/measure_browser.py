"""What `bench console` does in the browser: open a page and wait until it is usable, click the
defect map and wait for the selected defect. Works on this checkout's canvas map and on the
Vega-Lite maps of an older checkout (`--against`), so both are timed by the same code.
"""

from __future__ import annotations

import time
from typing import Any

from inspection.testing.console_browser import MAP_FRAME, RUN_OVER, SELECTED_FACTS, coloured_pixels, map_canvas

IMAGES_LOADED = "[...document.querySelectorAll('[data-testid=stImage] img')].every(i => i.complete)"
# Both maps drawn: the canvas component says so on its canvas; Vega-Lite draws one canvas per map.
MAPS_DRAWN = (f"(() => {{ const f = document.querySelector(\"{MAP_FRAME}\"); "
              "const c = f && f.contentDocument && f.contentDocument.querySelector('canvas[data-drawn]'); "
              "return Boolean(c) || document.querySelectorAll('[data-testid=stVegaLiteChart] canvas, "
              "[data-testid=stVegaLiteChart] svg.marks').length >= 2; })()")


def new_page(browser: Any) -> Any:
    page = browser.new_context(viewport={"width": 1500, "height": 1200}).new_page()
    page.set_default_timeout(120_000)
    page.set_default_navigation_timeout(120_000)
    return page


def fresh(browser: Any, visit: Any) -> Any:
    """`visit(page)` in a new browser context: empty cache, no cookies, a new Streamlit session."""
    page = new_page(browser)
    try:
        return visit(page)
    finally:
        page.context.close()


def open_title(page: Any, url: str, title: str) -> float:
    """Seconds from navigation until the heading `title` shows and the script run is over: the
    floor (a title-only app) is timed with this, so is nothing else."""
    t0 = time.perf_counter()
    page.goto(url)
    page.get_by_role("heading", name=title).wait_for()
    page.wait_for_function(f"() => {RUN_OVER}", polling=50)
    return time.perf_counter() - t0


def open_light(page: Any, url: str) -> float:
    """The cost of loading the app itself from a URL: the Coils page (one coil, no maps)."""
    t0 = time.perf_counter()
    page.goto(f"{url}/coils")
    page.get_by_role("heading", name="Coils").wait_for()
    page.get_by_test_id("stDataFrame").first.wait_for()
    page.wait_for_function(f"() => {RUN_OVER}", polling=50)
    return time.perf_counter() - t0


def open_coil(page: Any, url: str | None) -> dict[str, float]:
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
    page.wait_for_function(f"() => {MAPS_DRAWN}", polling=50)
    phases["maps_s"] = time.perf_counter() - t0
    page.wait_for_function(f"() => {RUN_OVER}", polling=50)
    page.wait_for_function(f"() => {IMAGES_LOADED}", polling=50)
    phases["usable_s"] = time.perf_counter() - t0
    return {k: round(v, 3) for k, v in phases.items()}


def open_gallery(page: Any) -> float | None:
    """Seconds from a click on the closed crop gallery until its crops are loaded (None when it is
    open from the start, as before the gallery was built only on demand)."""
    images = page.locator("[data-testid=stImage] img").count()
    if images >= 24:
        return None
    t0 = time.perf_counter()
    page.get_by_test_id("stExpander").filter(has_text="Crop gallery").locator("summary").click()
    page.wait_for_function(f"() => document.querySelectorAll('[data-testid=stImage] img').length >= {images + 24}"
                           f" && {IMAGES_LOADED} && {RUN_OVER}", polling=50)
    return round(time.perf_counter() - t0, 3)


def click_map(page: Any, spot: float) -> float:
    """Click a marker of the top map, about `spot` (0..1) of the way along; seconds until the page
    shows another defect as selected, its crop loaded and the run over (a map click in use)."""
    plot = _map_plot(page)
    plot.scroll_into_view_if_needed()
    x, y = _marker_pixel(plot, spot)
    before = _selected(page)
    t0 = time.perf_counter()
    plot.click(position={"x": x, "y": y})
    page.wait_for_function(
        "(before) => [...document.querySelectorAll('[data-testid=stMarkdownContainer]')].some(e => "
        "{ const m = e.innerText.match(/#(\\d+) [\\s\\S]*review:/); return m && m[1] !== before; })",
        arg=str(before), polling=20)
    page.wait_for_function(f"() => {RUN_OVER} && {IMAGES_LOADED}", polling=20)
    return time.perf_counter() - t0


def _map_plot(page: Any) -> Any:
    if page.locator(MAP_FRAME).count():
        return map_canvas(page)
    return page.get_by_test_id("stVegaLiteChart").first.locator("canvas, svg.marks").first


def _selected(page: Any) -> int | None:
    shown = page.get_by_test_id("stMarkdownContainer").filter(has_text=SELECTED_FACTS)
    if not shown.count():
        return None
    found = SELECTED_FACTS.search(shown.first.inner_text())
    return int(found.group(1)) if found else None


def _marker_pixel(plot: Any, spot: float) -> tuple[float, float]:
    """A point (css px in `plot`) well inside a coloured marker of the top surface's plot, the first
    such from `spot` of the plot's width: on a coil of 5,000 defects markers overlap, so a blob's
    centre may be a gap; a pixel whose neighbourhood is all colour is on a marker."""
    import cv2
    import numpy as np

    coloured = coloured_pixels(plot)
    if plot.evaluate("e => e.tagName") == "CANVAS" and plot.evaluate("e => 'drawn' in e.dataset"):
        coloured[coloured.shape[0] // 2:] = 0  # the component draws both surfaces: the top is the upper half
    else:
        coloured[:, int(coloured.shape[1] * 0.75):] = 0  # Vega-Lite's legend sits on the right
    inside = cv2.erode(coloured, np.ones((5, 5), np.uint8))
    ys, xs = np.nonzero(inside)
    if not len(xs):
        raise RuntimeError("no marker found on the map")
    start = spot * coloured.shape[1]
    i = int(np.argmin(np.where(xs >= start, xs - start, np.inf)))
    box = plot.bounding_box()
    return float(xs[i]) * box["width"] / coloured.shape[1], float(ys[i]) * box["height"] / coloured.shape[0]
