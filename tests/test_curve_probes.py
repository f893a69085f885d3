"""Issue 12's network probes against real line processes, with CURVE on (the default) and off.

Each probe is what the issue did as an outsider on the same machine: a bare ZeroMQ socket (no
keys) on a camera's, the recorder's or the PLC port; then a socket with CURVE keys that are not in
the line's key folder. With CURVE off (``[security] curve = false``, which is how every link
worked before) the same probe steals, forges or listens: the ``curve-off`` cases keep the probe
honest, the ``curve`` cases show it now fails.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest
import zmq
from zmq.utils.monitor import recv_monitor_message

from inspection.commands.plc_listen import PlcListener
from inspection.config import LineConfig, load_config
from inspection.frame import Frame
from inspection.keys import load_public, public_path
from inspection.results import encode
from inspection.security import curve_for, signer_for
from inspection.testing.synthetic import coil_messages, signed
from inspection.transport import FrameReceiver, ResultSender, peer_endpoint
from tests._camera_config import receive_all
from tests.conftest import REPO
from tests.line_configs import write_line_config
from tests.waits import wait_for

OUTCOMES = {zmq.EVENT_HANDSHAKE_SUCCEEDED: "accepted", zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "refused",
            zmq.EVENT_HANDSHAKE_FAILED_AUTH: "refused (unknown key)",
            zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "refused"}
# (CURVE on the line, what the outsider brings): no keys at all, or CURVE keys of its own that are
# not in the line's folder (it knows the server's public key: that one is public); with CURVE off,
# the keyless probe as the issue ran it
PROBES = [pytest.param(True, "no keys", id="curve-no-keys"), pytest.param(True, "unknown key", id="curve-unknown-key"),
          pytest.param(False, "no keys", id="curve-off")]
REFUSED = {"no keys": "refused", "unknown key": "refused (unknown key)"}


def connect_and_handshake(socket: zmq.Socket, address: str, timeout: float = 60.0) -> str:
    """Connect `socket` to `address` (retrying until the peer has bound) and return how its first
    handshake ended: "accepted", "refused" (no keys: the mechanism does not match) or "refused
    (unknown key)" (the server's ZAP handler said no)."""
    monitor = socket.get_monitor_socket(sum(OUTCOMES))
    try:
        socket.connect(address)
        deadline = time.monotonic() + timeout
        while True:
            left_ms = int((deadline - time.monotonic()) * 1000)
            if left_ms <= 0 or not monitor.poll(left_ms, zmq.POLLIN):
                raise AssertionError(f"no handshake with {address} within {timeout:g} s")
            event = recv_monitor_message(monitor)["event"]
            if event in OUTCOMES:
                return OUTCOMES[event]
    finally:
        socket.disable_monitor()
        monitor.close(linger=0)


def stranger_keys(socket: zmq.Socket, server_key: bytes) -> str:
    """CURVE keys of the socket's own, not in the line's folder (it knows the server's public key);
    returns its public key."""
    public, secret = zmq.curve_keypair()
    socket.curve_serverkey, socket.curve_publickey, socket.curve_secretkey = server_key, public, secret
    return public.decode()


@contextmanager
def bare_socket(kind: int, **options: object) -> Iterator[zmq.Socket]:
    context = zmq.Context()
    socket = context.socket(kind)
    socket.linger = 0
    for name, value in options.items():
        setattr(socket, name, value)
    try:
        yield socket
    finally:
        socket.close(linger=0)
        context.term()


@contextmanager
def line_process(*args: str) -> Iterator[subprocess.Popen]:
    """`steel-inspect ARGS` as a process (stdout and stderr in one text stream); stopped with
    SIGTERM (then killed) when the block ends."""
    proc = subprocess.Popen([sys.executable, "-m", "inspection", *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        proc.output = proc.communicate(timeout=30)[0]  # type: ignore[attr-defined]


def secrets(config: LineConfig) -> list[str]:
    return [line.split('"')[1] for p in config.keys_dir.rglob("*.key_secret")
            for line in p.read_text().splitlines() if "secret-key" in line]


def coils_in(db: Path) -> set[str]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return {row[0] for row in con.execute("SELECT DISTINCT coil FROM frames")}
    except sqlite3.Error:  # not created yet
        return set()


def server_key(config: LineConfig, role: str) -> bytes:
    return load_public(public_path(config.keys_dir / role))


@pytest.mark.parametrize(("curve", "who"), PROBES)
def test_a_stray_pull_socket_takes_no_frame_from_a_camera(tmp_path: Path, ipc_dir: Path, curve: bool,
                                                          who: str) -> None:
    """Issue 12: a stray PULL socket took 11 frames from a camera port (the coil held at 50 %)."""
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, keys=True, curve=curve, coil_length_m=1.536,
                                           extra={"live = true": "live = false"}))  # replay: no frame dropped
    camera = config.cameras[0]  # its 6 frames of 256 mm are a whole coil, so it ends with a coil_end
    address = peer_endpoint(camera.endpoint).address
    with bare_socket(zmq.PULL) as stray, line_process("camera", "--config", str(config.path), "--camera", camera.id,
                                                      "--frames", "6", "--fast") as proc:
        stranger = stranger_keys(stray, server_key(config, f"cameras/{camera.id}.key_secret")) \
            if who == "unknown key" else None
        outcome = connect_and_handshake(stray, address)
        if not curve:  # the probe as the issue ran it: the stranger is the camera's only peer, and takes
            assert outcome == "accepted" and stray.poll(30_000), "the stray socket got nothing, even without CURVE"
            return
        worker_curve = curve_for(config, "frames", "worker", [peer_endpoint(camera.endpoint)])
        with FrameReceiver(address, curve=worker_curve) as worker:
            messages = receive_all(worker, timeout_ms=30_000)
        proc.wait(60)  # the camera is done: it has sent all it had
        stolen = stray.poll(0)
    assert not stolen, "the stray socket received something"
    assert outcome == REFUSED[who]
    frames = [m for m in messages if isinstance(m, Frame)]
    assert len(frames) == 6 and messages[-1].kind == "coil_end" and messages[-1].frames == 6  # all to the worker
    assert proc.returncode == 0, proc.output
    assert json.loads(proc.output.strip().splitlines()[-1])["curve_refused"] >= 1  # counted, whatever the reason
    assert "refused a client on the frames link" in proc.output  # and logged
    if stranger is not None:
        assert stranger in proc.output  # the log names the refused public key


@pytest.mark.parametrize(("curve", "who"), PROBES)
def test_a_push_socket_without_the_line_keys_gets_no_result_recorded(tmp_path: Path, ipc_dir: Path, curve: bool,
                                                                     who: str) -> None:
    """Issue 12: forged frame results pushed before the real ones were recorded (and the real ones ignored)."""
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, keys=True, curve=curve))
    address = peer_endpoint(config.endpoints.results).address
    forged = coil_messages("FORGED-1", length_m=3.0, defects_per_frame=1.0, seed=1)
    real = coil_messages("REAL-1", length_m=3.0, defects_per_frame=1.0, seed=2)
    if curve:  # a signing line: the real worker carries its cameras' signatures
        real = signed(real, {c.id: signer_for(config, c.id) for c in config.cameras})
    with bare_socket(zmq.PUSH) as forger, line_process("recorder", "--config", str(config.path)) as proc:
        if who == "unknown key":
            stranger_keys(forger, server_key(config, "recorder/recorder.key_secret"))
        outcome = connect_and_handshake(forger, address)
        for message in forged:
            with suppress(zmq.Again):  # a socket whose peer refused it may not even queue
                forger.send_multipart(encode(message), zmq.NOBLOCK)
        worker = ResultSender(config.endpoints.results, hwm=100, linger_ms=10_000,
                              curve=curve_for(config, "results", "worker", [peer_endpoint(config.endpoints.results)]))
        for message in real:
            worker.send(message)
        worker.close()
        expected = {"REAL-1"} if curve else {"REAL-1", "FORGED-1"}
        wait_for(lambda: coils_in(config.database) >= expected, 60, f"the recorder to record {sorted(expected)}")
    assert coils_in(config.database) == expected  # the real coil is in, so anything forged would be too
    assert outcome == (REFUSED[who] if curve else "accepted")
    assert proc.returncode == 0, proc.output  # SIGTERM: drained until quiet, flushed, closed
    assert ("refused a client on the results link" in proc.output) is curve  # logged, whatever the reason


@pytest.mark.parametrize(("curve", "who"), PROBES)
def test_a_sub_socket_without_the_line_keys_receives_no_plc_message(tmp_path: Path, ipc_dir: Path, curve: bool,
                                                                    who: str) -> None:
    """Issue 12: anyone could subscribe to the PLC output."""
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, keys=True, curve=curve))
    address = peer_endpoint(config.endpoints.plc).address
    with bare_socket(zmq.SUB, subscribe=b"") as listener, \
            line_process("recorder", "--config", str(config.path)) as proc:
        if who == "unknown key":
            stranger_keys(listener, server_key(config, "recorder/recorder.key_secret"))
        outcome = connect_and_handshake(listener, address)
        if not curve:  # heartbeats every second go to whoever connected
            assert outcome == "accepted" and listener.poll(30_000), "no PLC message even without CURVE"
            return
        with PlcListener.from_config(config, ["heartbeat"]) as plc:  # the line's own PLC client
            beats = [plc.receive(30.0) for _ in range(3)]
        overheard = listener.poll(0)
    assert not overheard, "the keyless subscriber received a PLC message"
    assert all(beats), "the PLC client with the line's keys got no heartbeat"
    assert outcome == REFUSED[who]
    assert proc.returncode == 0, proc.output
    assert "refused a client on the plc link" in proc.output


def test_clients_with_keys_not_in_the_folder_are_refused_logged_and_counted(tmp_path: Path, ipc_dir: Path) -> None:
    """Someone who knows the recorder's public key (it is public) and has CURVE keys of their own:
    the ZAP handler refuses them; the recorder logs each link and key, and counts them in its
    status row (the console's Line page lists it) and in the PLC heartbeat."""
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, keys=True))
    server = load_public(public_path(config.keys_dir / "recorder" / "recorder.key_secret"))
    status_key = f"recorder:{config.id}:curve"

    def counted() -> dict | None:
        """The recorder's status row once it counts a refusal on both links."""
        try:
            with sqlite3.connect(f"file:{config.database}?mode=ro", uri=True) as con:
                row = con.execute("SELECT value FROM status WHERE key = ?", [status_key]).fetchone()
        except sqlite3.Error:
            return None
        value = json.loads(row[0]) if row else {}
        return value if value.get("refused_results", 0) >= 1 and value.get("refused_plc", 0) >= 1 else None

    def heartbeat(plc: PlcListener) -> dict | None:
        parts = plc.receive(5.0)
        return json.loads(parts[1]) if parts else None

    with bare_socket(zmq.PUSH) as pusher, bare_socket(zmq.SUB, subscribe=b"") as listener, \
            line_process("recorder", "--config", str(config.path)) as proc:
        unknown = (stranger_keys(pusher, server), stranger_keys(listener, server))
        outcomes = [connect_and_handshake(pusher, peer_endpoint(config.endpoints.results).address),
                    connect_and_handshake(listener, peer_endpoint(config.endpoints.plc).address)]
        with suppress(zmq.Again):  # after an auth failure the socket may have no pipe to queue on
            pusher.send_multipart(encode(coil_messages("FORGED-2", length_m=1.0)[0]), zmq.NOBLOCK)
        row = wait_for(counted, 30, f"the status row {status_key} to count both refusals")
        with PlcListener.from_config(config, ["heartbeat"]) as plc:
            beat = wait_for(lambda: heartbeat(plc), 30, "a heartbeat")
        overheard = listener.poll(0)
        # the line's own worker gets in beside them: once its coil is recorded, a forged one would be too
        worker = ResultSender(config.endpoints.results, hwm=100, linger_ms=10_000,
                              curve=curve_for(config, "results", "worker", [peer_endpoint(config.endpoints.results)]))
        for message in signed(coil_messages("REAL-2", length_m=1.0),  # as its cameras signed them
                              {c.id: signer_for(config, c.id) for c in config.cameras}):
            worker.send(message)
        worker.close()
        wait_for(lambda: "REAL-2" in coils_in(config.database), 60, "the recorder to record REAL-2")
    assert outcomes == ["refused (unknown key)"] * 2
    assert not overheard, "the subscriber with an unknown key received a PLC message"
    assert row["curve"] == "on" and row["refused_unknown_keys"] >= 2 and row["refused_failed_handshakes"] == 0
    assert beat["counters"]["curve_refused"] >= 2
    assert proc.returncode == 0, proc.output
    assert "refused a client on the results link" in proc.output and unknown[0] in proc.output
    assert "refused a client on the plc link" in proc.output and unknown[1] in proc.output
    assert not any(secret in proc.output for secret in secrets(config))  # public keys only, never a secret
    assert "FORGED-2" not in coils_in(config.database)
