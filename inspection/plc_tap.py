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

from inspection.transport import Subscriber, peer_endpoint


class PlcTap:
    """Subscribes to a line's PLC output (`endpoint` as in the line config's `endpoints.plc`, the
    publisher's side; topics: all, or the given prefix) until `close()`."""

    def __init__(self, endpoint: str, topic: str = "") -> None:
        self.messages: list[tuple[float, dict[str, Any]]] = []  # (arrival time.time(), message)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(endpoint, topic), daemon=True)
        self._thread.start()

    def _run(self, endpoint: str, topic: str) -> None:
        context = zmq.Context()  # its own: the socket lives and dies in this thread
        subscriber = Subscriber(peer_endpoint(endpoint), (topic,), context=context)
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
