"""Coil grading: TOML rule sets (versioned, sha256-hashed), zones, limits, and the coverage gate.

The rule-set format and the grade names are documented in `inspection/rules/standard.toml` (the
built-in set). `grade` is a pure function of a `GradeInput`: the coil's effective defects (after
reviews), its length, width and inspection coverage. A coil whose coverage is below
``coverage_min`` gets ``hold`` ("inspection incomplete"), never prime, whatever its defects.

A grade override that releases a held coil as prime needs a second person (`needs_second_person`):
until another quality engineer approves it, the override is pending and not in effect.
"""

from __future__ import annotations

import hashlib
import operator
import tomllib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from inspection.records.errors import RulesError
from inspection.severity import SeverityError, SeverityRule, rule_from_table

GRADES: tuple[str, ...] = ("prime", "secondary", "downgrade", "reject")  # best to worst
HOLD = "hold"
ALL_GRADES: tuple[str, ...] = (*GRADES, HOLD)
ZONES = ("any", "head", "tail", "body", "edge", "centre")
SURFACES = ("any", "top", "bottom")
PER = ("coil", "100m", "m2")
STANDARD_RULES = Path(__file__).resolve().parent.parent / "rules" / "standard.toml"


@dataclass(frozen=True)
class Limit:
    id: str
    text: str
    classes: tuple[str, ...]  # empty: any class
    severity_min: int
    zone: str
    surface: str
    per: str
    max: float
    grade: str

    def describe(self) -> str:
        classes = ", ".join(self.classes) if self.classes else "any class"
        surface = "both surfaces" if self.surface == "any" else f"{self.surface} surface"
        return (
            f"{self.id} ({self.text}; {classes}; severity >= {self.severity_min}; "
            f"zone {self.zone}; {surface})"
        )


@dataclass(frozen=True)
class RuleSet:
    name: str
    version: str
    sha256: str
    path: str
    description: str
    edge_mm: float
    head_m: float
    tail_m: float
    limits: tuple[Limit, ...]
    severity: SeverityRule


class GradeDefect(NamedTuple):
    """What grading needs of one defect (its effective class after reviews). A named tuple: a coil
    may have 10,000 of them, built at every grading, and a frozen dataclass costs 5x as much."""

    cls: str
    severity: int
    surface: str
    along_mm: float
    across_mm: float


@dataclass(frozen=True)
class GradeInput:
    coil: str
    length_m: float
    width_mm: float
    coverage: float  # inspected share of the coil, 0..1 (worst camera)
    defects: Sequence[GradeDefect]
    # whether anything gives the coil's length (the plant's data, a camera's coil_end): without it, as for
    # a coil a stop cut (`cameras.base`), the share is 0 because nothing proves more, not because nothing was seen
    length_known: bool = True


@dataclass(frozen=True)
class GradeResult:
    grade: str
    reasons: tuple[str, ...]
    counted: int
    coverage: float


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Load and validate a rule set; `None` loads the built-in standard set."""
    path = Path(path) if path else STANDARD_RULES
    try:
        data = path.read_bytes()
        raw = tomllib.loads(data.decode("utf-8"))
    except FileNotFoundError:
        raise RulesError(f"{path}: no such rule set") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RulesError(f"{path}: cannot read rule set: {exc}") from None
    try:
        return _build(path, hashlib.sha256(data).hexdigest(), raw)
    except SeverityError as exc:
        raise RulesError(f"{path}: {exc}") from None


def _build(path: Path, sha: str, raw: dict[str, Any]) -> RuleSet:
    def need(table: dict[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if key not in table:
            raise RulesError(f"{path}: {where}{key}: missing")
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, kind):
            raise RulesError(
                f"{path}: {where}{key}: expected {getattr(kind, '__name__', kind)}, got {value!r}"
            )
        return value

    unknown = set(raw) - {"name", "version", "description", "zones", "limit", "severity"}
    if unknown:
        raise RulesError(f"{path}: unknown key {sorted(unknown)[0]!r}")
    zones = raw.get("zones", {})
    limits = []
    seen: set[str] = set()
    for i, item in enumerate(raw.get("limit", [])):
        where = f"limit[{i}]."
        allowed = {"id", "text", "classes", "severity_min", "zone", "surface", "per", "max", "grade"}
        if set(item) - allowed:
            raise RulesError(f"{path}: {where}{sorted(set(item) - allowed)[0]}: unknown key")
        limit = Limit(
            id=need(item, "id", str, where),
            text=item.get("text", ""),
            classes=tuple(item.get("classes", [])),
            severity_min=int(item.get("severity_min", 1)),
            zone=item.get("zone", "any"),
            surface=item.get("surface", "any"),
            per=need(item, "per", str, where),
            max=float(need(item, "max", (int, float), where)),
            grade=need(item, "grade", str, where),
        )
        for key, value, choices in (
            ("zone", limit.zone, ZONES),
            ("surface", limit.surface, SURFACES),
            ("per", limit.per, PER),
            ("grade", limit.grade, GRADES[1:]),
        ):
            if value not in choices:
                raise RulesError(f"{path}: {where}{key}: expected one of {', '.join(choices)}, got {value!r}")
        if limit.severity_min not in (1, 2, 3):
            raise RulesError(f"{path}: {where}severity_min: expected 1, 2 or 3, got {limit.severity_min!r}")
        if limit.id in seen:
            raise RulesError(f"{path}: {where}id: duplicate limit id {limit.id!r}")
        seen.add(limit.id)
        limits.append(limit)
    return RuleSet(
        name=need(raw, "name", str, ""),
        version=str(need(raw, "version", (str, int), "")),
        sha256=sha,
        path=str(path),
        description=raw.get("description", ""),
        edge_mm=float(zones.get("edge_mm", 50.0)),
        head_m=float(zones.get("head_m", 10.0)),
        tail_m=float(zones.get("tail_m", 10.0)),
        limits=tuple(limits),
        severity=rule_from_table(raw.get("severity")),
    )


def needs_second_person(effective: str | None, automatic: str | None, target: str) -> bool:
    """True when an override to `target` may not take effect on one person's word: prime for a coil
    whose effective grade or latest automatic grade is hold. The automatic grade counts too, so that
    hold -> secondary -> prime by one person is not a way around it."""
    return target == GRADES[0] and HOLD in (effective, automatic)


def grade(data: GradeInput, rules: RuleSet, coverage_min: float) -> GradeResult:
    """Grade one coil: the worst grade of every exceeded limit, or hold below the coverage gate."""
    if data.coverage < coverage_min:
        if data.length_known:
            reason = (f"hold: inspection incomplete: coverage {data.coverage:.2%} < required {coverage_min:.2%}"
                      " (coverage gate)")
        else:
            reason = ("hold: inspection incomplete: the coil's length is unknown (no camera ended it, no plant "
                      f"data), so its coverage cannot be proven; {data.length_m:.1f} m of it seen (coverage gate)")
        return GradeResult(HOLD, (reason,), len(data.defects), data.coverage)
    length_m = max(data.length_m, 1e-6)
    worst, reasons = GRADES[0], []
    # Defects every limit treats alike (class, severity, surface, zones) counted once: a coil of
    # 10,000 defects has a few hundred such kinds, so each limit tests those, not every defect.
    defects = data.defects
    kinds = Counter(zip(map(_CLS, defects), map(_SEVERITY, defects), map(_SURFACE, defects),
                        _zones_of(defects, rules, length_m, data.width_mm), strict=True))
    for limit in rules.limits:
        count = sum(n for (cls, severity, surface, zones), n in kinds.items()
                    if _matches(limit, cls, severity, surface, zones))
        zone_len, zone_width = _zone_size(limit.zone, rules, length_m, data.width_mm)
        surfaces = 2 if limit.surface == "any" else 1
        if limit.per == "coil":
            value, unit = float(count), "per coil"
        elif limit.per == "100m":
            value, unit = count / max(zone_len / 100.0, 1e-6), "per 100 m"
        else:
            value, unit = count / max(zone_len * zone_width / 1000.0 * surfaces, 1e-6), "per m2"
        if value > limit.max:
            reasons.append(
                f"{limit.describe()}: {count} defects = {value:.3g} {unit} > limit {limit.max:g} "
                f"-> {limit.grade}"
            )
            if GRADES.index(limit.grade) > GRADES.index(worst):
                worst = limit.grade
    if not reasons:
        reasons.append(
            f"prime: all {len(rules.limits)} limits of rule set {rules.name} v{rules.version} met "
            f"({len(data.defects)} defects counted, coverage {data.coverage:.2%})"
        )
    return GradeResult(worst, tuple(reasons), len(data.defects), data.coverage)


_CLS, _SEVERITY, _SURFACE = operator.itemgetter(0), operator.itemgetter(1), operator.itemgetter(2)
_ALONG, _ACROSS = operator.itemgetter(3), operator.itemgetter(4)
# `_zones`' answers, by (lengthwise, across) code: head / tail / body times edge / centre
_ZONE_TUPLES = tuple(("any", lengthwise, across) for lengthwise in ("head", "tail", "body")
                     for across in ("edge", "centre"))


def _zones_of(defects: Sequence[GradeDefect], rules: RuleSet, length_m: float, width_mm: float) -> list[tuple]:
    """`_zones` of every defect, with the same float operations on arrays: a coil of 10,000 defects
    is graded at every finalisation, and a Python call per defect was half of it."""
    n = len(defects)
    along_m = np.fromiter(map(_ALONG, defects), dtype=float, count=n) / 1000.0
    across = np.fromiter(map(_ACROSS, defects), dtype=float, count=n)
    lengthwise = np.where(along_m < rules.head_m, 0, np.where(along_m > length_m - rules.tail_m, 1, 2))
    centre = ~((across < rules.edge_mm) | (across > width_mm - rules.edge_mm))
    return list(map(_ZONE_TUPLES.__getitem__, (lengthwise * 2 + centre).tolist()))


def _zones(d: GradeDefect, rules: RuleSet, length_m: float, width_mm: float) -> tuple[str, str, str]:
    """The zones `d` lies in: any, one of head / tail / body, one of edge / centre."""
    along_m = d.along_mm / 1000.0
    lengthwise = "head" if along_m < rules.head_m else "tail" if along_m > length_m - rules.tail_m else "body"
    across = "edge" if d.across_mm < rules.edge_mm or d.across_mm > width_mm - rules.edge_mm else "centre"
    return "any", lengthwise, across


def limits_counting(d: GradeDefect, rules: RuleSet, length_m: float, width_mm: float) -> tuple[str, ...]:
    """Ids of the rule set's limits that count `d` (the same test `grade` applies); empty when no
    limit of the set counts it, so it cannot change the grade."""
    zones = _zones(d, rules, max(length_m, 1e-6), width_mm)
    return tuple(limit.id for limit in rules.limits if _matches(limit, d.cls, d.severity, d.surface, zones))


def _matches(limit: Limit, cls: str, severity: int, surface: str, zones: tuple[str, ...]) -> bool:
    return (
        (not limit.classes or cls in limit.classes)
        and severity >= limit.severity_min
        and (limit.surface == "any" or surface == limit.surface)
        and limit.zone in zones
    )


def _zone_size(zone: str, rules: RuleSet, length_m: float, width_mm: float) -> tuple[float, float]:
    """(length in m, width in mm) of a zone, for rates per 100 m and per m2."""
    length = {
        "head": min(rules.head_m, length_m),
        "tail": min(rules.tail_m, length_m),
        "body": max(length_m - rules.head_m - rules.tail_m, 0.0),
    }.get(zone, length_m)
    width = {"edge": min(2 * rules.edge_mm, width_mm), "centre": max(width_mm - 2 * rules.edge_mm, 0.0)}.get(
        zone, width_mm
    )
    return length, width
