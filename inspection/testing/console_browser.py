"""Driving the console in a real headless Chromium (Playwright), as an inspector does.

Shared by the browser test (`tests/test_console_browser.py`), the README screenshots
(`scripts/console_screenshots.py`) and `bench console`: where to find Chromium and how to launch
it without touching the network, how to wait for Streamlit to finish a run, and the inspector's
gestures (sign in, use the sidebar, pick in a select box, click a defect on the map).
"""

from __future__ import annotations

import io
import re
import socket
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking")
SELECTED_CAPTION = "box in the class colour; bar in millimetres"  # under the selected defect's crop


def free_port() -> int:
    """A TCP port free on loopback now, for the console's HTTP server (Streamlit cannot report the
    port it picked; never for ZeroMQ, see tests/conftest.py)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(playwright: Any) -> Any:
    """Debian's Chromium, headless, with no background requests of its own."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=list(FLAGS))


# JavaScript: the script run finished and lazily loaded widgets replaced their skeletons
RUN_OVER = ("!document.querySelector('[data-testid=stStatusWidget]') "
            "&& !document.querySelector('[data-testid=stSkeleton]')")
# The selected defect's facts beside the map: "#ID class ... review: ..."
SELECTED_FACTS = re.compile(r"#(\d+) .*review:", re.S)


def settle(page: Any, timeout_ms: int = 60_000) -> None:
    """Wait until the script run finished and lazily loaded widgets replaced their skeletons."""
    page.wait_for_load_state("networkidle")
    page.wait_for_function(f"() => {RUN_OVER}", timeout=timeout_ms)


def nav(page: Any, title: str) -> None:
    """Open a page from the sidebar and wait for its title."""
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title).wait_for()
    settle(page)


def choose(page: Any, label: str, text: str) -> None:
    """Pick the option containing `text` in the select box labelled `label`."""
    box = page.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True))
    box.click()
    page.keyboard.type(text)
    page.get_by_role("option").filter(has_text=text).first.click()
    settle(page)


def sign_in(page: Any, name: str, password: str) -> None:
    """Fill the sidebar's sign-in form and wait until the sidebar says who is signed in."""
    page.get_by_label("User name", exact=True).fill(name)
    page.get_by_label("Password", exact=True).fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_text("Signed in as").wait_for()
    settle(page)


MAP_FRAME = "iframe[title*='defect_map']"  # the coil page's canvas map (inspection/console/defect_map.py)


def map_canvas(page: Any) -> Any:
    """The coil page's defect map: the canvas inside the component's frame."""
    return page.frame_locator(MAP_FRAME).locator("canvas")


def settled_boxes(page: Any, *locators: Any, timeout_s: float = 20.0) -> list[dict[str, float]]:
    """The bounding boxes of `locators`, read together once two reads 250 ms apart agree: a crop's
    image that loads after its column was drawn moves everything below it (boxes read one by one
    around that moment once put the review form below the gallery that follows it)."""
    import time

    deadline = time.monotonic() + timeout_s
    boxes = [loc.bounding_box() for loc in locators]
    while True:
        page.wait_for_timeout(250)
        again = [loc.bounding_box() for loc in locators]
        if again == boxes and None not in again:
            return again
        if time.monotonic() > deadline:
            raise AssertionError(f"the page's layout kept moving for {timeout_s:.0f} s: {boxes} -> {again}")
        boxes = again


def click_a_point(page: Any) -> int:
    """Click the centre of the largest marker on the top-surface map; return the defect id the page
    then shows as selected (its crop's heading "#ID class ...")."""
    import cv2
    import numpy as np

    plot = map_canvas(page)
    plot.scroll_into_view_if_needed()
    coloured = coloured_pixels(plot)
    coloured[coloured.shape[0] // 2:] = 0  # the top surface's panel is the upper half
    count, _, stats, centres = cv2.connectedComponentsWithStats(coloured)
    if count <= 1:
        raise AssertionError("no coloured marker found on the map")
    x, y = centres[1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))]
    box = plot.bounding_box()
    plot.click(position={"x": x * box["width"] / coloured.shape[1], "y": y * box["height"] / coloured.shape[0]})
    return selected_id(page)


def coloured_pixels(element: Any) -> Any:
    """uint8 [height, width] of a screenshot of `element`: 1 where a pixel is coloured (the map's
    markers), 0 where it is grey (axes, grid, text, background)."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(Image.open(io.BytesIO(element.screenshot())).convert("RGB")).astype(int)
    return ((pixels.max(axis=2) - pixels.min(axis=2)) > 40).astype(np.uint8)


def selected_id(page: Any) -> int:
    """Wait for the selected defect's facts beside the map ("#ID class ... review: ..."); its id."""
    selected = page.get_by_test_id("stMarkdownContainer").filter(has_text=SELECTED_FACTS)
    selected.first.wait_for()
    return int(SELECTED_FACTS.search(selected.first.inner_text()).group(1))


def screenshot(page: Any, path: Path, *, full_page: bool = True) -> Path:
    """A PNG of the page (Streamlit scrolls inside its own container: size the viewport instead)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=full_page)
    return path
