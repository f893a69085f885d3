"""PLC output: real PUB/SUB over loopback tcp, messages checked with `jsonschema`, gaps, filtering."""

from __future__ import annotations

import io
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from jsonschema import Draft202012Validator, FormatChecker

from inspection.commands.plc_listen import PlcListener, SequenceTracker
from inspection.errors import TransportError
from inspection.plc import (
    PlcMessageError,
    PlcPublisher,
    build_message,
    coverage_alarm,
    defect_payload,
    periodic_defect_alarm,
    publish,
)
from inspection.records.events import AlarmRaised
from inspection.schemas import TOPICS, load_schema, validate
from tests.conftest import REPO

LINE = "test-line"
LOOPBACK = "tcp://127.0.0.1:*"  # bind on a free port the system picks; the socket reports which
VALIDATORS = {t: Draft202012Validator(load_schema(t), format_checker=FormatChecker()) for t in TOPICS}


def a_defect(i: int = 0, severity: int = 1, **changes: Any) -> dict[str, Any]:
    record = {"id": 100 + i, "coil": "C-0001", "surface": "top", "camera": "top-1", "frame_index": 7,
              "defect_index": i, "class": "scratches", "score": 0.91, "severity": severity,
              "along_mm": 7168.0 + i, "across_mm": 412.5, "length_mm": 35.0, "width_mm": 4.0,
              "area_mm2": 140.0, "x1": 400.0, "y1": 10.0, "x2": 404.0, "y2": 45.0,
              "captured_ns": 1_795_000_000_123_456_789}
    return defect_payload(record, model_version="hot-20261123-1", model_sha256="ab" * 32, **changes)


def a_coil(event: str = "graded", **changes: Any) -> dict[str, Any]:
    return {"event": event, "coil": "C-0001", "grade": "secondary",
            "reasons": ["scratches: 4 per 100 m > 2 (rule prime.scratches_per_100m)"], "coverage": 0.998,
            "counts": {"scratches": 4, "inclusion": 1}, "defects_total": 5, "rule_set": "standard",
            "rule_set_version": "3", "by": None, **changes}


@pytest.fixture
def context() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def publisher(context: zmq.Context) -> Iterator[PlcPublisher]:
    with PlcPublisher("tcp://127.0.0.1:*", LINE, context=context, heartbeat_s=3600) as pub:
        yield pub


def join(listener: PlcListener, probe: Callable[[], object]) -> None:
    """Slow joiner: send probes until the subscriber has one, so later messages are not lost to it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe()
        if listener.receive(0.05) is not None:
            return
    raise AssertionError("subscriber never received a probe")


def drain_until(listener: PlcListener, last: Callable[[dict], bool]) -> list[dict[str, Any]]:
    """Messages up to and including the one `last` accepts (probes still in flight included)."""
    messages = []
    while True:
        parts = listener.receive(5.0)
        assert parts is not None, "a message did not arrive within 5 s"
        message = json.loads(parts[1])
        assert parts[0].decode() == message["topic"]
        messages.append(message)
        if last(message):
            return messages


@pytest.fixture
def listener(publisher: PlcPublisher, context: zmq.Context) -> Iterator[PlcListener]:
    with PlcListener(publisher.endpoint, context=context) as sub:
        join(sub, publisher.heartbeat)
        yield sub


def test_every_topic_sends_messages_valid_against_the_shipped_schemas(publisher, listener) -> None:
    severe = AlarmRaised(7, "severe_defect", "C-0001", 3, "severity 3 scratches on coil C-0001 (top)",
                         {"severity": 3, "camera": "top-1", "surface": "top", "frame_index": 7, "defect_index": 0,
                          "class": "scratches", "score": 0.91, "along_mm": 7168.0, "across_mm": 412.5,
                          "defect_id": 100})
    sent = [publisher.defect(a_defect(0, severity=3)), publish(publisher, severe), publisher.coil(a_coil()),
            publisher.alarm(periodic_defect_alarm(coil="C-0001", surface="bottom", across_mm=820.0,
                                                  defect_class="rolled-in_scale", pitch_mm=2513.27, count=6)),
            publisher.alarm(coverage_alarm(coil="C-0002", coverage=0.97, required=0.995)),
            publisher.alarm({"kind": "worker", "coil": None, "severity": 2, "message": "worker-2 restarted",
                             "details": {"process": "worker-2", "reason": "exit code -9"}})]
    publisher.counters.update(frames=120, defects=5, drops=1)
    sent.append(publisher.heartbeat())
    received = drain_until(listener, lambda m: m["topic"] == "heartbeat" and m["counters"]["frames"] == 120)
    received = [m for m in received if m["topic"] != "heartbeat" or m["counters"]["frames"] == 120]
    assert received == sent
    assert received[-1]["counters"] == {"frames": 120, "defects": 5, "drops": 1, "plc_refused": 0,
                                        "plc_send_failures": 0}
    assert {m["topic"] for m in received} == set(TOPICS)
    for message in received:
        VALIDATORS[message["topic"]].validate(message)
    defect, severe = received[0], received[1]
    assert [defect[k] for k in ("class", "severity", "defect_id", "along_mm")] == ["scratches", 3, 100, 7168]
    assert "x1" not in defect  # box pixels are not part of the PLC message
    assert defect["captured_time"] == "2026-11-18T11:06:40.123Z"  # 1_795_000_000 s after the epoch
    assert (severe["kind"], severe["details"]["defect_index"], severe["alarm_id"]) == ("severe_defect", 0, 7)
    assert "severity" not in severe["details"]  # the stored severity is the message's own field
    periodic = received[3]["details"]
    assert periodic["roll_diameter_mm"] == pytest.approx(2513.27 / math.pi, abs=0.05)  # rounded to 0.1 mm


def test_sequence_numbers_count_per_topic_from_one(publisher, listener) -> None:
    for i in range(5):
        publisher.defect(a_defect(i))
        if i % 2:
            publisher.coil(a_coil(coil=f"C-{i}"))
    publisher.coil(a_coil(coil="END"))
    received = drain_until(listener, lambda m: m.get("coil") == "END")
    seqs = {t: [m["seq"] for m in received if m["topic"] == t] for t in ("defect", "coil")}
    assert seqs == {"defect": [1, 2, 3, 4, 5], "coil": [1, 2, 3]}
    assert publisher.stats()["sent"]["defect"] == 5


def test_topic_filter_delivers_only_the_chosen_topic(publisher, context) -> None:
    with PlcListener(publisher.endpoint, ["coil"], context=context) as sub:
        join(sub, lambda: publisher.coil(a_coil(coil="PROBE")))
        publisher.defect(a_defect(0, severity=3))
        publisher.heartbeat()
        publisher.coil(a_coil(coil="C-1"))
        publisher.alarm(coverage_alarm(coil="C-1", coverage=0.5, required=0.995))
        publisher.coil(a_coil(coil="END"))
        received = drain_until(sub, lambda m: m["coil"] == "END")
    assert {m["topic"] for m in received} == {"coil"}
    assert [m["coil"] for m in received][-2:] == ["C-1", "END"]


def test_listener_reports_skipped_sequence_numbers_and_restarts(context) -> None:
    raw = context.socket(zmq.PUB)  # a publisher whose sequence numbers the test chooses
    raw.bind(LOOPBACK)
    beats = iter(range(1, 10_000))

    def send(topic: str, payload: dict, seq: int) -> None:
        body = json.dumps(build_message(topic, payload, seq=seq, line=LINE))
        raw.send_multipart([topic.encode(), body.encode()])

    beat = {"process": "test", "uptime_s": 1.0, "interval_s": 1.0, "status": "ok",
            "counters": {"frames": 0, "defects": 0, "drops": 0}}
    with PlcListener(raw.getsockopt_string(zmq.LAST_ENDPOINT), ["defect", "heartbeat"], context=context) as sub:
        join(sub, lambda: send("heartbeat", beat, next(beats)))
        for seq in (1, 2, 3, 6, 7, 1, 2):  # 4 and 5 lost; then the publisher restarts at 1
            send("defect", a_defect(seq), seq)
        out, err = io.StringIO(), io.StringIO()
        tracker = sub.tracker
        restarted_and_done = lambda: tracker.restarts["defect"] > 0 and tracker.last["defect"] == 2  # noqa: E731
        summary = sub.run(out=out, err=err, stop=restarted_and_done)
    assert "gap on defect: expected seq 4, got 6 (2 missing)" in err.getvalue()
    assert "seq on defect went back from 7 to 1 (publisher restarted?)" in err.getvalue()
    assert summary["gaps"] == {"defect": 1} and summary["missing"] == {"defect": 2}
    assert summary["restarts"] == {"defect": 1} and summary["invalid"] == 0 and summary["exit_status"] == 0
    assert summary["received"]["defect"] == 7
    assert len(out.getvalue().splitlines()) == summary["messages"]


def test_sequence_tracker_table() -> None:
    tracker = SequenceTracker()
    reports = [tracker.observe("coil", s) for s in (5, 6, 9, 10, 2, 3)]
    assert reports[0] is None  # joining late at 5 is not a gap
    assert reports[2] == "gap on coil: expected seq 7, got 9 (2 missing)"
    assert reports[4] == "seq on coil went back from 10 to 2 (publisher restarted?)"
    assert (tracker.gaps["coil"], tracker.missing["coil"], tracker.restarts["coil"]) == (1, 2, 1)


EPOCH_CASES = [  # (seq, epoch) in arrival order -> the reports, None where nothing is said
    ("a restart continues the seq", [(5, 1), (6, 1), (7, 2), (8, 2)],
     [None, None, "coil: publisher restarted (epoch 1 -> 2), seq continues at 7", None]),
    ("a restart after lost messages", [(5, 1), (9, 2)],
     [None, "publisher restarted (epoch 1 -> 2), gap on coil: expected seq 6, got 9 (3 missing)"]),
    ("a seq again in the same epoch is a replay", [(5, 3), (6, 3), (5, 3), (7, 3)],
     [None, None, "coil seq 5 again in epoch 3 (had 6): a replay, or a second publisher", None]),
    ("an older epoch is a replay", [(5, 3), (9, 2), (6, 3)],
     [None, "coil seq 9 of epoch 2 after epoch 3: a replay, or a second publisher", None]),
    ("a restarted publisher without a ledger", [(5, 1), (1, 2)],
     [None, "coil: publisher restarted (epoch 1 -> 2), seq back from 5 to 1"]),
]


@pytest.mark.parametrize(("case", "seen", "reports"), EPOCH_CASES, ids=[c[0] for c in EPOCH_CASES])
def test_sequence_tracker_tells_a_restart_from_a_replay_by_the_epoch(case, seen, reports) -> None:
    tracker = SequenceTracker()
    assert [tracker.observe("coil", seq, epoch) for seq, epoch in seen] == reports
    replayed = sum(1 for r in reports if r and "replay" in r)
    assert tracker.replays["coil"] == replayed
    assert tracker.restarts["coil"] == sum(1 for r in reports if r and "restarted" in r)


def test_a_publisher_with_a_ledger_continues_seq_under_a_new_epoch(tmp_path, context) -> None:
    """The recorder's ledger in a real line database: a second publisher (a restarted recorder) numbers
    after the first; a burst is one ledger write, made before its messages leave."""
    from inspection.records.db import open_db
    from inspection.records.plc_sequence import PlcSequence

    class Counted(PlcSequence):  # the real ledger; the test only counts its writes
        saves: list[dict[str, int]] = []

        def save(self, last):
            self.saves.append(dict(last))
            super().save(last)

    db = open_db(tmp_path / "line.db")
    with PlcPublisher(LOOPBACK, LINE, context=context, heartbeat_s=3600, ledger=Counted(db)) as first:
        assert first.epoch == 1
        with first.batch():
            sent = [first.defect(a_defect(i)) for i in range(3)] + [first.coil(a_coil())]
            assert first.stats()["sent"]["defect"] == 0  # held until the batch ends
        assert Counted.saves == [{"defect": 3, "coil": 1}] and first.stats()["sent"]["defect"] == 3
        with pytest.raises(PlcMessageError):
            first.defect({**a_defect(9), "severity": 7})  # refused: no seq used, nothing written
        first.heartbeat()
        assert Counted.saves[-1] == {"heartbeat": 1}
    assert [m["epoch"] for m in sent] == [1, 1, 1, 1]
    with PlcPublisher(LOOPBACK, LINE, context=context, heartbeat_s=3600, ledger=PlcSequence(db)) as second, \
            PlcListener(second.endpoint, context=context) as sub:
        join(sub, lambda: second.alarm(coverage_alarm(coil="C-0002", coverage=0.9, required=0.995)))
        second.defect(a_defect(0, coil="END"))
        received = drain_until(sub, lambda m: m.get("coil") == "END")
        beat = second.heartbeat()
    defect = received[-1]
    assert (defect["epoch"], defect["seq"]) == (2, 4)
    assert (beat["epoch"], beat["seq"], beat["counters"]["plc_seq_unsaved"]) == (2, 2, 0)
    VALIDATORS["defect"].validate(defect)
    stored = dict(db.execute("SELECT topic, seq FROM plc_sequence WHERE line = ?", (LINE,)).fetchall())
    assert stored["defect"] == 4 and stored["heartbeat"] == 2
    db.close()


def test_slow_subscriber_never_blocks_and_its_losses_show_as_gaps(context) -> None:
    # Small queues and kernel buffers: 3000 messages of ~560 bytes cannot all be held in flight.
    pub = PlcPublisher("tcp://127.0.0.1:*", LINE, context=context, sndhwm=5,
                       socket_options={zmq.SNDBUF: 4096})
    with pub, PlcListener(pub.endpoint, ["defect"], context=context, rcvhwm=5,
                          socket_options={zmq.RCVBUF: 4096}) as sub:
        join(sub, lambda: pub.defect(a_defect(0)))
        sent = 3000
        for i in range(sent):  # nobody reads meanwhile: PUB drops for this subscriber, never waits
            pub.defect(a_defect(i))
        summary = sub.run(timeout=2.0, out=io.StringIO(), err=io.StringIO())
    first, last = summary["first_seq"]["defect"], summary["last_seq"]["defect"]
    assert summary["missing"]["defect"] > 0
    assert summary["received"]["defect"] + summary["missing"]["defect"] == last - first + 1
    assert pub.stats()["sent"]["defect"] == pub.stats()["last_seq"]["defect"] >= sent


BAD_PAYLOADS = [
    ("missing field", lambda d: {k: v for k, v in d.items() if k != "class"}, "class: missing"),
    ("severity out of range", lambda d: {**d, "severity": 4}, "severity: expected a number <= 3"),
    ("wrong type", lambda d: {**d, "along_mm": "12 m"}, "along_mm: expected number"),
    ("bool is not a number", lambda d: {**d, "score": True}, "score: expected number"),
    ("NaN score", lambda d: {**d, "score": float("nan")}, "score: expected number"),
    ("unknown field", lambda d: {**d, "colour": "red"}, "colour: unknown field"),
    ("bad surface", lambda d: {**d, "surface": "side"}, "surface: expected one of top, bottom"),
    ("envelope field in payload", lambda d: {**d, "seq": 99}, "seq is set by the publisher"),
    ("not serialisable", lambda d: {**d, "model_version": {1, 2}}, "model_version"),
]


@pytest.mark.parametrize(("case", "corrupt", "expected"), BAD_PAYLOADS, ids=[c[0] for c in BAD_PAYLOADS])
def test_publisher_refuses_invalid_payloads_without_using_a_seq(publisher, listener, case, corrupt,
                                                                expected) -> None:
    with pytest.raises(PlcMessageError, match="defect message refused|set by the publisher") as info:
        publisher.defect(corrupt(a_defect(0, severity=3)))
    assert expected in str(info.value)
    publisher.defect(a_defect(1, coil="END"))
    received = drain_until(listener, lambda m: m.get("coil") == "END")
    assert [m["seq"] for m in received if m["topic"] != "heartbeat"] == [1]  # no gap, no alarm either
    assert publisher.stats()["refused"] == 1
    assert publisher.heartbeat()["counters"]["plc_refused"] == 1  # visible to the PLC, too


def test_unknown_topic_and_bad_alarm_kind_are_refused(publisher) -> None:
    with pytest.raises(PlcMessageError, match="expected one of defect, coil, alarm, heartbeat"):
        publisher.publish("defects", a_defect())
    with pytest.raises(PlcMessageError, match="kind: expected one of"):
        publisher.alarm({"kind": "fire", "coil": None, "severity": 3, "message": "x", "details": {}})
    with pytest.raises(PlcMessageError, match="details.pitch_mm: missing"):
        publisher.alarm({"kind": "periodic_defect", "coil": "C", "severity": 2, "message": "x",
                         "details": {"class": "a", "surface": "top", "across_mm": 1.0,
                                     "roll_diameter_mm": 1.0, "count": 3}})


@pytest.mark.parametrize("message", [
    {"schema_version": 1, "topic": "coil"},
    {**build_message("coil", a_coil(), seq=1, line=LINE), "seq": 0},
    {**build_message("coil", a_coil(), seq=1, line=LINE), "time": "yesterday"},
    {**build_message("coil", a_coil(), seq=1, line=LINE), "counts": {"scratches": -1}},
    {**build_message("coil", a_coil(), seq=1, line=LINE), "topic": "defect"},
    {**build_message("coil", a_coil(), seq=1, line=LINE), "event": "graded-twice"},
    build_message("coil", a_coil(), seq=1, line=LINE),
])
def test_builtin_validator_agrees_with_jsonschema(message) -> None:
    assert bool(validate("coil", message)) == bool(list(VALIDATORS["coil"].iter_errors(message)))


def test_shipped_schemas_are_valid_draft_2020_12() -> None:
    for topic in TOPICS:
        Draft202012Validator.check_schema(load_schema(topic))
        assert load_schema(topic)["properties"]["topic"]["const"] == topic


def test_publisher_decides_no_alarm_and_heartbeat_tick(context) -> None:
    with PlcPublisher("tcp://127.0.0.1:*", LINE, context=context, heartbeat_s=3600, process="worker-1") as pub:
        assert pub.defect(a_defect(severity=3))["topic"] == "defect"  # the recorder decides alarms, not this
        assert pub.stats()["sent"]["alarm"] == 0
        model = AlarmRaised(9, "model", None, 1, "hot strip is now inspected by model hot-2", {"severity": 1})
        assert publish(pub, model) is None and pub.stats()["sent"]["alarm"] == 0  # no PLC kind for it
        beat = pub.tick()
        assert beat is not None and beat["process"] == "worker-1" and beat["status"] == "ok"
        assert pub.tick() is None  # next one is an hour away
        pub.status = "degraded"
        assert pub.heartbeat()["status"] == "degraded"


def test_bad_endpoints_are_clear_errors(context) -> None:
    with pytest.raises(TransportError, match="address must start with"):
        PlcPublisher("192.0.2.1:7570", LINE, context=context)
    with PlcPublisher("tcp://127.0.0.1:*", LINE, context=context) as first, \
            pytest.raises(TransportError, match="cannot bind"):
        PlcPublisher(first.endpoint, LINE, context=context)


def test_close_with_an_unread_subscriber_does_not_hang() -> None:
    ctx = zmq.Context()
    pub = PlcPublisher("tcp://127.0.0.1:*", LINE, context=ctx, linger_ms=200)
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(pub.endpoint)
    for i in range(500):
        pub.defect(a_defect(i))
    sub.close(linger=0)
    pub.close()
    pub.close()  # idempotent
    closer = threading.Thread(target=ctx.term, daemon=True)
    closer.start()
    closer.join(timeout=10)
    assert not closer.is_alive(), "context.term() hung after close()"


def _listen_cli(endpoint: str, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "inspection", "plc-listen", "--connect", endpoint, *extra],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _feed_until_exit(proc: subprocess.Popen, send: Callable[[], object], timeout: float = 30.0) -> tuple[str, str]:
    """Publish with `send` until plc-listen exits (it does once it has its --count messages); its
    stdout and stderr. A PUB socket cannot tell when a subscriber has joined (the slow joiner), so
    every message is a probe and the condition waited for, between probes, is the listener's exit."""
    deadline = time.monotonic() + timeout
    while True:
        send()
        try:
            proc.wait(timeout=0.05)
            return proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            if time.monotonic() >= deadline:
                proc.kill()
                _, err = proc.communicate(timeout=10)
                raise AssertionError(f"plc-listen did not exit within {timeout:g} s of messages:\n{err[-3000:]}") \
                    from None


def test_cli_prints_valid_messages_and_exits_zero(publisher) -> None:
    proc = _listen_cli(publisher.endpoint, "--topic", "heartbeat", "--count", "3", "--timeout", "15",
                       "--json")
    out, err = _feed_until_exit(proc, publisher.heartbeat)
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 3 and all(VALIDATORS["heartbeat"].validate(m) is None for m in lines)
    assert [m["seq"] for m in lines] == list(range(lines[0]["seq"], lines[0]["seq"] + 3))
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["invalid"] == 0 and summary["validator"] == "jsonschema"


def test_cli_exits_non_zero_on_invalid_messages(context) -> None:
    # An XPUB socket is a publisher that also receives its subscribers' subscriptions: the test
    # publishes once the listener process has subscribed, so exactly the two messages it counts.
    raw = context.socket(zmq.XPUB)
    raw.bind(LOOPBACK)
    bad = {**build_message("alarm", coverage_alarm(coil="C", coverage=0.9, required=0.99), seq=1, line=LINE)}
    del bad["severity"]
    proc = _listen_cli(raw.getsockopt_string(zmq.LAST_ENDPOINT), "--count", "2", "--timeout", "15")
    try:
        if not raw.poll(30_000, zmq.POLLIN):
            raise AssertionError("plc-listen did not subscribe within 30 s")
        assert raw.recv() == b"\x01"  # subscribed to every topic
        for _ in range(2):
            raw.send_multipart([b"alarm", json.dumps(bad).encode()])
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)
    assert proc.returncode == 1
    assert "invalid alarm message (seq 1)" in err and "'severity' is a required property" in err
    assert "2 invalid" in err


def _periodic_coil(coil: str) -> list:
    """A 30 m coil whose top camera sees rolled-in scale every 1024 mm at 800 mm across (a roll mark)."""
    from dataclasses import replace

    from inspection.results import Defect, FrameResult
    from inspection.testing.synthetic import coil_messages

    def mark(frame: FrameResult) -> FrameResult:
        along = frame.position_mm + 500.0
        defect = Defect(cls="rolled-in_scale", score=0.8, severity=3 if frame.index == 4 else 2,
                              box=(795.0, 495.0, 805.0, 505.0), along_mm=along, across_mm=800.0,
                              length_mm=10.0, width_mm=10.0, area_mm2=100.0)
        return replace(frame, defects=(defect,))

    messages = coil_messages(coil, length_m=30, defects_per_frame=0.0)
    return [mark(m) if isinstance(m, FrameResult) and m.source.camera == "top-1" else m for m in messages]


def test_recorder_publishes_what_it_decided_and_every_grade_decision(
        tmp_path, publisher, listener) -> None:
    """The recorder process's loop with its PLC publisher: defects, the roll-mark and severe alarms it
    decided and stored, grades (also those written by the console, another connection), heartbeat
    counters; every alarm a PLC receives has its row in `alarms`, with the same id."""
    from inspection.line.recorder import RecorderLoop
    from inspection.records.crops import CropStore
    from inspection.records.store import Store
    from inspection.results import encode

    store = Store(tmp_path / "line.db", crops=CropStore(tmp_path / "crops"))
    store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                      {"id": "bottom-1", "surface": "bottom"}])
    loop = RecorderLoop(store, LOOPBACK, "demo-hot-1", publisher=publisher, batch_messages=50, flush_ms=50)
    stop = threading.Event()
    # The publisher belongs to the recorder's thread from here until the thread ends.
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(loop.receiver.address)
    for message in _periodic_coil("COIL-P"):
        push.send_multipart(encode(message))
    push.close()
    received = drain_until(listener, lambda m: m["topic"] == "alarm" and m["kind"] == "periodic_defect")
    stop.set()
    thread.join(10)
    assert not thread.is_alive()

    console = Store(tmp_path / "line.db")  # the console's own connection, as in another process
    first = console.db.execute("SELECT min(id) FROM defects").fetchone()[0]
    console.add_review(first, "inspector-a", "reject", reason="scale, not a defect")
    console.override_grade("COIL-P", "inspector-b", "downgrade", "customer spec 4711")
    loop.recorder.housekeeping()  # what the running loop does every second: publish new grade rows
    loop.tick()
    publisher.heartbeat()  # tick() beats only when due (an hour here): beat now to see the counters
    received += drain_until(listener, lambda m: m["topic"] == "heartbeat" and m["counters"]["frames"] == 58)

    stored = {row[0]: row[1:] for row in console.db.execute("SELECT id, kind, coil FROM alarms")}
    alarms = [m for m in received if m["topic"] == "alarm"]
    assert alarms and len(alarms) == len(stored)
    plc_kind = {"periodic": "periodic_defect"}
    for alarm in alarms:
        kind, coil = stored[alarm["alarm_id"]]
        assert (plc_kind.get(kind, kind), coil) == (alarm["kind"], alarm["coil"])
    for message in received:
        VALIDATORS[message["topic"]].validate(message)
    by_topic = {t: [m for m in received if m["topic"] == t] for t in TOPICS}
    defects = by_topic["defect"]
    assert len(defects) == 29 and {d["model_version"] for d in defects} == {"hot-test-1"}
    assert [d["seq"] for d in defects] == list(range(1, 30))
    coil_events = [(c["event"], c["grade"]) for c in by_topic["coil"]]
    assert [e for e, _ in coil_events] == ["graded", "regraded", "override"]
    assert by_topic["coil"][0]["counts"] == {"rolled-in_scale": 29}
    assert by_topic["coil"][1]["counts"] == {"rolled-in_scale": 28}  # the rejected one no longer counts
    assert coil_events[2] == ("override", "downgrade") and by_topic["coil"][2]["by"] == "inspector-b"
    severe = [a for a in by_topic["alarm"] if a["kind"] == "severe_defect"]
    assert len(severe) == 1 and severe[0]["details"]["frame_index"] == 4
    periodic = [a for a in by_topic["alarm"] if a["kind"] == "periodic_defect"][0]["details"]
    assert periodic["pitch_mm"] == pytest.approx(1024, abs=2)
    assert periodic["across_mm"] == pytest.approx(800, abs=5)
    assert periodic["roll_diameter_mm"] == pytest.approx(1024 / math.pi, abs=1)
    assert by_topic["heartbeat"][-1]["counters"] == {"frames": 58, "defects": 29, "drops": 0,
                                                     "plc_refused": 0, "plc_send_failures": 0}


def test_from_config_and_numpy_numbers(context) -> None:
    import dataclasses

    import numpy as np

    from inspection.config import EndpointsConfig, load_config

    demo = load_config(None)
    config = dataclasses.replace(demo, endpoints=EndpointsConfig(results=demo.endpoints.results,
                                                                 plc="bind:tcp://127.0.0.1:*"))
    with PlcPublisher.from_config(config, context=context) as pub:
        assert pub.line == "demo-hot-1" and pub.endpoint.startswith("tcp://127.0.0.1:")
        message = pub.defect(a_defect(0, score=np.float32(0.75), severity=np.int64(2)))
    assert message["score"] == pytest.approx(0.75) and type(message["score"]) is float
    assert message["severity"] == 2 and type(message["severity"]) is int


def test_listener_reports_too_few_messages_by_the_deadline(publisher, context) -> None:
    with PlcListener(publisher.endpoint, ["coil"], context=context) as sub:  # nothing is published
        summary = sub.run(count=1, timeout=0.3, out=io.StringIO(), err=io.StringIO())
    assert (summary["messages"], summary["exit_status"]) == (0, 3)


def test_listener_prints_numbers_rounded_for_reading(publisher, listener) -> None:
    publisher.defect(a_defect(0, score=0.912345678901234, along_mm=7168.123456789012, across_mm=412.56789012345,
                              length_mm=35.04999999999, width_mm=4.000000000001))
    publisher.coil(a_coil(coverage=0.998123456789))
    publisher.heartbeat()
    out = io.StringIO()
    listener.run(timeout=10, out=out, err=io.StringIO(),
                 stop=lambda: re.search(r"grade=.*\n.* heartbeat ", out.getvalue(), re.S) is not None)
    lines = out.getvalue().splitlines()
    defect = next(line for line in lines if " defect " in line)
    assert "score=0.912 along=7168.1mm across=412.6mm size=35.0x4.0mm" in defect
    assert "coverage=99.81% " in next(line for line in lines if " coil " in line)
    heartbeats = [line for line in lines if " heartbeat " in line]
    assert heartbeats and all(re.search(r"uptime=\d+\.\ds ", line) for line in heartbeats)
    assert not [line for line in lines if re.search(r"\d\.\d{4,}", line)]  # no float printed at full precision


def test_recorder_anchors_its_signed_head_in_a_file_and_in_the_heartbeat(tmp_path, publisher, listener) -> None:
    """The recorder's store signs every audit event with the audit key; at coil end and at stop the
    newest signed head goes to the anchor file, and every heartbeat carries it (``audit_anchor``)."""
    from inspection.line.recorder import RecorderLoop
    from inspection.records import checkpoints
    from inspection.records.audit_keys import generate_key
    from inspection.records.store import Store
    from inspection.results import encode

    key = generate_key(tmp_path / "keys" / "audit.hmac_key")
    store = Store(tmp_path / "line.db", audit_key=key)
    store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                      {"id": "bottom-1", "surface": "bottom"}])
    anchors = checkpoints.AnchorLog(tmp_path / "line.db.anchors.jsonl")
    loop = RecorderLoop(store, LOOPBACK, "demo-hot-1", publisher=publisher, batch_messages=50, flush_ms=50,
                        anchors=anchors, anchor_s=3600)  # no periodic anchor here: coil end and stop only
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    push = zmq.Context.instance().socket(zmq.PUSH)
    push.setsockopt(zmq.LINGER, 5000)
    push.connect(loop.receiver.address)
    for message in _periodic_coil("COIL-A"):
        push.send_multipart(encode(message))
    push.close()
    drain_until(listener, lambda m: m["topic"] == "coil")
    stop.set()
    thread.join(10)
    assert not thread.is_alive()
    loop.tick()
    beat = publisher.heartbeat()
    VALIDATORS["heartbeat"].validate(beat)
    head = checkpoints.latest(store.db)
    events = store.db.execute("SELECT max(seq) FROM audit_log").fetchone()[0]
    assert head is not None and head.seq == events and beat["audit_anchor"] == head.as_dict()
    assert key.check(head.seq, head.head, beat["audit_anchor"]["hmac"])
    written = [json.loads(line) for line in anchors.path.read_text().splitlines()]
    assert written and written[-1]["seq"] == events  # at coil end (the stop found nothing newer to anchor)
    found = checkpoints.check_anchors(store.db, anchors.path, key, events)
    assert found.problem is None and found.tail == 0
    assert checkpoints.check_signatures(store.db, key, events).problem is None
    store.close()
