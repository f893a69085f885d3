"""Shared fixtures. Tests use real components: loopback sockets, real SQLite files, real ONNX models."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from inspection.config import default_datasets_dir

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # screenshots and plots the tests write; not committed


def free_port() -> int:
    """A TCP port free on loopback right now (bind to 0 and release)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def tcp_endpoint() -> str:
    return f"tcp://127.0.0.1:{free_port()}"


@pytest.fixture
def ipc_endpoint(tmp_path: Path) -> str:
    return f"ipc://{tmp_path / 'frames.sock'}"


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    """The public datasets folder; tests that need it skip with the reason when it is absent."""
    path = default_datasets_dir()
    if not (path / "neu-det").is_dir() or not (path / "cr7-det").is_dir():
        pytest.skip(f"datasets not found at {path} (set STEEL_INSPECT_DATASETS)")
    return path


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS
