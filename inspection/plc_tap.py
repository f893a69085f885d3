"""A background subscriber that keeps every PLC message with its arrival time.

For benchmarks (latency from capture to PLC message) and tests (what the line published);
`steel-inspect plc-listen` is the integrator's tool.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import zmq

from inspection.curve import Curve
from inspection.transport import Subscriber, peer_endpoint


class PlcTap:
    """Subscribes to a line's PLC output (`endpoint` as in the line config's `endpoints.plc`, the
    publisher's side; topics: all, or the given prefix) until `close()`. A line with CURVE on
    sends only to a tap with a PLC client's keys: `from_config`, or `curve`."""

    def __init__(self, endpoint: str, topic: str = "", *, curve: Curve | None = None) -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []  # (arrival time.time(), message)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint, topic, curve), daemon=True)
        self._thread.start()

    @classmethod
    def from_config(cls, config: Any, topic: str = "") -> PlcTap:
        """A tap on the line's PLC output with the PLC client keys of its key folder (when CURVE is on,
        they must exist: `inspection.security.ensure_keys`)."""
        from inspection.security import curve_for

        curve = curve_for(config, "plc", "plc", [peer_endpoint(config.endpoints.plc)])
        return cls(config.endpoints.plc, topic, curve=curve)

    def _run(self, endpoint: str, topic: str, curve: Curve | None) -> None:
        context = zmq.Context()  # its own: the socket lives and dies in this thread
        subscriber = Subscriber(peer_endpoint(endpoint), (topic,), context=context, curve=curve)
        try:
            while not self._stop.is_set():
                parts = subscriber.recv(0.1)
                if parts is not None:
                    self.messages.append((time.time(), json.loads(parts[1])))
        finally:
            subscriber.close()
            context.term()

    def close(self) -> list[dict[str, Any]]:
        """Stop listening; the messages received, in order."""
        self._stop.set()
        self._thread.join(5)
        return [message for _, message in self.messages]
