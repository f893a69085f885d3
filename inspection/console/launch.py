"""Start the console as its own process (`streamlit run app.py`), for the demo, tests and measurements.

`start_console` returns the process (in its own process group, so `stop_console` ends Streamlit
and anything it spawned) once the health endpoint answers.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import IO

from inspection.config import REPO_DIR
from inspection.errors import SteelInspectError
from inspection.extras import require_extra

APP = REPO_DIR / "app.py"


class ConsoleStartError(SteelInspectError):
    """The console process exited or did not become healthy in time."""


def console_command(port: int, address: str = "127.0.0.1", app: Path = APP) -> list[str]:
    return [sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def is_loopback(address: str) -> bool:
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


def warn_if_exposed(address: str, logger: logging.Logger) -> None:
    """Streamlit serves plain HTTP: a console listening beyond loopback sends passwords in clear."""
    if not is_loopback(address):
        logger.warning("console: listening on %s, not loopback: sign-in passwords and sessions travel in "
                       "clear HTTP; keep 127.0.0.1 and put a TLS reverse proxy in front (README, Security)",
                       address)


def start_console(database: Path, port: int, *, env: dict[str, str] | None = None, log: IO[str] | None = None,
                  timeout_s: float = 60.0, address: str = "127.0.0.1", checkout: Path | None = None,
                  app: Path | None = None) -> subprocess.Popen:
    """Run the console on `database` at http://`address`:`port`; return once it is healthy.

    `checkout`: another working copy of this repository to run the console of (its `app.py`, its
    `inspection` package and its `.streamlit/config.toml`), as `bench console --against` does;
    `app`: another Streamlit script to run with this checkout's config (the bench's floor)."""
    # Say which extra is missing here: the child process would only exit with a status.
    require_extra("console", "the review console", "streamlit")
    warn_if_exposed(address, logging.getLogger(__name__))
    environment = {**os.environ, **(env or {}), "STEEL_INSPECT_DB": str(database)}
    root = checkout or REPO_DIR
    if checkout is not None:  # its own package first, not the one this process imported
        environment["PYTHONPATH"] = str(checkout)
    command = console_command(port, address, app or root / "app.py")
    process = subprocess.Popen(command, cwd=root, env=environment,
                               stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        wait_healthy(f"http://{address}:{port}", process, timeout_s)
    except BaseException:
        stop_console(process)
        raise
    return process


def wait_healthy(url: str, process: subprocess.Popen | None = None, timeout_s: float = 60.0) -> None:
    """Poll Streamlit's health endpoint until it answers 200."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ConsoleStartError(f"the console exited with status {process.returncode} before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ConsoleStartError(f"the console at {url} was not healthy within {timeout_s:.0f} s")


def stop_console(process: subprocess.Popen, timeout_s: float = 10.0) -> None:
    """SIGTERM the console's process group; SIGKILL it if it does not exit in time."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=timeout_s)
    except ProcessLookupError:
        pass
