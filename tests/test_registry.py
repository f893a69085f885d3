"""Model registry: manifests validated, sha256 enforced, resolve, promote / rollback / history."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from inspection.errors import ManifestError
from inspection.registry import Registry, RegistryError, load_manifest
from tests.tiny_models import add_tiny_model, build_blob_model, tiny_manifest


@pytest.fixture()
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "models")


def test_add_writes_model_and_manifest_with_computed_hash(registry: Registry, tmp_path: Path) -> None:
    manifest = add_tiny_model(registry, tmp_path, version="hot-20261123-1")
    folder = registry.root / "hot" / "hot-20261123-1"
    assert manifest.model_path == folder / "model.onnx"
    data = json.loads((folder / "manifest.json").read_text())
    assert data["sha256"] == manifest.sha256 and len(manifest.sha256) == 64
    assert data["size_bytes"] == (folder / "model.onnx").stat().st_size
    assert manifest.classes == ("dark_spot", "bright_spot") and manifest.size_multiple == 32
    # readable by a worker running as another user
    assert folder.stat().st_mode & 0o777 == 0o755 and (folder / "manifest.json").stat().st_mode & 0o777 == 0o644
    assert registry.active("hot") is None  # adding does not activate unless asked


def test_version_names_count_up_per_day(registry: Registry, tmp_path: Path) -> None:
    first = add_tiny_model(registry, tmp_path)
    second = add_tiny_model(registry, tmp_path)
    day = first.version.split("-")[1]
    assert (first.version, second.version) == (f"hot-{day}-1", f"hot-{day}-2")
    with pytest.raises(RegistryError, match="already registered"):
        add_tiny_model(registry, tmp_path, version=first.version)


def test_tampered_model_is_refused(registry: Registry, tmp_path: Path) -> None:
    manifest = add_tiny_model(registry, tmp_path, version="hot-a")
    data = bytearray(manifest.model_path.read_bytes())
    data[-1] ^= 0xFF  # same size, different content
    manifest.model_path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256 .* refusing"):
        load_manifest(manifest.manifest_path)
    with pytest.raises(ManifestError, match="sha256"):
        registry.resolve("hot-a")
    with pytest.raises(ManifestError, match="sha256"):
        registry.promote("hot-a")
    assert registry.active("hot") is None
    assert load_manifest(manifest.manifest_path, verify=False).version == "hot-a"


def test_truncated_model_is_refused_by_size(registry: Registry, tmp_path: Path) -> None:
    manifest = add_tiny_model(registry, tmp_path, version="hot-a")
    manifest.model_path.write_bytes(manifest.model_path.read_bytes()[:-10])
    with pytest.raises(ManifestError, match="bytes, manifest says"):
        load_manifest(manifest.model_path)


@pytest.mark.parametrize(("field", "value", "message"), [
    ("classes", None, "field 'classes' is missing"),
    ("classes", [], "field 'classes': expected a non-empty list"),
    ("classes", ["a", "a"], "distinct"),
    ("operating_threshold", 1.5, "operating_threshold': expected 0..1"),
    ("operating_threshold", "high", "operating_threshold': expected int or float"),
    ("line_type", "warm", "line_type': expected one of"),
    ("sha256", "abc", "sha256': expected 64"),
    ("model_file", "../elsewhere.onnx", "model_file': expected a file name"),
    ("schema", 2, "schema': expected 1"),
    ("version", "bad version!", "version': expected an identifier"),
    ("input", {"dtype": "float32"}, "input': expected dtype uint8"),
    ("input", {"size_multiple": 0}, "size_multiple': expected an integer >= 1"),
])
def test_invalid_manifest_fields_are_named(registry: Registry, tmp_path: Path, field: str, value: object,
                                           message: str) -> None:
    manifest = add_tiny_model(registry, tmp_path, version="hot-a")
    data = json.loads(manifest.manifest_path.read_text())
    if value is None:
        del data[field]
    else:
        data[field] = value
    manifest.manifest_path.write_text(json.dumps(data))
    with pytest.raises(ManifestError, match=message) as info:
        load_manifest(manifest.manifest_path)
    assert str(manifest.manifest_path) in str(info.value)


def test_unreadable_manifest_and_missing_model(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="no such manifest"):
        load_manifest(tmp_path / "nothing" / "manifest.json")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="cannot read manifest"):
        load_manifest(tmp_path / "manifest.json")
    data = tiny_manifest(version="hot-x")
    data.update(model_file="model.onnx", sha256="0" * 64)
    (tmp_path / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "manifest.json")


def test_add_refuses_a_bad_manifest_and_leaves_nothing_behind(registry: Registry, tmp_path: Path) -> None:
    model = build_blob_model(tmp_path / "m.onnx")
    bad = tiny_manifest(version="hot-bad")
    bad["classes"] = []
    with pytest.raises(ManifestError, match="classes"):
        registry.add(model, bad)
    assert list((registry.root / "hot").iterdir()) == []
    with pytest.raises(ManifestError, match="line_type"):
        registry.add(model, {**tiny_manifest(), "line_type": "warm"})


def test_resolve_by_line_type_version_and_paths(registry: Registry, tmp_path: Path) -> None:
    hot = add_tiny_model(registry, tmp_path, version="hot-1", activate=True)
    cold = add_tiny_model(registry, tmp_path, line_type="cold", version="cold-1", classes=("a", "b", "c"))
    assert registry.resolve("hot").version == "hot-1"
    with pytest.raises(RegistryError, match="no active cold model"):
        registry.resolve("cold")
    assert registry.resolve("cold-1").classes == ("a", "b", "c")
    for path in (cold.model_path.parent, cold.model_path, cold.manifest_path):
        assert registry.resolve(str(path)).version == "cold-1"
    assert registry.resolve(hot.model_path).sha256 == hot.sha256
    with pytest.raises(RegistryError, match="known: cold-1, hot-1"):
        registry.resolve("hot-404")


def test_promote_rollback_and_history(registry: Registry, tmp_path: Path) -> None:
    for version in ("hot-1", "hot-2", "hot-3"):
        add_tiny_model(registry, tmp_path, version=version)
    add_tiny_model(registry, tmp_path, line_type="cold", version="cold-1")
    with pytest.raises(RegistryError, match="no earlier active version"):
        registry.rollback("hot")
    registry.promote("hot-1", by="ana", reason="first")
    registry.promote("cold-1")
    registry.promote("hot-2", by="ben")
    registry.promote("hot-3", by="ben")
    token = registry.state_token()
    assert registry.rollback("hot", by="cy", reason="false alarms").version == "hot-2"
    assert registry.state_token() != token
    assert registry.rollback("hot").version == "hot-1"
    with pytest.raises(RegistryError, match="no earlier active version"):
        registry.rollback("hot")
    assert registry.active("hot") == "hot-1" and registry.active("cold") == "cold-1"
    history = registry.history()
    assert [(h["action"], h["version"], h["previous"]) for h in history if h["line_type"] == "hot"] == [
        ("promote", "hot-1", None), ("promote", "hot-2", "hot-1"), ("promote", "hot-3", "hot-2"),
        ("rollback", "hot-2", "hot-3"), ("rollback", "hot-1", "hot-2")]
    assert history[0]["by"] == "ana" and history[0]["reason"] == "first"
    assert history[1]["by"] and history[1]["by"] != "unknown"  # the OS user when not given
    assert history[4]["by"] == "cy" and history[4]["reason"] == "false alarms"
    # A fresh Registry object reads the same state from registry.json.
    assert Registry(registry.root).active("hot") == "hot-1"
    assert registry.state_path.stat().st_mode & 0o777 == 0o644
    state = json.loads(registry.state_path.read_text())
    assert state["active"] == {"hot": "hot-1", "cold": "cold-1"}


def test_rollback_after_new_promotion_goes_back_one_step(registry: Registry, tmp_path: Path) -> None:
    for version in ("hot-1", "hot-2", "hot-3"):
        add_tiny_model(registry, tmp_path, version=version)
    registry.promote("hot-1")
    registry.promote("hot-2")
    registry.rollback("hot")  # -> hot-1
    registry.promote("hot-3")
    assert registry.rollback("hot").version == "hot-1"


def test_promote_unknown_version_and_line_type(registry: Registry) -> None:
    with pytest.raises(RegistryError, match="not registered"):
        registry.promote("hot-9")
    with pytest.raises(RegistryError, match="unknown line type"):
        registry.active("warm")


def test_corrupt_registry_state_is_a_clear_error(registry: Registry) -> None:
    registry.root.mkdir(parents=True)
    registry.state_path.write_text("[1, 2]")
    with pytest.raises(RegistryError, match="registry.json: expected"):
        registry.active("hot")


def test_state_token_changes_only_with_the_state(registry: Registry, tmp_path: Path) -> None:
    assert registry.state_token() == "absent"
    add_tiny_model(registry, tmp_path, version="hot-1", activate=True)
    token = registry.state_token()
    assert registry.state_token() == token
    add_tiny_model(registry, tmp_path, version="hot-2")  # adding a version does not change the state
    assert registry.state_token() == token
    registry.promote("hot-2")
    assert registry.state_token() != token


def test_concurrent_promotions_keep_every_history_entry(registry: Registry, tmp_path: Path) -> None:
    for version in ("hot-1", "hot-2"):
        add_tiny_model(registry, tmp_path, version=version)
    errors: list[Exception] = []

    def promote_many(version: str) -> None:
        try:
            for _ in range(10):
                Registry(registry.root).promote(version)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=promote_many, args=(v,)) for v in ("hot-1", "hot-2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(registry.history()) == 20  # the lock serialises read-modify-write
