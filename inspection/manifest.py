"""Model manifests: the metadata that travels with a `model.onnx`, validated on every load.

`load_manifest` checks the required fields and their types (a `ManifestError` names the file
and the field) and, unless told not to, the size and sha256 of the model file: a model that
does not match its manifest is refused. The registry (`inspection.registry`) builds on this.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspection.errors import ManifestError
from inspection.frame import IDENT_PATTERN, LINE_TYPES

SCHEMA = 1
MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
OPENVINO_DIR = "openvino"  # an int8 copy's OpenVINO quantization, beside its model.onnx
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Manifest:
    """A validated model manifest; `data` is the raw JSON content."""

    version: str
    line_type: str
    classes: tuple[str, ...]
    operating_threshold: float
    model_path: Path
    sha256: str
    data: dict[str, Any]

    @property
    def manifest_path(self) -> Path:
        return self.model_path.parent / MANIFEST_FILE

    @property
    def size_multiple(self) -> int:
        return int(self.data["input"].get("size_multiple", 1))

    @property
    def input_name(self) -> str:
        return str(self.data["input"].get("name", "image"))

    @property
    def class_thresholds(self) -> tuple[float, ...]:
        """The operating threshold of each class, in class order: the manifest's per-class
        `operating_thresholds` (chosen on val) where given, else the one `operating_threshold`."""
        per_class = self.data.get("operating_thresholds") or {}
        return tuple(float(per_class.get(c, self.operating_threshold)) for c in self.classes)

    def summary(self) -> dict[str, Any]:
        """What a record or a log line needs to say which model this is."""
        return {"version": self.version, "line_type": self.line_type, "sha256": self.sha256,
                "model_path": str(self.model_path)}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _field(path: Path, data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ManifestError(f"{path}: field {key!r} is missing")
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise ManifestError(f"{path}: field {key!r}: expected {want}, got {value!r}"[:300])
    return value


def validate_manifest(path: Path, data: Any) -> None:
    """Raise `ManifestError` naming the file and field for any contract violation."""
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: expected a JSON object, got {type(data).__name__}")
    schema = _field(path, data, "schema", int)
    if schema != SCHEMA:
        raise ManifestError(f"{path}: field 'schema': expected {SCHEMA}, got {schema}")
    version = _field(path, data, "version", str)
    if not re.fullmatch(IDENT_PATTERN, version):
        raise ManifestError(f"{path}: field 'version': expected an identifier, got {version!r}")
    if _field(path, data, "line_type", str) not in LINE_TYPES:
        raise ManifestError(f"{path}: field 'line_type': expected one of {LINE_TYPES}, "
                            f"got {data['line_type']!r}")
    model_file = _field(path, data, "model_file", str)
    if Path(model_file).name != model_file or model_file in ("", ".", ".."):
        raise ManifestError(f"{path}: field 'model_file': expected a file name beside the manifest, "
                            f"got {model_file!r}")
    if not _SHA256.fullmatch(_field(path, data, "sha256", str)):
        raise ManifestError(f"{path}: field 'sha256': expected 64 lowercase hex digits, "
                            f"got {data['sha256']!r}")
    classes = _field(path, data, "classes", list)
    if not classes or not all(isinstance(c, str) and c for c in classes) or len(set(classes)) != len(classes):
        raise ManifestError(f"{path}: field 'classes': expected a non-empty list of distinct names, "
                            f"got {classes!r}"[:300])
    threshold = _field(path, data, "operating_threshold", (int, float))
    if not 0.0 <= threshold <= 1.0:
        raise ManifestError(f"{path}: field 'operating_threshold': expected 0..1, got {threshold!r}")
    per_class = data.get("operating_thresholds")
    if per_class is not None and (not isinstance(per_class, dict) or any(
            c not in classes or isinstance(v, bool) or not isinstance(v, int | float) or not 0.0 <= v <= 1.0
            for c, v in per_class.items())):
        raise ManifestError(f"{path}: field 'operating_thresholds': expected an object of class name -> "
                            f"0..1 for classes of 'classes', got {per_class!r}"[:300])
    spec = _field(path, data, "input", dict)
    if spec.get("dtype", "uint8") != "uint8" or spec.get("channels", 1) != 1:
        raise ManifestError(f"{path}: field 'input': expected dtype uint8 and 1 channel, got {spec!r}"[:300])
    multiple = spec.get("size_multiple", 1)
    if isinstance(multiple, bool) or not isinstance(multiple, int) or multiple < 1:
        raise ManifestError(f"{path}: field 'input.size_multiple': expected an integer >= 1, "
                            f"got {multiple!r}")
    _field(path, data, "outputs", dict)
    if "size_bytes" in data:
        _field(path, data, "size_bytes", int)
    if "openvino" in data:
        _validate_openvino(path, data["openvino"])


def _validate_openvino(path: Path, entry: Any) -> None:
    """The `openvino` entry of an int8 copy: its IR files under ``openvino/`` and their sha256."""
    if not isinstance(entry, dict):
        raise ManifestError(f"{path}: field 'openvino': expected an object, got {entry!r}"[:300])
    for key, sha in (("model_file", "sha256"), ("weights_file", "weights_sha256")):
        name = entry.get(key)
        if not isinstance(name, str) or not re.fullmatch(rf"{OPENVINO_DIR}/[A-Za-z0-9._-]+", name) or ".." in name:
            raise ManifestError(f"{path}: field 'openvino.{key}': expected '{OPENVINO_DIR}/<file name>', "
                                f"got {name!r}"[:300])
        if not isinstance(entry.get(sha), str) or not _SHA256.fullmatch(entry[sha]):
            raise ManifestError(f"{path}: field 'openvino.{sha}': expected 64 lowercase hex digits, "
                                f"got {entry.get(sha)!r}"[:300])


@dataclass(frozen=True)
class OpenVinoCopy:
    """An int8 copy's own OpenVINO quantization (`steel-inspect quantize`, NNCF): an IR (``.xml`` graph,
    ``.bin`` weights) beside the version's model.onnx, which OpenVINO runs in its place (why:
    `training.quantize_openvino`)."""

    model_path: Path
    weights_path: Path
    sha256: str
    weights_sha256: str

    def verify(self) -> None:
        """`ManifestError` unless both files are there and match the manifest's sha256."""
        for file, want in ((self.model_path, self.sha256), (self.weights_path, self.weights_sha256)):
            try:
                actual = file_sha256(file)
            except OSError as exc:
                raise ManifestError(f"{file}: cannot read the OpenVINO copy: {exc.strerror or exc}") from None
            if actual != want:
                raise ManifestError(f"{file}: sha256 is {actual}, the manifest says {want}: refusing to run an "
                                    f"OpenVINO copy that does not match its manifest")


def openvino_copy(manifest: Manifest) -> OpenVinoCopy | None:
    """The version's OpenVINO copy (files not read here: `OpenVinoCopy.verify`), or None without one."""
    entry = manifest.data.get("openvino")
    if not isinstance(entry, dict):
        return None
    folder = manifest.model_path.parent
    return OpenVinoCopy(folder / entry["model_file"], folder / entry["weights_file"], entry["sha256"],
                        entry["weights_sha256"])


def load_manifest(path: Path, verify: bool = True) -> Manifest:
    """Load `manifest.json` (or the manifest beside a `model.onnx`, or in a version folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_FILE
    elif path.suffix == ".onnx":
        path = path.parent / MANIFEST_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"{path}: no such manifest file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read manifest: {exc}") from None
    validate_manifest(path, data)
    model_path = path.parent / data["model_file"]
    if not model_path.is_file():
        raise ManifestError(f"{path}: model file {model_path} does not exist")
    if verify:
        if "size_bytes" in data and model_path.stat().st_size != data["size_bytes"]:
            raise ManifestError(f"{path}: model file {model_path} has {model_path.stat().st_size} bytes, "
                                f"manifest says {data['size_bytes']}: refusing to load it")
        actual = file_sha256(model_path)
        if actual != data["sha256"]:
            raise ManifestError(f"{path}: sha256 of {model_path} is {actual}, manifest says "
                                f"{data['sha256']}: refusing to load a model that does not match "
                                f"its manifest")
    return Manifest(version=data["version"], line_type=data["line_type"], classes=tuple(data["classes"]),
                    operating_threshold=float(data["operating_threshold"]), model_path=model_path,
                    sha256=data["sha256"], data=data)
