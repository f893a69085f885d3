"""Screenshots of the review console for the README, from a line run on real dataset defects.

    .venv/bin/python scripts/console_screenshots.py [--frames N] [--seed S] [--procedural] --out DIR [--keep DIR]

1. Runs the demo line without its console (`steel-inspect demo --no-console --max-frames N --fast`:
   simulated cameras pasting NEU-DET test-split defects, the active hot model, the recorder, the
   MES import) on a copy of the demo config whose database, crops, keys and ipc sockets live in a
   temporary folder: no fixed port, nothing written into the checkout. Coils are 40 m instead of
   120 m, so a short run has several coils of the demo's mix.
2. Adds an admin with a random password (never shown) and starts the console on a free port.
3. In headless Chromium (`inspection.testing.console_browser`): signs in; the Line page; the coil
   with the most defects, one of them selected on the map; the review queue; the Models page.
4. Writes each as a 256-colour PNG to `--out` (any folder: their crops are dataset pixels,
   so they are not committed).

With `--procedural` the simulator pastes its own drawn stand-ins (scratches, spots, scale patches:
`cameras.defects.ProceduralDefects`) instead of dataset images, so the pictures hold no dataset
pixels and can be committed: the README's pictures are made that way, into
inspection/console/screenshots. The hot model was not trained on such stand-ins, so what it finds
in them, and how it names them, is not a picture of its accuracy.

Needs the `console` and `dev` extras, /usr/bin/chromium and the datasets folder.
"""

from __future__ import annotations

import argparse
import secrets
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

from PIL import Image

from inspection.config import DEMO_CONFIG, REPO_DIR, load_config
from inspection.console.launch import start_console, stop_console
from inspection.records import users
from inspection.records.db import open_db
from inspection.testing import console_browser as browser

USER = "shots"
COIL_LENGTH_M = 40.0
WIDTH = 1440


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=160, help="frames per camera (default 160: 4 coils)")
    parser.add_argument("--seed", type=int, help="simulator seed (default: the demo config's)")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--procedural", action="store_true",
                        help="drawn stand-in defects instead of dataset images (pictures that may be committed)")
    parser.add_argument("--keep", type=Path, help="also keep the line's folder (database, crops, logs) here")
    args = parser.parse_args(argv)
    if not browser.CHROMIUM.exists():
        print(f"console_screenshots: {browser.CHROMIUM} is missing (apt-get install -y chromium)", file=sys.stderr)
        return 2
    # A short folder: ipc:// socket paths must stay under about 100 characters.
    folder = Path(tempfile.mkdtemp(prefix="shots-"))
    try:
        config = _line_config(folder, procedural=args.procedural)
        _run_line(config, args.frames, args.seed, folder / "line.log")
        password = secrets.token_urlsafe(18)
        with open_db(folder / "line.db") as db:
            users.add_user(db, USER, "admin", password, actor="console_screenshots")
        written = _shoot(folder, password, args.out)
        for path in written:
            print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
        return 0
    finally:
        try:
            if args.keep:  # the line's sockets are not files to copy
                shutil.copytree(folder, args.keep, dirs_exist_ok=True, ignore=shutil.ignore_patterns("*.sock"))
        finally:
            shutil.rmtree(folder, ignore_errors=True)


def _line_config(folder: Path, procedural: bool = False) -> Path:
    """The demo config with every file and socket in `folder` and shorter coils; with `procedural`,
    a datasets folder that does not exist, so the simulator draws its own defects."""
    demo = load_config(DEMO_CONFIG)
    text = DEMO_CONFIG.read_text()
    links = {c.id: c.endpoint for c in demo.cameras}
    links.update(results=demo.endpoints.results, plc=demo.endpoints.plc)
    for name, address in links.items():
        text = text.replace(f'"{address}"', f'"ipc://{folder / name}.sock"')
    text = text.replace('"var/demo/line.db"', f'"{folder / "line.db"}"')
    text = text.replace('"var/demo/crops"', f'"{folder / "crops"}"')
    text = text.replace("coil_length_m = 120.0", f"coil_length_m = {COIL_LENGTH_M}")
    if procedural:
        text = text.replace('datasets = ""', f'datasets = "{folder / "no-datasets"}"')
    path = folder / "line.toml"
    path.write_text(text)
    written = load_config(path).simulator
    if written.coil_length_m != COIL_LENGTH_M:
        raise SystemExit("console_screenshots: the demo config's coil length line changed: update this script")
    if procedural and written.datasets != folder / "no-datasets":
        raise SystemExit("console_screenshots: the demo config's datasets line changed: update this script")
    return path


def _run_line(config: Path, frames: int, seed: int | None, log: Path) -> None:
    command = [sys.executable, "-m", "inspection", "demo", "--config", str(config), "--no-console",
               "--max-frames", str(frames), "--fast", "--mes-coils", "20"]
    if seed is not None:
        command += ["--seed", str(seed)]
    with log.open("w") as out:
        done = subprocess.run(command, cwd=REPO_DIR, stdout=out, stderr=subprocess.STDOUT, timeout=3600)
    if done.returncode != 0:
        raise SystemExit(f"console_screenshots: the line run failed ({done.returncode}):\n{log.read_text()[-3000:]}")


def _shoot(folder: Path, password: str, out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    with sqlite3.connect(folder / "line.db") as conn:
        coil = conn.execute("SELECT coil FROM defects GROUP BY coil ORDER BY count(*) DESC LIMIT 1").fetchone()[0]
    port = browser.free_port()
    with (folder / "console.log").open("w") as log:
        server = start_console(folder / "line.db", port, env={"STEEL_INSPECT_CROPS": str(folder / "crops")},
                               log=log, timeout_s=180)
    url = f"http://127.0.0.1:{port}"
    written = []
    try:
        with sync_playwright() as pw:
            chromium = browser.launch(pw)
            try:
                page = chromium.new_context(viewport={"width": WIDTH, "height": 1000}).new_page()
                page.set_default_timeout(120_000)
                page.set_default_navigation_timeout(120_000)
                page.goto(url)
                page.get_by_role("heading", name="Line").wait_for()
                browser.sign_in(page, USER, password)
                page.wait_for_timeout(1500)  # the live strip's crops
                written.append(_save(page, out / "console-line.png", 1100))

                page.goto(f"{url}/coil?coil={coil}")
                page.get_by_role("heading", name="Coil detail").wait_for()
                browser.map_canvas(page).wait_for()
                browser.settle(page)
                browser.click_a_point(page)
                page.get_by_test_id("stImage").filter(has_text=browser.SELECTED_CAPTION).wait_for()
                browser.settle(page)
                written.append(_save(page, out / "console-coil-detail.png", 2450))

                browser.nav(page, "Review queue")
                written.append(_save(page, out / "console-review-queue.png", 950))
                browser.nav(page, "Models")
                written.append(_save(page, out / "console-models.png", 1100))
            finally:
                chromium.close()
    finally:
        stop_console(server)
    return written


def _save(page: object, path: Path, height: int) -> Path:
    """A screenshot `height` px tall, reduced to 256 colours (about a third of the bytes; the console
    has few colours, crops are grey)."""
    page.set_viewport_size({"width": WIDTH, "height": height})
    page.mouse.move(5, 5)  # no tooltip from the last click in the picture
    # Streamlit scrolls inside its own containers: back to the top of each, so the page starts at its title.
    page.evaluate("() => document.querySelectorAll('*').forEach(e => { if (e.scrollTop > 0) e.scrollTop = 0; })")
    page.wait_for_timeout(800)  # charts redraw at the new size
    browser.settle(page)
    page.wait_for_function("() => [...document.querySelectorAll('img')].every(i => i.complete && i.naturalWidth > 0)")
    raw = path.with_suffix(".raw.png")
    browser.screenshot(page, raw, full_page=False)
    with Image.open(raw) as image:
        image.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
            path, optimize=True)
    raw.unlink()
    return path


if __name__ == "__main__":
    sys.exit(main())
