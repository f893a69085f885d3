"""Issue 12's last item: cameras sign what they capture, the recorder records only what they signed.

All workers share one CURVE key, so before this a holder of that key could tell the recorder about
frames, seqs and coils a camera never captured. Now each camera signs every frame and coil event
(Ed25519, `inspection.signing`), workers carry the signature on, and the recorder refuses, counts
and alarms on a result without its camera's valid signature; a re-sent result that differs from
the one recorded is an alarm too (`inspection.records.duplicates`), while an identical one is a
silent retry.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import stat
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import zmq
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from inspection import keys, wire
from inspection.config import load_config
from inspection.errors import FrameError
from inspection.frame import Capture, CoilEvent, Frame, StreamKey
from inspection.line.process import StopFlag
from inspection.line.recorder import RecorderLoop
from inspection.records.alarm_gate import AlarmGate
from inspection.records.audit import verify
from inspection.records.events import AlarmRaised
from inspection.records.seals import BAD_SIGNATURE, UNSIGNED, SealCheck
from inspection.records.store import Store
from inspection.results import Defect, FrameDropped, FrameResult, decode, encode
from inspection.security import curve_for, ensure_keys, signer_for, verify_keys_for
from inspection.signing import Signer, pixel_digest
from inspection.testing.synthetic import coil_messages, signed
from inspection.transport import ResultSender, peer_endpoint
from tests.line_configs import write_line_config
from tests.test_curve_probes import line_process
from tests.waits import wait_connected, wait_for

CAMERAS = ("top-1", "bottom-1")
LOOPBACK = "tcp://127.0.0.1:*"
SOURCE = StreamKey("demo-hot-1", "hot", "top-1", "top")


@pytest.fixture(scope="module")
def key_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("keys")
    keys.generate(folder, CAMERAS)
    return folder


def signers_in(folder: Path) -> dict[str, Signer]:
    return {c: Signer(keys.load_signing_key(keys.sign_path(folder, c)), c) for c in CAMERAS}


def seals_in(folder: Path) -> SealCheck:
    return SealCheck({c: keys.load_verify_key(keys.sign_public_path(keys.sign_path(folder, c))) for c in CAMERAS})


def severe_defect(index: int) -> Defect:
    return Defect(cls="inclusion", score=0.99, severity=3, box=(10.0, 10.0, 400.0, 300.0),
                  along_mm=index * 1024.0 + 150.0, across_mm=200.0, length_mm=290.0, width_mm=390.0,
                  area_mm2=80_000.0)


# -- the header field, on the camera wire ---------------------------------------------------------------
def test_a_signed_frame_round_trips_and_its_pixels_are_checked_against_the_digest(key_folder: Path) -> None:
    signer = signers_in(key_folder)["top-1"]
    pixels = np.arange(64 * 48, dtype=np.uint16).reshape(64, 48)
    frame = Frame(SOURCE, "C-1", 3, 2, 123, 2048.0, -0.0, 0.5, 0.25, pixels)
    parts = wire.encode(frame, signer)
    header = json.loads(bytes(parts[0]))
    back = wire.decode(parts)
    assert back == frame and back.digest == header["digest"] == pixel_digest(parts[1]) and back.sig == header["sig"]
    capture = Capture.of(back)
    assert capture is not None and capture.length_mm == frame.length_mm
    tampered = bytearray(bytes(parts[1]))
    tampered[5] ^= 1
    with pytest.raises(FrameError, match="digest"):
        wire.decode([parts[0], bytes(tampered)])
    broken = wire.identify([parts[0], bytes(tampered)], "digest")
    assert broken is not None and broken.capture == capture  # the drop still carries what the camera signed
    dropped = FrameDropped(broken.source, broken.coil, broken.seq, broken.index, broken.captured_ns,
                           reason="malformed on the wire", capture=broken.capture)
    assert decode(encode(dropped)) == dropped
    assert seals_in(key_folder).refuse(decode(encode(dropped))) is None  # a worker's signed drop is recorded


HEX = "0123456789abcdef"


@settings(max_examples=200, deadline=None)
@given(sig=st.one_of(st.text(alphabet=HEX, min_size=126, max_size=130), st.text(max_size=140),
                     st.integers(), st.none(), st.lists(st.integers(), max_size=3)),
       digest=st.one_of(st.text(alphabet=HEX + "ABCDEF", min_size=63, max_size=65), st.text(max_size=70),
                        st.integers(), st.none()),
       with_digest=st.booleans(), real_digest=st.booleans())
def test_decode_accepts_sig_and_digest_only_in_their_one_spelling(sig: object, digest: object, with_digest: bool,
                                                                  real_digest: bool) -> None:
    pixels = np.zeros((4, 4), dtype=np.uint8)
    real = pixel_digest(memoryview(pixels).cast("B"))
    frame = Frame(SOURCE, "C-1", 1, 0, 1, 0.0, 0.0, 1.0, 1.0, pixels)
    header = {"v": 1, "type": "frame", **frame.header_fields(), "dtype": "uint8", "shape": [4, 4], "sig": sig}
    if with_digest:
        header["digest"] = real if real_digest else digest
    raw = json.dumps(header).encode()
    valid = (isinstance(sig, str) and len(sig) == 128 and set(sig) <= set(HEX)
             and with_digest and header["digest"] == real)
    try:
        back = wire.decode([raw, pixels.tobytes()])
    except FrameError:
        assert not valid
    else:
        assert valid and back.sig == sig and back.digest == real
    event = {"v": 1, "type": "coil_start", "line": "demo-hot-1", "line_type": "hot", "camera": "top-1",
             "surface": "top", "coil": "C-1", "seq": 0, "time_ns": 1, "length_mm": None, "frames": None,
             "dropped": None, "sig": sig}
    try:
        assert wire.decode([json.dumps(event).encode()]).sig == sig
    except FrameError:
        assert not (isinstance(sig, str) and len(sig) == 128 and set(sig) <= set(HEX))


# -- the recorder's check, message by message ------------------------------------------------------------
def _tamper(name: str, message: object, folder: Path) -> object:
    if name == "unsigned":
        return dataclasses.replace(message, capture=None)
    capture = message.capture
    changes: dict[str, Callable[[], object]] = {
        "signature": lambda: dataclasses.replace(message, capture=dataclasses.replace(
            capture, sig=("0" if capture.sig[0] != "0" else "1") + capture.sig[1:])),
        "pixel digest": lambda: dataclasses.replace(message, capture=dataclasses.replace(capture, digest="ab" * 32)),
        "seq": lambda: dataclasses.replace(message, seq=message.seq + 1000),
        "coil": lambda: dataclasses.replace(message, coil="OTHER-COIL"),
        "position": lambda: dataclasses.replace(message, position_mm=message.position_mm + 1.0),
        "length": lambda: dataclasses.replace(message, length_mm=message.length_mm * 2),
        "unknown key": lambda: signed([dataclasses.replace(message, capture=None)],
                                      {"top-1": Signer(Ed25519PrivateKey.generate(), "top-1")})[0],
    }
    return changes[name]()


@pytest.mark.parametrize(("tamper", "reason"), [
    ("unsigned", UNSIGNED), ("signature", BAD_SIGNATURE), ("pixel digest", BAD_SIGNATURE), ("seq", BAD_SIGNATURE),
    ("coil", BAD_SIGNATURE), ("position", BAD_SIGNATURE), ("length", BAD_SIGNATURE), ("unknown key", BAD_SIGNATURE)])
def test_a_frame_result_the_camera_did_not_sign_is_refused(key_folder: Path, tamper: str, reason: str) -> None:
    good = next(m for m in signed(coil_messages("C-9", length_m=4, cameras=[("top-1", "top")], seed=1),
                                  signers_in(key_folder)) if isinstance(m, FrameResult))
    check = seals_in(key_folder)
    assert check.refuse(good) is None
    forged = decode(encode(_tamper(tamper, good, key_folder)))  # as it arrives from a worker
    refusal = check.refuse(forged)
    assert refusal is not None and refusal[0] == reason


def test_coil_events_are_checked_too(key_folder: Path) -> None:
    check = seals_in(key_folder)
    start, *_, end = signed(coil_messages("C-8", length_m=3, cameras=[("top-1", "top")]), signers_in(key_folder))
    assert check.refuse(start) is None and check.refuse(end) is None
    assert check.refuse(dataclasses.replace(end, sig=None))[0] == UNSIGNED
    assert check.refuse(dataclasses.replace(end, frames=end.frames - 1, dropped=0))[0] == BAD_SIGNATURE
    moved = dataclasses.replace(end, source=dataclasses.replace(end.source, camera="bottom-1", surface="bottom"))
    assert check.refuse(moved)[0] == BAD_SIGNATURE  # one camera's signature does not vouch for another's


def test_the_alarm_gate_lets_one_alarm_per_source_through_and_counts_the_rest() -> None:
    gate = AlarmGate(10.0)
    for _ in range(5):
        gate.add(("unsigned", "top-1"), "x")
    gate.add(("unsigned", "bottom-1"), "y")
    first = gate.due(100.0)
    assert sorted((g.key[1], g.count) for g in first) == [("bottom-1", 1), ("top-1", 5)]
    gate.add(("unsigned", "top-1"), "z")
    assert gate.due(105.0) == []  # within the interval: held and counted
    assert [(g.count, g.last) for g in gate.due(110.0)] == [(1, "z")]


# -- forged results against a real recorder process --------------------------------------------------------
def _status(db: Path, line: str) -> dict:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        row = con.execute("SELECT value FROM status WHERE key = ?", (f"recorder:{line}",)).fetchone()
    return json.loads(row[0]) if row else {}


def test_a_holder_of_the_workers_key_cannot_forge_results_for_a_configured_camera(tmp_path: Path,
                                                                                   ipc_dir: Path) -> None:
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, keys=True))
    cameras = [(c.id, c.surface) for c in config.cameras]
    signers = {c.id: signer_for(config, c.id) for c in config.cameras}
    # Sent first, so that as the first record of each frame they would win if they were taken:
    # a coil's frames with critical defects and a coil_end claiming all frames, none signed ...
    forged = [m for m in coil_messages("REAL-1", cameras=cameras, length_m=3.0, seed=7)
              if not (isinstance(m, CoilEvent) and m.kind == "coil_start")]
    forged = [dataclasses.replace(m, defects=(severe_defect(m.index),)) if isinstance(m, FrameResult) else m
              for m in forged]
    # ... a whole invented coil, signed by a key the recorder does not know ...
    strangers = {c: Signer(Ed25519PrivateKey.generate(), c) for c, _ in cameras}
    invented = signed(coil_messages("NEVER-1", cameras=cameras, length_m=3.0, seed=8), strangers)
    # ... and the real coil's frames with their signature kept but their seq changed
    genuine = signed(coil_messages("REAL-1", cameras=cameras, length_m=3.0, defects_per_frame=0.0, seed=2), signers)
    reseq = [dataclasses.replace(m, seq=m.seq + 100, defects=(severe_defect(m.index),))
             for m in genuine if isinstance(m, FrameResult)]
    unsigned, bad = len(forged), len(invented) + len(reseq)
    with line_process("recorder", "--config", str(config.path)) as proc:
        wait_for(lambda: _status(config.database, config.id), 120, "the recorder to start",
                 ignore=(sqlite3.OperationalError,))  # listening: nothing sent waits out the worker's linger
        worker = ResultSender(config.endpoints.results, hwm=1000, linger_ms=10_000,
                              curve=curve_for(config, "results", "worker", [peer_endpoint(config.endpoints.results)]))
        for message in [*forged, *invented, *reseq, *genuine]:
            worker.send(message)
        worker.close()
        wait_for(lambda: _status(config.database, config.id).get("refused_bad_signature") == bad
                 and _status(config.database, config.id).get("refused_unsigned") == unsigned, 60,
                 "the recorder's status row to count every refused result", ignore=(sqlite3.OperationalError,))
        wait_for(lambda: _graded(config.database, "REAL-1"), 60, "the genuine coil to be graded",
                 ignore=(sqlite3.OperationalError,))
    assert proc.returncode == 0, proc.output
    with sqlite3.connect(config.database) as con:
        assert {r[0] for r in con.execute("SELECT DISTINCT coil FROM frames")} == {"REAL-1"}
        assert con.execute("SELECT count(*) FROM defects").fetchone()[0] == 0  # no forged defect
        assert con.execute("SELECT max(seq) FROM frames").fetchone()[0] < 100
        grade = con.execute("SELECT grade FROM grades WHERE coil = 'REAL-1' ORDER BY id DESC").fetchone()[0]
        assert grade == "prime"  # what the real, defect-free, complete coil earns
        assert con.execute("SELECT count(*) FROM frame_seals").fetchone()[0] == sum(
            isinstance(m, FrameResult) for m in genuine)
        alarms = [(json.loads(d)) for (d,) in con.execute("SELECT details FROM alarms WHERE kind = 'worker'")]
    refused = [a for a in alarms if a.get("reason") in (UNSIGNED, BAD_SIGNATURE)]
    assert {(a["reason"], a["camera"]) for a in refused} == {(r, c) for r in (UNSIGNED, BAD_SIGNATURE)
                                                             for c, _ in cameras}
    assert sum(a["count"] for a in refused if a["reason"] == UNSIGNED) == unsigned  # every refusal in an alarm
    assert sum(a["count"] for a in refused if a["reason"] == BAD_SIGNATURE) == bad
    assert len(refused) <= 2 * len(cameras) * 2  # rate-limited: not one alarm per refused result


def _graded(db: Path, coil: str) -> bool:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        return con.execute("SELECT count(*) FROM grades WHERE coil = ?", (coil,)).fetchone()[0] > 0


# -- re-sent results: silent when identical, an alarm when not ----------------------------------------------
def test_an_identical_resend_is_silent_and_a_conflicting_one_is_an_alarm(tmp_path: Path, key_folder: Path) -> None:
    store = Store(tmp_path / "line.db")
    store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                      {"id": "bottom-1", "surface": "bottom"}])
    events: list = []
    loop = RecorderLoop(store, LOOPBACK, "demo-hot-1", on_event=events.append, flush_ms=20,
                        seals=seals_in(key_folder))
    stop = StopFlag(install=False)
    thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
    thread.start()
    signers = signers_in(key_folder)
    genuine = signed(coil_messages("C-1", length_m=4.0, defects_per_frame=1.0, seed=3), signers)
    sock = _pusher(loop.receiver.address)
    try:
        for m in genuine:
            sock.send_multipart(encode(m))
        wait_for(lambda: loop.stats.coils_graded == 1, 30, "the coil to be graded")
        defects = store.db.execute("SELECT count(*) FROM defects").fetchone()[0]
        for m in genuine:  # a retry: every message again, unchanged
            sock.send_multipart(encode(m))
        wait_for(lambda: loop.stats.messages == 2 * len(genuine), 30, "the re-sent messages to arrive")
        loop.flush()
        assert loop.stats.conflicting_duplicates == 0
        frame = next(m for m in genuine if isinstance(m, FrameResult) and m.source.camera == "top-1")
        start = next(m for m in genuine if isinstance(m, CoilEvent) and m.source.camera == "bottom-1")
        other_pixels = signers["top-1"].seal(frame.source, frame.coil, frame.seq, frame.index, frame.captured_ns,
                                             dataclasses.replace(frame.capture, digest="cd" * 32))
        conflicting = [
            dataclasses.replace(frame, defects=(*frame.defects, severe_defect(frame.index))),  # an extra defect
            dataclasses.replace(frame, capture=other_pixels),  # the camera signed other pixels for the frame
            signed([dataclasses.replace(start, time_ns=start.time_ns + 1)], signers)[0],  # another start
        ]
        for m in conflicting:
            sock.send_multipart(encode(m))
        wait_for(lambda: loop.stats.conflicting_duplicates == 3, 30, "three conflicting duplicates")
        wait_for(lambda: {e.details.get("camera") for e in events if isinstance(e, AlarmRaised)
                          and e.details.get("reason") == "conflict"} == {"top-1", "bottom-1"}, 30,
                 "a conflict alarm for each camera")
    finally:
        sock.close(linger=0)
        stop.set()
        thread.join(20)
    assert store.db.execute("SELECT count(*) FROM defects").fetchone()[0] == defects  # the first record stays
    seal = store.db.execute("SELECT digest FROM frame_seals WHERE coil = 'C-1' AND camera = 'top-1' AND "
                            "frame_index = ?", (frame.index,)).fetchone()[0]
    assert seal == frame.capture.digest
    rows = [json.loads(d) | {"message": m} for m, d in store.db.execute(
        "SELECT message, details FROM alarms WHERE kind = 'worker'")]
    conflicts = [r for r in rows if r["reason"] == "conflict"]
    top = [r for r in conflicts if r["camera"] == "top-1"]  # the extra defect, then the other digest
    assert sum(r["count"] for r in top) == 2 and top[0]["seq"] == frame.seq  # one or two alarms (10 s gate)
    assert "coil C-1" in top[0]["message"] and f"seq {frame.seq}" in top[0]["message"]
    assert top[-1]["differs"] == ["digest", "sig"]
    bottom = [r for r in conflicts if r["camera"] == "bottom-1"]
    assert len(bottom) == 1 and "coil_start" in bottom[0]["message"] and bottom[0]["differs"] == ["time_ns"]
    assert [r for r in rows if r["reason"] != "conflict"] == []  # the identical re-send was silent
    assert verify(store.db).ok
    store.close()


def _pusher(endpoint: str) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.PUSH)
    wait_connected(sock, endpoint, what=f"the recorder at {endpoint}")
    return sock


# -- keys ------------------------------------------------------------------------------------------------
def test_signing_keys_are_made_private_refused_when_others_can_read_them_and_never_quoted(tmp_path: Path) -> None:
    folder = tmp_path / "keys"
    made = keys.generate(folder, ["top-1"])
    secret = keys.sign_path(folder, "top-1")
    assert secret in made and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert keys.sign_public_path(secret).read_text().startswith("-----BEGIN PUBLIC KEY-----")
    keys.load_signing_key(secret)
    os.chmod(secret, 0o640)
    with pytest.raises(keys.KeyFileError, match="readable by others") as refused:
        keys.load_signing_key(secret)
    assert str(secret) in str(refused.value) and "PRIVATE" not in str(refused.value)
    os.chmod(secret, 0o600)
    secret.write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n-----END PRIVATE KEY-----\n")
    with pytest.raises(keys.KeyFileError, match="not an unencrypted Ed25519") as corrupt:
        keys.load_signing_key(secret)
    assert "not a key" not in str(corrupt.value)
    with pytest.raises(keys.KeyFileError, match="missing"):
        keys.load_verify_key(folder / "cameras" / "nobody.sign_pub")


def test_a_key_folder_from_before_signing_gets_the_cameras_signing_keys_once(tmp_path: Path) -> None:
    config = load_config(write_line_config(tmp_path, keys=True))
    for path in config.keys_dir.glob("cameras/*.sign*"):
        path.unlink()  # as a folder made before cameras signed
    ensure_keys(config)
    assert signer_for(config, config.cameras[0].id) is not None
    assert set(verify_keys_for(config)) == {c.id for c in config.cameras}
    (tmp_path / "off").mkdir()
    off = load_config(write_line_config(tmp_path / "off", curve=False))
    assert signer_for(off, off.cameras[0].id) is None and verify_keys_for(off) is None
