"""Which code a figure or a model came from: the checkout's commit, ``-dirty`` when its tree has
changes (`git describe --always --dirty`). Torch-free, so benchmarks and training share it."""

from __future__ import annotations

import subprocess
from pathlib import Path

from inspection.config import REPO_DIR


def code_version(checkout: Path = REPO_DIR) -> str:
    """The commit of `checkout` (12 hex digits, ``-dirty`` with uncommitted changes), or "unknown"
    outside a git checkout or without git."""
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=checkout,
                              capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
