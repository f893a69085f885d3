"""A registered model with its unknown rule chosen again: the same model files, a new rule, a new version.

Why a version of its own: the rule decides what the line records as ``unknown`` (a known defect without
its class, an unseen type with one), and a model's manifest is immutable once registered, so a rule
chosen again (by today's rule choice, `training.unknown.choose_rule`, or for another share of unseen
types, `unseen_target`) is a new version: measured on val and test, through the val gate and the
clean-strip check like any other, and rolled back like any other. The model files (the ONNX file and,
for an int8 copy, its OpenVINO files) are copied unchanged: the detections do not change, only which of
them are called ``unknown``.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from inspection.datasets import load_split
from inspection.detector import Detector
from inspection.errors import SteelInspectError
from inspection.manifest import load_manifest, openvino_copy
from inspection.registry import Registry

log = logging.getLogger(__name__)


class RuleAgainError(SteelInspectError):
    """The model has no unknown rule to choose again (or none this command can choose), or a bad target."""


def rule_again_version(source: str, *, models_dir: Path | None = None, datasets_dir: Path,
                       splits_dir: Path | None = None, unseen_target: float | None = None, register: bool = True,
                       clean_strip: Any = None) -> dict[str, Any]:
    """Choose the unknown rule of registered `source` again on its own outputs, measure, register; a summary.

    `unseen_target`: the share of never-learned val defects found that the rule's budget is chosen to call
    unknown (None: `training.unknown.UNSEEN_TARGET`). `clean_strip`: an `inspection.clean_strip.Gate`
    that may keep a new version the val gate passed from going live (None: not run)."""
    from training.finalize import decide_activation, new_version_manifest, promotion_decision, register_gated
    from training.quantize import derived_metrics, openvino_figures, with_unknown_rule_again
    from training.unknown import UNSEEN_TARGET

    target = UNSEEN_TARGET if unseen_target is None else unseen_target
    if not 0.0 < target <= 1.0:
        raise RuleAgainError(f"unseen target {target}: expected a share in (0, 1]")
    registry = Registry(models_dir)
    parent = registry.resolve(source)
    if parent.data.get("ensemble"):  # its members' rules vote (inspection.ensemble): none of its own
        raise RuleAgainError(f"{parent.version} is an ensemble: its members' unknown rules vote; choose theirs")
    rule = parent.data.get("unknown")
    if not isinstance(rule, dict) or rule.get("novelty_max") is None:
        raise RuleAgainError(f"{parent.version} has no unknown rule to choose again (its manifest's 'unknown' "
                             "entry has no limits)")
    dataset = (parent.data.get("data") or {}).get("dataset")
    if not dataset:
        raise RuleAgainError(f"{parent.version}: the manifest names no dataset to choose the rule on")
    work = Path(tempfile.mkdtemp(prefix="steel-rule-"))
    try:
        onnx_path = work / "model.onnx"
        shutil.copyfile(parent.model_path, onnx_path)
        extra_files = _copy_openvino(parent, work)
        version = registry.next_version(parent.line_type)
        manifest = new_version_manifest(parent.data, version, onnx_path)
        command = f"steel-inspect unknown-rule {parent.version}" + (
            f" --unseen-target {unseen_target}" if unseen_target is not None else "")
        manifest["rule_again"] = {"source_version": parent.version, "source_sha256": parent.sha256,
                                  "command": command, "unseen_target": target,
                                  "source_rule": {k: rule.get(k) for k in ("novelty_max", "class_share_min",
                                                                           "budget", "novelty_share_of_budget")}}
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        candidate = Detector(load_manifest(work / "manifest.json"), providers="cpu")
        val = load_split(datasets_dir, dataset, "val", splits_dir)
        test = load_split(datasets_dir, dataset, "test", splits_dir)
        try:
            candidate = with_unknown_rule_again(manifest, work, candidate, parent, val, datasets_dir, splits_dir,
                                                chosen_on="this model's outputs, chosen again",
                                                novelty=rule.get("novelty"), unseen_target=target)
        except ValueError as exc:  # e.g. no val detection of a known defect to set the limits on
            raise RuleAgainError(f"{parent.version}: the rule cannot be chosen again: {exc}") from None
        log.info("unknown rule of %s chosen again: %s", parent.version,
                 {k: manifest["unknown"].get(k) for k in ("budget", "novelty_max", "class_share_min",
                                                          "val_known_called_unknown")})
        metrics = derived_metrics(candidate, val, test, work, datasets_dir, splits_dir)
        manifest["metrics"] = metrics
        if extra_files:  # its `unknown` shares change with the rule (the detections do not)
            on_openvino = Detector(load_manifest(work / "manifest.json"), providers="openvino")
            manifest["openvino"] = {**manifest["openvino"], **openvino_figures(on_openvino, val, test, work)}
        activate, reason = promotion_decision(registry, parent.line_type, metrics["val"].get("map50"))
        activate, reason = decide_activation(registry, parent.line_type, work, manifest, activate, reason,
                                             clean_strip, register)
        unseen, known = _unknown_figures(metrics)
        source_unseen, source_known = _unknown_figures(parent.data.get("metrics") or {})
        summary = {"version": version, "source": parent.version, "registered": register, "activated": activate,
                   "promotion": reason, "unseen_target": target,
                   "rule": {k: manifest["unknown"].get(k) for k in ("budget", "novelty_share_of_budget",
                                                                    "novelty_max", "class_share_min",
                                                                    "val_known_called_unknown",
                                                                    "val_false_called_unknown")},
                   "source_rule": manifest["rule_again"]["source_rule"],
                   "unseen_val": manifest["unknown"].get("unseen_val"),
                   "unseen_test": unseen, "source_unseen_test": source_unseen,
                   "known_test_called_unknown": known, "source_known_test_called_unknown": source_known}
        if register:
            register_gated(registry, onnx_path, manifest, activate, reason, extra_files)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _unknown_figures(metrics: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """From a version's `metrics`: the never-learned test types found and called unknown, and the share
    of its detections on known test defects called unknown."""
    unseen = metrics.get("unseen_test") or {}
    known = ((metrics.get("test") or {}).get("unknown") or {}).get("share_of_detections_on_defects")
    return {k: unseen.get(k) for k in ("found", "called_unknown", "unknown_share_of_found")}, known


def _copy_openvino(parent: Any, work: Path) -> dict[str, Path]:
    """The source's own OpenVINO files (an int8 copy's, `training.quantize_openvino`), checked against its
    manifest and copied into `work` under the same names, for `Registry.add`'s `extra_files`; none when it
    has none."""
    copy = openvino_copy(parent)
    if copy is None:
        return {}
    copy.verify()
    files = {}
    for path in (copy.model_path, copy.weights_path):
        inside = path.relative_to(parent.model_path.parent).as_posix()
        (work / inside).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, work / inside)
        files[inside] = work / inside
    return files
