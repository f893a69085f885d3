"""Defects cut by a frame seam: link their fragments when they are recorded, merge them when read.

A camera cuts the strip into frames; a defect lying across the seam between frame k and frame
k+1 reaches the recorder as two fragments, possibly from two workers and in either order. The
fragments stay as recorded (defects are append-only evidence); `link_new_defects` adds a
``defect_links`` row (upper fragment in frame k, lower in frame k+1) in the same transaction as
the fragment that completes the pair. Two fragments of one coil and camera are linked when

- the upper one's far edge reaches the seam: ``a.along + a.length/2 >= seam - margin``, and the
  lower one's near edge starts at it: ``b.along - b.length/2 <= seam + margin``, where ``seam`` is
  the position of frame k+1 and ``margin`` = ``margin_px`` x the camera's mm per px along (1.0 mm
  per px when the camera is not registered): a box drawn by a detector stops a few pixels short
  of the edge it was cut at;
- their across intervals overlap by at least ``min_overlap`` x the narrower width;
- with ``one_to_one`` (the default), a fragment has one partner across a seam, unless it is a fork:
  the pairs of one seam are taken in order of their across overlap, largest first, and a pair in
  which one fragment already has a partner is linked only when that fragment is the wider one and
  the other lies within it across (``FORK_INSIDE`` of its width: a defect that forks, or that the
  detector drew as two boxes on one side). Without this rule, two defects lying side by side at a
  seam were chained, through fragments that overlap both, into one box that matched neither (`bench
  e2e` on the val split: 4 of one model's 12 missed defects had a recorded fragment that matched
  them before the chaining; with this rule the model found 3 of them).

Their classes need not match: the two halves of a cut defect are often classified differently.
A link row stores the severity of the whole merged defect at link time (the store's severity
rule on the merged size and the best score), so a 300 mm scratch cut into two 150 mm halves is
critical, not two majors.

Reading (`merge_fragments`): the connected components of a coil's links are its merged defects
(a long scratch spans 3+ frames). A merged defect is the row of its head fragment (smallest
(frame_index, defect_index)) with the union of the fragments' extents (area = length x width,
a bounding-box area), the best score, the class of the best-scoring fragment, the highest of
the fragment and link severities, and ``parts``: the fragment ids.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlite_utils import Database

from inspection.records.errors import StoreError
from inspection.severity import DEFAULT_RULE, SeverityRule, severity

DEFAULT_MARGIN_PX = 6.0
DEFAULT_MIN_OVERLAP = 0.3
FORK_INSIDE = 0.9  # a second partner across a seam must lie this much inside the wider fragment

# Pairs (upper, lower) in consecutive frames where at least one fragment is new. Driven by the new
# rows: a new fragment near its frame's seam is looked up through the natural-key indexes of frames
# and defects (coil, camera, frame_index, ...), and only then the fragments of the neighbouring frame.
_CANDIDATES = """
WITH new AS (
  SELECT d.id, d.coil, d.camera, d.frame_index, d.along_mm - coalesce(d.length_mm, 0) / 2 AS near,
         d.along_mm + coalesce(d.length_mm, 0) / 2 AS far, :margin_px * coalesce(k.mm_per_px_along, 1.0) AS margin
  FROM defects d JOIN coils c ON c.id = d.coil LEFT JOIN cameras k ON k.line = c.line AND k.id = d.camera
  WHERE d.id > :before{only}),
pairs AS (
  SELECT n.id AS upper_id, b.id AS lower_id FROM new n
  JOIN frames f ON f.coil = n.coil AND f.camera = n.camera AND f.frame_index = n.frame_index + 1
  JOIN defects b ON b.coil = n.coil AND b.camera = n.camera AND b.frame_index = n.frame_index + 1
  WHERE n.far >= f.position_mm - n.margin AND b.along_mm - coalesce(b.length_mm, 0) / 2 <= f.position_mm + n.margin
  UNION
  SELECT a.id, n.id FROM new n
  JOIN frames f ON f.coil = n.coil AND f.camera = n.camera AND f.frame_index = n.frame_index
  JOIN defects a ON a.coil = n.coil AND a.camera = n.camera AND a.frame_index = n.frame_index - 1
  WHERE n.near <= f.position_mm + n.margin AND a.along_mm + coalesce(a.length_mm, 0) / 2 >= f.position_mm - n.margin
)
SELECT a.id, b.id, a.coil, a.camera, f.position_mm,
       min(a.across_mm + coalesce(a.width_mm, 0) / 2, b.across_mm + coalesce(b.width_mm, 0) / 2)
       - max(a.across_mm - coalesce(a.width_mm, 0) / 2, b.across_mm - coalesce(b.width_mm, 0) / 2) AS overlap,
       coalesce(a.width_mm, 0), coalesce(b.width_mm, 0)
FROM pairs p JOIN defects a ON a.id = p.upper_id JOIN defects b ON b.id = p.lower_id
JOIN frames f ON f.coil = b.coil AND f.camera = b.camera AND f.frame_index = b.frame_index
WHERE overlap >= max(  -- SQLite lets WHERE name a result column: the overlap is written once
      :min_overlap * min(coalesce(a.width_mm, 0), coalesce(b.width_mm, 0)), 1e-9)
ORDER BY a.id, b.id
"""
_FRAGMENT_COLUMNS = ("id, coil, surface, frame_index, defect_index, along_mm, across_mm, length_mm, width_mm, "
                     "area_mm2, class, score, severity, captured_ns")


# A candidate link: upper id, lower id, camera, seam position (mm), across overlap, upper and lower width (mm)
Pair = tuple[int, int, str, float, float, float, float]


@dataclass(frozen=True)
class SeamRule:
    """When two fragments in consecutive frames are one defect (see the module docstring)."""

    margin_px: float = DEFAULT_MARGIN_PX
    min_overlap: float = DEFAULT_MIN_OVERLAP
    one_to_one: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.margin_px, bool) or not isinstance(self.margin_px, int | float) or self.margin_px < 0:
            raise StoreError(f"seam_margin_px: expected a number >= 0, got {self.margin_px!r}")
        if (isinstance(self.min_overlap, bool) or not isinstance(self.min_overlap, int | float)
                or not 0 <= self.min_overlap <= 1):
            raise StoreError(f"seam_min_overlap: expected a share between 0 and 1, got {self.min_overlap!r}")
        if not isinstance(self.one_to_one, bool):
            raise StoreError(f"seam_one_to_one: expected true or false, got {self.one_to_one!r}")


@dataclass
class LinkResult:
    """What one `link_new_defects` call added."""

    links: int = 0
    coils: set[str] = field(default_factory=set)
    # new defect id -> (id of the group's earliest recorded fragment if older than it, group severity)
    merged: dict[int, tuple[int | None, int]] = field(default_factory=dict)


class _Groups:
    """Union-find over defect ids."""

    def __init__(self) -> None:
        self.parent: dict[int, int] = {}

    def find(self, x: int) -> int:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> bool:
        self.parent.setdefault(a, a)
        self.parent.setdefault(b, b)
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        self.parent[max(ra, rb)] = min(ra, rb)
        return True

    def members(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for x in list(self.parent):
            out.setdefault(self.find(x), []).append(x)
        return {root: sorted(ids) for root, ids in out.items()}


def components(pairs: Iterable[tuple[int, int]]) -> dict[int, list[int]]:
    """Connected components of the links: smallest id -> sorted ids (only ids that have a link)."""
    groups = _Groups()
    for a, b in pairs:
        groups.union(a, b)
    return groups.members()


def merged_severity(fragments: Sequence[Mapping[str, Any]], rule: SeverityRule = DEFAULT_RULE) -> int:
    """Severity of the fragments taken as one defect: merged size, best score, its class."""
    merged = _merge_extent(fragments)
    return severity(merged["class"], merged["length_mm"], merged["width_mm"], merged["area_mm2"],
                    merged["score"], rule)


def link_new_defects(db: Database, before: int, rule: SeamRule, severity_rule: SeverityRule,
                     now_ns: int, *, only: Sequence[int] | None = None) -> LinkResult:
    """Link the defects inserted after rowid `before` to their other fragments; call inside the
    write transaction that inserted them. Existing links are kept (INSERT OR IGNORE). `only`: the
    new defects that may lie near a seam (`seam_filter.seam_candidates`), the others are not looked at."""
    result = LinkResult()
    if only is not None and not only:
        return result
    params = {"before": before, "margin_px": rule.margin_px, "min_overlap": rule.min_overlap}
    if only is None:
        query = _CANDIDATES.format(only="")
    else:
        query = _CANDIDATES.format(only=" AND d.id IN (SELECT value FROM json_each(:only))")
        params["only"] = json.dumps(list(only))
    candidates = db.execute(query, params).fetchall()
    if not candidates:
        return result
    by_coil: dict[str, list[Pair]] = {}
    for upper, lower, coil, camera, seam, overlap, upper_w, lower_w in candidates:
        by_coil.setdefault(coil, []).append((upper, lower, camera, seam, overlap, upper_w, lower_w))
    for coil, pairs in by_coil.items():
        existing = {(u, lo) for u, lo, _ in coil_links(db, coil)}
        fresh = [p for p in pairs if (p[0], p[1]) not in existing]
        new = [p[:4] for p in (_one_to_one(fresh, existing) if rule.one_to_one else fresh)]
        if not new:
            continue
        groups = components([*existing, *((u, lo) for u, lo, _, _ in new)])
        root_of = {i: root for root, ids in groups.items() for i in ids}
        touched = {root_of[u] for u, _, _, _ in new}
        fragments = _fragments(db, [i for root in touched for i in groups[root]])
        group_sev = {root: merged_severity([fragments[i] for i in groups[root]], severity_rule)
                     for root in touched}
        db.conn.executemany(
            "INSERT OR IGNORE INTO defect_links (coil, camera, upper_id, lower_id, seam_mm, severity, time_ns) "
            "VALUES (?,?,?,?,?,?,?)",
            [(coil, camera, u, lo, seam, group_sev[root_of[u]], now_ns) for u, lo, camera, seam in new])
        result.links += len(new)
        result.coils.add(coil)
        for root in touched:
            for i in groups[root]:
                if i > before:
                    result.merged[i] = (root if root < i else None, group_sev[root])
    for coil in sorted(result.coils):
        recount_classes(db, coil)
    return result


def _one_to_one(pairs: Sequence[Pair], existing: set[tuple[int, int]]) -> list[Pair]:
    """The new candidate pairs that keep to the one-partner rule of the module docstring, largest
    across overlap first; the fragments of links already recorded count as taken. All pairs of one
    seam are candidates in the same call: they appear when the later of its two frames is recorded,
    and a frame's defects are written together."""
    has_lower = {u for u, _ in existing}
    has_upper = {lo for _, lo in existing}
    kept = []
    for pair in sorted(pairs, key=lambda p: (-p[4], p[0], p[1])):
        upper, lower, _, _, overlap, upper_w, lower_w = pair
        upper_taken, lower_taken = upper in has_lower, lower in has_upper
        fork = ((upper_taken and not lower_taken and lower_w <= upper_w and overlap >= FORK_INSIDE * lower_w)
                or (lower_taken and not upper_taken and upper_w <= lower_w and overlap >= FORK_INSIDE * upper_w))
        if (not upper_taken and not lower_taken) or fork:
            has_lower.add(upper)
            has_upper.add(lower)
            kept.append(pair)
    return kept


def coil_links(db: Database, coil: str) -> list[tuple[int, int, int]]:
    """(upper_id, lower_id, severity) of a coil's links; none in a database older than m004."""
    try:
        return [tuple(r) for r in db.execute(
            "SELECT upper_id, lower_id, severity FROM defect_links WHERE coil=? ORDER BY id", (coil,))]
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # a read-only look at a database not yet migrated
            return []
        raise


def merge_fragments(rows: Sequence[dict[str, Any]], links: Sequence[tuple[int, int, int]]
                    ) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """One row per merged defect (see the module docstring), and fragment id -> merged row id.

    Rows not in any link pass through unchanged with ``parts = [id]``.
    """
    present = {r["id"]: r for r in rows}
    groups = components((u, lo) for u, lo, _ in links if u in present and lo in present)
    link_sev: dict[int, int] = {}
    root_of = {i: root for root, ids in groups.items() for i in ids}
    for u, _, sev in links:
        if u in root_of:
            link_sev[root_of[u]] = max(link_sev.get(root_of[u], 0), sev)
    alias: dict[int, int] = {}
    out = []
    for r in rows:
        root = root_of.get(r["id"])
        if root is None:
            out.append({**r, "parts": [r["id"]]})
            continue
        parts = [present[i] for i in groups[root]]
        head = min(parts, key=lambda p: (p["frame_index"], p["defect_index"], p["id"]))
        if r is not head:
            continue
        merged = {**head, **_merge_extent(parts)}
        merged["severity"] = max(link_sev.get(root, 0), *(p["severity"] for p in parts))
        merged["parts"] = [p["id"] for p in sorted(parts, key=lambda p: (p["frame_index"], p["defect_index"]))]
        alias.update({i: head["id"] for i in merged["parts"]})
        out.append(merged)
    return out, alias


def _merge_extent(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    def span(centre: str, size: str) -> tuple[float, float]:
        lo = min(p[centre] - (p[size] or 0.0) / 2 for p in parts)
        hi = max(p[centre] + (p[size] or 0.0) / 2 for p in parts)
        return (lo + hi) / 2, hi - lo

    along, length = span("along_mm", "length_mm")
    across, width = span("across_mm", "width_mm")
    best = max(parts, key=lambda p: (p["score"], -p["frame_index"], -p["defect_index"]))  # ties: the earliest
    return {"along_mm": along, "length_mm": length, "across_mm": across, "width_mm": width,
            "area_mm2": length * width, "score": best["score"], "class": best["class"]}


def _fragments(db: Database, ids: Sequence[int]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), 500):  # SQLite's bound-parameter limit
        chunk = ids[start:start + 500]
        cur = db.execute(f"SELECT {_FRAGMENT_COLUMNS} FROM defects WHERE id IN ({','.join('?' * len(chunk))})",
                         chunk)
        names = [c[0] for c in cur.description]
        out.update({row[0]: dict(zip(names, row, strict=True)) for row in cur.fetchall()})
    return out


def coil_groups(db: Database, coil: str, links: Sequence[tuple[int, int, int]] | None = None
                ) -> tuple[list[dict[str, Any]], dict[int, int]]:
    """The coil's linked fragments merged (unlinked defects left out), and fragment id -> head id;
    `links` replaces the coil's links (`audit verify` merges with those recorded up to a point)."""
    links = coil_links(db, coil) if links is None else links
    if not links:
        return [], {}
    fragments = _fragments(db, sorted({i for u, lo, _ in links for i in (u, lo)}))
    return merge_fragments(list(fragments.values()), links)


def recount_classes(db: Database, coil: str) -> None:
    """Rewrite the coil's ``coil_class_counts`` rows so that a merged defect counts once.

    Unlinked defects are counted by SQLite; only the (few) linked fragments are merged here.
    """
    counts: dict[tuple[str, str, int], list[int]] = {}
    for cls, surface, sev, n, first_ns in db.execute(
            "SELECT class, surface, severity, count(*), min(captured_ns) FROM defects WHERE coil = ? AND id NOT IN "
            "(SELECT upper_id FROM defect_links WHERE coil = ? UNION SELECT lower_id FROM defect_links "
            "WHERE coil = ?) GROUP BY class, surface, severity", (coil, coil, coil)):
        counts[(cls, surface, sev)] = [n, first_ns]
    merged, _ = coil_groups(db, coil)
    for m in merged:
        key = (m["class"], m["surface"], m["severity"])
        n, first_ns = counts.get(key, [0, m["captured_ns"]])
        counts[key] = [n + 1, min(first_ns, m["captured_ns"])]
    db.execute("DELETE FROM coil_class_counts WHERE coil = ?", (coil,))
    db.conn.executemany(
        "INSERT INTO coil_class_counts (coil, class, surface, severity, day, n) "
        "VALUES (?, ?, ?, ?, date(? / 1000000000, 'unixepoch'), ?)",
        [(coil, cls, surface, sev, first_ns, n) for (cls, surface, sev), (n, first_ns) in sorted(counts.items())])


def merged_away(db: Any, since_ns: int) -> int:
    """How many fragments captured since `since_ns` belong to a merged defect without being its
    head, i.e. raw defect count minus merged defect count (for run summaries)."""
    try:
        pairs = db.execute(
            "SELECT l.upper_id, l.lower_id FROM defect_links l JOIN defects a ON a.id = l.upper_id "
            "JOIN defects b ON b.id = l.lower_id WHERE a.captured_ns >= ? AND b.captured_ns >= ?",
            (since_ns, since_ns)).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return 0
        raise
    return sum(len(ids) - 1 for ids in components(pairs).values())
