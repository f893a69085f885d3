"""The runtime (inspection/, cameras/) never imports torch: it must run on a line PC without it.

The line's processes go further: they need none of the optional extras, so they must not load
torch (`train`) nor streamlit, matplotlib or fpdf2 (`console`) either.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

# The modules the line's processes run: camera, worker, recorder, PLC output, pipeline, and the
# commands that start them. Update this list when a process module moves.
LINE_PROCESS_MODULES = (
    "cameras",
    "cameras.pump",
    "cameras.simulator",
    "cameras.replay",
    "inspection.transport",
    "inspection.results",
    "inspection.worker",
    "inspection.records.recorder",
    "inspection.plc",
    "inspection.line.camera",
    "inspection.line.worker",
    "inspection.line.recorder",
    "inspection.line.pipeline",
    "inspection.commands.camera",
    "inspection.commands.recorder",
    "inspection.commands.run",
)
# Top-level packages of the `train` and `console` extras.
NOT_IN_LINE_PROCESSES = ("torch", "torchvision", "streamlit", "matplotlib", "fpdf")

REPO = Path(__file__).resolve().parents[1]

# Import every runtime module (and build the whole CLI parser, which imports every command
# module) in a fresh interpreter, then check torch never got loaded as a side effect.
PROBE = """
import importlib, pkgutil, sys
import inspection, cameras
failed = []
for pkg in (inspection, cameras):
    for info in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if info.name.endswith("__main__"):
            continue
        try:
            importlib.import_module(info.name)
        except ImportError as exc:  # an optional extra (pypylon, harvesters) may be absent
            if "torch" in str(exc):
                raise
            failed.append(f"{info.name}: {exc}")
from inspection.cli import build_parser
build_parser()
loaded = sorted(m for m in sys.modules if m == "torch" or m.startswith("torch.") or m == "torchvision")
print("LOADED", loaded)
print("SKIPPED", failed)
sys.exit(1 if loaded else 0)
"""


def test_runtime_never_imports_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout


# One module per fresh interpreter: a package another module happened to load first cannot hide
# which module pulled it in.
LINE_PROBE = """
import importlib, json, sys
importlib.import_module(sys.argv[1])
heavy = set(json.loads(sys.argv[2]))
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & heavy)))
"""


@pytest.mark.parametrize("module", LINE_PROCESS_MODULES)
def test_line_processes_load_no_optional_extra(module: str) -> None:
    result = subprocess.run(
        [sys.executable, "-c", LINE_PROBE, module, json.dumps(NOT_IN_LINE_PROCESSES)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    loaded = json.loads(result.stdout.splitlines()[-1])
    assert loaded == [], f"importing {module} loads {', '.join(loaded)}"
