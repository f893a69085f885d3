"""Registered ensembles: several models in one ONNX file, their detections fused.

Why: models of one recipe trained apart (another schedule, another depth) miss and invent different
things, most of all on the low-contrast classes (crazing, rolled-in scale); fusing them gains more
than any one of them. Measured on the hot val split (`evaluate --split val`): hot-20261205-2 alone
(the fp32 source of the active model) mAP@0.5 0.752, hot-20261205-1 0.802, hot-20261204-5 0.779;
the three fused 0.825, with 0.99 false detections per image against 1.1 to 1.5. README, "Ensembles",
has the test and line figures and the cost: each member is one more model run per image.

`steel-inspect ensemble` (`training.ensemble`) puts the members' graphs side by side in one ONNX
file (one input; member i's outputs prefixed `m<i>_`) and registers it as a version of its own, so
the line, the registry, promotion, hot swap and every record treat it as one model with one sha256;
the manifest lists the members (`ensemble.members`: version, sha256, output prefix, unknown rule).
`Detector` runs the file once per batch and fuses the members' detections of each image as views
of it (`inspection.flips.fuse`: weighted boxes fusion per class; a group's score is the sum of its
members' scores over the number of members, so a detection only some models back keeps their
share). The ensemble's own operating thresholds apply to the fused scores.

Unknown: a model's novelty is a distance in its own feature space, so novelties of different models
are not averaged; each member judges its own detections by its own rule (a member without a rule
calls all its detections known) and a fused detection is `unknown` when at least half of the members
that found it called it so (`inspection.flips.UNKNOWN_VOTE`, chosen on val). class_scores are
averaged (the same classes, each a probability).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from inspection.errors import ManifestError, SteelInspectError
from inspection.flips import fuse
from inspection.frame import IDENT_PATTERN

PREFIX = "m{}_"  # member i's outputs in the ensemble's file


class EnsembleError(SteelInspectError, ValueError):
    """Models cannot form an ensemble: other classes or line type, or one model named twice."""


@dataclass(frozen=True)
class Member:
    """One model in a registered ensemble: its version, the prefix of its outputs, its unknown rule entry."""

    version: str
    prefix: str
    unknown: dict[str, Any] | None = None


def check_members(manifests: Sequence[Any]) -> None:
    """Refuse models that cannot be fused: their labels must mean the same classes, in the same order."""
    if len(manifests) < 2:
        raise EnsembleError(f"an ensemble needs at least two models, got {len(manifests)}")
    primary = manifests[0]
    seen: set[str] = set()
    for m in manifests:
        if m.version in seen:
            raise EnsembleError(f"{m.version} is named twice in the ensemble")
        seen.add(m.version)
        if m.line_type != primary.line_type:
            raise EnsembleError(f"{m.version} is a {m.line_type} model, {primary.version} a {primary.line_type} "
                                "model: an ensemble fuses models of one line type")
        if tuple(m.classes) != tuple(primary.classes):
            raise EnsembleError(f"{m.version} has classes ({', '.join(m.classes)}), {primary.version} has "
                                f"({', '.join(primary.classes)}): an ensemble fuses models of the same classes, "
                                "in the same order")
        if m.data.get("ensemble"):
            raise EnsembleError(f"{m.version} is an ensemble itself: name its members instead")


def ensemble_members(manifest: Any) -> list[Member]:
    """The members a manifest's `ensemble` entry names, in output order; [] for a single model."""
    entry = manifest.data.get("ensemble")
    if entry is None:
        return []
    where = f"{manifest.manifest_path}: field 'ensemble'"
    members = entry.get("members") if isinstance(entry, dict) else None
    if not isinstance(members, list) or len(members) < 2:
        raise ManifestError(f"{where}: expected 'members', a list of at least two models"[:300])
    out = []
    for i, m in enumerate(members):
        version = m.get("version") if isinstance(m, dict) else None
        if not isinstance(version, str) or not re.fullmatch(IDENT_PATTERN, version):
            raise ManifestError(f"{where}: member {i}: expected a version, got {m!r}"[:300])
        unknown = m.get("unknown")
        if unknown is not None and not isinstance(unknown, dict):
            raise ManifestError(f"{where}: member {i} ({version}): 'unknown' must be a rule or null"[:300])
        out.append(Member(version, PREFIX.format(i), unknown))
    return out


def member_versions(manifest: Any) -> list[str]:
    """The versions an ensemble fuses, in output order; [] for a single model (what reports name)."""
    return [m.version for m in ensemble_members(manifest)]


def fuse_members(found: Sequence[Any], height: int, width: int) -> dict[str, np.ndarray | None]:
    """The fields of one image's `Detections` from its members' (`found[i]`: every detection of member i,
    in image pixels), fused; the caller keeps those reaching the operating thresholds."""
    judged = any(f.unknown is not None for f in found)
    views = [replace(f, unknown=np.zeros(len(f), bool)) if judged and f.unknown is None else f for f in found]
    fused = fuse(views, [""] * len(views), height, width)
    fused["novelty"] = None  # each model's own distance: not comparable across models
    return fused
