"""The model registry: `models/<line_type>/<version>/{model.onnx, manifest.json}` + `registry.json`.

A manifest travels with its model file and is checked on every load: required fields,
their types, and the sha256 of the model file (a mismatch is refused with `ManifestError`).
`models/registry.json` records which version is active per line type and the history of
promotions and rollbacks; it is rewritten atomically (temp file + `os.replace`) so a
worker that reads it while the CLI writes never sees half a file. Workers poll
`Registry.state_token()` to notice a change cheaply.

Version names: `<line_type>-<YYYYMMDD>-<n>` (UTC date of registration, n = 1, 2, ... per day),
e.g. `hot-20261123-1`. Any identifier is accepted when given explicitly.

Rollback semantics: promotions of a line type form a stack (promote pushes, rollback pops);
`rollback(line_type)` re-activates the version that was active before the current one.

Shadow: ``"shadow"`` names, per line type, a candidate that workers run beside the active model on a
share of the frames (`inspection.shadow`); ``"shadow_history"`` keeps each change. Both live apart
from ``"history"``, which stays the record of what was active (`active_at`, `rollback` read it).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import getpass
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from inspection.config import default_models_dir
from inspection.errors import ManifestError, SteelInspectError
from inspection.frame import IDENT_PATTERN, LINE_TYPES
from inspection.manifest import (
    MANIFEST_FILE,
    MODEL_FILE,
    SCHEMA,
    Manifest,
    file_sha256,
    load_manifest,
    openvino_copy,
)

__all__ = ["Manifest", "ManifestError", "Registry", "RegistryError", "file_sha256", "load_manifest"]

log = logging.getLogger(__name__)

REGISTRY_FILE = "registry.json"


class RegistryError(SteelInspectError):
    """The registry state is invalid, or a version / line type is unknown or cannot change."""


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON so readers see the old file or the new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; workers may run as another user
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


class Registry:
    """Versions on disk under `root`, and which one is active per line type."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_models_dir()
        self.state_path = self.root / REGISTRY_FILE

    # -- state -------------------------------------------------------------------------
    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"active": {lt: None for lt in LINE_TYPES}, "history": [], "shadow": {lt: None for lt in LINE_TYPES},
                    "shadow_history": []}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RegistryError(f"{self.state_path}: cannot read registry state: {exc}") from None
        if (not isinstance(state, dict) or not isinstance(state.get("active"), dict)
                or not isinstance(state.get("history"), list)):
            raise RegistryError(f"{self.state_path}: expected {{'active': {{...}}, 'history': [...]}}")
        for lt in LINE_TYPES:
            state["active"].setdefault(lt, None)
        # registries written before shadow mode have neither key
        if not isinstance(state.setdefault("shadow", {}), dict) or not isinstance(
                state.setdefault("shadow_history", []), list):
            raise RegistryError(f"{self.state_path}: expected 'shadow' to be {{line type: version}} and "
                                f"'shadow_history' a list")
        for lt in LINE_TYPES:
            state["shadow"].setdefault(lt, None)
        return state

    @contextmanager
    def _locked_state(self) -> Iterator[dict[str, Any]]:
        """Read-modify-write of registry.json under an exclusive lock (two CLIs at once)."""
        self.root.mkdir(parents=True, exist_ok=True)
        # Lock the registry folder itself: registry.json is replaced, so its inode cannot carry
        # the lock, and a separate lock file would be one more thing to keep out of git.
        fd = os.open(self.root, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self._read_state()
            yield state
            atomic_write_json(self.state_path, state)
        finally:
            os.close(fd)  # releases the lock

    def state_token(self) -> str:
        """Changes whenever registry.json changes; cheap enough to poll between batches."""
        try:
            return hashlib.sha256(self.state_path.read_bytes()).hexdigest()
        except FileNotFoundError:
            return "absent"

    def active(self, line_type: str) -> str | None:
        _check_line_type(line_type)
        return self._read_state()["active"][line_type]

    def shadow(self, line_type: str) -> str | None:
        """The candidate workers run beside the active model of `line_type` (None: none)."""
        _check_line_type(line_type)
        return self._read_state()["shadow"][line_type]

    def shadow_history(self) -> list[dict[str, Any]]:
        return list(self._read_state()["shadow_history"])

    def set_shadow(self, version: str | None, *, line_type: str | None = None, by: str | None = None,
                   reason: str | None = None) -> Manifest | None:
        """Run `version` in shadow beside its line type's active model, or (`version` None) stop the
        shadow of `line_type`. Running workers pick it up like a promotion; the active model is refused
        (it would only disagree with itself)."""
        if version is None and line_type is None:
            raise RegistryError("turning a shadow off needs its line type (hot or cold)")
        manifest = self._load_version(version) if version is not None else None
        kind = manifest.line_type if manifest is not None else _check_line_type(line_type or "")
        if manifest is not None and line_type is not None and line_type != kind:
            raise RegistryError(f"{version} is a {kind} model, not {line_type}")
        with self._locked_state() as state:
            if manifest is not None and state["active"][kind] == manifest.version:
                raise RegistryError(f"{version} is the active {kind} model: a shadow must be another version")
            previous = state["shadow"][kind]
            state["shadow"][kind] = version
            state["shadow_history"].append(_entry(kind, version, previous, "shadow" if version else "shadow_off",
                                                  by, reason))
        log.info("shadow for %s: %s (previous: %s)", kind, version or "off", previous)
        return manifest

    def history(self) -> list[dict[str, Any]]:
        return list(self._read_state()["history"])

    def active_at(self, line_type: str, when: dt.datetime) -> str | None:
        """The version active for `line_type` at `when` (None before the first promotion)."""
        _check_line_type(line_type)
        if when.tzinfo is None:
            raise RegistryError("active_at: give a time with its zone (naive times are ambiguous)")
        version = None
        for item in self._read_state()["history"]:
            if item.get("line_type") != line_type:
                continue
            try:
                at = dt.datetime.fromisoformat(item["time"])
            except (KeyError, TypeError, ValueError):
                raise RegistryError(f"{self.state_path}: history entry without a valid time: {item!r}") from None
            if at > when:
                break
            version = item.get("version")
        return version

    # -- versions ----------------------------------------------------------------------
    def versions(self, line_type: str | None = None) -> list[Manifest]:
        """Every registered version (manifest checked, sha256 not), oldest first."""
        types = LINE_TYPES if line_type is None else (_check_line_type(line_type),)
        found = []
        for lt in types:
            for manifest_path in sorted((self.root / lt).glob(f"*/{MANIFEST_FILE}")):
                try:
                    found.append(load_manifest(manifest_path, verify=False))
                except ManifestError as exc:
                    log.warning("skipping invalid registry entry: %s", exc)
        return sorted(found, key=lambda m: (m.line_type, str(m.data.get("created", "")), m.version))

    def _version_dir(self, version: str) -> Path | None:
        for lt in LINE_TYPES:
            candidate = self.root / lt / version
            if (candidate / MANIFEST_FILE).is_file():
                return candidate
        return None

    def resolve(self, name_or_path: str | Path) -> Manifest:
        """`hot`/`cold` (the active version), a version name, or a path; sha256 verified."""
        name = str(name_or_path)
        if name in LINE_TYPES:
            version = self.active(name)
            if version is None:
                raise RegistryError(f"no active {name} model in {self.root}: register one and run "
                                    f"`steel-inspect models promote VERSION`")
            return self._load_version(version)
        if re.fullmatch(IDENT_PATTERN, name) and self._version_dir(name) is not None:
            return self._load_version(name)
        path = Path(name_or_path)
        if path.exists():
            return load_manifest(path)
        known = ", ".join(m.version for m in self.versions()) or "none"
        raise RegistryError(f"{name!r} is neither hot, cold, a registered version (known: {known}) "
                            f"nor an existing path")

    def _load_version(self, version: str) -> Manifest:
        folder = self._version_dir(version)
        if folder is None:
            raise RegistryError(f"version {version!r} is not registered in {self.root}")
        manifest = load_manifest(folder / MANIFEST_FILE)
        if manifest.version != version or manifest.line_type != folder.parent.name:
            raise ManifestError(f"{manifest.manifest_path}: says version {manifest.version!r} / line type "
                                f"{manifest.line_type!r} but lives in {folder}")
        return manifest

    def next_version(self, line_type: str, when: dt.datetime | None = None) -> str:
        day = (when or dt.datetime.now(dt.UTC)).strftime("%Y%m%d")
        prefix = f"{_check_line_type(line_type)}-{day}-"
        taken = [p.name for p in (self.root / line_type).glob(f"{prefix}*")]
        numbers = [int(t[len(prefix):]) for t in taken if t[len(prefix):].isdigit()]
        return f"{prefix}{max(numbers, default=0) + 1}"

    def add(self, model_file: Path, manifest: dict[str, Any], version: str | None = None,
            activate: bool = False, by: str | None = None, extra_files: Mapping[str, Path] | None = None) -> Manifest:
        """Copy `model_file` into the registry with `manifest` (sha256/size computed here).

        `extra_files`: more files of the version by their path inside its folder (an int8 copy's
        OpenVINO IR, ``openvino/model.xml`` and ``.bin``), copied in the same atomic step."""
        model_file = Path(model_file)
        if not model_file.is_file():
            raise RegistryError(f"model file {model_file} does not exist")
        extra = dict(extra_files or {})
        for inside, source in extra.items():
            parts = Path(inside).parts
            if Path(inside).is_absolute() or ".." in parts or not parts or inside in (MODEL_FILE, MANIFEST_FILE):
                raise RegistryError(f"extra file {inside!r}: expected a relative path inside the version folder")
            if not Path(source).is_file():
                raise RegistryError(f"extra file {source} does not exist")
        data = dict(manifest)
        line_type = data.get("line_type")
        if line_type not in LINE_TYPES:
            raise ManifestError(f"manifest for {model_file}: field 'line_type': expected one of "
                                f"{LINE_TYPES}, got {line_type!r}")
        version = version or data.get("version") or self.next_version(line_type)
        if self._version_dir(version) is not None:
            raise RegistryError(f"version {version!r} is already registered; versions are immutable")
        data.update(schema=SCHEMA, version=version, model_file=MODEL_FILE, sha256=file_sha256(model_file),
                    size_bytes=model_file.stat().st_size)
        data.setdefault("created", _now())
        final = self.root / line_type / version
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=final.parent))
        try:
            shutil.copyfile(model_file, staging / MODEL_FILE)
            for inside, source in extra.items():
                (staging / inside).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, staging / inside)
            atomic_write_json(staging / MANIFEST_FILE, data)
            staged = load_manifest(staging / MANIFEST_FILE)  # validates content and the copy's sha256
            copy = openvino_copy(staged)
            if copy is not None:
                copy.verify()  # its OpenVINO IR too: the registry never holds files its manifest does not name
            os.chmod(staging, 0o755)  # mkdtemp makes 0700
            os.rename(staging, final)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        log.info("registered %s (%s, sha256 %s)", version, line_type, data["sha256"][:12])
        if activate:
            self.promote(version, by=by, reason="activated when added")
        return self._load_version(version)

    # -- activation --------------------------------------------------------------------
    def promote(self, version: str, by: str | None = None, reason: str | None = None,
                gate: list[str] | None = None, clean_strip: dict[str, Any] | None = None) -> Manifest:
        """Make `version` the active model of its line type (refused if it does not load).

        `gate`: what the promotion gate found against it, recorded when the promotion was forced.
        `clean_strip`: the clean-strip check's figures (`inspection.clean_strip`), or why it did not run.
        """
        manifest = self._load_version(version)
        with self._locked_state() as state:
            previous = state["active"][manifest.line_type]
            state["active"][manifest.line_type] = version
            entry = _entry(manifest.line_type, version, previous, "promote", by, reason)
            if gate:
                entry["forced_past_gate"] = list(gate)
            if clean_strip is not None:
                entry["clean_strip"] = clean_strip
            state["history"].append(entry)
            if state["shadow"][manifest.line_type] == version:  # promoted: no longer a candidate beside itself
                state["shadow"][manifest.line_type] = None
                state["shadow_history"].append(_entry(manifest.line_type, None, version, "shadow_off", by,
                                                      "promoted"))
        log.info("promoted %s for %s (previous: %s)", version, manifest.line_type, previous)
        return manifest

    def rollback(self, line_type: str, by: str | None = None, reason: str | None = None) -> Manifest:
        """Re-activate the version that was active before the current one."""
        _check_line_type(line_type)
        with self._locked_state() as state:
            stack: list[str] = []
            for item in state["history"]:
                if item.get("line_type") != line_type:
                    continue
                if item.get("action") == "promote":
                    stack.append(item["version"])
                elif item.get("action") == "rollback" and stack:
                    stack.pop()
            current = state["active"][line_type]
            if len(stack) < 2:
                raise RegistryError(f"{line_type}: no earlier active version to roll back to "
                                    f"(active: {current})")
            target = stack[-2]
            manifest = self._load_version(target)
            state["active"][line_type] = target
            state["history"].append(_entry(line_type, target, current, "rollback", by, reason))
        log.info("rolled back %s from %s to %s", line_type, current, target)
        return manifest


def _entry(line_type: str, version: str, previous: str | None, action: str, by: str | None,
           reason: str | None) -> dict[str, Any]:
    return {"time": _now(), "line_type": line_type, "version": version, "previous": previous,
            "action": action, "by": by or _user(), "reason": reason}


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _check_line_type(line_type: str) -> str:
    if line_type not in LINE_TYPES:
        raise RegistryError(f"unknown line type {line_type!r}: expected one of {', '.join(LINE_TYPES)}")
    return line_type
