"""When the line restarts a child process that died, and when it gives up on one.

A child that dies once (a kill -9, an out-of-memory kill, a bug hit by one odd frame) is restarted at
once: every second without a recorder is a second of results queued in the workers, every second
without a worker is frames the cameras drop, every second without a camera is strip not inspected. A
child that keeps dying is restarted after a delay that doubles each time (1 s, 2 s, 4 s, ...), so a
crash loop (a corrupt database, a model that fails to load) does not spin the CPU and fill the log;
after `max_restarts` restarts within `window_s` the supervisor stops trying and says so. What the
line does then is the pipeline's decision.
"""

from __future__ import annotations

import dataclasses
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class RestartPolicy:
    """How often a child is restarted: at once, then after `backoff_s` doubling up to `max_delay_s`;
    at most `max_restarts` restarts within any `window_s`."""

    max_restarts: int = 5
    window_s: float = 300.0
    backoff_s: float = 1.0
    max_delay_s: float = 30.0

    def delay(self, recent: int) -> float:
        """Seconds to wait before a restart when `recent` restarts were made within the window."""
        return 0.0 if recent == 0 else min(self.max_delay_s, self.backoff_s * 2 ** (recent - 1))


@dataclass(frozen=True)
class Crash:
    """A child that ended while the line ran: its exit status (negative: the signal), when (seconds
    after the line started) and the delay before its restart (None: given up)."""

    process: str
    status: int | None
    at_s: float
    restart_in_s: float | None


class Restarts:
    """Crash and restart bookkeeping of a line's children under one `RestartPolicy`."""

    def __init__(self, policy: RestartPolicy | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self.started = clock()
        self.counts: dict[str, int] = {}
        self.crashes: list[Crash] = []
        self.given_up: set[str] = set()
        self._recent: dict[str, deque[float]] = {}
        self._due: dict[str, float] = {}

    def crashed(self, name: str, status: int | None) -> float | None:
        """Note that `name` ended with `status`; the delay before its restart, or None when it has been
        restarted `max_restarts` times within the window already (given up)."""
        now = self.clock()
        recent = self._recent.setdefault(name, deque())
        while recent and now - recent[0] >= self.policy.window_s:
            recent.popleft()
        delay = None if len(recent) >= self.policy.max_restarts else self.policy.delay(len(recent))
        if delay is None:
            self.given_up.add(name)
        else:
            self._due[name] = now + delay
        self.crashes.append(Crash(name, status, round(now - self.started, 2), delay))
        return delay

    def waiting(self, name: str) -> bool:
        """`name` crashed and its restart is scheduled, or it was given up on: nothing more to note."""
        return name in self._due or name in self.given_up

    def scheduled(self, name: str) -> bool:
        """`name` crashed and waits for its restart."""
        return name in self._due

    def due(self, names: list[str] | None = None, *, force: bool = False) -> list[str]:
        """Children (of `names`, default all) whose restart time has come (`force`: whatever their delay),
        now counted as restarted."""
        now = self.clock()
        ready = [name for name, at in self._due.items() if (force or at <= now) and (names is None or name in names)]
        for name in ready:
            del self._due[name]
            self._recent.setdefault(name, deque()).append(now)
            self.counts[name] = self.counts.get(name, 0) + 1
        return ready

    def summary(self) -> dict[str, Any]:
        """For the run summary: restarts per child, and every crash in order."""
        return {"restarts": dict(sorted(self.counts.items())),
                "crashes": [dataclasses.asdict(c) for c in self.crashes],
                "given_up": sorted(self.given_up)}
