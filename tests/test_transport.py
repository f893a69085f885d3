"""ZeroMQ frame transport on real loopback sockets (tcp and ipc), with receive timeouts everywhere.

The binding side takes a port of the system's choosing (``tcp://127.0.0.1:*``) and the connecting
side uses the address it reports; where a test needs its peers connected first, it waits for their
handshakes on a socket monitor (`tests.waits.PeerWatch`), never for a guessed time.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import zmq

from inspection.errors import TransportError
from inspection.frame import CoilEvent, Frame, StreamKey
from inspection.transport import Endpoint, FrameReceiver, FrameSender, parse_endpoint, peer_endpoint
from tests.waits import PeerWatch, wait_for

KEY = StreamKey("test-line", "hot", "cam-1", "top")
LOOPBACK = "tcp://127.0.0.1:*"  # bind on a free port the system picks; the socket reports which
TIMEOUT_MS = 5000


def make_frame(seq: int, rows: int = 64, cols: int = 96, value: int | None = None) -> Frame:
    pixels = np.full((rows, cols), seq % 256 if value is None else value, np.uint8)
    pixels[0, : min(cols, 8)] = np.frombuffer(seq.to_bytes(8, "little"), np.uint8)[: min(cols, 8)]
    return Frame(KEY, "H26-000001", seq, seq, time.time_ns(), float(seq * rows), 0.0, 1.0, 1.0, pixels)


def seq_of(frame: Frame) -> int:
    return int.from_bytes(frame.pixels[0, :8].tobytes(), "little")


@pytest.mark.parametrize(
    ("spec", "default", "expected"),
    [
        ("tcp://192.0.2.1:7555", "bind", Endpoint("bind", "tcp://192.0.2.1:7555")),
        ("tcp://192.0.2.1:7555", "connect", Endpoint("connect", "tcp://192.0.2.1:7555")),
        ("connect:tcp://10.0.0.2:7555", "bind", Endpoint("connect", "tcp://10.0.0.2:7555")),
        ("bind:ipc:///tmp/x.sock", "connect", Endpoint("bind", "ipc:///tmp/x.sock")),
        ("bind+tcp://*:7555", "connect", Endpoint("bind", "tcp://*:7555")),
        # the PLC publisher's specs (it binds by default), formerly parsed by a copy in inspection.plc
        ("tcp://192.0.2.1:7570", "bind", Endpoint("bind", "tcp://192.0.2.1:7570")),
        ("bind:tcp://*:7570", "bind", Endpoint("bind", "tcp://*:7570")),
        ("connect:ipc:///tmp/plc.sock", "bind", Endpoint("connect", "ipc:///tmp/plc.sock")),
    ],
)
def test_endpoint_specs(spec: str, default: str, expected: Endpoint) -> None:
    assert parse_endpoint(spec, default) == expected


def test_peer_endpoint_takes_the_other_role() -> None:
    assert peer_endpoint("tcp://192.0.2.1:7555") == Endpoint("connect", "tcp://192.0.2.1:7555")
    assert peer_endpoint("connect:tcp://10.0.0.9:7555") == Endpoint("bind", "tcp://10.0.0.9:7555")


@pytest.mark.parametrize("spec", ["", "localhost:7555", "bind:", "connect:http://x", "tcp://"])
def test_bad_endpoint_specs_name_the_problem(spec: str) -> None:
    with pytest.raises(TransportError, match="endpoint"):
        parse_endpoint(spec, "bind")


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_frames_and_events_arrive_in_order(kind: str, ipc_endpoint: str) -> None:
    with (
        FrameSender(LOOPBACK if kind == "tcp" else ipc_endpoint, live=False) as sender,
        FrameReceiver(sender.address) as receiver,
    ):
        start = CoilEvent("coil_start", KEY, "H26-000001", 0, time.time_ns())
        frames = [make_frame(i) for i in range(1, 6)]
        end = CoilEvent("coil_end", KEY, "H26-000001", 6, time.time_ns(), length_mm=320.0, frames=5, dropped=0)
        for message in [start, *frames, end]:
            assert sender.send(message)
        got = [receiver.recv(TIMEOUT_MS) for _ in range(7)]
    assert got[0] == start and got[-1] == end
    assert got[1:6] == frames
    assert sender.dropped == 0 and receiver.malformed == 0 and receiver.frames == 5 and receiver.events == 2


def test_recv_times_out_with_none() -> None:
    with FrameReceiver(f"bind:{LOOPBACK}") as receiver:
        assert receiver.recv(timeout_ms=50) is None


def test_bind_conflict_is_a_transport_error() -> None:
    with FrameSender(LOOPBACK, live=True) as first, pytest.raises(TransportError, match="cannot bind"):
        FrameSender(first.address, live=True)


def test_two_workers_share_one_camera_without_loss_or_duplicates() -> None:
    count = 200
    results: dict[str, list[int]] = {"a": [], "b": []}

    def worker(name: str, address: str) -> None:
        with FrameReceiver(address, hwm=2) as receiver:
            while (message := receiver.recv(timeout_ms=1500)) is not None:
                results[name].append(seq_of(message))
                # The work a worker does per frame: elapsed time is the point here, while one
                # worker is busy the other takes its share.
                time.sleep(0.001)

    with FrameSender(LOOPBACK, live=False, hwm=2) as sender, PeerWatch(sender.socket) as peers:
        threads = [threading.Thread(target=worker, args=(n, sender.address)) for n in results]
        for t in threads:
            t.start()
        peers.wait(2, what="both workers' connections")  # before the first frame, so round-robin sees both
        for i in range(count):
            assert sender.send(make_frame(i, rows=32, cols=32))
        for t in threads:
            t.join(timeout=30)
    everything = results["a"] + results["b"]
    assert sorted(everything) == list(range(count))  # nothing lost, nothing twice
    assert results["a"] and results["b"]  # the load was shared
    assert sender.dropped == 0


def test_live_mode_with_stalled_receiver_counts_drops_in_coil_end() -> None:
    from cameras.base import CameraSource, Grab, StripGeometry
    from cameras.pump import pump

    class Burst(CameraSource):
        def _grabs(self):  # noqa: ANN202
            for _ in range(60):
                yield Grab(np.zeros((1024, 1024), np.uint8), coil="H26-000009")  # 60 MB: more than sockets buffer

    source = Burst(KEY, StripGeometry(1024, 1024, 1.0, 1.0))
    result = {}
    with (
        FrameSender(LOOPBACK, live=True, hwm=1, event_timeout_ms=20000) as sender,
        PeerWatch(sender.socket) as peers,
        FrameReceiver(sender.address, hwm=1) as receiver,
    ):
        peers.wait(what="the worker's connection")  # connected, but the worker does not read: stalled
        thread = threading.Thread(target=lambda: result.update(stats=pump(source, sender)))
        thread.start()
        # the coil_start and all 60 frames offered (sent or dropped); the coil_end now waits for room
        wait_for(lambda: sender.sent + sender.dropped >= 61, 20, "the camera to offer its coil_start and 60 frames")
        messages = []
        while (m := receiver.recv(timeout_ms=1000)) is not None:
            messages.append(m)
        thread.join(timeout=20)
    stats = result["stats"]
    frames = [m for m in messages if isinstance(m, Frame)]
    end = messages[-1]
    assert isinstance(end, CoilEvent) and end.kind == "coil_end"
    assert stats.dropped == sender.dropped > 0  # the stall really dropped frames...
    assert end.dropped == sender.dropped  # ...and the coil's end reports every one of them
    assert end.frames == 60 and len(frames) + end.dropped == 60
    seqs = [m.seq for m in messages]
    assert seqs == sorted(seqs) and seqs[-1] == 61  # gaps in seq show where frames were dropped


def test_malformed_messages_are_counted_not_raised() -> None:
    context = zmq.Context()
    push = context.socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 1000)
    push.bind(LOOPBACK)
    try:
        with FrameReceiver(push.getsockopt_string(zmq.LAST_ENDPOINT)) as receiver:
            push.send(b"\xff\x00garbage")
            push.send_multipart([b'{"v": 1, "type": "frame"}', b"1234"])
            push.send_multipart([b'{"v": 99, "type": "coil_start"}'])
            push.send_multipart([b"a", b"b", b"c"])
            from inspection.wire import encode

            push.send_multipart(encode(make_frame(7)))
            message = receiver.recv(TIMEOUT_MS)
            assert isinstance(message, Frame) and message.seq == 7
            assert receiver.malformed == 4
            assert receiver.last_error  # the reason of the last one is kept for the log
    finally:
        push.close()
        context.term()


def test_close_with_undeliverable_messages_does_not_hang() -> None:
    stop = threading.Event()
    sender = FrameSender(LOOPBACK, live=False, hwm=1, linger_ms=200, stopping=stop.is_set)
    receiver = FrameReceiver(sender.address, hwm=1)
    for i in range(3):
        sender.send(make_frame(i, rows=512, cols=512))
    receiver.close()  # the worker goes away with messages in flight
    stop.set()  # the camera is told to stop while a replay send would wait for room
    results = [sender.send(make_frame(i, rows=1024, cols=1024)) for i in range(10)]
    sender.close()  # bounded by the linger: returns instead of hanging (pytest-timeout guards it)
    assert False in results and sender.dropped == results.count(False)  # given up, and counted


def test_live_event_without_worker_is_reported_lost() -> None:
    with FrameSender(LOOPBACK, live=True, event_timeout_ms=100, linger_ms=0) as sender:
        ok = sender.send(CoilEvent("coil_start", KEY, "H26-000001", 0, time.time_ns()))
    assert not ok and sender.events_lost == 1


def test_coil_end_waits_for_room_even_while_stopping() -> None:
    stop = threading.Event()
    got: list = []

    def slow_worker(receiver: FrameReceiver) -> None:
        # Busy: the queue stays full while the camera sends its coil_end. Elapsed time is the point
        # here: the worker stays away for several of the sender's 100 ms send slices, so the
        # coil_end really has to wait for room instead of finding it at once.
        time.sleep(0.3)
        while (message := receiver.recv(timeout_ms=2000)) is not None:
            got.append(message)

    with (
        FrameSender(LOOPBACK, live=False, hwm=1, stopping=stop.is_set, event_timeout_ms=20000) as sender,
        PeerWatch(sender.socket) as peers,
        FrameReceiver(sender.address, hwm=1) as receiver,
    ):
        peers.wait(what="the worker's connection")  # the frames below fill its queue instead of finding no peer
        stop.set()  # SIGTERM: replay frames stop waiting for room...
        sent = 0
        while sender.send(make_frame(sent, rows=1024, cols=1024)):
            sent += 1  # ...so this ends as soon as the queue is full
        worker = threading.Thread(target=slow_worker, args=(receiver,))
        worker.start()
        end = CoilEvent(
            "coil_end", KEY, "H26-000001", sent + 1, time.time_ns(), length_mm=1.0, frames=sent + 1, dropped=1
        )
        assert sender.send(end)  # ...but the coil_end waits for the worker and gets through
        worker.join(timeout=30)
    assert got[-1] == end and len([m for m in got if isinstance(m, Frame)]) == sent
