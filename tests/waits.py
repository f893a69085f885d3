"""Bounded waits on conditions, for tests that synchronise with another thread, process or peer.

A test never sleeps "long enough" for something to happen: it waits until it has happened (the
first message, a socket monitor event, a row in the database, a file), up to a deadline, and then
fails with a message that says what did not happen. A guessed sleep is either too short on a
loaded machine (a flaky test) or too long everywhere (a slow suite).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import zmq
from zmq.utils.monitor import recv_monitor_message

T = TypeVar("T")

POLL_S = 0.02  # how often `wait_for` looks again: short next to every deadline, cheap next to the work


def wait_for(predicate: Callable[[], T], timeout: float, what: str,
             ignore: tuple[type[BaseException], ...] = ()) -> T:
    """`predicate()` once it is truthy (polled until `timeout` seconds have passed); otherwise an
    AssertionError naming `what`. Exceptions of the types in `ignore` count as "not yet" (a
    database whose tables another process has not created yet)."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            value = predicate()
        except ignore as exc:
            value, last_error = None, exc
        if value:
            return value
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(POLL_S)  # the polling interval of a bounded wait, not a guess at how long anything takes


class PeerWatch:
    """Counts the peers that complete the ZeroMQ handshake with `socket`, through a socket monitor.

    Attach it before the peers connect (a monitor sees only what happens after it is attached):
    on a binding socket right after the bind, on a connecting socket before `connect`. A PUSH
    socket deals messages only to peers whose handshake is done, so after `wait(n)` the next
    messages are shared among those n. Close it (or leave its ``with``) before the socket's
    context is terminated: the monitor is a socket of that context too.
    """

    def __init__(self, socket: zmq.Socket, events: int = zmq.EVENT_HANDSHAKE_SUCCEEDED) -> None:
        self._socket = socket
        self._events = events
        self._monitor = socket.get_monitor_socket(events)
        self.seen = 0

    def wait(self, peers: int = 1, timeout: float = 20.0, what: str = "") -> None:
        """Return once `peers` events were seen in all; AssertionError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.seen < peers:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not self._monitor.poll(left_ms, zmq.POLLIN):
                endpoint = self._socket.getsockopt_string(zmq.LAST_ENDPOINT) or "its endpoint"
                raise AssertionError(f"timed out after {timeout:g} s waiting for {what or 'peers'}: "
                                     f"{self.seen} of {peers} peer(s) completed the handshake on {endpoint}")
            if recv_monitor_message(self._monitor)["event"] & self._events:
                self.seen += 1

    def close(self) -> None:
        if not self._socket.closed:
            self._socket.disable_monitor()
        self._monitor.close(linger=0)

    def __enter__(self) -> PeerWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_connected(socket: zmq.Socket, address: str, timeout: float = 20.0, what: str = "") -> None:
    """Connect `socket` to `address` and return once the handshake with the peer there is done
    (the peer has bound and answered); AssertionError naming `what` after `timeout` seconds."""
    with PeerWatch(socket) as watch:
        socket.connect(address)
        watch.wait(1, timeout, what or f"a peer bound at {address}")
