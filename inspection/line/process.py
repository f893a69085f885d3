"""What every long-running process shares: a stop flag set by SIGTERM / SIGINT.

Entry points have one shape: set up logging, read the config once and log it, build,
loop until `StopFlag` is set, and close everything in a ``finally``.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from types import FrameType

log = logging.getLogger(__name__)


class StopFlag:
    """Set on SIGTERM or SIGINT; loops poll it between units of work."""

    def __init__(self, install: bool = True) -> None:
        self._event = threading.Event()
        if install and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._handle)
            signal.signal(signal.SIGINT, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)


# The recorder allocates a dict, a tuple or two and a few floats per defect, tens of thousands a
# second, nearly all of them gone by the next batch. CPython's default collector runs a young
# collection every 700 net allocations and a full one (every tracked object: modules, config,
# NumPy, SQLite wrappers) every 70,000 or so: about 8 us of every 43 us a defect costs the
# recorder (`bench records`, in-process, 2026-12-02). Freezing what startup built takes it out of
# every later collection; a larger first threshold makes young collections rarer. Cycles are still
# collected (generations 1 and 2 keep running); only garbage without cycles is freed at once anyway.
GC_THRESHOLDS = (50_000, 20, 10)


def settle_gc(thresholds: tuple[int, int, int] = GC_THRESHOLDS) -> None:
    """Once a long-running process has built everything and before its loop: collect, freeze what is
    left (never scanned again) and set the collector's thresholds (see `GC_THRESHOLDS`)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
    log.info("garbage collector: %d startup objects frozen, thresholds %s", gc.get_freeze_count(), thresholds)
