"""Plant data import: CSV with bad rows, JSON / JSON Lines, SQL (SQLite), re-imports, synthetic extract."""

from __future__ import annotations

import csv
import json
import sqlite3
import sys
from pathlib import Path

import pytest

from inspection.records import platform, queries
from inspection.records.audit import verify
from inspection.records.db import open_db
from inspection.records.errors import PlatformImportError

SAMPLE = Path(__file__).parent / "data" / "mes_extract_sample.csv"


def test_sample_extract_imports_cleanly(tmp_path: Path) -> None:
    db = open_db(tmp_path / "line.db")
    report = platform.import_rows(db, platform.read_csv(SAMPLE), str(SAMPLE))
    assert (report.rows, report.imported, report.skipped) == (6, 6, [])
    data = queries.platform_data(db, "H1-2611001")
    assert data["steel_grade"] == "S355MC" and data["finishing_temp_c"] > 800
    assert (
        db.execute("SELECT family FROM steel_grades WHERE name='S355MC'")
        .fetchone()[0]
        .startswith("hot-rolled")
    )
    assert verify(db).ok


def test_bad_rows_are_reported_with_line_numbers_and_skipped(tmp_path: Path) -> None:
    rows = list(csv.DictReader(SAMPLE.open()))
    rows[1]["thickness_mm"] = "thick"  # file line 3
    rows[2]["coil_id"] = ""  # file line 4
    rows[3]["width_mm"] = "9000"  # file line 5
    rows[4]["produced_at"] = "yesterday"  # file line 6
    rows[0]["mill_stand"] = "F7"  # an unknown column is kept, with a warning
    bad = tmp_path / "bad.csv"
    with bad.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[*rows[0].keys()])
        writer.writeheader()
        writer.writerows(rows)
    db = open_db(tmp_path / "line.db")
    platform.import_rows(db, platform.read_csv(SAMPLE), "first import")
    report = platform.import_rows(db, platform.read_csv(bad), str(bad))
    assert report.imported == 2
    assert [(where, why.split(":")[0]) for where, why in report.skipped] == [
        ("line 3", "thickness_mm"),
        ("line 4", "coil_id"),
        ("line 5", "width_mm"),
        ("line 6", "produced_at"),
    ]
    assert "mill_stand" in report.warnings[0]
    assert "skipped line 5: width_mm: 9000 outside 300..2500" in report.summary()
    # nothing already imported is lost: the skipped coils keep their first import
    assert db.execute("SELECT count(*) FROM platform_coils").fetchone()[0] == 6
    assert queries.platform_data(db, "H1-2611001")["extra"] == {"mill_stand": "F7"}


def test_json_and_json_lines(tmp_path: Path) -> None:
    rows = platform.synthetic_extract(["J-1", "J-2"], "cold", seed=1)
    (tmp_path / "a.json").write_text(json.dumps({"coils": rows}))
    (tmp_path / "b.jsonl").write_text(json.dumps(rows[0]) + "\n{not json\n" + json.dumps(rows[1]) + "\n")
    db = open_db(tmp_path / "line.db")
    assert platform.import_rows(db, platform.read_json(tmp_path / "a.json"), "a").imported == 2
    report = platform.import_rows(db, platform.read_json(tmp_path / "b.jsonl"), "b")
    assert report.imported == 2 and report.skipped[0][0] == "line 2"
    (tmp_path / "c.json").write_text('"just a string"')
    with pytest.raises(PlatformImportError, match="expected a JSON array"):
        list(platform.read_json(tmp_path / "c.json"))


def test_sql_source_sqlite_and_missing_drivers(tmp_path: Path) -> None:
    mes = tmp_path / "mes.db"
    conn = sqlite3.connect(mes)
    conn.execute("CREATE TABLE coil (id TEXT, heat_no TEXT, grade TEXT, thk REAL, ft REAL)")
    conn.executemany(
        "INSERT INTO coil VALUES (?,?,?,?,?)",
        [("S-1", "812345", "DC04", 0.8, None), ("S-2", "812345", "DC04", -1.0, None)],
    )
    conn.commit()
    conn.close()
    query = (
        "SELECT id AS coil_id, heat_no AS heat, grade AS steel_grade, thk AS thickness_mm, "
        "ft AS finishing_temp_c FROM coil ORDER BY id"
    )
    db = open_db(tmp_path / "line.db")
    report = platform.import_rows(db, platform.read_sql(f"sqlite:///{mes}", query), "mes")
    assert report.imported == 1 and report.skipped == [("row 2", "thickness_mm: -1 outside 0.1..30")]
    with pytest.raises(PlatformImportError, match="query failed"):
        list(platform.read_sql(f"sqlite:///{mes}", "SELECT nope FROM coil"))
    with pytest.raises(PlatformImportError, match="expected a sqlite"):
        list(platform.read_sql("mysql://x/y", "SELECT 1"))

    secret = "pw-" + "x" * 8
    with pytest.raises(PlatformImportError) as info:
        list(platform.read_sql(f"mysql://mes:{secret}@mes-db/mes", "SELECT 1"))
    assert secret not in str(info.value) and "mysql://..." in str(info.value)


def test_without_psycopg_the_message_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # what an install without the postgres extra sees
    with pytest.raises(PlatformImportError) as info:
        list(platform.read_sql("postgresql://mes:pw-secret@localhost/mes", "SELECT 1"))
    assert "PostgreSQL driver missing: install the postgres extra: pip install -e '.[postgres]'" in str(info.value)
    assert "pw-secret" not in str(info.value)


def test_synthetic_extract_is_deterministic_and_plausible() -> None:
    ids = [f"C-{i}" for i in range(12)]
    a, b = platform.synthetic_extract(ids, "hot", 3), platform.synthetic_extract(ids, "hot", 3)
    assert a == b and a != platform.synthetic_extract(ids, "hot", 4)
    for row in a:
        fields, extra = platform.normalise(row)  # every row passes the importer's own validation
        assert not extra and 10 <= row["weight_t"] <= 30.5
    assert len({r["slab_id"] for r in a}) == len(a)
    assert {r["steel_grade"] for r in platform.synthetic_extract(ids, "cold", 3)} <= {
        "DC01",
        "DC04",
        "DX51D",
        "DX54D",
    }


def test_import_plant_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inspection.cli import main

    db = tmp_path / "line.db"
    assert main(["import-plant", "--csv", str(SAMPLE), "--db", str(db)]) == 0
    assert "6 rows read, 6 imported, 0 skipped" in capsys.readouterr().out
    bad = tmp_path / "bad.csv"
    bad.write_text("coil_id,width_mm\nOK-1,1500\nBAD-1,wide\n")
    assert main(["import-plant", "--csv", str(bad), "--db", str(db)]) == 1
    assert "skipped line 3: width_mm: not a number: 'wide'" in capsys.readouterr().out
    assert main(["import-plant", "--sql-url", "sqlite:///nowhere.db", "--db", str(db)]) == 2
    assert "--sql-url needs --query" in capsys.readouterr().err
