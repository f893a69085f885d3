"""The promotion gate: a candidate model may not be worse than the active one on the test split.

Both manifests carry the figures `training.evaluate` measured on their line type's committed test
split (``metrics.test``). The gate refuses a candidate whose detection rate, or whose recall of
any class the active model also has, falls by more than the line config's allowance
(``[model] promote_max_detection_rate_drop`` / ``promote_max_recall_drop``); figures measured on
different images (another split file, another dataset) cannot be compared and are refused too.
`models promote --force --reason TEXT` goes past the gate; the reason and what the gate found are
recorded in the registry's history. After these figures, `models promote` runs the clean-strip check
(`inspection.clean_strip`): both models through the line on defect-free strip.
"""

from __future__ import annotations

from typing import Any

from inspection.manifest import Manifest


def gate_findings(active: Manifest, candidate: Manifest, *, max_recall_drop: float,
                  max_detection_rate_drop: float) -> list[str]:
    """Why `candidate` may not replace `active` (empty when it may)."""
    a, b = _test(active), _test(candidate)
    if a is None or b is None:
        missing = active if a is None else candidate
        return [f"{missing.version} has no test figures in its manifest (metrics.test)"]
    if (a.get("images"), a.get("gt_boxes")) != (b.get("images"), b.get("gt_boxes")):
        return [f"test figures on different images ({a.get('images')} images / {a.get('gt_boxes')} boxes vs "
                f"{b.get('images')} / {b.get('gt_boxes')}): not comparable"]
    findings = []
    rate_a, rate_b = a.get("detection_rate"), b.get("detection_rate")
    if rate_a is not None and rate_b is not None and rate_a - rate_b > max_detection_rate_drop + 1e-9:
        findings.append(f"detection rate {rate_b:.3f} < {rate_a:.3f} (allowed drop {max_detection_rate_drop:.3f})")
    for cls, figures in (a.get("per_class") or {}).items():
        recall_a = figures.get("recall_at_threshold")
        recall_b = ((b.get("per_class") or {}).get(cls) or {}).get("recall_at_threshold")
        if recall_a is None or recall_b is None:
            continue
        if recall_a - recall_b > max_recall_drop + 1e-9:
            findings.append(f"{cls} recall {recall_b:.3f} < {recall_a:.3f} (allowed drop {max_recall_drop:.3f})")
    return findings


def _test(manifest: Manifest) -> dict[str, Any] | None:
    test = (manifest.data.get("metrics") or {}).get("test")
    return test if isinstance(test, dict) else None
