"""The runtime (inspection/, cameras/) never imports torch: it must run on a line PC without it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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
