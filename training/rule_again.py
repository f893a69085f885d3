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
import time
from pathlib import Path
from typing import Any

from inspection.datasets import load_split
from inspection.detector import Detector
from inspection.errors import SteelInspectError
from inspection.manifest import file_sha256, load_manifest
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
    from inspection.code_version import code_version
    from training.finalize import decide_activation, promotion_decision, register_gated
    from training.quantize import derived_metrics, recalibrated_unknown
    from training.unknown import UNSEEN_TARGET, unseen_val_samples

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
        manifest = {k: v for k, v in parent.data.items() if k not in ("metrics", "promotion", "sha256",
                                                                      "size_bytes")}
        manifest.update(version=version, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                        code_version=code_version(), sha256=file_sha256(onnx_path),
                        size_bytes=onnx_path.stat().st_size)
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
            manifest["unknown"] = recalibrated_unknown(
                candidate, parent, val, dataset, unseen_val_samples(parent.line_type, datasets_dir, splits_dir),
                chosen_on="this model's outputs, chosen again", novelty=rule.get("novelty"), unseen_target=target)
        except ValueError as exc:  # e.g. no val detection of a known defect to set the limits on
            raise RuleAgainError(f"{parent.version}: the rule cannot be chosen again: {exc}") from None
        log.info("unknown rule of %s chosen again: %s", parent.version,
                 {k: manifest["unknown"].get(k) for k in ("budget", "novelty_max", "class_share_min",
                                                          "val_known_called_unknown")})
        (work / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        candidate = Detector(load_manifest(work / "manifest.json"), providers="cpu")
        metrics = derived_metrics(candidate, val, test, work, datasets_dir, splits_dir)
        manifest["metrics"] = metrics
        if extra_files:
            _measure_openvino(manifest, work, val, test)
        activate, reason = promotion_decision(registry, parent.line_type, metrics["val"].get("map50"))
        activate, reason = decide_activation(registry, parent.line_type, work, manifest, activate, reason,
                                             clean_strip, register)
        unseen = metrics.get("unseen_test") or {}
        summary = {"version": version, "source": parent.version, "registered": register, "activated": activate,
                   "promotion": reason, "unseen_target": target,
                   "rule": {k: manifest["unknown"].get(k) for k in ("budget", "novelty_share_of_budget",
                                                                    "novelty_max", "class_share_min",
                                                                    "val_known_called_unknown",
                                                                    "val_false_called_unknown")},
                   "source_rule": manifest["rule_again"]["source_rule"],
                   "unseen_val": manifest["unknown"].get("unseen_val"),
                   "unseen_test": {k: unseen.get(k) for k in ("found", "called_unknown", "unknown_share_of_found")},
                   "source_unseen_test": {k: ((parent.data.get("metrics") or {}).get("unseen_test") or {}).get(k)
                                          for k in ("found", "called_unknown", "unknown_share_of_found")},
                   "known_test_called_unknown": (metrics["test"].get("unknown") or {}).get(
                       "share_of_detections_on_defects"),
                   "source_known_test_called_unknown": (((parent.data.get("metrics") or {}).get("test") or {})
                                                        .get("unknown") or {}).get("share_of_detections_on_defects")}
        if register:
            register_gated(registry, onnx_path, manifest, activate, reason, extra_files)
        return summary
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _copy_openvino(parent: Any, work: Path) -> dict[str, Path]:
    """The source's own OpenVINO files (an int8 copy's, `training.quantize_openvino`) copied into `work`
    under the same names, for `Registry.add`'s `extra_files`; none when it has none."""
    entry = parent.data.get("openvino")
    if not isinstance(entry, dict):
        return {}
    files = {}
    for key in ("model_file", "weights_file"):
        inside = entry[key]
        (work / inside).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(parent.model_path.parent / inside, work / inside)
        files[inside] = work / inside
    return files


def _measure_openvino(manifest: dict[str, Any], work: Path, val: Any, test: Any) -> None:
    """The OpenVINO copy's val and test figures again with the new rule (its `unknown` shares change;
    the detections do not), in place of the source's."""
    from training.evaluate import evaluate

    on_openvino = Detector(load_manifest(work / "manifest.json"), providers="openvino")
    manifest["openvino"] = {**manifest["openvino"],
                            "metrics": {"val": evaluate(on_openvino, val, work / "eval-openvino", plot_prefix="val-"),
                                        "test": evaluate(on_openvino, test, work / "eval-openvino",
                                                         plot_prefix="test-")},
                            "metrics_runtime": on_openvino.providers[0]}
