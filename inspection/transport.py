"""The line's ZeroMQ links, and the one place their sockets are opened (`open_socket`).

| link | owner (its endpoint in the config) | owner's socket | the other side |
| --- | --- | --- | --- |
| frames | camera (`cameras[].endpoint`) | PUSH, `FrameSender` | workers: PULL, `FrameReceiver` |
| results | recorder (`endpoints.results`) | PULL, `ResultReceiver` | workers: PUSH, `ResultSender` |
| PLC | recorder (`endpoints.plc`) | PUB, `inspection.plc.PlcPublisher` | PLCs, `plc-listen`: SUB, `Subscriber` |

Endpoint specs carry the socket role as configuration: ``bind:tcp://127.0.0.1:5555``,
``connect:ipc:///run/steel/top.sock``. Each link's endpoint is written from its owner's side and a
bare address means the owner binds; the other side takes the opposite role (`peer_endpoint`). So
several workers connecting to one camera share its frames (PUSH round-robins over the peers that
have room), and a camera behind a firewall can connect out to a worker that binds instead.

Two sending modes, per source:

- **live** (a camera cannot wait): frames are sent without blocking; when every peer's queue
  is at its high-water mark the frame is dropped and counted (`FrameSender.dropped`), and the
  camera process reports the count in the coil's ``coil_end`` and its log.
- **replay** (backpressure): every frame waits until a worker has room, as long as it takes,
  checking the stop flag so Ctrl-C still ends it.
- in both modes coil events are never dropped silently: they wait up to ``event_timeout_ms``
  (also while stopping, so a stopped stream still closes its coil); a failure is counted in
  `events_lost` and logged as an error.

Every link can run ZeroMQ CURVE (encrypted, and only known client keys get in): each class takes a
`curve` (`inspection.curve.Curve`, the keys of its side, built from the line config by
`inspection.security.curve_for`); None is plain ZeroMQ, for tests and tools that need no keys.

Pixels go out zero-copy (``copy=False``): the array must not be written after `send`.
Receivers decode with `inspection.wire.decode`; a malformed message is counted and logged with
its reason, never raised. Sockets close with a bounded linger, so shutdown never hangs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zmq

from inspection import curve as curve_module
from inspection.curve import Curve
from inspection.errors import FrameError, TransportError
from inspection.frame import BrokenFrame, CoilEvent, Frame, StreamMessage
from inspection.signing import Signer
from inspection.wire import DEFAULT_MAX_PIXELS, decode, encode, identify

log = logging.getLogger(__name__)

ROLES = ("bind", "connect")
SCHEMES = ("tcp://", "ipc://", "inproc://")
DEFAULT_HWM = 16
DEFAULT_LINGER_MS = 2000
_POLL_SLICE_MS = 100  # how often blocking sends look at the stop flag


@dataclass(frozen=True)
class Endpoint:
    """A socket address and whether this side binds or connects it."""

    role: str
    address: str

    def __str__(self) -> str:
        return f"{self.role}:{self.address}"


def parse_endpoint(spec: str | Endpoint, default_role: str) -> Endpoint:
    """``bind:ADDR``, ``connect:ADDR`` or a bare ``ADDR`` (then `default_role`)."""
    if isinstance(spec, Endpoint):
        return spec
    if not isinstance(spec, str) or not spec.strip():
        raise TransportError(f"endpoint: expected 'bind:ADDR', 'connect:ADDR' or 'ADDR', got {spec!r}")
    role, address = default_role, spec.strip()
    for candidate in ROLES:
        for sep in (":", "+"):
            if address.startswith(candidate + sep):
                role, address = candidate, address[len(candidate) + 1 :]
    if role not in ROLES:
        raise TransportError(f"endpoint {spec!r}: role must be bind or connect, got {role!r}")
    if not address.startswith(SCHEMES) or address.endswith("//"):
        raise TransportError(f"endpoint {spec!r}: address must start with {', '.join(SCHEMES)} and name a place")
    return Endpoint(role, address)


def peer_endpoint(spec: str | Endpoint, owner_default_role: str = "bind") -> Endpoint:
    """The other side of an endpoint spec: what a worker does with a camera's configured endpoint.

    ``tcp://h:p`` (the camera binds) -> connect; ``connect:tcp://h:p`` (the camera connects) -> bind.
    """
    endpoint = parse_endpoint(spec, owner_default_role)
    return Endpoint("connect" if endpoint.role == "bind" else "bind", endpoint.address)


_malloc_tuned: bool | None = None


def tune_malloc_for_frames() -> bool:
    """Keep multi-megabyte frame buffers on the heap instead of mmap / munmap per frame (glibc).

    glibc serves large allocations with fresh mmap'd pages and returns them on free, so every
    received 4 MB frame costs ~1000 page faults: measured here, about as much CPU as the copy
    through the socket itself. Raising the mmap and trim thresholds lets freed frame buffers be
    reused (the process keeps up to 256 MB of freed heap). Once per process; False where the C
    library has no `mallopt` (not glibc), which changes nothing else.
    """
    global _malloc_tuned
    if _malloc_tuned is None:
        _malloc_tuned = False
        try:
            import ctypes
            import ctypes.util

            libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            m_trim_threshold, m_mmap_threshold = -1, -3
            _malloc_tuned = bool(libc.mallopt(m_mmap_threshold, 32 * 1024 * 1024)) and bool(
                libc.mallopt(m_trim_threshold, 256 * 1024 * 1024)
            )
        except (OSError, AttributeError):
            pass
        log.debug("malloc tuned for large frames: %s", _malloc_tuned)
    return _malloc_tuned


def open_socket(context: zmq.Context, kind: int, endpoints: Endpoint | Sequence[Endpoint], *, hwm: int,
                linger_ms: int, options: Mapping[int, int | bytes] | None = None,
                subscribe: Sequence[str] = (), curve: Curve | None = None) -> zmq.Socket:
    """A socket of `kind` bound or connected to `endpoints`, with its high-water marks (both
    directions), linger, any further options, (SUB) its topic subscriptions and (`curve`) its
    CURVE keys set first; every process of the line opens its sockets here, so what a link needs
    (limits, keys) is decided in one place.

    With `curve` a bind makes this side the link's CURVE server (its context's ZAP handler, started
    first, accepts only `curve.clients`) and a connect makes it a client of the server key known
    for that address. Close such a socket with `close_socket`. A bind or connect that fails closes
    the socket and raises `TransportError` naming the endpoint.
    """
    socket = context.socket(kind)
    socket.setsockopt(zmq.SNDHWM, hwm)
    socket.setsockopt(zmq.RCVHWM, hwm)
    socket.setsockopt(zmq.LINGER, linger_ms)
    for option, value in (options or {}).items():
        socket.setsockopt(option, value)
    for topic in subscribe:
        socket.setsockopt(zmq.SUBSCRIBE, topic.encode())
    for endpoint in [endpoints] if isinstance(endpoints, Endpoint) else endpoints:
        try:
            if curve is not None:
                _secure(context, socket, curve, endpoint)
            if endpoint.role == "bind":
                socket.bind(endpoint.address)
            else:
                socket.connect(endpoint.address)
        except (zmq.ZMQError, TransportError) as exc:
            close_socket(socket, linger=0)
            reason = exc if isinstance(exc, TransportError) else f"cannot {endpoint.role} {endpoint.address}: {exc}"
            raise TransportError(str(reason)) from None
    return socket


def _secure(context: zmq.Context, socket: zmq.Socket, curve: Curve, endpoint: Endpoint) -> None:
    # Options are taken per bind / connect, so one socket may serve one endpoint and be a client
    # on another. The ZAP handler must run before the bind: a CURVE server without one would
    # accept any client key.
    for option, value in curve_module.socket_options(curve, endpoint.role, endpoint.address):
        socket.setsockopt(option, value)
    if endpoint.role == "bind":
        # no handler: refuse everyone, never admit; a libzmq without the option leaves it to the handler
        with contextlib.suppress(AttributeError, zmq.ZMQError):
            socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)
        curve_module.guard(context, socket, curve)


def close_socket(socket: zmq.Socket, linger: int | None = None) -> None:
    """Close a socket from `open_socket` (once is enough) and, for the last CURVE server of its
    context, stop the context's ZAP handler so the context can be terminated."""
    if not socket.closed:
        socket.close(linger=linger)
    curve_module.release(socket)


def bound_address(socket: zmq.Socket, endpoint: Endpoint) -> str:
    """The address a socket really listens on (a ``tcp://host:*`` bind picks a free port)."""
    return socket.getsockopt_string(zmq.LAST_ENDPOINT) if endpoint.role == "bind" else endpoint.address


def check_bindable(endpoints: Sequence[Endpoint]) -> None:
    """Bind and release every bind endpoint once, so a line whose ports another line holds stops
    before any of its processes start (a worker would otherwise attach to the other line's
    cameras and take its frames); `TransportError` names the first endpoint that is taken.

    An ipc endpoint needs its own test: ZeroMQ unlinks an existing socket file and binds anyway,
    silently taking the address from whoever listened there, so a file that accepts a connection
    counts as taken (a file left by a crashed process refuses it and is fine to replace).
    """
    import socket as sockets

    context = zmq.Context.instance()
    for endpoint in endpoints:
        if endpoint.role != "bind" or endpoint.address.startswith("inproc://"):
            continue
        if endpoint.address.startswith("ipc://"):
            path = endpoint.address.removeprefix("ipc://")
            probe_unix = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
            try:
                probe_unix.connect(path)
            except OSError:  # no such file, or nobody listening: free
                pass
            else:
                raise TransportError(f"cannot bind {endpoint.address}: another process is listening on it")
            finally:
                probe_unix.close()
            continue
        probe = open_socket(context, zmq.PULL, endpoint, hwm=1, linger_ms=0)
        probe.close(linger=0)


class FrameSender:
    """PUSH socket for one camera stream; `send` returns False when a live frame was dropped."""

    def __init__(
        self,
        endpoint: str | Endpoint,
        *,
        live: bool,
        hwm: int = DEFAULT_HWM,
        linger_ms: int = DEFAULT_LINGER_MS,
        event_timeout_ms: int = 5000,
        stopping: Callable[[], bool] | None = None,
        context: zmq.Context | None = None,
        curve: Curve | None = None,
        signer: Signer | None = None,
    ) -> None:
        self.endpoint = parse_endpoint(endpoint, "bind")
        self.signer = signer  # the camera's: every frame and coil event is signed as it is encoded
        tune_malloc_for_frames()
        self.live = live
        self.event_timeout_ms = event_timeout_ms
        self._stopping = stopping or (lambda: False)
        self._own_context = context is None
        self._context = context or zmq.Context()
        try:
            self._socket = open_socket(self._context, zmq.PUSH, self.endpoint, hwm=hwm, linger_ms=linger_ms,
                                       options={zmq.SNDTIMEO: _POLL_SLICE_MS}, curve=curve)
        except TransportError:
            if self._own_context:
                self._context.term()
            raise
        self.address = bound_address(self._socket, self.endpoint)  # a tcp://host:* bind names its port here
        self.sent = self.dropped = self.events_lost = 0
        self.bytes_sent = 0
        log.info(
            "sender %s: %s mode, SNDHWM %d, linger %d ms, %s, %s",
            Endpoint(self.endpoint.role, self.address),
            "live (drop and count)" if live else "replay (backpressure)",
            hwm,
            linger_ms,
            curve_module.describe(curve),
            "frames signed (Ed25519)" if signer is not None else "frames not signed",
        )

    def send(self, message: StreamMessage) -> bool:
        """Send one frame or coil event; False if it was dropped (live frames, lost events)."""
        parts = encode(message, self.signer)
        is_event = isinstance(message, CoilEvent)
        if not is_event and self.live:
            try:
                self._socket.send_multipart(parts, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                self.dropped += 1
                if self.dropped == 1 or self.dropped % 100 == 0:
                    log.warning(
                        "sender %s: workers are behind: %d frame(s) dropped so far",
                        self.endpoint,
                        self.dropped,
                    )
                return False
        elif not (
            # a coil event waits up to its timeout even while stopping: the coil_end that closes
            # a stopped stream must reach a worker; replay frames wait until sent or stopped
            self._send_waiting(parts, self.event_timeout_ms, interruptible=False)
            if is_event
            else self._send_waiting(parts, None, interruptible=True)
        ):
            if is_event:
                self.events_lost += 1
                log.error(
                    "sender %s: %s of coil %s could not be sent (no worker took it)",
                    self.endpoint,
                    message.kind,
                    message.coil,
                )
            else:
                self.dropped += 1
            return False
        self.sent += 1
        self.bytes_sent += sum(len(p) for p in parts)
        return True

    @property
    def socket(self) -> zmq.Socket:
        """The PUSH socket itself, for a socket monitor (who is connected); send through `send`."""
        return self._socket

    def _send_waiting(self, parts: list, timeout_ms: int | None, interruptible: bool) -> bool:
        # a blocking send with a short SNDTIMEO: as cheap as a plain blocking send, yet the
        # stop flag and the deadline are looked at every slice
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while True:
            try:
                self._socket.send_multipart(parts, 0, copy=False)
                return True
            except zmq.Again:
                pass
            if (interruptible and self._stopping()) or (deadline is not None and time.monotonic() >= deadline):
                return False

    def close(self) -> None:
        if not self._socket.closed:
            close_socket(self._socket)
            if self._own_context:
                self._context.term()

    def __enter__(self) -> FrameSender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameReceiver:
    """PULL socket over one or more camera endpoints; `recv` returns None on timeout.

    The endpoints are the workers' side: `peer_endpoint` of each camera's configured endpoint (a
    bare address: the camera binds, the worker connects). With `report_broken`, a malformed frame
    whose header still names it (`wire.identify`) comes back as a `BrokenFrame` (counted in
    `malformed` and `broken`) for the worker to record as dropped; other malformed messages are
    counted and skipped."""

    def __init__(
        self,
        endpoints: str | Endpoint | Sequence[str | Endpoint],
        *,
        hwm: int = DEFAULT_HWM,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        linger_ms: int = 0,
        context: zmq.Context | None = None,
        curve: Curve | None = None,
        report_broken: bool = False,
    ) -> None:
        self.report_broken = report_broken
        if isinstance(endpoints, str | Endpoint):
            endpoints = [endpoints]
        if not endpoints:
            raise TransportError("receiver: expected at least one endpoint")
        self.endpoints = [parse_endpoint(e, "connect") for e in endpoints]
        tune_malloc_for_frames()
        self.max_pixels = max_pixels
        self._own_context = context is None
        self._context = context or zmq.Context()
        try:
            self._socket = open_socket(self._context, zmq.PULL, self.endpoints, hwm=hwm, linger_ms=linger_ms,
                                       curve=curve)
        except TransportError:
            self._close_context()
            raise
        self.frames = self.events = self.malformed = self.broken = 0
        self.last_error = ""
        log.info("receiver %s: RCVHWM %d, %s", ", ".join(map(str, self.endpoints)), hwm, curve_module.describe(curve))

    def recv(self, timeout_ms: int | None = 1000) -> StreamMessage | BrokenFrame | None:
        """The next valid message (or `BrokenFrame`, see the class), or None when nothing arrives
        within `timeout_ms`."""
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1000.0
        while True:
            try:  # frames already queued are taken without any waiting machinery
                parts = self._socket.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                wait = -1 if deadline is None else int((deadline - time.monotonic()) * 1000)
                if (wait < 0 and deadline is not None) or not self._socket.poll(wait, zmq.POLLIN):
                    return None
                continue
            try:
                message = decode(parts, max_pixels=self.max_pixels)
            except FrameError as exc:
                self.malformed += 1
                self.last_error = str(exc)
                if self.malformed <= 10 or self.malformed % 100 == 0:
                    log.warning("receiver: malformed message #%d dropped: %s", self.malformed, exc)
                broken = identify(parts, str(exc)) if self.report_broken else None
                if broken is None:
                    continue
                self.broken += 1
                return broken
            if isinstance(message, Frame):
                self.frames += 1
            else:
                self.events += 1
            return message

    def close(self) -> None:
        if not self._socket.closed:
            close_socket(self._socket)
            self._close_context()

    def _close_context(self) -> None:
        if self._own_context:
            self._context.term()

    def __enter__(self) -> FrameReceiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ResultSender:
    """A worker's PUSH socket to the recorder (`endpoints.results`, the recorder's side).

    `send` blocks while the recorder's queue is full: the worker then stops taking frames, its
    cameras' queues fill and live cameras count drops, so nothing is lost silently.
    """

    def __init__(self, recorder_endpoint: str | Endpoint, *, hwm: int, linger_ms: int,
                 context: zmq.Context | None = None, curve: Curve | None = None) -> None:
        from inspection.results import encode

        self._encode = encode
        self.endpoint = peer_endpoint(recorder_endpoint)
        self._own_context = context is None
        self._context = context or zmq.Context()
        try:
            self._socket = open_socket(self._context, zmq.PUSH, self.endpoint, hwm=hwm, linger_ms=linger_ms,
                                       curve=curve)
        except TransportError:
            if self._own_context:
                self._context.term()
            raise
        self.sent = 0
        log.info("results sender %s: SNDHWM %d, linger %d ms, %s", self.endpoint, hwm, linger_ms,
                 curve_module.describe(curve))

    def send(self, message: Any) -> None:
        """Send one `inspection.results` message (blocking, see the class docstring)."""
        self._socket.send_multipart(self._encode(message))
        self.sent += 1

    def close(self) -> None:
        """Close; what is still queued gets the linger time to reach the recorder."""
        if not self._socket.closed:
            close_socket(self._socket)
            if self._own_context:
                self._context.term()


class ResultReceiver:
    """The recorder's PULL socket (`endpoints.results`); decodes, counts and logs bad messages."""

    def __init__(self, endpoint: str | Endpoint, *, hwm: int, context: zmq.Context | None = None,
                 curve: Curve | None = None) -> None:
        from inspection.results import decode

        self._decode = decode
        self.endpoint = parse_endpoint(endpoint, "bind")
        self._socket = open_socket(context or zmq.Context.instance(), zmq.PULL, self.endpoint, hwm=hwm,
                                   linger_ms=0, curve=curve)
        self.address = bound_address(self._socket, self.endpoint)
        self.messages = self.rejected = 0
        self.last_error: str | None = None
        self.decode_cpu_s = 0.0  # this thread's CPU time in `decode` (the recorder's "decode" phase)
        log.info("results receiver %s: RCVHWM %d, %s", self.address, hwm, curve_module.describe(curve))

    def poll(self, timeout_ms: int) -> bool:
        """True when a message is waiting (waits up to `timeout_ms`)."""
        return bool(self._socket.poll(timeout_ms, zmq.POLLIN))

    def receive(self, limit: int) -> list[Any]:
        """Up to `limit` valid messages that are already waiting (never blocks); a malformed one is
        counted in `rejected`, logged with its reason and skipped."""
        from inspection.errors import RecordError

        out: list[Any] = []
        while len(out) < max(limit, 1):
            try:
                parts = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            self.messages += 1
            cpu = time.thread_time()
            try:
                out.append(self._decode(parts))
            except RecordError as exc:
                self.rejected += 1
                self.last_error = str(exc)
                log.warning("rejected message %d: %s", self.messages, exc)
            self.decode_cpu_s += time.thread_time() - cpu
        return out

    def close(self) -> None:
        close_socket(self._socket, linger=0)


class Subscriber:
    """A SUB socket on a PLC output: `recv` -> the message's parts (normally [topic, body]) or None.

    `endpoint` is this side's: a bare address connects (the recorder's publisher binds); for the
    line config's `endpoints.plc` (written from the publisher's side) use `peer_endpoint` first.
    """

    def __init__(self, endpoint: str | Endpoint, topics: Sequence[str] = ("",), *, hwm: int = 100_000,
                 options: Mapping[int, int | bytes] | None = None, context: zmq.Context | None = None,
                 curve: Curve | None = None) -> None:
        self.endpoint = parse_endpoint(endpoint, "connect")
        self._socket = open_socket(context or zmq.Context.instance(), zmq.SUB, self.endpoint, hwm=hwm, linger_ms=0,
                                   options=options, subscribe=topics or ("",), curve=curve)

    def recv(self, timeout_s: float) -> list[bytes] | None:
        """The next message's parts, or None after `timeout_s` seconds."""
        if not self._socket.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return self._socket.recv_multipart()

    def close(self) -> None:
        close_socket(self._socket, linger=0)
