"""Coil report (JSON, CSV, PDF through the CLI) and crop storage with its retention policy."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inspection.cli import main
from inspection.records import platform
from inspection.records.crops import CropStore, prune
from inspection.records.store import Store
from inspection.testing.synthetic import coil_messages

DAY_NS = 86_400 * 10**9
START_NS = 1_763_900_000 * 10**9


@pytest.fixture
def line(tmp_path: Path) -> tuple[Path, Path]:
    db, crops = tmp_path / "line.db", tmp_path / "crops"
    with Store(db, crops=CropStore(crops), clock=lambda: START_NS + 40 * DAY_NS) as store:
        store.register_line(
            "demo-hot-1",
            "hot",
            1600.0,
            [{"id": "top-1", "surface": "top"}, {"id": "bottom-1", "surface": "bottom"}],
        )
        for i, age_days in enumerate((35, 34, 33, 1)):
            store.apply_batch(
                coil_messages(
                    f"C-{i}",
                    length_m=15,
                    defects_per_frame=1.0,
                    crops=True,
                    seed=i,
                    start_ns=START_NS + (40 - age_days) * DAY_NS,
                )
            )
            store.grade_coil(f"C-{i}", "coil_end")
        platform.import_rows(
            # the plant's length of the coil the cameras saw: 14 frames of 1.024 m (longer would hold it)
            store.db, [("item 1", r) for r in platform.synthetic_extract(["C-0"], "hot", 1, length_m=14.3)], "mes"
        )
        first = store.db.execute("SELECT id FROM defects WHERE coil='C-0' ORDER BY id LIMIT 1").fetchone()[0]
        store.add_review(first, "anna", "relabel", new_class="scratches")
        store.open_claim("C-1", "CL-2026-017", "bert", "customer claim: scale")
        store.open_claim("C-2", "CL-2026-018", "bert")
        store.close_claim("C-2", "CL-2026-018", "bert", "claim rejected")
    return db, crops


def test_report_json_and_csv(
    line: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = line
    common = ["--coil", "C-0", "--db", str(db)]
    assert main(["report", *common, "--format", "json", "--out", str(tmp_path / "r.json")]) == 0
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["grade"]["grade"] in ("prime", "secondary", "downgrade", "reject")
    assert data["platform"]["heat"] and data["provenance"]["models"][0]["version"] == "hot-test-1"
    assert data["provenance"]["reviewers"] == ["anna"]
    assert data["provenance"]["rule_sets"][0]["rule_set"] == "standard"
    assert main(["report", *common, "--format", "csv", "--out", str(tmp_path / "r.csv")]) == 0
    rows = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    relabelled = [r for r in rows if r["review_status"] == "relabelled"]
    assert len(rows) == len(data["defects"]) and [r["effective_class"] for r in relabelled] == ["scratches"]
    assert [r["parts"] for r in rows] == [" ".join(map(str, d["parts"])) for d in data["defects"]]
    assert main(["report", "--coil", "NOPE", "--format", "json", "--db", str(db)]) == 2
    assert "no coil 'NOPE'" in capsys.readouterr().err


def test_report_pdf_renders(line: tuple[Path, Path], tmp_path: Path) -> None:
    db, _ = line
    out = tmp_path / "r.pdf"
    assert main(["report", "--coil", "C-0", "--db", str(db), "--out", str(out)]) == 0
    assert out.read_bytes().startswith(b"%PDF") and out.stat().st_size > 20_000
    if shutil.which("pdftoppm"):
        subprocess.run(
            ["pdftoppm", "-r", "30", "-png", "-f", "1", "-l", "1", str(out), str(tmp_path / "p")],
            check=True,
            timeout=60,
        )
        assert (tmp_path / "p-1.png").stat().st_size > 1000


@pytest.mark.parametrize("missing", ["fpdf", "matplotlib"])
def test_report_pdf_without_the_console_extra_is_one_line(
    line: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    missing: str,
) -> None:
    db, _ = line
    monkeypatch.setitem(sys.modules, missing, None)  # how an install without the extra looks to imports
    out = tmp_path / "r.pdf"
    assert main(["report", "--coil", "C-0", "--db", str(db), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert (f"steel-inspect report: error: the PDF coil report needs the `console` extra ({missing} not installed): "
            "pip install -e '.[console]'\n") in err
    assert "Traceback" not in err and not out.exists()


def test_crops_are_content_addressed(tmp_path: Path) -> None:
    crops = CropStore(tmp_path / "crops")
    sha = crops.put(b"\x89PNG fake")
    assert crops.put(b"\x89PNG fake") == sha and crops.path(sha).parent.name == sha[:2]
    assert crops.get(sha) == b"\x89PNG fake" and crops.get("0" * 64) is None
    assert len(crops.files()) == 1


def test_retention_keeps_reviewed_claimed_and_recent(line: tuple[Path, Path]) -> None:
    db, crops_dir = line
    with Store(db) as store:

        def crops_of(coil: str) -> set[str]:
            return {r[0] for r in store.db.execute("SELECT crop_sha256 FROM defects WHERE coil=?", (coil,))}

        reviewed = store.db.execute(
            "SELECT crop_sha256 FROM defects WHERE id IN (SELECT defect_id FROM reviews)"
        ).fetchone()[0]
        before = {p.stem for p in CropStore(crops_dir).files()}
        now = START_NS + 40 * DAY_NS
        dry = prune(store.db, CropStore(crops_dir), 30, now_ns=now, dry_run=True)
        assert {p.stem for p in CropStore(crops_dir).files()} == before
        result = prune(store.db, CropStore(crops_dir), 30, now_ns=now)
        after = {p.stem for p in CropStore(crops_dir).files()}
        assert (result.deleted, result.kept) == (dry.deleted, dry.kept) and result.deleted > 0
        assert reviewed in after  # C-0 is old but this defect was reviewed
        assert crops_of("C-1") <= after  # open claim
        assert crops_of("C-3") <= after  # recent
        assert not (crops_of("C-2") - {reviewed}) & after  # old, claim closed: pruned
        assert (
            store.db.execute("SELECT kind FROM audit_log ORDER BY seq DESC LIMIT 1").fetchone()[0]
            == "crops_pruned"
        )


def test_crops_left_staged_by_a_recorder_that_died_are_put_in_place_or_deleted(tmp_path: Path) -> None:
    """A recorder writes a batch's crops to staging, commits the batch, then moves them into place.
    Killed before the commit, its staged crops belong to nothing (deleted at the next start); killed
    after the commit but before the move, its crops belong to recorded defects (moved into place)."""
    crops = CropStore(tmp_path / "crops")
    with Store(tmp_path / "line.db", crops=crops) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                          {"id": "bottom-1", "surface": "bottom"}])
        result = store.apply_batch(coil_messages("C-1", length_m=3, defects_per_frame=2.0, crops=True))
        assert result.crops_written > 0 and result.crops_failed == 0
        assert not crops.staged_files()  # committed: every crop in place
        named = {r[0] for r in store.db.execute("SELECT crop_sha256 FROM defects WHERE crop_sha256 IS NOT NULL")}
        assert {p.stem for p in crops.files()} == named
        committed = sorted(named)[0]  # as if the recorder died between its commit and the move
        crops.staged(committed).parent.mkdir(parents=True, exist_ok=True)
        crops.path(committed).replace(crops.staged(committed))
        assert crops.get(committed) is not None  # still readable while it waits in staging
        orphan = crops.stage(b"\x89PNG of a batch that never committed")
        recovered = store.recover_crops()
    assert (recovered.moved, recovered.deleted) == (1, 1)
    assert crops.path(committed).is_file() and not crops.staged_files() and crops.get(orphan) is None
    assert {p.stem for p in crops.files()} == named


def test_a_crop_that_cannot_be_written_leaves_its_defect_without_one(tmp_path: Path) -> None:
    (tmp_path / "crops").write_text("a file where the crop folder should be: every crop write fails\n")
    with Store(tmp_path / "line.db", crops=CropStore(tmp_path / "crops")) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                          {"id": "bottom-1", "surface": "bottom"}])
        result = store.apply_batch(coil_messages("C-1", length_m=3, defects_per_frame=2.0, crops=True))
        rows = store.db.execute("SELECT count(*), count(crop_sha256) FROM defects").fetchone()
    assert result.crops_failed == rows[0] > 0 and rows[1] == 0 and result.new_defects == rows[0]
    assert "cannot write crop" in result.crop_error


def test_crop_folders_removed_while_the_recorder_runs_are_made_again(tmp_path: Path) -> None:
    """The crop store makes each folder once per process; one removed behind its back (an operator
    emptying the crop disk) is made again at the next crop, staged or in place, nothing lost."""
    crops = CropStore(tmp_path / "crops")
    with Store(tmp_path / "line.db", crops=crops) as store:
        store.register_line("demo-hot-1", "hot", 1600.0, [{"id": "top-1", "surface": "top"},
                                                          {"id": "bottom-1", "surface": "bottom"}])
        first = store.apply_batch(coil_messages("C-1", length_m=3, defects_per_frame=2.0, crops=True, seed=1))
        shutil.rmtree(tmp_path / "crops")
        second = store.apply_batch(coil_messages("C-2", length_m=3, defects_per_frame=2.0, crops=True, seed=2))
        named = {r[0] for r in store.db.execute("SELECT crop_sha256 FROM defects WHERE coil = 'C-2'")}
    assert first.crops_written > 0 and second.crops_written == len(named) > 0 and second.crops_failed == 0
    assert named <= {p.stem for p in crops.files()} and not crops.staged_files()
