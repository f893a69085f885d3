"""Shared fixtures. Tests use real components: loopback sockets, real SQLite files, real ONNX models."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from inspection.config import default_datasets_dir

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "test-artifacts"  # screenshots and plots the tests write; not committed

# An ipc:// address is a Unix socket path, which Linux limits to 107 bytes; the folder for the
# socket files leaves room for a short file name ("results.sock").
IPC_DIR_MAX = 80


def free_port() -> int:
    """A TCP port free on loopback right now (bind to 0 and release), for HTTP servers such as
    Streamlit that cannot report the port they picked.

    Never for ZeroMQ: between the release and the server's bind anything else on the machine may
    take the port. A ZeroMQ socket binds ``tcp://127.0.0.1:*`` and reports its real address
    (`inspection.transport.bound_address`), and the processes of a test line meet on ``ipc://``
    endpoints under the test's own folder (`ipc_dir`), which no other test or program can hold.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def ipc_dir(tmp_path: Path) -> Iterator[Path]:
    """A folder for a test's ipc:// socket files: tmp_path, or a short folder of its own (removed
    afterwards) when tmp_path is too long for a Unix socket path (a deep --basetemp)."""
    if len(str(tmp_path)) <= IPC_DIR_MAX:
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="si-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def ipc_endpoint(ipc_dir: Path) -> str:
    """An endpoint no other test or program can hold: for a peer started as another process, which
    needs the address before anything has bound it."""
    return f"ipc://{ipc_dir / 'frames.sock'}"


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
