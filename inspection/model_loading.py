"""Loading a model beside the one in use, so inspection goes on while it loads (worker and shadow)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from inspection.detector import Detector
from inspection.registry import Manifest


class BackgroundLoad(threading.Thread):
    """Runs `load(manifest)` in a daemon thread; the caller polls `is_alive()`, then reads
    `detector` or `error` (a failure is handed back, never raised in the thread)."""

    def __init__(self, load: Callable[[Manifest], Detector], manifest: Manifest, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.load, self.manifest = load, manifest
        self.detector: Detector | None = None
        self.error: Exception | None = None
        self.start()

    def run(self) -> None:
        try:
            self.detector = self.load(self.manifest)
        except Exception as exc:  # noqa: BLE001 - handed to the worker loop, which keeps what it had
            self.error = exc
