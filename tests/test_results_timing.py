"""The worker's stage times in a frame_result (`timing`), and the latency breakdown they feed.

Decoding: optional, all four stamps or none, bounded integers, unknown keys refused, every bad value
named. On real sockets: a worker's result goes to the recorder loop, which commits it and publishes
the defect to a PLC subscriber; the stage log then holds every stamp in the order the stages happen.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from inspection.errors import RecordError
from inspection.frame import MAX_INT, Frame, StreamKey
from inspection.results import FrameResult, WorkerTiming, decode, encode
from inspection.stage_times import STAGES, STAMPS, breakdown, read, table
from inspection.testing.synthetic import TEST_MODEL

SRC = StreamKey("demo-hot-1", "hot", "top-1", "top")
TIMING = WorkerTiming(recv_ns=10**18 + 1, infer_start_ns=10**18 + 2, infer_end_ns=10**18 + 3, sent_ns=10**18 + 4)


def _result(**changes: object) -> FrameResult:
    values: dict[str, object] = dict(source=SRC, coil="C-1", seq=7, index=6, captured_ns=10**18, position_mm=6144.0,
                                     length_mm=1024.0, model_version=TEST_MODEL[0], model_sha256=TEST_MODEL[1],
                                     inspected_ns=10**18 + 5, timing=TIMING)
    values.update(changes)
    return FrameResult(**values)  # type: ignore[arg-type]


def _with_timing(timing: object) -> list[bytes]:
    header = json.loads(encode(_result())[0])
    header["timing"] = timing
    return [json.dumps(header).encode()]


def test_timing_round_trips_and_stays_optional() -> None:
    assert decode(encode(_result())) == _result()
    plain = _result(timing=None)
    assert "timing" not in json.loads(encode(plain)[0])  # a result without it looks as it always did
    assert decode(encode(plain)).timing is None


@pytest.mark.parametrize(("timing", "match"), [
    ([1, 2, 3, 4], r"timing: expected an object with recv_ns"),
    ({"recv_ns": 1, "infer_start_ns": 2, "infer_end_ns": 3}, r"timing: missing field\(s\) sent_ns"),
    ({**TIMING.as_dict(), "gpu_ns": 5}, r"timing: unknown field\(s\) gpu_ns"),
    ({**TIMING.as_dict(), "recv_ns": -1}, r"timing.recv_ns: expected an integer in 0\.\."),
    ({**TIMING.as_dict(), "infer_start_ns": 1.5}, r"timing.infer_start_ns: expected an integer"),
    ({**TIMING.as_dict(), "infer_end_ns": True}, r"timing.infer_end_ns: expected an integer"),
    ({**TIMING.as_dict(), "sent_ns": MAX_INT + 1}, r"timing.sent_ns: expected an integer in 0\.\.9223372036854775807"),
    ({**TIMING.as_dict(), "sent_ns": "now"}, r"timing.sent_ns: expected an integer"),
    (None, r"timing: expected an object"),
])
def test_bad_timing_is_refused_naming_the_field(timing: object, match: str) -> None:
    with pytest.raises(RecordError, match=match):
        decode(_with_timing(timing))


def test_a_result_built_with_bad_timing_is_refused() -> None:
    with pytest.raises(RecordError, match="timing.sent_ns"):
        dataclasses.replace(TIMING, sent_ns=-5)
    with pytest.raises(RecordError, match="timing: expected WorkerTiming or None"):
        _result(timing={"recv_ns": 1})


def test_breakdown_stages_add_up_to_the_total() -> None:
    base = 1_000_000_000_000_000_000
    rows = [{"defect_id": i, **{stamp: base + k * (i + 1) * 1_000_000 for k, stamp in enumerate(STAMPS)}}
            for i in range(3)]
    arrivals = {i: base + len(STAMPS) * (i + 1) * 1_000_000 for i in range(3)}
    out = breakdown(rows, {**arrivals, 99: base})  # a message without stage times is left out
    assert out["defects"] == 3 and list(out["stages"]) == [name for name, *_ in STAGES]
    assert out["sum_of_stage_means_ms"] == pytest.approx(out["total"]["mean"], abs=0.1)
    assert out["stages"]["inference"]["p50"] == 2.0 and out["total"]["p50"] == 18.0
    assert "capture -> PLC" in table(out, "t") and breakdown([], {})["defects"] == 0


def test_timing_reaches_the_stage_log_over_real_sockets_in_stage_order(tmp_path: Path) -> None:
    """worker (a real `InferenceWorker`, its frames handed in) -> ResultSender -> RecorderLoop (stage log
    on) -> PlcPublisher -> subscriber: the defect's stamps are in order and add up to its arrival."""
    from inspection.commands.plc_listen import PlcListener
    from inspection.config import load_config
    from inspection.line.recorder import RecorderLoop
    from inspection.plc import PlcPublisher
    from inspection.records.crops import CropStore
    from inspection.records.store import Store
    from inspection.registry import Registry
    from inspection.stage_times import StageLog
    from inspection.transport import ResultSender
    from inspection.worker import InferenceWorker
    from tests.tiny_models import DARK, add_tiny_model, blob_value

    registry = Registry(tmp_path / "models")
    add_tiny_model(registry, tmp_path, version="hot-a", activate=True)
    config = load_config()
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, registry=registry.root, name="hot"),
        worker=dataclasses.replace(config.worker, providers="cpu", first_stage="none", max_wait_ms=5.0, batch_size=1,
                                           cpu_warm_up=False))
    store = Store(tmp_path / "line.db", crops=CropStore(tmp_path / "crops"))
    store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"}])
    context = zmq.Context()
    publisher = PlcPublisher("tcp://127.0.0.1:*", "demo-hot-1", context=context, heartbeat_s=3600)
    log_path = tmp_path / "stages.jsonl"
    loop = RecorderLoop(store, "tcp://127.0.0.1:*", "demo-hot-1", publisher=publisher, context=context,
                        batch_messages=50, flush_ms=20, stage_log=StageLog(log_path))
    listener = PlcListener(publisher.endpoint, topics=("defect", "heartbeat"), context=context)
    stop = threading.Event()
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    try:
        deadline = time.monotonic() + 10  # slow joiner: heartbeats until the subscriber hears one
        while listener.receive(0.05) is None:
            assert time.monotonic() < deadline, "the subscriber never joined"
            publisher.heartbeat()
        thread.start()  # from here the publisher belongs to the recorder's thread
        sender = ResultSender(loop.receiver.address, hwm=100, linger_ms=5000, context=context)
        pixels = np.full((256, 512), DARK, np.uint8)
        pixels[100:110, 100:110] = blob_value(1, 2)
        frame = Frame(source=SRC, coil="C1", seq=1, index=0, captured_ns=time.time_ns(), position_mm=0.0,
                      offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0, pixels=pixels)
        pending = [frame]
        worker = InferenceWorker(config, registry, lambda _t: pending.pop() if pending else None, sender.send)
        worker.run(should_stop=lambda: not pending and not worker._pending, max_frames=1)
        sender.close()
        arrived: dict[int, int] = {}
        deadline = time.monotonic() + 10
        while not arrived:
            assert time.monotonic() < deadline, "no defect message reached the subscriber"
            parts = listener.receive(0.2)
            if parts is not None and parts[0] == b"defect":
                arrived[json.loads(parts[1])["defect_id"]] = time.time_ns()
    finally:
        stop.set()
        thread.join(10) if thread.is_alive() else None
        listener.close()
        publisher.close()
        store.close()
        context.term()
    rows = read(log_path)
    assert [r["defect_id"] for r in rows] == list(arrived)
    stamps = [rows[0][s] for s in STAMPS] + [arrived[rows[0]["defect_id"]]]
    assert stamps == sorted(stamps), dict(zip([*STAMPS, "arrived_ns"], stamps, strict=True))
    assert rows[0]["captured_ns"] == frame.captured_ns and rows[0]["frame_index"] == 0
    out = breakdown(rows, arrived)
    assert out["defects"] == 1 and all(s["mean"] >= 0 for s in out["stages"].values())
    assert out["sum_of_stage_means_ms"] == pytest.approx(out["total"]["mean"], abs=0.2)
