"""CURVE keys and settings: the key folder, its errors, the config keys, sockets with keys on tcp
and ipc, `plc-listen --config`, and `run` with CURVE on (keys made on the first start) and off
(warned about by every process). The outsider probes against line processes are in
tests/test_curve_probes.py."""

from __future__ import annotations

import argparse
import json
import os
import stat
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

import pytest
import zmq

from inspection import curve as curves
from inspection import keys
from inspection.cli import build_parser
from inspection.cli import main as cli
from inspection.commands.plc_listen import _link
from inspection.config import load_config
from inspection.errors import ConfigError
from inspection.frame import Frame
from inspection.keys import KeyFileError
from inspection.plc import PlcPublisher
from inspection.registry import Registry
from inspection.security import curve_for, side_curve
from inspection.transport import Endpoint, FrameReceiver, FrameSender, parse_endpoint
from inspection.wire import encode as encode_frame
from tests.conftest import REPO
from tests.line_configs import write_line_config
from tests.test_curve_probes import bare_socket, connect_and_handshake, stranger_keys
from tests.test_transport import make_frame
from tests.tiny_models import add_tiny_model
from tests.waits import PeerWatch

NEU = ("crazing", "inclusion", "patches", "pitted_surface", "rolled-in_scale", "scratches")
PAIRS = ["cameras/top-1", "cameras/bottom-1", "workers/worker", "recorder/recorder", "plc/plc"]
FAILED = zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL


def secret_of(path: Path) -> str:
    return next(line.split('"')[1] for line in path.read_text().splitlines() if "secret-key" in line)


def test_security_is_on_by_default_with_keys_beside_the_database(tmp_path: Path) -> None:
    demo = load_config(None)
    assert demo.security.curve is True and demo.keys_dir == Path("var/demo/keys")  # relative, like the database
    assert demo.summary()["security"] == {"curve": True, "keys_dir": "var/demo/keys"}
    moved = load_config(None, {"security.keys_dir": "/srv/line-keys", "security.curve": False})
    assert moved.keys_dir == Path("/srv/line-keys") and moved.security.curve is False
    with pytest.raises(ConfigError, match=r"security\.curve: expected true or false, got 'yes'"):
        load_config(None, {"security.curve": "yes"})
    with pytest.raises(ConfigError, match=r"security\.key_dir: unknown key"):
        load_config(None, {"security.key_dir": "x"})


def test_keys_generate_makes_one_pair_per_role_for_the_owner_only(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture) -> None:
    config = write_line_config(tmp_path)
    folder = tmp_path / "keys"
    assert cli(["keys", "generate", "--config", str(config)]) == 0
    for pair in PAIRS:
        secret, public = folder / f"{pair}.key_secret", folder / f"{pair}.key"
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and stat.S_IMODE(public.stat().st_mode) == 0o644
        assert keys.load_pair(secret).public == keys.load_public(public)  # files ZeroMQ's own loader reads
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    before = keys.load_public(folder / "workers/worker.key")
    capsys.readouterr()
    assert cli(["keys", "generate", "--config", str(config)]) == 2  # never overwrites without --force
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "refusing to overwrite" in err[0] and str(folder) in err[0]
    (folder / "plc/plc.key_secret").unlink()
    (folder / "plc/plc.key").unlink()
    assert cli(["keys", "generate", "--config", str(config)]) == 0  # only the missing pair is made
    assert "plc/plc.key" in capsys.readouterr().out and keys.load_public(folder / "workers/worker.key") == before
    assert cli(["keys", "generate", "--config", str(config), "--force"]) == 0
    assert keys.load_public(folder / "workers/worker.key") != before
    other = tmp_path / "elsewhere"
    assert cli(["keys", "generate", "--config", str(config), "--dir", str(other)]) == 0
    assert {p.relative_to(other).as_posix() for p in other.rglob("*.key")} == {f"{p}.key" for p in PAIRS}


@pytest.mark.parametrize(("damage", "message"), [
    ("missing", "secret key file missing"),
    ("readable", r"readable by others \(mode 0644\): chmod 600"),
    ("mismatched", "its public-key does not belong to its secret-key"),
    ("garbled", "secret-key is not a 40-character Z85 key"),
])
def test_key_file_problems_are_one_line_errors_naming_the_file(tmp_path: Path, damage: str, message: str) -> None:
    folder = tmp_path / "keys"
    keys.generate(folder, ["top-1"])
    path = folder / "workers" / "worker.key_secret"
    secret = secret_of(path)
    if damage == "missing":
        path.unlink()
    elif damage == "readable":
        path.chmod(0o644)
    elif damage == "mismatched":
        other = secret_of(folder / "recorder" / "recorder.key_secret")
        path.write_text(path.read_text().replace(secret, other))
    else:
        path.write_text(path.read_text().replace(secret, secret[:-3]))
    with pytest.raises(KeyFileError, match=message) as error:
        keys.load_pair(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert secret not in str(error.value) and secret[:-3] not in str(error.value)


@pytest.mark.parametrize(("command", "damaged", "damage"), [
    (["camera", "--frames", "1"], "cameras/top-1.key_secret", "missing"),
    (["recorder"], "recorder/recorder.key_secret", "missing"),
    (["recorder"], "plc/plc.key", "corrupt"),  # a client key of its allow list
    (["run", "--max-frames", "1"], "workers/worker.key", "missing"),  # checked before anything starts
])
def test_a_process_without_its_key_stops_with_one_line_naming_the_file(tmp_path: Path, command: list[str],
                                                                       damaged: str, damage: str) -> None:
    config = write_line_config(tmp_path, keys=True)
    path = tmp_path / "keys" / damaged
    if damage == "missing":
        path.unlink()
    else:
        path.write_text("curve\n    public-key = \"not a key\"\n")
    done = subprocess.run([sys.executable, "-m", "inspection", *command, "--config", str(config)],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert done.returncode == 2 and len(errors) == 1 and str(path) in errors[0], done.stderr[-2000:]
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("kind", ["tcp", "ipc"])
def test_frames_pass_only_to_a_worker_that_knows_the_camera_key(tmp_path: Path, ipc_endpoint: str,
                                                                 kind: str) -> None:
    """A worker pins the camera's public key: a receiver holding another camera's key as the server
    key (someone else's server, as a man in the middle would be) completes no handshake."""
    folder = tmp_path / "keys"
    keys.generate(folder, ["top-1", "bottom-1"])
    spec = Endpoint("bind", "tcp://127.0.0.1:*" if kind == "tcp" else ipc_endpoint)
    camera = side_curve(folder, "frames", "camera", [spec], name="top-1")
    with FrameSender(spec, live=False, curve=camera) as sender, PeerWatch(sender.socket, FAILED) as failures:
        peer = Endpoint("connect", sender.address)
        wrong = side_curve(folder, "frames", "worker", [peer], cameras={sender.address: "bottom-1"})
        with FrameReceiver(peer, curve=wrong) as impostor:
            failures.wait(1, what="the camera to fail a handshake with the wrong server key")
            right = side_curve(folder, "frames", "worker", [peer], cameras={sender.address: "top-1"})
            with FrameReceiver(peer, curve=right) as worker:
                frame = make_frame(7)
                assert sender.send(frame)
                got = worker.recv(10_000)
            assert impostor.recv(0) is None
    assert isinstance(got, Frame) and got == frame


def test_a_worker_that_binds_accepts_only_the_line_cameras(tmp_path: Path, ipc_endpoint: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """Roles follow the endpoints: with a camera configured ``connect:...`` the worker is the CURVE
    server of the frames link and its allow list is the cameras' folder; a pusher with keys of its
    own (it knows the workers' public key) is refused, logged with its key and counted."""
    folder = tmp_path / "keys"
    keys.generate(folder, ["top-1"])
    before = curves.refused().get("frames", 0)
    worker_side = side_curve(folder, "frames", "worker", [Endpoint("bind", ipc_endpoint)])
    assert worker_side.clients == {keys.load_public(folder / "cameras/top-1.key")}
    camera_side = side_curve(folder, "frames", "camera", [Endpoint("connect", ipc_endpoint)], name="top-1")
    with FrameReceiver(Endpoint("bind", ipc_endpoint), curve=worker_side) as worker, \
            bare_socket(zmq.PUSH) as forger:
        stranger = stranger_keys(forger, keys.load_public(folder / "workers/worker.key"))
        assert connect_and_handshake(forger, ipc_endpoint) == "refused (unknown key)"
        with suppress(zmq.Again):  # a refused socket may have no pipe to queue on
            forger.send_multipart(encode_frame(make_frame(99)), zmq.NOBLOCK)
        with FrameSender(Endpoint("connect", ipc_endpoint), live=False, curve=camera_side) as camera:
            frame = make_frame(1)
            assert camera.send(frame)
            got = worker.recv(10_000)
        assert got == frame and worker.recv(0) is None
    assert curves.refused()["frames"] > before
    assert "refused a client on the frames link" in caplog.text and stranger in caplog.text


def _listen_args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["plc-listen", *argv])


def test_plc_listen_takes_the_endpoint_and_keys_from_the_line_config(tmp_path: Path, ipc_dir: Path,
                                                                      capsys: pytest.CaptureFixture) -> None:
    config = load_config(write_line_config(tmp_path, ipc_dir=ipc_dir, keys=True))
    endpoint, curve = _link(_listen_args("--config", str(config.path)))
    assert endpoint == Endpoint("connect", parse_endpoint(config.endpoints.plc, "bind").address)
    assert curve is not None and curve.keys.path == config.keys_dir / "plc" / "plc.key_secret"
    _, by_folder = _link(_listen_args("--connect", "tcp://192.0.2.1:7570", "--keys", str(config.keys_dir)))
    assert by_folder is not None and by_folder.server_key == curve.server_key
    assert _link(_listen_args("--connect", "tcp://192.0.2.1:7570")) == (Endpoint("connect", "tcp://192.0.2.1:7570"),
                                                                          None)
    assert "subscribing without CURVE" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="give --config F"):
        _link(_listen_args())
    # the command itself, against a publisher with the recorder's keys on the config's endpoint
    recorder = curve_for(config, "plc", "recorder", [parse_endpoint(config.endpoints.plc, "bind")])
    with PlcPublisher.from_config(config, heartbeat_s=3600, curve=recorder) as publisher:
        proc = subprocess.Popen([sys.executable, "-m", "inspection", "plc-listen", "--config", str(config.path),
                                 "--topic", "heartbeat", "--count", "2", "--timeout", "30", "--json"],
                                cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while proc.poll() is None:  # a PUB socket cannot tell when a subscriber joined: every beat is a probe
            publisher.heartbeat()
            time.sleep(0.05)  # the pace of the probes, not a wait for anything
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert [json.loads(line)["topic"] for line in out.splitlines()] == ["heartbeat", "heartbeat"]


def _run_line(tmp_path: Path, ipc_dir: Path, curve: bool) -> tuple[subprocess.CompletedProcess, Path]:
    models = tmp_path / "models"
    add_tiny_model(Registry(models), tmp_path, classes=NEU, version="hot-tiny", activate=True)
    config = write_line_config(tmp_path, ipc_dir=ipc_dir, curve=curve)
    done = subprocess.run([sys.executable, "-m", "inspection", "run", "--config", str(config), "--max-frames", "3",
                           "--fast"], cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "STEEL_INSPECT_MODELS": str(models)})
    return done, tmp_path / "keys"


def test_run_makes_the_keys_on_its_first_start_and_runs_the_line_with_curve(tmp_path: Path, ipc_dir: Path) -> None:
    done, folder = _run_line(tmp_path, ipc_dir, curve=True)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    assert summary["frames_sent"] == summary["frames_inspected"] == 6
    assert summary["curve"] is True and set(summary["curve_refused"].values()) == {0}
    assert "CURVE keys for line demo-hot-1 made in" in done.stderr
    for link in ("frames", "results", "plc"):
        assert f"CURVE {link} link" in done.stderr  # each side logs the keys it uses (the public one)
    secrets = [secret_of(p) for p in folder.rglob("*.key_secret")]
    assert len(secrets) == len(PAIRS)
    assert {stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*.key_secret")} == {0o600}
    assert "*.key_secret" in (REPO / ".gitignore").read_text().splitlines()  # never committed
    assert not any(s in done.stderr or s in done.stdout for s in secrets)
    assert not any(s in (tmp_path / "line.db").read_bytes().decode("latin-1") for s in secrets)


def test_curve_off_is_warned_about_at_every_start_of_every_process(tmp_path: Path, ipc_dir: Path) -> None:
    done, folder = _run_line(tmp_path, ipc_dir, curve=False)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout)["curve"] is False and not keys.has_keys(folder)  # no CURVE key made
    assert [p.name for p in folder.iterdir()] == ["audit.hmac_key"]  # the audit key does not depend on CURVE
    warned = {line.split()[3] for line in done.stderr.splitlines()  # date time level process name: message
              if " WARNING " in line and "[security] curve = false" in line}
    assert warned == {"MainProcess", "recorder", "worker-1", "camera-top-1", "camera-bottom-1"}
