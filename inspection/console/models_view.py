"""Read-only view of the model registry (`inspection.registry`): versions, metrics, active since when."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from inspection.config import default_models_dir
from inspection.console.context import sources
from inspection.frame import LINE_TYPES
from inspection.registry import MANIFEST_FILE, Registry

# Headline figures pulled out of a manifest's metrics.test, when present (the evaluate JSON).
HEADLINE = ("map50", "map50_95", "detection_rate", "false_detections_per_image", "image_accuracy")


def registry_root() -> Path:
    line = sources().line
    return line.model.registry if line is not None else default_models_dir()


def _token(root: Path) -> tuple[str, tuple[tuple[str, float], ...]]:
    manifests = tuple(sorted((str(p), p.stat().st_mtime) for p in root.glob(f"*/*/{MANIFEST_FILE}")))
    return Registry(root).state_token(), manifests


def active_models() -> dict[str, str | None]:
    root = registry_root()
    return _registry(str(root), _token(root))["active"]


def registry_snapshot() -> dict[str, Any]:
    root = registry_root()
    return _registry(str(root), _token(root))


@st.cache_data(show_spinner=False, max_entries=8)
def _registry(root: str, token: Any) -> dict[str, Any]:
    registry = Registry(Path(root))
    history = registry.history()
    active = {lt: registry.active(lt) for lt in LINE_TYPES}
    since = {lt: _active_since(history, lt, active[lt]) for lt in LINE_TYPES}
    rows = []
    for manifest in registry.versions():
        data = manifest.data
        test = (data.get("metrics") or {}).get("test") or {}
        training = data.get("training") or {}
        row = {"line type": manifest.line_type, "version": manifest.version,
               "active": "yes" if active.get(manifest.line_type) == manifest.version else "",
               "created": data.get("created"), "classes": len(manifest.classes),
               "threshold": manifest.operating_threshold}
        for key in HEADLINE:
            value = test.get(key)
            row[key] = value if isinstance(value, int | float) else None
        row.update({"training (min)": round(training["duration_s"] / 60, 1)
                    if isinstance(training.get("duration_s"), int | float) else None,
                    "size (MB)": round(data.get("size_bytes", 0) / 1e6, 2), "sha256": manifest.sha256[:12],
                    "dataset": (data.get("data") or {}).get("dataset"),
                    "architecture": data.get("architecture")})
        rows.append(row)
    shadow = {lt: registry.shadow(lt) for lt in LINE_TYPES}
    shadow_since = {lt: _active_since(registry.shadow_history(), lt, shadow[lt]) for lt in LINE_TYPES}
    return {"active": active, "since": since, "shadow": shadow, "shadow_since": shadow_since,
            "versions": pd.DataFrame(rows),
            "history": pd.DataFrame(history), "details": {m.version: m.data for m in registry.versions()}}


def _active_since(history: list[dict[str, Any]], line_type: str,
                  version: str | None) -> dict[str, Any] | None:
    """The history entry that made `version` active (the latest one naming it)."""
    if version is None:
        return None
    for item in reversed(history):
        if item.get("line_type") == line_type and item.get("version") == version:
            return item
    return None
