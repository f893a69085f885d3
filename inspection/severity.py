"""Defect severity: 1 (minor), 2 (major), 3 (critical), from class, size in mm and score.

The rule (configurable through a ``[severity]`` table in a grading rule set, see
`inspection/rules/standard.toml`):

1. Size: the defect's longest side (``max(length_mm, width_mm)``) and its area are compared with
   the class's thresholds (``[severity.classes.<name>]``, else ``[severity.default]``):
   critical when ``size_mm >= critical_mm`` or ``area_mm2 >= critical_mm2``; else major when
   ``size_mm >= major_mm`` or ``area_mm2 >= major_mm2``; else minor.
2. Class floor: ``min_severity`` per class (e.g. a hole -- ``punching`` -- is never minor).
3. Confidence: a detection scored below ``uncertain_score`` drops one step (never below the class
   floor), because an uncertain detection should not stop a line on its own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from inspection.errors import SteelInspectError

MINOR, MAJOR, CRITICAL = 1, 2, 3
SEVERITY_NAMES = {MINOR: "minor", MAJOR: "major", CRITICAL: "critical"}


class SeverityError(SteelInspectError, ValueError):
    """A severity rule table is invalid."""


@dataclass(frozen=True)
class Thresholds:
    major_mm: float = 20.0
    critical_mm: float = 150.0
    major_mm2: float = 200.0
    critical_mm2: float = 5000.0
    min_severity: int = MINOR


_BUILTIN_CLASSES = {
    # Holes and through-defects are never cosmetic.
    "punching": Thresholds(
        major_mm=5.0, critical_mm=20.0, major_mm2=20.0, critical_mm2=300.0, min_severity=MAJOR
    ),
    "inclusion": Thresholds(major_mm=10.0, critical_mm=80.0, major_mm2=80.0, critical_mm2=2000.0),
    "inclusions": Thresholds(major_mm=10.0, critical_mm=80.0, major_mm2=80.0, critical_mm2=2000.0),
    "pits": Thresholds(major_mm=5.0, critical_mm=40.0, major_mm2=25.0, critical_mm2=800.0),
    "pitted_surface": Thresholds(major_mm=15.0, critical_mm=120.0, major_mm2=150.0, critical_mm2=4000.0),
    "dents": Thresholds(major_mm=10.0, critical_mm=60.0, major_mm2=80.0, critical_mm2=1500.0),
    # Long thin defects: judge by length, their area stays small.
    "scratches": Thresholds(major_mm=50.0, critical_mm=300.0, major_mm2=500.0, critical_mm2=8000.0),
    "linear": Thresholds(major_mm=50.0, critical_mm=300.0, major_mm2=500.0, critical_mm2=8000.0),
    "oil spots": Thresholds(major_mm=40.0, critical_mm=400.0, major_mm2=1000.0, critical_mm2=50000.0),
}


@dataclass(frozen=True)
class SeverityRule:
    """Per-class size thresholds plus the confidence step-down."""

    default: Thresholds = Thresholds()
    classes: Mapping[str, Thresholds] = field(default_factory=lambda: dict(_BUILTIN_CLASSES))
    uncertain_score: float = 0.5

    def thresholds(self, cls: str) -> Thresholds:
        return self.classes.get(cls, self.default)


DEFAULT_RULE = SeverityRule()


def severity(
    cls: str,
    length_mm: float,
    width_mm: float,
    area_mm2: float,
    score: float,
    rule: SeverityRule = DEFAULT_RULE,
) -> int:
    """Severity 1..3 of one defect under `rule`."""
    t = rule.thresholds(cls)
    size = max(length_mm, width_mm)
    if size >= t.critical_mm or area_mm2 >= t.critical_mm2:
        level = CRITICAL
    elif size >= t.major_mm or area_mm2 >= t.major_mm2:
        level = MAJOR
    else:
        level = MINOR
    level = max(level, t.min_severity)
    if score < rule.uncertain_score:
        level = max(level - 1, t.min_severity, MINOR)
    return level


def rule_from_table(table: Mapping[str, Any] | None) -> SeverityRule:
    """Build a rule from a ``[severity]`` TOML table (missing keys keep the built-in values)."""
    if not table:
        return DEFAULT_RULE
    allowed = {"default", "classes", "uncertain_score"}
    unknown = set(table) - allowed
    if unknown:
        raise SeverityError(f"severity: unknown key {sorted(unknown)[0]!r}")
    default = _thresholds("severity.default", table.get("default", {}), Thresholds())
    classes = dict(_BUILTIN_CLASSES)
    for name, sub in dict(table.get("classes", {})).items():
        classes[name] = _thresholds(f"severity.classes.{name}", sub, classes.get(name, default))
    score = table.get("uncertain_score", DEFAULT_RULE.uncertain_score)
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        raise SeverityError(f"severity.uncertain_score: expected a number in [0, 1], got {score!r}")
    return SeverityRule(default=default, classes=classes, uncertain_score=float(score))


def _thresholds(where: str, table: Any, base: Thresholds) -> Thresholds:
    if not isinstance(table, Mapping):
        raise SeverityError(f"{where}: expected a table, got {table!r}")
    values = dict(base.__dict__)
    for key, value in table.items():
        if key not in values:
            raise SeverityError(f"{where}.{key}: unknown key")
        if key == "min_severity":
            if value not in (MINOR, MAJOR, CRITICAL) or isinstance(value, bool):
                raise SeverityError(f"{where}.min_severity: expected 1, 2 or 3, got {value!r}")
        elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise SeverityError(f"{where}.{key}: expected a number >= 0, got {value!r}")
        values[key] = value
    result = Thresholds(**values)
    if result.major_mm > result.critical_mm or result.major_mm2 > result.critical_mm2:
        raise SeverityError(f"{where}: major thresholds must not exceed critical ones")
    return result
