"""From the line config to the CURVE keys of each side of each link (`curve_for`), the cameras'
signing keys (`signer_for` in a camera, `verify_keys_for` in the recorder; on whenever CURVE is), and
the key folder a line needs (`ensure_keys` for `run` and `demo`, `generate_for` for `keys generate`).

| link | binds by default (CURVE server) | connects (client) |
| --- | --- | --- |
| frames | camera (`cameras/<id>`) | worker (`workers/worker`) |
| results | recorder (`recorder/recorder`) | worker |
| plc | recorder | PLC client (`plc/plc`, or any key in `plc/`) |

Roles follow the endpoints, not the process: a camera configured as ``connect:...`` makes the
worker the server of that link, with the cameras' keys as its allow list. A side that binds
accepts every public key in its peer role's folder; a side that connects needs the peer's
public key (the camera's own for each camera endpoint).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from inspection import keys
from inspection.config import LineConfig
from inspection.curve import Curve
from inspection.errors import ConfigError
from inspection.transport import Endpoint, peer_endpoint

log = logging.getLogger(__name__)

# (link, this side's role) -> the role at the other end
PEERS = {("frames", "camera"): "worker", ("frames", "worker"): "camera",
         ("results", "worker"): "recorder", ("results", "recorder"): "worker",
         ("plc", "recorder"): "plc", ("plc", "plc"): "recorder"}
FOLDERS = {"camera": "cameras", "worker": "workers", "recorder": "recorder", "plc": "plc"}


def curve_for(config: LineConfig, link: str, role: str, endpoints: Sequence[Endpoint], *,
              camera: str | None = None, keys_dir: Path | None = None) -> Curve | None:
    """The keys `role` (camera, worker, recorder, plc) uses on `link` (frames, results, plc) for a
    socket on `endpoints` (this side's); None when the config turns CURVE off. Only the files
    this side needs are read; `keys.KeyFileError` names the first one missing or unfit.

    `camera` is the camera id (role camera); `keys_dir` replaces the config's folder.
    """
    if (link, role) not in PEERS:
        raise ConfigError(f"security: no role {role!r} on the {link!r} link")
    if not config.security.curve:
        return None
    cameras = {peer_endpoint(c.endpoint).address: c.id for c in config.cameras}
    name = config.camera(camera).id if role == "camera" else None
    return side_curve(Path(keys_dir or config.keys_dir), link, role, endpoints, name=name, cameras=cameras)


def side_curve(folder: Path, link: str, role: str, endpoints: Sequence[Endpoint], *, name: str | None = None,
               cameras: dict[str, str] | None = None) -> Curve:
    """`curve_for` from a key folder alone: `name` is the pair's name in the role's folder (default
    the role's own, see `inspection.keys`), `cameras` maps the workers' camera addresses to camera
    ids (the server key of each). `plc-listen --keys DIR` uses it without a line config."""
    peer = PEERS[(link, role)]
    own = keys.load_pair(keys.pair_path(folder, FOLDERS[role], name))
    clients: frozenset[bytes] = frozenset()
    if any(e.role == "bind" for e in endpoints):
        clients = keys.load_allowed(folder / FOLDERS[peer])
    server_key, servers = None, {}
    connects = [e.address for e in endpoints if e.role == "connect"]
    if connects and peer == "camera":  # one server key per camera endpoint
        for address in connects:
            if address not in (cameras or {}):
                raise ConfigError(f"frames link: no camera of the line has the endpoint {address}: "
                                  "its CURVE key is unknown")
            servers[address] = keys.load_public(keys.public_path(keys.pair_path(folder, "cameras", cameras[address])))
    elif connects:
        server_key = keys.load_public(keys.public_path(keys.pair_path(folder, FOLDERS[peer])))
    return Curve(link, own, server_key, servers, clients, str(folder / FOLDERS[peer]) if clients else "")


def generate_for(config: LineConfig, folder: Path | None = None, *, force: bool = False) -> list[Path]:
    """`keys generate`: the line's missing key pairs (all with `force`) in `folder` or the config's."""
    return keys.generate(Path(folder or config.keys_dir), [c.id for c in config.cameras], force=force)


def signer_for(config: LineConfig, camera: str, keys_dir: Path | None = None) -> Any:
    """The camera process's `signing.Signer`, read from its ``.sign`` file; None when the config turns
    CURVE (and with it signing) off. Every camera source signs: it is the camera process that does."""
    from inspection.signing import Signer

    if not config.security.curve:
        return None
    camera_id = config.camera(camera).id
    return Signer(keys.load_signing_key(keys.sign_path(Path(keys_dir or config.keys_dir), camera_id)), camera_id)


def verify_keys_for(config: LineConfig, keys_dir: Path | None = None) -> dict[str, Any] | None:
    """The recorder's view: each configured camera's public signing key (read at start, so a missing
    file stops it with one line); None when the config turns CURVE and signing off."""
    if not config.security.curve:
        return None
    folder = Path(keys_dir or config.keys_dir)
    return {c.id: keys.load_verify_key(keys.sign_public_path(keys.sign_path(folder, c.id))) for c in config.cameras}


def ensure_keys(config: LineConfig) -> None:
    """Before `run` / `demo` start the line: make its keys when the folder has none (a first start),
    then check that every pair is there, so a missing file stops the line before anything starts.
    The audit key is made when missing, CURVE on or off (refused when the database holds
    signatures of a lost key: `checkpoints.ensure_key`)."""
    from inspection.records.checkpoints import ensure_key

    _, made = ensure_key(config.audit_key_path, config.database)
    if made:
        log.info("audit key for line %s made: %s (first start)", config.id, config.audit_key_path)
    if not config.security.curve:
        return
    folder = config.keys_dir
    if not keys.has_keys(folder):
        made = generate_for(config)
        log.info("CURVE keys for line %s made in %s (%d key pairs; first start)", config.id, folder, len(made))
    camera_ids = [c.id for c in config.cameras]
    if not keys.has_sign_keys(folder):  # a folder from before cameras signed: their pairs are added once
        made = keys.generate(folder, camera_ids, curve=False)
        log.info("signing keys for the %d camera(s) of line %s made in %s", len(made), config.id, folder)
    for secret in keys.line_pairs(folder, camera_ids):
        keys.load_pair(secret)
        keys.load_public(keys.public_path(secret))
    for secret in keys.sign_keys(folder, camera_ids):
        keys.load_signing_key(secret)
        keys.load_verify_key(keys.sign_public_path(secret))
