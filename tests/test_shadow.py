"""Shadow mode: the matching rule, the frame choice, the wire message, the registry entry, the worker
with tiny real ONNX models (a shadow followed through the registry like a promotion, its results after
the frame's own), and the records (own tables, audited, idempotent, crops in their own folder)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from inspection.config import LineConfig, load_config
from inspection.errors import ConfigError, RecordError
from inspection.frame import CoilEvent, Frame, StreamKey
from inspection.records import audit
from inspection.records.crops import CropStore
from inspection.records.shadow import disputed_defects, shadow_crop_store
from inspection.records.store import Store
from inspection.registry import Registry, RegistryError
from inspection.results import Defect, FrameResult, decode, encode
from inspection.shadow import chosen, compare
from inspection.shadow_results import Disagreement, ShadowResult
from inspection.worker import InferenceWorker
from tests.test_worker import Feed
from tests.tiny_models import DARK, add_tiny_model, blob_value

SOURCE = StreamKey("demo-hot-1", "hot", "top-1", "top")
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 20
SHA_A, SHA_B = "a1" * 32, "b2" * 32


def _defect(cls: str, box: tuple[float, float, float, float], score: float = 0.8) -> Defect:
    x1, y1, x2, y2 = box
    return Defect(cls=cls, score=score, severity=1, box=box, along_mm=y1, across_mm=x1, length_mm=y2 - y1,
                  width_mm=x2 - x1, area_mm2=(y2 - y1) * (x2 - x1))


A = (10.0, 10.0, 50.0, 50.0)
A_SHIFTED = (14.0, 14.0, 54.0, 54.0)  # IoU with A: 0.68
B = (200.0, 200.0, 240.0, 260.0)
FAR = (400.0, 400.0, 420.0, 420.0)


@pytest.mark.parametrize(("active", "shadow", "expected"), [
    ([], [], []),
    ([("scratches", A)], [("scratches", A_SHIFTED)], []),  # the same defect, the same class: agreement
    ([("scratches", A)], [("patches", A_SHIFTED)], [("other_class", 0, 0)]),
    ([("scratches", A)], [], [("active_only", 0, None)]),
    ([], [("inclusion", B)], [("shadow_only", None, 0)]),
    ([("scratches", A), ("inclusion", B)], [("inclusion", B), ("patches", FAR)],
     [("active_only", 0, None), ("shadow_only", None, 1)]),
    # below the IoU the two boxes are two defects: each model misses the other's
    ([("scratches", A)], [("scratches", (40.0, 40.0, 80.0, 80.0))],
     [("active_only", 0, None), ("shadow_only", None, 0)]),
    # one to one: a second shadow box on the same defect is the shadow's own extra
    ([("scratches", A)], [("scratches", A), ("patches", A_SHIFTED)], [("shadow_only", None, 1)]),
])
def test_compare_pairs_boxes_one_to_one_by_iou_whatever_the_class(active, shadow, expected) -> None:
    found = compare([_defect(c, b) for c, b in active], [_defect(c, b) for c, b in shadow], iou_min=0.3)
    assert [(m.kind, m.active, m.shadow) for m in found] == expected
    for m in found:  # the overlap is reported (for a defect one model missed: its best with the other's)
        assert 0.0 <= m.iou <= 1.0 and (m.kind != "other_class" or m.iou >= 0.3)


def _frame(index: int, coil: str = "C1", camera: str = "top-1", blobs: tuple[int, ...] = ()) -> Frame:
    """A dark 256 x 512 frame with a 10-px blob per class index in `blobs` (tiny model: 2 classes)."""
    pixels = np.full((256, 512), DARK, np.uint8)
    for n, cls in enumerate(blobs):
        pixels[100:110, 40 + 96 * n:50 + 96 * n] = blob_value(cls, 2)
    source = dataclasses.replace(SOURCE, camera=camera)
    return Frame(source=source, coil=coil, seq=index + 1, index=index, captured_ns=1_000 + index,
                 position_mm=256.0 * index, offset_mm=0.0, mm_per_px_x=1.0, mm_per_px_y=1.0, pixels=pixels)


def test_the_chosen_share_is_the_same_on_every_worker_and_about_the_share() -> None:
    base = _frame(0)
    frames = [dataclasses.replace(base, coil=f"C{i % 7}", index=i, seq=i + 1,
                                  source=dataclasses.replace(SOURCE, camera=("top-1", "bottom-1")[i % 2]))
              for i in range(2000)]
    picked = [f for f in frames if chosen(f, 0.25)]
    assert 0.22 < len(picked) / len(frames) < 0.28
    assert picked == [f for f in frames if chosen(f, 0.25)]  # a hash, not a random draw
    assert not any(chosen(f, 0.0) for f in frames) and all(chosen(f, 1.0) for f in frames)


def _shadow_result(index: int = 0, coil: str = "C1", items: tuple[Disagreement, ...] = ()) -> ShadowResult:
    return ShadowResult(SOURCE, coil, index + 1, index, 1_000 + index, "hot-a", SHA_A, "hot-b", SHA_B, 12.5,
                        active_defects=1, shadow_defects=1, disagreements=items)


OTHER = Disagreement("other_class", (1.0, 2.0, 30.0, 40.0), 100.0, 20.0, 0.8, active_index=0,
                     active_class="scratches", active_score=0.9, shadow_class="patches", shadow_score=0.6,
                     crop_png=PNG)
ONLY_SHADOW = Disagreement("shadow_only", (5.0, 5.0, 9.0, 9.0), 50.0, 7.0, 0.0, shadow_class="inclusion",
                           shadow_score=0.7, crop_png=PNG + b"2")


def test_a_shadow_result_round_trips_and_malformed_ones_are_refused_by_name() -> None:
    message = _shadow_result(items=(OTHER, ONLY_SHADOW))
    parts = encode(message)
    assert len(parts) == 3 and decode(parts) == message
    header = json.loads(parts[0])
    for field, value, problem in [("kind", "maybe", "disagreements[0].kind"),
                                  ("active_class", None, "disagreements[0].active_class"),
                                  ("shadow_score", 1.5, "disagreements[0].shadow_score"),
                                  ("crop", 3, "disagreements[0].crop")]:
        bad = json.loads(parts[0])
        bad["disagreements"][0][field] = value
        with pytest.raises(RecordError, match=problem.replace("[", r"\[").replace("]", r"\]")):
            decode([json.dumps(bad).encode(), *parts[1:]])
    with pytest.raises(RecordError, match="crop part"):
        decode([parts[0], *parts[1:], PNG])  # a part nobody references
    header["shadow"] = {"version": "hot-b"}
    with pytest.raises(RecordError, match="shadow: missing field"):
        decode([json.dumps(header).encode(), *parts[1:]])
    with pytest.raises(RecordError, match="a shadow_only disagreement has no active class"):
        dataclasses.replace(ONLY_SHADOW, active_class="scratches", active_score=0.5, active_index=None)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "models")
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    # active: the blob of class 0 (score 0.63) is below its threshold 0.7; the shadow finds it (0.5) and
    # calls class 1 "scratches" where the active model says "bright_spot"
    add_tiny_model(reg, tmp_path / "a", version="hot-a", activate=True, operating_threshold=0.7)
    add_tiny_model(reg, tmp_path / "b", classes=("dark_spot", "scratches"), version="hot-b")
    return reg


def test_the_registry_names_a_shadow_apart_from_the_active_history(registry: Registry) -> None:
    before = registry.history()
    registry.set_shadow("hot-b", by="mel", reason="candidate from plant data")
    assert registry.shadow("hot") == "hot-b" and registry.shadow("cold") is None
    assert registry.history() == before  # active_at and rollback read the history: untouched
    with pytest.raises(RegistryError, match="is the active hot model"):
        registry.set_shadow("hot-a")
    with pytest.raises(RegistryError, match="needs its line type"):
        registry.set_shadow(None)
    registry.promote("hot-b", by="mel", reason="shadow looked good")
    assert registry.shadow("hot") is None  # a promoted shadow is no longer a candidate
    assert [e["action"] for e in registry.shadow_history()] == ["shadow", "shadow_off"]


def test_config_shadow_keys_are_checked() -> None:
    config = load_config(None, {"model.shadow": "hot-b", "model.shadow_share": 0.5})
    assert (config.model.shadow, config.model.shadow_share, config.model.shadow_iou) == ("hot-b", 0.5, 0.3)
    with pytest.raises(ConfigError, match="model.shadow_share: expected a share between 0 and 1"):
        load_config(None, {"model.shadow_share": 1.5})
    with pytest.raises(ConfigError, match="model.shadow_iou: expected a share > 0"):
        load_config(None, {"model.shadow_iou": 0.0})


def _config(registry: Registry, **model: object) -> LineConfig:
    config = load_config()
    m = dataclasses.replace(config.model, registry=registry.root, name="hot", **model)
    w = dataclasses.replace(config.worker, providers="cpu", first_stage="none", reload_check_s=0.01, max_wait_ms=5.0,
                            batch_size=2)
    return dataclasses.replace(config, model=m, worker=w)


def test_the_worker_follows_the_registry_shadow_and_sends_disagreements_after_each_result(registry: Registry) -> None:
    feed, sent = Feed([]), []
    worker = InferenceWorker(_config(registry, shadow_share=1.0), registry, feed.receive, sent.append)
    worker.load("hot")
    assert worker.stats.shadow_models == {}  # the registry names no shadow yet
    feed.q.put(_frame(0, blobs=(0, 1)))
    worker.run(should_stop=lambda: len(sent) >= 1)
    registry.set_shadow("hot-b", reason="test")  # running workers pick it up like a promotion
    worker._last_reload_check = 0.0
    worker.run(should_stop=lambda: worker.stats.shadow_models == {"hot": "hot-b"})
    for i in range(1, 5):
        feed.q.put(_frame(i, blobs=(0, 1)))
    worker.run(should_stop=lambda: sum(isinstance(m, ShadowResult) for m in sent) >= 4)
    kinds = [type(m).__name__ for m in sent]
    assert kinds == ["FrameResult"] + ["FrameResult", "FrameResult", "ShadowResult", "ShadowResult"] * 2
    results = [m for m in sent if isinstance(m, FrameResult)]
    assert {tuple(d.cls for d in r.defects) for r in results} == {("bright_spot",)}
    shadow = [m for m in sent if isinstance(m, ShadowResult)]
    assert [m.index for m in shadow] == [1, 2, 3, 4]
    first = shadow[0]
    assert (first.active_version, first.shadow_version, first.active_defects, first.shadow_defects) == (
        "hot-a", "hot-b", 1, 2)
    assert [(d.kind, d.active_class, d.shadow_class, d.active_index) for d in first.disagreements] == [
        ("other_class", "bright_spot", "scratches", 0), ("shadow_only", None, "dark_spot", None)]
    assert all(d.crop_png and d.crop_png.startswith(b"\x89PNG") for d in first.disagreements)
    # the defect the shadow calls otherwise carries the recorded defect's own crop
    assert first.disagreements[0].crop_png == results[1].defects[0].crop_png
    s = worker.stats
    assert (s.shadow_frames, s.shadow_disagreements, s.shadow_failed) == (4, 8, 0) and s.shadow_s > 0


def test_a_shadow_that_is_off_or_broken_costs_no_frame(registry: Registry) -> None:
    registry.set_shadow("hot-b")
    feed, sent = Feed([_frame(i, blobs=(1,)) for i in range(4)]), []
    off = InferenceWorker(_config(registry, shadow="off", shadow_share=1.0), registry, feed.receive, sent.append)
    off.run(should_stop=lambda: len(sent) >= 4)
    assert all(isinstance(m, FrameResult) for m in sent) and off.stats.shadow_frames == 0
    feed, sent = Feed([_frame(i, blobs=(1,)) for i in range(4)]), []
    broken = InferenceWorker(_config(registry, shadow_share=1.0), registry, feed.receive, sent.append)
    broken.load("hot")
    broken.shadows["hot"].slot.detector.detect = _boom  # type: ignore[union-attr, method-assign]
    broken.run(should_stop=lambda: len(sent) >= 4)
    assert [type(m) for m in sent] == [FrameResult] * 4
    assert broken.stats.shadow_failed == 4 and "shadow fell off" in (broken.stats.shadow_error or "")
    missing = InferenceWorker(_config(registry, shadow="hot-nope"), registry, feed.receive, sent.append)
    missing.load("hot")  # a shadow that does not exist is reported, the worker still starts
    assert missing.stats.shadow_models == {} and "hot-nope" in (missing.stats.shadow_error or "")


def _boom(*_: object, **__: object) -> list[object]:
    raise RuntimeError("shadow fell off")


def _frame_result(index: int, defects: tuple[Defect, ...], coil: str = "C1") -> FrameResult:
    return FrameResult(SOURCE, coil, index + 1, index, 1_000 + index, 256.0 * index, 256.0, "hot-a", SHA_A,
                       2_000 + index, defects)


def test_records_keep_disagreements_apart_audited_once_and_with_their_crops(tmp_path: Path) -> None:
    crops = CropStore(tmp_path / "crops")
    with Store(tmp_path / "line.db", crops=crops) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"}])
        store.apply_batch([CoilEvent("coil_start", SOURCE, "C1", 0, 1),
                           _frame_result(0, (_defect("scratches", A), _defect("inclusion", B)))])
        before = {t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("frames", "defects", "coil_class_counts", "grades", "alarms")}
        messages = [_shadow_result(0, items=(OTHER, ONLY_SHADOW)), _shadow_result(1)]
        first = store.record_shadow(messages)
        again = store.record_shadow(messages)  # a re-sent batch adds nothing
        assert (first.new_frames, first.new_disagreements) == (2, 2)
        assert (again.new_frames, again.new_disagreements, again.audit_seq) == (0, 0, None)
        after = {t: store.db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in before}
        assert after == before  # nothing about the coil itself changed
        rows = store.db.execute("SELECT kind, active_class, shadow_class, crop_sha256 FROM shadow_disagreements "
                                "ORDER BY id").fetchall()
        assert [r[:3] for r in rows] == [("other_class", "scratches", "patches"), ("shadow_only", None, "inclusion")]
        shadow_crops = shadow_crop_store(crops)
        assert shadow_crops is not None and shadow_crops.get(rows[0][3]) == PNG
        assert crops.get(rows[0][3]) is None and crops.files() == []  # not in the defects' folder
        assert disputed_defects(store.db, "C1") == {1}  # defect_index 0 of frame 0: the scratch
        assert audit.verify(store.db).ok
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            store.db.execute("UPDATE shadow_disagreements SET kind = 'active_only'")
    with sqlite3.connect(tmp_path / "line.db") as con:  # an edit behind the system's back is found
        con.execute("DROP TRIGGER shadow_frames_no_update")
        con.execute("UPDATE shadow_frames SET shadow_defects = 0")
    with Store(tmp_path / "line.db") as store:
        verdict = audit.verify(store.db)
        assert not verdict.ok and "shadow_frames" in (verdict.problem or "")


def test_a_recorder_that_died_mid_write_leaves_no_shadow_crop_behind(tmp_path: Path) -> None:
    crops = CropStore(tmp_path / "crops")
    shadow_crops = shadow_crop_store(crops)
    assert shadow_crops is not None
    orphan = shadow_crops.stage(PNG + b"orphan")  # staged for a transaction that never committed
    with Store(tmp_path / "line.db", crops=crops) as store:
        store.record_shadow([_shadow_result(items=(OTHER,))])
        kept = hashlib.sha256(OTHER.crop_png or b"").hexdigest()
        shadow_crops.path(kept).unlink()  # recorded, but its move into place never happened
        shadow_crops.stage(OTHER.crop_png or b"")
        recovered = store.recover_crops()
    assert recovered is not None and (recovered.moved, recovered.deleted) == (1, 1)
    assert shadow_crops.get(kept) == OTHER.crop_png and shadow_crops.get(orphan) is None
