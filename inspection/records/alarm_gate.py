"""At most one alarm per source every few seconds, with the count of what it stands for.

A forger or a broken worker can send thousands of refused results a second; one alarm each would
flood the alarms table and the PLC. `AlarmGate` holds what arrives for a key (e.g. a reason and the
camera named) and lets one alarm through per `interval_s`, counting everything in between into it.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Held:
    count: int = 0
    last: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    alarmed_at: float | None = None


@dataclass(frozen=True)
class GatedAlarm:
    """What one alarm stands for: `count` events of `key` since the last one, the newest `last`."""

    key: Hashable
    count: int
    last: str
    details: dict[str, Any]


class AlarmGate:
    def __init__(self, interval_s: float = 10.0) -> None:
        self.interval_s = interval_s
        self._held: dict[Hashable, _Held] = {}

    def add(self, key: Hashable, text: str, details: dict[str, Any] | None = None) -> None:
        held = self._held.setdefault(key, _Held())
        held.count += 1
        held.last, held.details = text, details or {}

    def due(self, now: float, *, force: bool = False) -> list[GatedAlarm]:
        """The alarms to raise now (each key at most once per `interval_s`; all held ones with `force`)."""
        out = []
        for key, held in self._held.items():
            if held.count and (force or held.alarmed_at is None or now - held.alarmed_at >= self.interval_s):
                out.append(GatedAlarm(key, held.count, held.last, held.details))
                held.count, held.alarmed_at = 0, now
        return out
