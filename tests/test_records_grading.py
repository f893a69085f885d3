"""Grading as a table of cases, the coverage gate, rule-set validation, and severity."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import pytest

from inspection.records import grading
from inspection.records.errors import RulesError
from inspection.records.grading import GradeDefect, GradeInput, grade, load_rules
from inspection.severity import rule_from_table, severity

RULES = load_rules(None)


def _d(
    cls: str = "patches", sev: int = 1, surface: str = "top", along_m: float = 50.0, across: float = 800.0
) -> GradeDefect:
    return GradeDefect(cls, sev, surface, along_m * 1000.0, across)


CASES = [
    ("clean coil", [], 1.0, "prime", None),
    ("one minor defect", [_d()], 1.0, "prime", None),
    ("a hole anywhere", [_d("punching", 2)], 1.0, "reject", "HOLE"),
    ("critical in the body", [_d(sev=3)], 1.0, "downgrade", "CRIT-BODY"),
    ("critical in the head only", [_d(sev=3, along_m=2.0)], 1.0, "prime", None),
    ("three criticals in the head", [_d(sev=3, along_m=a) for a in (1, 2, 3)], 1.0, "reject", "CRIT-100M"),
    ("critical at the tail", [_d(sev=3, along_m=195.0)], 1.0, "prime", None),
    (
        "4 major top scratches",
        [_d("scratches", 2, along_m=a) for a in (20, 40, 60, 80)],
        1.0,
        "secondary",
        "TOP-SCRATCH",
    ),
    (
        "4 major bottom scratches",
        [_d("scratches", 2, "bottom", along_m=a) for a in (20, 40, 60, 80)],
        1.0,
        "prime",
        None,
    ),
    (
        "edge majors",
        [_d(sev=2, across=10.0, along_m=a) for a in range(20, 180, 7)],
        1.0,
        "secondary",
        "EDGE-100M",
    ),
    (
        "centre majors on top",
        [_d(sev=2, along_m=a) for a in range(20, 180, 10)],
        1.0,
        "downgrade",
        "MAJOR-CENTRE-M2",
    ),
    ("perfect but coverage 99.4%", [], 0.994, "hold", "inspection incomplete"),
    ("rejectable but coverage 50%", [_d("punching", 3)], 0.5, "hold", "coverage gate"),
    ("coverage exactly at the gate", [], 0.995, "prime", None),
]


@pytest.mark.parametrize(
    ("name", "defects", "coverage", "expected", "cites"), CASES, ids=[c[0] for c in CASES]
)
def test_grade_table(name: str, defects: list, coverage: float, expected: str, cites: str | None) -> None:
    result = grade(GradeInput("C", 200.0, 1600.0, coverage, defects), RULES, coverage_min=0.995)
    assert result.grade == expected, result.reasons
    if cites:
        assert any(cites in r for r in result.reasons), result.reasons
    if expected == "prime":
        assert result.reasons[0].startswith("prime: all")


def test_a_hold_without_a_known_length_says_the_coverage_cannot_be_proven() -> None:
    # A coil a stop cut has no coil_end, and without plant data nothing gives its length: its share is 0 because
    # nothing proves more, and "coverage 0.00 %" would read as "nothing was inspected".
    unknown = grade(GradeInput("C", 16.4, 1600.0, 0.0, [], length_known=False), RULES, coverage_min=0.995)
    assert unknown.grade == "hold"
    assert unknown.reasons == ("hold: inspection incomplete: the coil's length is unknown (no camera ended it, no "
                               "plant data), so its coverage cannot be proven; 16.4 m of it seen (coverage gate)",)
    known = grade(GradeInput("C", 16.4, 1600.0, 0.0, []), RULES, coverage_min=0.995)
    assert known.grade == "hold" and "coverage 0.00% < required 99.50%" in known.reasons[0]


def test_rule_set_is_versioned_and_hashed(tmp_path: Path) -> None:
    text = (Path(RULES.path)).read_text()
    copy = tmp_path / "order-4711.toml"
    copy.write_text(text.replace('name = "standard"', 'name = "order-4711"'))
    other = load_rules(copy)
    assert (other.name, other.version) == ("order-4711", RULES.version)
    assert other.sha256 != RULES.sha256 and len(other.sha256) == 64


@pytest.mark.parametrize(
    ("patch", "match"),
    [
        ('grade = "reject"', "limit\\[0\\].grade"),
        ('per = "coil"', "limit\\[0\\].per"),
        ("[zones]", "not valid|cannot read"),
    ],
)
def test_bad_rule_sets_name_the_key(tmp_path: Path, patch: str, match: str) -> None:
    text = Path(RULES.path).read_text()
    replacement = {
        'grade = "reject"': 'grade = "excellent"',
        'per = "coil"': 'per = "week"',
        "[zones]": "[zones",
    }[patch]
    bad = tmp_path / "bad.toml"
    bad.write_text(text.replace("\n" + patch, "\n" + replacement, 1))  # the first real line, not a comment
    with pytest.raises(RulesError, match=match):
        load_rules(bad)
    with pytest.raises(RulesError, match="no such rule set"):
        load_rules(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("cls", "length", "width", "score", "expected"),
    [
        ("patches", 5, 5, 0.9, 1),
        ("patches", 30, 5, 0.9, 2),
        ("patches", 200, 5, 0.9, 3),
        ("patches", 200, 5, 0.3, 2),  # uncertain: one step down
        ("punching", 2, 2, 0.9, 2),  # a hole is never minor
        ("punching", 2, 2, 0.3, 2),  # ... not even when uncertain
        ("scratches", 40, 2, 0.9, 1),  # long thin defects are judged by length
        ("scratches", 320, 2, 0.9, 3),
    ],
)
def test_severity_rule(cls: str, length: float, width: float, score: float, expected: int) -> None:
    assert severity(cls, length, width, length * width, score) == expected


def test_severity_table_overrides_and_validation() -> None:
    rule = rule_from_table({"classes": {"patches": {"major_mm": 2.0}}, "uncertain_score": 0.0})
    assert severity("patches", 5, 5, 25, 0.1, rule) == 2
    from inspection.severity import SeverityError

    with pytest.raises(SeverityError, match="severity.classes.patches.colour"):
        rule_from_table({"classes": {"patches": {"colour": 1}}})


def _kinds_one_by_one(data: GradeInput) -> Counter:
    """What `grade` counted before its zones were computed on arrays: `_zones` per defect."""
    length_m = max(data.length_m, 1e-6)
    return Counter((d.cls, d.severity, d.surface, grading._zones(d, RULES, length_m, data.width_mm))
                   for d in data.defects)


@pytest.mark.parametrize("seed", range(5))
def test_zones_on_arrays_are_the_zones_of_each_defect(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random defects, many exactly on a zone's border (head, tail, edges) and some positions as ints:
    the kinds `grade` counts, and so its result, are those of `_zones` called per defect."""
    rng = random.Random(seed)
    length_m, width = rng.choice((0.5, 30.0, 200.0)), rng.choice((1000.0, 1600.0))
    borders = [RULES.head_m * 1000.0, (length_m - RULES.tail_m) * 1000.0, 0.0, length_m * 1000.0]
    defects = []
    for _ in range(3000):
        along = rng.choice((rng.uniform(0, length_m * 1000.0), rng.choice(borders), rng.randrange(0, 200_000)))
        across = rng.choice((rng.uniform(0, width), RULES.edge_mm, width - RULES.edge_mm, rng.randrange(0, 1600)))
        defects.append(GradeDefect(rng.choice(("patches", "scratches", "punching")), rng.choice((1, 2, 3)),
                                   rng.choice(("top", "bottom")), along, across))
    data = GradeInput("C", length_m, width, 1.0, defects)
    counted: list[Counter] = []
    real_counter = grading.Counter
    monkeypatch.setattr(grading, "Counter", lambda items: counted.append(real_counter(items)) or counted[-1])
    result = grade(data, RULES, 0.995)
    assert counted == [_kinds_one_by_one(data)]
    assert sum(counted[0].values()) == len(defects) and result.counted == len(defects)
