"""CURVE on a link: the keys of one side (`Curve`) and the ZAP handler that checks client keys.

`inspection.transport.open_socket` takes a `Curve` and sets a socket up with it: a binding side is
the CURVE server of its link, a connecting side a client that must know the server's public key.
Encryption alone would let anyone who knows a server's public key (it is public) connect, so
every process that binds runs a ZAP handler (pyzmq's `zmq.auth.thread.ThreadAuthenticator`, one
per ZeroMQ context) that accepts only the client keys of the link's allow list; an unknown key is
refused, logged (rate-limited: a refused client reconnects every 100 ms) and counted per link
(`refused`), and the processes report the count (worker status, recorder status row and PLC
heartbeat, camera summary). Server sockets also set ``ZAP_ENFORCE_DOMAIN``: should the handler
be gone, libzmq refuses every client instead of letting them all in.

A client without any keys (ZeroMQ's NULL mechanism), or one that does not know this server's public
key, never reaches the handler: its handshake fails before ZAP. Such failures are seen through a
socket monitor on each server socket (`_HandshakeWatch`, one small thread per server socket) and
are logged and counted too, as refusals for "no keys or a wrong server key". `refused` adds both
reasons up per link; `refused_by_reason` keeps them apart.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import zmq
from zmq.auth.thread import ThreadAuthenticator

from inspection.errors import TransportError
from inspection.keys import KeyPair

log = logging.getLogger(__name__)

LINKS = ("frames", "results", "plc")  # also the ZAP domain of each link's server sockets


@dataclass(frozen=True)
class Curve:
    """One side's CURVE keys for one link: its own pair, the server keys it may connect to
    (`server_key`, or per address in `servers`) and the client keys it accepts when it binds."""

    link: str
    keys: KeyPair
    server_key: bytes | None = None
    servers: Mapping[str, bytes] = field(default_factory=dict)
    clients: frozenset[bytes] = frozenset()
    clients_from: str = ""  # where the allow list was read, for the refusal log

    def server_for(self, address: str) -> bytes:
        """The public key of the server at `address`; `TransportError` when this side has none."""
        key = self.servers.get(address, self.server_key)
        if key is None:
            raise TransportError(f"{self.link} link: no CURVE server key for {address} (not in the line config?)")
        return key


UNKNOWN_KEY, HANDSHAKE = "unknown_key", "handshake"  # why a client was refused (`refused_by_reason`)

_refused: Counter[tuple[str, str]] = Counter()  # (link, reason) -> clients refused
_lock = threading.Lock()
_guards: dict[int, _Guard] = {}  # id(context) -> its ZAP handler
_guarded: dict[int, int] = {}  # id(server socket) -> id(its context)
_watches: dict[int, _HandshakeWatch] = {}  # id(server socket) -> its handshake monitor


def refused() -> dict[str, int]:
    """Clients refused in this process, per link, since it started (unknown keys and failed
    handshakes together)."""
    out: Counter[str] = Counter()
    with _lock:
        for (link, _), n in _refused.items():
            out[link] += n
    return dict(out)


def refused_by_reason() -> dict[str, int]:
    """Clients refused in this process since it started: `UNKNOWN_KEY` (the ZAP handler said no)
    and `HANDSHAKE` (no CURVE keys, or not this server's public key), over all links."""
    out: Counter[str] = Counter({UNKNOWN_KEY: 0, HANDSHAKE: 0})
    with _lock:
        for (_, reason), n in _refused.items():
            out[reason] += n
    return dict(out)


def refused_total() -> int:
    with _lock:
        return sum(_refused.values())


def _count(link: str, reason: str) -> int:
    with _lock:
        _refused[(link, reason)] += 1
        return _refused[(link, reason)]


def _worth_logging(count: int) -> bool:
    # a refused client reconnects every 100 ms: log the first few, then every hundredth
    return count <= 10 or count % 100 == 0


class _Authenticator(ThreadAuthenticator):
    """pyzmq's ZAP handler, remembering the address of the request it is answering (for the log)."""

    address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        self.address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else ""
        await super().handle_zap_message(msg)


class _Guard:
    """The ZAP handler of one context and the allow list of each link served in it."""

    def __init__(self, context: zmq.Context) -> None:
        self.allowed: dict[str, frozenset[bytes]] = {}
        self.folders: dict[str, str] = {}
        self.sockets = 0
        self.auth = _Authenticator(context)
        self.auth.start()

    def serve(self, curve: Curve) -> None:
        self.allowed[curve.link] = curve.clients
        self.folders[curve.link] = curve.clients_from
        self.auth.configure_curve_callback(curve.link, self)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP: True when the client's (Z85) public key is on the link's allow list."""
        if key in self.allowed.get(domain, frozenset()):
            return True
        count = _count(domain, UNKNOWN_KEY)
        if _worth_logging(count):
            source = f" from {self.auth.address}" if self.auth.address else ""
            log.warning("CURVE: refused a client on the %s link%s: its public key %s is not in %s "
                        "(%d refused on this link so far)", domain, source, key.decode("ascii", "replace"),
                        self.folders.get(domain) or "the allow list", count)
        return False

    def stop(self) -> None:
        self.auth.stop()


class _HandshakeWatch(threading.Thread):
    """Counts and logs the handshakes a server socket failed before ZAP (a client without keys, or
    with another server's key), from a socket monitor read in a thread of its own.

    A ZeroMQ socket has one monitor: attaching another one later (a test's `PeerWatch`) ends this
    watch (it sees MONITOR_STOPPED), and such failures are then no longer counted on that socket."""

    EVENTS = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL

    def __init__(self, context: zmq.Context, socket: zmq.Socket, link: str) -> None:
        super().__init__(name=f"curve-watch-{link}", daemon=True)
        self.link = link
        self._stopping = threading.Event()
        address = f"inproc://steel-inspect-curve-watch-{id(socket)}"
        # attached before the bind (a monitor sees only later events); MONITOR_STOPPED ends the thread
        # when the socket closes
        socket.monitor(address, self.EVENTS | zmq.EVENT_MONITOR_STOPPED)
        self._pair = context.socket(zmq.PAIR)  # handed to the thread: start() is the memory barrier
        self._pair.connect(address)
        self.start()

    def run(self) -> None:
        from zmq.utils.monitor import recv_monitor_message

        try:
            while not self._stopping.is_set():
                if not self._pair.poll(100):  # the stop flag is looked at every 100 ms
                    continue
                event = recv_monitor_message(self._pair)
                if event["event"] == zmq.EVENT_MONITOR_STOPPED:
                    break
                count = _count(self.link, HANDSHAKE)
                if _worth_logging(count):
                    endpoint = event.get("endpoint", b"")
                    where = endpoint.decode("utf-8", "replace") if isinstance(endpoint, bytes) else str(endpoint)
                    log.warning("CURVE: refused a client on the %s link at %s: handshake failed (no CURVE keys, "
                                "or not this server's public key; %d such refusals on this link so far)",
                                self.link, where, count)
        except zmq.ZMQError as exc:  # the context is going away: nothing left to watch
            log.debug("CURVE handshake watch on the %s link ended: %s", self.link, exc)
        finally:
            self._pair.close(linger=0)

    def stop(self) -> None:
        self._stopping.set()
        self.join(timeout=2.0)


def guard(context: zmq.Context, socket: zmq.Socket, curve: Curve) -> None:
    """Make sure `context` has a ZAP handler that checks `curve`'s clients, and `socket` a watch on
    its failed handshakes, before `socket` binds."""
    with _lock:
        g = _guards.get(id(context))
        if g is None:
            g = _guards[id(context)] = _Guard(context)
        g.serve(curve)
        if id(socket) not in _guarded:
            _guarded[id(socket)] = id(context)
            g.sockets += 1
            _watches[id(socket)] = _HandshakeWatch(context, socket, curve.link)


def release(socket: zmq.Socket) -> None:
    """After `socket` closed: stop its context's ZAP handler when no server socket needs it (its
    sockets must be closed before the context can be terminated)."""
    with _lock:
        context_id = _guarded.pop(id(socket), None)
        watch = _watches.pop(id(socket), None)
    if watch is not None:  # its monitor pair must be closed before the context can be terminated
        watch.stop()
    if context_id is None:
        return
    with _lock:
        g = _guards[context_id]
        g.sockets -= 1
        if g.sockets > 0:
            return
        del _guards[context_id]
    g.stop()


def describe(curve: Curve | None) -> str:
    """For start-up logs: which keys a side uses (public key and file, never the secret)."""
    if curve is None:
        return "CURVE off"
    allowed = f", {len(curve.clients)} client key(s) from {curve.clients_from}" if curve.clients else ""
    return f"CURVE {curve.link} link, key {curve.keys.public.decode()[:8]}... ({curve.keys.path}){allowed}"


def socket_options(curve: Curve, role: str, address: str) -> list[tuple[int, Any]]:
    """The socket options of a CURVE server (`role` bind) or client (connect to `address`)."""
    own = [(zmq.CURVE_PUBLICKEY, curve.keys.public), (zmq.CURVE_SECRETKEY, curve.keys.secret)]
    if role == "bind":
        return [(zmq.CURVE_SERVER, 1), *own, (zmq.ZAP_DOMAIN, curve.link.encode())]
    return [(zmq.CURVE_SERVER, 0), (zmq.CURVE_SERVERKEY, curve.server_for(address)), *own]
