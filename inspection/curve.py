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

A client without any keys (ZeroMQ's NULL mechanism) never reaches the handler: its handshake fails
on the mechanism, so it is refused but not counted here.
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


_refused: Counter[str] = Counter()
_lock = threading.Lock()
_guards: dict[int, _Guard] = {}  # id(context) -> its ZAP handler
_guarded: dict[int, int] = {}  # id(server socket) -> id(its context)


def refused() -> dict[str, int]:
    """Clients refused for an unknown key in this process, per link, since it started."""
    with _lock:
        return dict(_refused)


def refused_total() -> int:
    with _lock:
        return sum(_refused.values())


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
        with _lock:
            _refused[domain] += 1
            count = _refused[domain]
        if count <= 10 or count % 100 == 0:
            source = f" from {self.auth.address}" if self.auth.address else ""
            log.warning("CURVE: refused a client on the %s link%s: its public key %s is not in %s "
                        "(%d refused on this link so far)", domain, source, key.decode("ascii", "replace"),
                        self.folders.get(domain) or "the allow list", count)
        return False

    def stop(self) -> None:
        self.auth.stop()


def guard(context: zmq.Context, socket: zmq.Socket, curve: Curve) -> None:
    """Make sure `context` has a ZAP handler that checks `curve`'s clients, before `socket` binds."""
    with _lock:
        g = _guards.get(id(context))
        if g is None:
            g = _guards[id(context)] = _Guard(context)
        g.serve(curve)
        if id(socket) not in _guarded:
            _guarded[id(socket)] = id(context)
            g.sockets += 1


def release(socket: zmq.Socket) -> None:
    """After `socket` closed: stop its context's ZAP handler when no server socket needs it (its
    sockets must be closed before the context can be terminated)."""
    with _lock:
        context_id = _guarded.pop(id(socket), None)
        if context_id is None:
            return
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
