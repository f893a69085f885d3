"""`steel-inspect demo` as a newcomer runs it: the whole line plus the console, stopped by Ctrl-C."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

from inspection.registry import Registry
from tests.conftest import REPO, free_port
from tests.line_configs import write_line_config
from tests.tiny_models import add_tiny_model
from tests.waits import wait_for

NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False


def test_demo_runs_the_line_imports_mes_data_and_serves_the_console(tmp_path: Path, ipc_dir: Path) -> None:
    models = tmp_path / "models"
    add_tiny_model(Registry(models), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    config = write_line_config(tmp_path, ipc_dir=ipc_dir, coil_length_m=60.0)  # MES weights stay plausible
    port = free_port()  # the console's HTTP port: Streamlit cannot bind port 0 and report it
    env = {**os.environ, "PYTHONPATH": str(REPO), "STEEL_INSPECT_MODELS": str(models)}
    demo = subprocess.Popen(
        [sys.executable, "-m", "inspection", "demo", "--config", str(config), "--max-frames", "6", "--fast",
         "--port", str(port), "--mes-coils", "5"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(demo.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        def console_up() -> bool:
            if demo.poll() is not None:
                raise AssertionError(f"the demo exited with status {demo.returncode} before its console was up:\n"
                                     + "".join(lines)[-3000:])
            return any("the console stays up" in line for line in lines)

        wait_for(console_up, 120, "the demo to log 'the console stays up'")
        assert _healthy(port), "console not serving"
        demo.send_signal(signal.SIGINT)
        out = demo.stdout.read()
        demo.wait(60)
        reader.join(10)
        err = "".join(lines)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 0, err[-3000:]
    summary = json.loads(out)
    assert summary["frames_sent"] == summary["frames_inspected"] == 12
    con = sqlite3.connect(tmp_path / "line.db")
    mes_coils = [r[0] for r in con.execute("SELECT coil_id FROM platform_coils ORDER BY coil_id")]
    recorded = [r[0] for r in con.execute("SELECT id FROM coils")]
    con.close()
    assert len(mes_coils) == 5
    assert recorded and set(recorded) <= set(mes_coils)  # the demo's coils carry plant data
    assert (tmp_path / "ground_truth" / "top-1.jsonl").is_file()
    assert not _healthy(port), "console still up after Ctrl-C"
    # a first start on a database without users: the console user and its password, printed once
    shown = re.search(r"console sign-in: user 'inspector' \(quality engineer\), password (\S+)", err)
    assert shown, err[-3000:]
    login = tmp_path / "console-login"
    assert stat.S_IMODE(login.stat().st_mode) == 0o600
    assert f"password: {shown.group(1)}\n" in login.read_text()
    assert shown.group(1) not in (tmp_path / "console.log").read_text()
