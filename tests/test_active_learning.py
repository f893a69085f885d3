"""Active learning in the review queue: within the budget, what the shadow model disagreed on comes
before merely uncertain detections, the stratified sample stays as it was (it estimates precision),
unknown and critical defects keep the top bands, and `audit verify` rebuilds such a queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from inspection.frame import CoilEvent, StreamKey
from inspection.records import audit
from inspection.records.review_queue import pick_for_review, priority
from inspection.records.store import Store
from inspection.results import Defect, FrameResult
from inspection.shadow_results import Disagreement, ShadowResult

UNKNOWN_ID, CRITICAL_ID = 1, 2
CONFIDENT = [(i, ("scratches", "patches", "inclusion")[i % 3], 0.9, 1) for i in range(10, 30)]
UNCERTAIN = [(30, "patches", 0.45, 1), (31, "scratches", 0.30, 1), (32, "inclusion", 0.40, 2)]
DEFECTS = [(UNKNOWN_ID, "unknown", 0.7, 1), (CRITICAL_ID, "scratches", 0.95, 3), *CONFIDENT, *UNCERTAIN]
DISPUTED = {12, 15, 32, CRITICAL_ID}  # two confident ones, an uncertain one, and the critical one


def _reasons(picked: list[tuple[int, str, float, str]]) -> dict[int, str]:
    return {d: reason for d, _, _, reason in picked}


@pytest.mark.parametrize("budget", [1, 2, 3, 4, 6, 30])
def test_disagreements_come_first_within_the_budget_beside_an_untouched_sample(budget: int) -> None:
    picked = _reasons(pick_for_review("C1", DEFECTS, budget=budget, seed=3, disputed=DISPUTED))
    # always queued without spending the budget (a critical defect drawn in the sample counts as a sample)
    assert picked[UNKNOWN_ID] == "unknown" and picked[CRITICAL_ID] in ("high_severity", "sample")
    budgeted = {d: r for d, r in picked.items() if r not in ("unknown", "high_severity")}
    assert len(budgeted) == min(budget, len(DEFECTS) - 1 - (picked[CRITICAL_ID] == "high_severity"))
    samples = [d for d, r in budgeted.items() if r == "sample"]
    assert len(samples) >= min((budget + 1) // 2, len(budgeted))  # half the budget stays a uniform sample
    # the same sample half as without any disagreement: a shadow model never bends the precision estimate
    # (with nothing uncertain and nothing disputed the whole budget is the sample's first draws)
    plain = _reasons(pick_for_review("C1", DEFECTS, budget=(budget + 1) // 2, seed=3, low_confidence=0.0))
    first_half = [d for d, r in plain.items() if r == "sample"]
    assert set(first_half) <= set(samples)
    least_sure = [d for d in (32, 12, 15) if d not in samples]  # 32 scores 0.40, 12 and 15 0.9 (by id)
    disagreed = [d for d, r in budgeted.items() if r == "disagreement"]
    assert sorted(disagreed, key=least_sure.index) == least_sure[:len(disagreed)]
    assert len(disagreed) == min(len(least_sure), len(budgeted) - len(samples))
    if "low_confidence" in budgeted.values():  # merely uncertain ones only once no disagreement is left
        assert not set(least_sure) - set(disagreed)


def test_unknown_and_critical_bands_are_never_overtaken() -> None:
    picked = pick_for_review("C1", DEFECTS, budget=30, seed=3, disputed=DISPUTED)
    order = [d for d, _, _, _ in picked]
    assert order[:2] == [UNKNOWN_ID, CRITICAL_ID]
    bands = {d: int(p) for d, _, p, _ in picked}
    assert bands[UNKNOWN_ID] == 3 and bands[CRITICAL_ID] == 2
    assert all(bands[d] == 1 for d in (12, 15, 32, 30, 31))  # disputed or uncertain: the uncertain band
    assert all(bands[d] == 0 for d in bands if d >= 10 and d not in DISPUTED and d < 30)
    assert [p for _, _, p, _ in picked] == sorted((p for _, _, p, _ in picked), reverse=True)
    # a confident defect the models disagree on goes up one band, and no higher
    assert 1 <= priority("patches", 0.99, 2, disputed=True) < 2 <= priority("patches", 0.99, 3, disputed=True) < 3


SOURCE = StreamKey("demo-hot-1", "hot", "top-1", "top")
SHA_A, SHA_B = "a1" * 32, "b2" * 32


def _coil(coil: str, scores: list[float]) -> list:
    defects = tuple(Defect(cls="scratches", score=s, severity=1, box=(10.0 + 40 * i, 10.0, 30.0 + 40 * i, 30.0),
                           along_mm=20.0, across_mm=20.0 + 40 * i, length_mm=20.0, width_mm=20.0, area_mm2=400.0)
                    for i, s in enumerate(scores))
    return [CoilEvent("coil_start", SOURCE, coil, 0, 1),
            FrameResult(SOURCE, coil, 1, 0, 1_000_000, 0.0, 256.0, "hot-a", SHA_A, 2_000_000, defects),
            CoilEvent("coil_end", SOURCE, coil, 2, 3_000_000, length_mm=256.0, frames=1, dropped=0)]


def _disputed(coil: str, indexes: list[int]) -> ShadowResult:
    items = tuple(Disagreement("active_only", (10.0 + 40 * i, 10.0, 30.0 + 40 * i, 30.0), 20.0, 20.0 + 40 * i, 0.0,
                               active_index=i, active_class="scratches", active_score=0.9) for i in indexes)
    return ShadowResult(SOURCE, coil, 1, 0, 1_000_000, "hot-a", SHA_A, "hot-b", SHA_B, 10.0, active_defects=8,
                        shadow_defects=8 - len(indexes), disagreements=items)


def test_the_store_queues_disagreements_and_audit_verify_rebuilds_the_queue(tmp_path: Path) -> None:
    scores = [0.95, 0.93, 0.91, 0.9, 0.92, 0.94, 0.96, 0.45]  # index 7 is uncertain
    with Store(tmp_path / "line.db") as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"}])
        store.apply_batch(_coil("C1", scores) + _coil("C2", scores))
        store.enqueue_reviews("C1", budget=2)  # filled before any shadow result: must rebuild without them
        store.record_shadow([_disputed("C1", [4, 5]), _disputed("C2", [4, 5])])
        store.enqueue_reviews("C2", budget=2)
        queue = {coil: dict(store.db.execute("SELECT defect_id, reason FROM review_queue WHERE coil = ?",
                                             (coil,)).fetchall()) for coil in ("C1", "C2")}
        ids = {coil: [r[0] for r in store.db.execute("SELECT id FROM defects WHERE coil = ? ORDER BY defect_index",
                                                     (coil,))] for coil in ("C1", "C2")}
        assert "disagreement" not in queue["C1"].values()  # its queue was filled before the shadow results
        # C2: one sample, and the other half of the budget to the least sure disputed defect (index 4 at 0.92,
        # or index 5 if the sample drew index 4), before the merely uncertain index 7
        assert sorted(queue["C2"].values()) == ["disagreement", "sample"]
        disagreed = next(d for d, r in queue["C2"].items() if r == "disagreement")
        assert disagreed == (ids["C2"][4] if queue["C2"].get(ids["C2"][4]) != "sample" else ids["C2"][5])
        verdict = audit.verify(store.db)
        assert verdict.ok, verdict.problem
        store.db.execute("DELETE FROM review_queue WHERE reason = 'disagreement'")  # derived: no trigger
        verdict = audit.verify(store.db)
        assert not verdict.ok and "picked (disagreement" in (verdict.problem or "")
